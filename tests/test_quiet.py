"""`-q/--quiet`: every command that talks on stderr drops its progress bars, notes and summaries there, and
keeps the results (stdout, byte for byte), the errors, the warnings and the exit code.

Each test runs the real program twice, loud and quiet, on identical inputs (two copies of one folder, each
with its own journal and cache when the command changes files) and compares: stdout equal once the copy's
folder is written ROOT (in stderr too), exit codes equal, and the quiet stderr exactly the loud stderr's
error and warning lines, in order, with something dropped."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_support import make_photo_dir, run_cli, run_process

#: What -q keeps on stderr: error and warning lines (scoring's per-file warnings, the plans' warnings).
KEPT = ("qualiclip: error:", "qualiclip: warning:", "warning:")


def kept(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(KEPT)]


class World:
    """One copy of the photos, with its own qualiclip home (journal, cache): a run here changes nothing of
    the other copy's."""

    def __init__(self, root: Path, weights: Path):
        self.root = root
        self.home = root.parent / f"{root.name}-home"
        self.weights = weights

    def run(self, *args, quiet: bool = False, env: dict | None = None):
        full_env = {"QUALICLIP_HOME": str(self.home), **(env or {})}
        args = [str(a).replace("{root}", str(self.root)).replace("{weights}", str(self.weights)) for a in args]
        result = run_process(*args, *(["-q"] if quiet else []), env=full_env)
        result.stdout = result.stdout.replace(str(self.root), "ROOT")
        result.stderr = result.stderr.replace(str(self.root), "ROOT")
        return result


