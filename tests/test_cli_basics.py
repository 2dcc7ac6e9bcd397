"""Every command has help; `qualiclip --help` stays light (no torch import); version; usage exit code; the terminal."""

import subprocess
import sys

import pytest
import typer

from cli_support import run_cli


def _all_command_paths():
    from qualiclip_cli.commands.app import app

    root = typer.main.get_command(app)

    def walk(cmd, prefix):
        yield prefix
        if getattr(cmd, "commands", None):
            for name, sub in cmd.commands.items():
                yield from walk(sub, prefix + [name])

    return list(walk(root, []))


def test_every_command_has_help():
    paths = _all_command_paths()
    assert ["score"] in paths and ["weights", "download"] in paths
    for path in paths:
        result = run_cli(*path, "--help")
        assert result.exit_code == 0, path
        assert "Usage:" in result.stdout
        from qualiclip_cli.commands.app import app

        cmd = typer.main.get_command(app)
        for name in path:
            cmd = cmd.commands[name]
        assert (cmd.help or "").strip(), f"{' '.join(path)} has no help text"
        for param in cmd.params:
            # Rich would swallow an unescaped "[default: …]" as markup and show nothing.
            assert "[default:" not in (getattr(param, "help", None) or "").replace("\\[default:", ""), (path, param.name)


def test_importing_cli_does_not_import_torch():
    code = "import sys, qualiclip_cli.commands.app; print('torch' in sys.modules, 'open_clip' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_version_and_unknown_command():
    assert run_cli("--version").stdout.startswith("qualiclip ")
    assert run_cli("frobnicate").exit_code == 2


def test_scoring_commands_share_every_scoring_option():
    """score, cull, sort and tag score first: each takes every ScoringChoices option, with the same flags."""
    from dataclasses import fields

    from qualiclip_cli.commands.app import app
    from qualiclip_cli.commands.options import ScoringChoices

    root = typer.main.get_command(app)
    wanted = {f.name for f in fields(ScoringChoices)}
    flags = {}
    for name in ("score", "cull", "sort", "tag"):
        params = {p.name: tuple(p.opts) for p in root.commands[name].params}
        assert wanted <= set(params), (name, wanted - set(params))
        flags[name] = {k: params[k] for k in wanted}
    assert all(f == flags["score"] for f in flags.values())
    assert flags["score"]["decoder"] == ("--decoder",)


# ------------------------------------------------------------------ the terminal: warnings above the bar

BAR = "━"  # Rich's bar characters (also ╸ ╺ at the ends)


def _on_a_terminal(args: list[str], env: dict, timeout: float = 120) -> tuple[str, bytes]:
    """Run `args` with stderr on a pseudo-terminal (stdout piped): (stdout, stderr's raw bytes as the terminal got
    them). Bounded: the process is killed after `timeout` seconds."""
    import os
    import pty
    import select
    import time

    leader, follower = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower,
                            env={**os.environ, "COLUMNS": "100", "TERM": "xterm", **env})
    os.close(follower)
    raw, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            raw += chunk
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    out = proc.communicate(timeout=30)[0].decode()
    return out, raw


def _terminal_lines(raw: bytes) -> list[str]:
    """What the terminal showed, one entry per carriage-return or newline separated piece, escapes removed."""
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw.decode("utf-8", "replace"))
    return [piece for piece in re.split(r"[\r\n]", text) if piece.strip()]


_WARN_UNDER_A_BAR = """
import time
from qualiclip_cli.commands.console import advance, make_progress, warn
with make_progress("Scoring", 3) as bar:
    for i in range(3):
        advance(bar)
        time.sleep(0.15)  # the bar refreshes (10 per second) before and after each warning
        warn(f"IMG_{i}.jpg: not an image")
        time.sleep(0.15)
"""


@pytest.mark.parametrize("no_color", [False, True], ids=["color", "NO_COLOR"])
def test_warnings_print_above_the_progress_bar(no_color):
    env = {"NO_COLOR": "1"} if no_color else {}
    _, raw = _on_a_terminal([sys.executable, "-c", _WARN_UNDER_A_BAR], env)
    lines = _terminal_lines(raw)
    assert any(BAR in line for line in lines), lines  # the bar was drawn
    warnings = [line for line in lines if "warning:" in line]
    assert [w.strip() for w in warnings] == [f"warning: IMG_{i}.jpg: not an image" for i in range(3)], lines
    assert (b"\x1b[33m" in raw) is not no_color


