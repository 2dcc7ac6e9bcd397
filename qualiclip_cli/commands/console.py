"""Rich consoles: results on stdout, everything else (logs, warnings, progress) on stderr.

`-q/--quiet` (every command that talks on stderr, or QUALICLIP_QUIET=1) is applied here, once: it turns the
progress and download bars off (`progress_enabled`) and silences `notes()`, the console of notes and
end-of-run summaries. Errors and warnings (`stderr()`, `warn`) always print: each warning is a file that
failed or was left out for a problem, which the exit code 3 stands for.

Writing never fails on a character: `prepare_streams` makes stdout and stderr escape what their encoding
cannot carry (a name's text is made safe before, by `core.names.display`), and machine formats go out as
UTF-8 whatever the locale (`machine_stream`).
"""

from __future__ import annotations

import codecs
import functools
import sys
from typing import TextIO

from rich.console import Console
from rich.markup import escape

from qualiclip_cli.core.names import display


def prepare_streams() -> None:
    """Make stdout and stderr escape (backslashreplace) any character their encoding cannot write, instead of
    raising UnicodeEncodeError in the middle of the results (e.g. under a Latin-1 or ASCII locale)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # closed or unsupported: leave it as it is
                pass


def machine_stream(out: TextIO) -> TextIO:
    """`out` for jsonl/json/csv text, which is UTF-8 by definition: stdout is switched to UTF-8 when the locale
    says otherwise (other streams are opened by us, as UTF-8)."""
    if out is sys.stdout and not _is_utf8(getattr(out, "encoding", None)):
        try:
            out.reconfigure(encoding="utf-8", errors="strict")
        except (AttributeError, ValueError, OSError):
            pass
    return out


def _is_utf8(encoding: str | None) -> bool:
    try:
        return encoding is not None and codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False


def markup_safe(text: object) -> str:
    """Text (a path, or a message naming one) to embed in Rich markup: one line, no control characters, and
    square brackets in names shown as they are."""
    return escape(display(text))


_quiet = False


def set_quiet(value: bool) -> bool:
    """Turn quiet mode on or off for this run (the `Quiet` option's callback, called on every invocation of a
    command that has it, so each run starts from what it was given). Returns `value`."""
    global _quiet
    _quiet = bool(value)
    return value


@functools.cache
def _silent() -> Console:
    return Console(stderr=True, quiet=True)


def notes() -> Console:
    """The console for what `-q` drops: notes, announcements and end-of-run summaries on stderr. It is `stderr()`
    unless quiet, then a console that prints nothing."""
    return _silent() if _quiet else stderr()


@functools.cache
def _stderr(file_id: int) -> Console:
    return Console(file=_unproxied(sys.stderr), stderr=True, soft_wrap=True)


def _unproxied(stream):
    """The stream itself, not the FileProxy Rich puts in its place while a live display (a progress bar) runs."""
    return getattr(stream, "rich_proxied_file", stream)


def stderr() -> Console:
    """The one console on stderr. While a progress bar is live it is the bar's own console, so what is printed
    goes above the bar: a second console would write past Rich's redirection, straight onto the bar's line."""
    return _stderr(id(_unproxied(sys.stderr)))


def warn(message: str) -> None:
    """A warning line on stderr. `message` is shown as it is: no markup, control characters escaped."""
    stderr().print(f"[yellow]warning:[/] {markup_safe(message)}", highlight=False)


def stdout() -> Console:
    return Console(file=sys.stdout)


def print_table(table, out: TextIO | None = None) -> None:
    """A Rich table on stdout (or `out`): laid out for the terminal when stdout is one; else without colour and
    wide enough that no cell is folded, so each row stays one line of text (a script can count them)."""
    if out is None and stdout_is_terminal():
        stdout().print(table)
        return
    Console(file=out if out is not None else sys.stdout, width=max(table_width(table), 80), no_color=True,
            highlight=False).print(table)


def table_width(table) -> int:
    """The cells a Rich table takes when nothing in it is folded."""
    from rich.measure import Measurement

    probe = Console(width=1_000_000)
    return Measurement.get(probe, probe.options, table).maximum


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def progress_enabled() -> bool:
    """Progress bars only when a person is watching stderr, and not asked to be quiet."""
    return not _quiet and sys.stderr.isatty()


def make_progress(description: str, total: int | None):
    """A Rich progress bar on stderr, or a do-nothing stand-in when stderr is not a terminal or when quiet."""
    if not progress_enabled():
        return _NoProgress()
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=stderr(), transient=True, redirect_stdout=False,  # stdout: results only
    )
    progress.add_task(description, total=total)
    return progress


def advance(progress, n: int = 1) -> None:
    """Advance the one task of a `make_progress` bar by n (nothing when the bar is off)."""
    if progress.tasks:
        progress.advance(progress.tasks[0].id, n)


class _NoProgress:
    tasks: list = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self, *args, **kwargs):
        pass

    def update(self, *args, **kwargs):
        pass