@pytest.fixture
def worlds(tmp_path, tiny_weights_file):
    """Two identical folders (two photos and one damaged file, which warns and makes the exit code 3)."""
    loud = tmp_path / "loud"
    make_photo_dir(loud / "shoot", names=("astronaut", "coffee"))
    (loud / "shoot" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    shutil.copytree(loud, tmp_path / "hush")
    return World(loud, tiny_weights_file), World(tmp_path / "hush", tiny_weights_file)


def assert_quiet(loud, quiet, expect_kept: int | None = None):
    assert quiet.returncode == loud.returncode, (loud.stderr, quiet.stderr)
    assert quiet.stdout == loud.stdout
    assert quiet.stderr.splitlines() == kept(loud.stderr), (loud.stderr, quiet.stderr)
    assert len(loud.stderr.splitlines()) > len(quiet.stderr.splitlines()), loud.stderr  # something was dropped
    if expect_kept is not None:
        assert len(quiet.stderr.splitlines()) == expect_kept, quiet.stderr


SCORING = ("--weights", "{weights}", "--no-cache", "--workers", "0")


def test_score(worlds):
    loud_world, _ = worlds
    args = ("score", "{root}/shoot", *SCORING)
    loud = loud_world.run(*args)
    assert loud.returncode == 3 and "qualiclip: 2 scored, 1 failed" in loud.stderr
    quiet = loud_world.run(*args, quiet=True)
    assert_quiet(loud, quiet, expect_kept=1)  # the damaged file's warning
    assert "bad.jpg" in quiet.stderr
    # QUALICLIP_QUIET=1 is the same as -q
    assert_quiet(loud, loud_world.run(*args, env={"QUALICLIP_QUIET": "1"}), expect_kept=1)


def test_score_drops_the_download_announcement_but_keeps_the_error(worlds):
    loud_world, _ = worlds
    env = {"QUALICLIP_OFFLINE": "", "QUALICLIP_WEIGHTS_URL": "http://127.0.0.1:9/qualiclip.pth"}  # refused
    loud = loud_world.run("score", "{root}/shoot/IMG_0000.jpg", env=env)
    assert loud.returncode == 1 and "Weights not found" in loud.stderr
    assert_quiet(loud, loud_world.run("score", "{root}/shoot/IMG_0000.jpg", quiet=True, env=env), expect_kept=1)


def test_cull_move_and_its_undo(worlds):
    results = {}
    for name, world, quiet in (("loud", worlds[0], False), ("quiet", worlds[1], True)):
        cull = world.run("cull", "{root}/shoot", "--below", "0.99", "--action", "move", *SCORING, quiet=quiet)
        undo = world.run("undo", quiet=quiet)
        assert not (world.root / "shoot" / "_rejected").exists() or not any((world.root / "shoot" / "_rejected").iterdir())
        results[name] = cull, undo
    (loud_cull, loud_undo), (quiet_cull, quiet_undo) = results["loud"], results["quiet"]
    assert "undo with: qualiclip undo" in loud_cull.stderr and "moved 2 files" in loud_cull.stderr
    assert_quiet(loud_cull, quiet_cull, expect_kept=1)
    assert "qualiclip: undo " in loud_undo.stderr and loud_undo.returncode == 0
    assert_quiet(loud_undo, quiet_undo, expect_kept=0)


def test_cull_list_and_sort_ranking(worlds):
    loud_world, _ = worlds
    for args in (("cull", "{root}/shoot", "--below", "0.99", "--action", "list"), ("sort", "{root}/shoot")):
        loud = loud_world.run(*args, *SCORING)
        assert loud.stdout.count("\n") == 2, loud.stdout
        assert_quiet(loud, loud_world.run(*args, *SCORING, quiet=True), expect_kept=1)


def test_tag_drops_the_note_on_curated_folders_and_the_summary(worlds):
    results = {}
    for name, world, quiet in (("loud", worlds[0], False), ("quiet", worlds[1], True)):
        sort = world.run("sort", "{root}/shoot", "--into", "{root}/tiers", *SCORING, quiet=quiet)
        tag = world.run("tag", "{root}", *SCORING, quiet=quiet)  # walks past the --into folder, with a note
        assert len(list(world.root.rglob("*.xmp"))) == 2
        results[name] = sort, tag
    (loud_sort, loud_tag), (quiet_sort, quiet_tag) = results["loud"], results["quiet"]
    assert_quiet(loud_sort, quiet_sort, expect_kept=1)
    assert "qualiclip: note: not walking" in loud_tag.stderr and "tag: wrote 2 sidecars" in loud_tag.stderr
    assert_quiet(loud_tag, quiet_tag, expect_kept=1)


def test_history_note(tmp_path, tiny_weights_file):
    world = World(tmp_path / "empty", tiny_weights_file)
    loud = world.run("history", "--format", "text")
    assert loud.returncode == 0 and "no runs yet" in loud.stderr
    quiet = world.run("history", "--format", "text", quiet=True)
    assert quiet.returncode == 0 and quiet.stdout == loud.stdout and quiet.stderr == ""


def test_evaluate(worlds):
    loud_world, _ = worlds
    table = loud_world.root / "shoot" / "mos.csv"
    table.write_text("path,mos\nIMG_0000.jpg,3.0\nIMG_0001.jpg,4.0\nmissing.jpg,1.0\n", encoding="utf-8")
    args = ("evaluate", "--mos", table, "--weights", "{weights}", "--format", "json")
    loud = loud_world.run(*args)
    quiet = loud_world.run(*args, quiet=True)
    assert quiet.returncode == loud.returncode and quiet.stdout == loud.stdout and loud.stdout.strip()
    assert quiet.stderr.splitlines() == kept(loud.stderr)
    assert "missing.jpg" in quiet.stderr  # the photo it could not score is still named


def test_train_and_preview(worlds):
    results = {}
    for name, world, quiet in (("loud", worlds[0], False), ("quiet", worlds[1], True)):
        train = world.run(
            "train", "--pristine", "{root}/shoot", "--init", "{weights}", "--out", "{root}/run", "--steps", "2",
            "--batch-size", "2", "--crop-size", "48", "--workers", "0", "--max-side", "0",
            "--distortions", "jpeg,gaublur", "--log-every", "1", quiet=quiet)
        preview = world.run("train", "preview", "--pristine", "{root}/shoot", "--out", "{root}/grid.png",
                            "--crop-size", "48", "--distortions", "jpeg", quiet=quiet)
        assert (world.root / "run" / "qualiclip-finetuned.pth").is_file() and (world.root / "grid.png").is_file()
        results[name] = train, preview
    (loud_train, loud_preview), (quiet_train, quiet_preview) = results["loud"], results["quiet"]
    assert loud_train.returncode == 0 and "trained to step 2" in loud_train.stderr and "step 1: loss" in loud_train.stderr
    assert_quiet(loud_train, quiet_train, expect_kept=1)  # the damaged file, skipped
    assert loud_preview.returncode == 0
    assert_quiet(loud_preview, quiet_preview, expect_kept=0)


def test_weights_import_keeps_its_error(tmp_path, tiny_weights_file):
    """The tiny file is not the official layout: the error stays under -q (and nothing is installed)."""
    world = World(tmp_path / "w", tiny_weights_file)
    loud = world.run("weights", "import", "{weights}")
    quiet = world.run("weights", "import", "{weights}", quiet=True)
    assert loud.returncode == quiet.returncode == 1 and quiet.stdout == loud.stdout == ""
    assert quiet.stderr == loud.stderr and quiet.stderr.startswith("qualiclip: error:")


def test_weights_import_and_download_drop_their_notes(tmp_path, tiny_weights_file, monkeypatch):
    """In-process, with the official record's shape pins replaced by the tiny model's: a successful import
    (and download) prints the installed path on stdout and, without -q only, the digest on stderr."""
    import dataclasses
    import functools

    from qualiclip_cli.commands import console
    from qualiclip_cli.core.model import layout
    from qualiclip_cli.core.model import weights as W

    from http_server import FileServer

    monkeypatch.setattr(console, "_quiet", False)  # in-process: the quiet run's state is undone after the test

    loaded = layout.load_weights_dict(tiny_weights_file)
    pins = {k: tuple(loaded[k].shape) for k in ("clip_model.visual.conv1.weight", "prompts_features")}
    monkeypatch.setattr(W, "QUALICLIP", dataclasses.replace(W.QUALICLIP, expected_shapes=pins))
    for name in ("import_weights", "download_weights"):
        monkeypatch.setattr(W, name, functools.partial(getattr(W, name), spec=W.QUALICLIP))

    outputs = {}
    with FileServer() as server:
        server.files["/qualiclip.pth"] = tiny_weights_file.read_bytes()
        monkeypatch.setenv("QUALICLIP_WEIGHTS_URL", server.url("/qualiclip.pth"))
        monkeypatch.delenv("QUALICLIP_OFFLINE")
        for quiet in (False, True):
            monkeypatch.setenv("QUALICLIP_HOME", str(tmp_path / f"home-{quiet}"))
            flag = ["-q"] if quiet else []
            imported = run_cli("weights", "import", str(tiny_weights_file), *flag)
            downloaded = run_cli("weights", "download", "--force", *flag)
            outputs[quiet] = imported, downloaded
    for loud, quiet in zip(outputs[False], outputs[True]):
        assert loud.exit_code == quiet.exit_code == 0, (loud.stderr, quiet.stderr)
        assert quiet.stdout.replace("home-True", "home-False") == loud.stdout and loud.stdout.strip()
        assert "sha256" in loud.stderr and quiet.stderr == ""


# ------------------------------------------------------------------ the bars, on a terminal

_ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b\][^\x07]*\x07")


