"""Every command has help; `qualiclip --help` stays light (no torch import); version; usage exit code."""

import subprocess
import sys

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