def test_score_warnings_never_share_a_line_with_the_bar(tmp_path, tiny_weights_file):
    from cli_support import make_photo_dir

    make_photo_dir(tmp_path / "shoot")
    (tmp_path / "shoot" / "broken.jpg").write_bytes(b"not a jpeg")
    out, raw = _on_a_terminal([sys.executable, "-m", "qualiclip_cli", "score", str(tmp_path / "shoot"), "-f",
                               "jsonl", "--weights", str(tiny_weights_file)], {})
    assert len(out.splitlines()) == 5  # results on stdout, never through the bar's console
    lines = _terminal_lines(raw)
    warnings = [line for line in lines if "warning:" in line]
    assert len(warnings) == 1 and "broken.jpg" in warnings[0], lines
    assert BAR not in warnings[0] and "Scoring" not in warnings[0], warnings


# ------------------------------------------------------------------ tables: decimals, width, paths, times


def _pairs(value: float) -> dict:
    from qualiclip_cli.core.records import PAIR_NAMES

    return {name: value for name in PAIR_NAMES}


def _rendered(table, width: int) -> list[str]:
    from rich.console import Console

    console = Console(width=width, record=True, color_system=None)
    console.print(table)
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_details_table_stays_readable_at_80_columns():
    from qualiclip_cli.commands.render import records_table
    from qualiclip_cli.core.records import ScoreRecord

    long = "/home/someone/Pictures/2024/holidays-in-the-mountains/IMG_20240817_1203.jpg"
    records = [ScoreRecord(path=long, score=0.512345, pairs=_pairs(0.25), width=1, height=1),
               ScoreRecord(path="/srv/a.jpg", score=0.4, pairs=_pairs(0.5), width=1, height=1, cached=True),
               ScoreRecord.failure("/srv/b.jpg", "could not decode: truncated file, 3 bytes missing")]
    lines = _rendered(records_table(records, details=True, width=80), 80)
    assert all(len(line) <= 80 for line in lines), lines
    assert len(lines[0].split()) == 10  # one header line: the short sub-score headers
    row = next(line for line in lines if "IMG_20240817_1203.jpg" in line)  # the file name whole, on one line
    assert row.startswith("…") and "0.5123" in row
    assert any(line.startswith("/srv/a.jpg ") and line.endswith(" cached") for line in lines)  # short paths as they are
    status = " ".join(line[lines[0].index("status"):] for line in lines[lines.index(next(
        line for line in lines if line.startswith("/srv/b.jpg"))):])
    assert " ".join(status.split()) == "error: could not decode: truncated file, 3 bytes missing"


def test_table_and_plans_show_scores_with_the_same_4_decimals():
    from qualiclip_cli.commands.render import records_table
    from qualiclip_cli.core.records import ScoreRecord

    lines = _rendered(records_table([ScoreRecord(path="a.jpg", score=0.21304, width=1, height=1)]), 200)
    assert lines[1].split()[:2] == ["a.jpg", "0.2130"]  # a plan line says "(score 0.2130)"


def test_absolute_paths_keep_their_leading_slash(monkeypatch):
    from qualiclip_cli.commands.plan_render import display_path

    monkeypatch.chdir("/")
    assert display_path("/tmp/shoot/IMG_1.jpg") == "/tmp/shoot/IMG_1.jpg"


def test_history_shows_local_time(monkeypatch):
    import time
    from types import SimpleNamespace

    from qualiclip_cli.commands.history import _table

    run = SimpleNamespace(run_id="20250131T235959.123456Z-3f9a1c", time="2025-01-31T23:59:59.123456+00:00",
                          command="cull", counts={"done": 2}, state="done", argv=["qualiclip", "cull"], problem=None)
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving
    time.tzset()
    try:
        lines = _rendered(_table([run]), 200)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert "local time" in lines[0]
    assert "2025-02-01 05:29:59" in lines[1], lines
