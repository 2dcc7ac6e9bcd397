"""The README and docs/ agree with the program: every command and option they name exists in its --help, help
renders well (PATHS..., no <bool> metavars), and neither the help nor the docs cite what is not shipped."""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import typer

from cli_support import run_cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _root_command():
    from qualiclip_cli.commands.app import app

    return typer.main.get_command(app)


def _command_paths(cmd=None, prefix=()):
    cmd = cmd or _root_command()
    yield list(prefix), cmd
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        yield from _command_paths(sub, (*prefix, name))


def _flags(cmd) -> set[str]:
    flags = {"--help", "-h"}
    for param in cmd.params:
        flags.update(getattr(param, "opts", ()))
        flags.update(getattr(param, "secondary_opts", ()))
    return flags


# ------------------------------------------------------------------ reading the README


def readme_invocations(text: str) -> list[str]:
    """Every `qualiclip ...` command line the text shows: the lines of its code blocks that start with it (a
    pipe, `&&` or a `#` comment ends the command), and inline code spans that start with it."""
    def commands(line: str) -> list[str]:
        parts = (part.strip() for part in re.split(r"&&|\||;", line.split(" #")[0]))
        return [part for part in parts if part.startswith("qualiclip ")]

    found = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            found += commands(line)
    outside = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`(qualiclip [^`]+)`", outside):
        found += commands(span)
    return found


def resolve(invocation: str):
    """(command path, the command, the --options the line uses) for one `qualiclip ...` line."""
    try:
        words = shlex.split(invocation)[1:]
    except ValueError:
        words = invocation.split()[1:]
    cmd, path = _root_command(), []
    while words and getattr(cmd, "commands", None) and words[0] in cmd.commands:
        path.append(words[0])
        cmd = cmd.commands[words.pop(0)]
    options = {w.split("=", 1)[0] for w in words if re.fullmatch(r"--[a-z][a-z0-9-]*(=.*)?|-[a-zA-Z]", w)}
    return path, cmd, options


def test_the_readme_parser_finds_commands_and_options():
    text = "x\n```bash\nqualiclip score a/ --details | jq .  # c\nqualiclip weights path\n```\n" \
           "Run `qualiclip cull shoot/ --below 0.3 -q` and `qualiclip undo RUN_ID`.\n"
    lines = readme_invocations(text)
    assert lines == ["qualiclip score a/ --details", "qualiclip weights path",
                     "qualiclip cull shoot/ --below 0.3 -q", "qualiclip undo RUN_ID"]
    assert resolve(lines[0])[0] == ["score"] and resolve(lines[0])[2] == {"--details"}
    assert resolve(lines[1])[0] == ["weights", "path"]
    assert resolve(lines[2])[2] == {"--below", "-q"}
    assert resolve("qualiclip score x --frobnicate")[2] - _flags(resolve("qualiclip score x")[1]) == {"--frobnicate"}


def test_every_command_and_option_in_the_readme_exists():
    lines = readme_invocations(README.read_text(encoding="utf-8"))
    assert len(lines) > 20  # the parser still reads the README
    problems = []
    for line in lines:
        path, cmd, options = resolve(line)
        words = line.split()[1:]
        if not path and words and not words[0].startswith("-"):
            problems.append(f"{line!r}: no command {words[0]!r}")
            continue
        missing = options - _flags(cmd)
        if missing:
            problems.append(f"{line!r}: `qualiclip {' '.join(path)} --help` has no {', '.join(sorted(missing))}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ how help renders


@functools.cache
def _help(*path: str) -> str:
    result = run_cli(*path, "--help", env={"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code == 0, path
    return result.stdout


@pytest.mark.parametrize("path", [p for p, _ in _command_paths()], ids=lambda p: " ".join(p) or "qualiclip")
def test_help_renders_without_type_metavars(path):
    text = _help(*path)
    assert not re.search(r"<(bool|path|str|int|float|list\[[a-z]+\])>", text), text
    assert "{" not in text.split("\n\n")[0] + "".join(l for l in text.splitlines() if "Usage:" in l)


def test_help_shows_paths_argument_the_usual_way():
    text = _help("score")
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "[PATHS]..." in usage  # optional since paths can come from --files-from; never "{paths}..."
    assert "{paths}" not in text and "Image files and/or directories;" in text  # the argument's own help is shown


@pytest.mark.parametrize("path", [p for p, c in _command_paths() if p and (not getattr(c, "commands", None)
                                                                           or c.invoke_without_command)],
                         ids=lambda p: " ".join(p))
def test_each_command_help_leads_with_an_example(path):
    text = _help(*path)
    example = re.search(r"^\s*\$?\s*qualiclip " + re.escape(" ".join(path)) + r"\b", text, flags=re.M)
    assert example, f"`qualiclip {' '.join(path)} --help` shows no example"
    # the example comes before the options table
    assert example.start() < text.index("Options"), text


# ------------------------------------------------------------------ nothing cited that is not shipped


def _shipped() -> list[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.split()


def test_help_and_docs_cite_nothing_unshipped():
    texts = {f"qualiclip {' '.join(p)} --help": _help(*p) for p, _ in _command_paths()}
    texts.update({str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in DOCS})
    shipped = _shipped()
    problems = []
    for where, text in texts.items():
        if re.search(r"\bSPEC\b", text):
            problems.append(f"{where}: cites SPEC")
        if re.search(r"(^|[\s`(])(\.\./)?shared/", text):
            problems.append(f"{where}: cites shared/")
        # source and documentation files (not the files a run writes, such as config.json)
        for name in re.findall(r"`([\w./-]+\.(?:py|md|toml|cfg))`", text):
            if not any(f == name or f.endswith("/" + name) for f in shipped):
                problems.append(f"{where}: cites {name}, which is not in the repository")
    assert not problems, "\n".join(problems)


def test_shell_completion_is_available():
    from qualiclip_cli.commands.app import app

    env = {"_QUALICLIP_COMPLETE": "complete_bash", "COMP_WORDS": "qualiclip sc", "COMP_CWORD": "1"}
    result = typer.testing.CliRunner().invoke(app, [], prog_name="qualiclip", env=env)
    assert result.stdout.split() == ["score"]
    assert "--install-completion" in _help()