def run_on_terminal(*args, env: dict, timeout: float = 120) -> tuple[int, str, str]:
    """A real process whose stderr is a terminal (a pty), so the bars draw: (exit code, stdout, stderr as
    text without escape sequences)."""
    import pty

    master, slave = pty.openpty()
    full_env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "40", **env}
    full_env.pop("NO_COLOR", None)
    process = subprocess.Popen([sys.executable, "-m", "qualiclip_cli", *map(str, args)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=slave, env=full_env)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the process closed its end
                break
            if not data:
                break
            chunks.append(data)
        stdout = process.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    text = _ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r", "")
    return process.returncode, stdout.decode(), text


def test_quiet_draws_no_scoring_bar(worlds):
    loud_world, _ = worlds
    env = {"QUALICLIP_HOME": str(loud_world.home)}
    args = ("score", loud_world.root / "shoot", "--weights", loud_world.weights, "--no-cache", "--workers", "0",
            "--format", "jsonl")
    loud = run_on_terminal(*args, env=env)
    quiet = run_on_terminal(*args, "-q", env=env)
    assert loud[0] == quiet[0] == 3 and loud[1] == quiet[1] and loud[1].count("\n") == 3
    assert "Scoring" in loud[2] and "scored" in loud[2]
    assert [line for line in quiet[2].splitlines() if line.strip()] == [
        f"warning: {loud_world.root}/shoot/bad.jpg: truncated or damaged file: Truncated File Read"]


def test_quiet_evaluate_draws_no_bar(worlds):
    loud_world, _ = worlds
    table = loud_world.root / "shoot" / "mos.csv"
    table.write_text("path,mos\nIMG_0000.jpg,3.0\nIMG_0001.jpg,4.0\n", encoding="utf-8")
    env = {"QUALICLIP_HOME": str(loud_world.home)}
    args = ("evaluate", "--mos", table, "--weights", loud_world.weights, "--format", "json")
    loud = run_on_terminal(*args, env=env)
    quiet = run_on_terminal(*args, "-q", env=env)
    assert loud[0] == quiet[0] == 0 and loud[1] == quiet[1] and loud[1].strip()
    assert "Scoring" in loud[2]
    assert quiet[2].strip() == ""


def test_quiet_draws_no_download_bar(tmp_path, tiny_weights_file):
    """The tiny file downloads, then fails the official shape check: the error stays, the bar goes."""
    from http_server import FileServer

    with FileServer() as server:
        server.files["/qualiclip.pth"] = tiny_weights_file.read_bytes() * 50
        env = {"QUALICLIP_HOME": str(tmp_path / "home"), "QUALICLIP_OFFLINE": "",
               "QUALICLIP_WEIGHTS_URL": server.url("/qualiclip.pth")}
        loud = run_on_terminal("weights", "download", env=env)
        quiet = run_on_terminal("weights", "download", "-q", env=env)
    assert loud[0] == quiet[0] == 1 and loud[1] == quiet[1] == ""
    assert "Downloading QualiCLIP weights" in loud[2]
    lines = [line for line in quiet[2].splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("qualiclip: error:"), quiet[2]
