"""Rich consoles: results on stdout, everything else (logs, warnings, progress) on stderr."""

from __future__ import annotations

import functools
import sys

from rich.console import Console


@functools.cache
def _stderr(file_id: int) -> Console:
    return Console(file=sys.stderr, stderr=True, soft_wrap=True)


def stderr() -> Console:
    return _stderr(id(sys.stderr))


def warn(message: str) -> None:
    """A warning line on stderr (Rich markup in `message` is rendered)."""
    stderr().print(f"[yellow]warning:[/] {message}", highlight=False)


def stdout() -> Console:
    return Console(file=sys.stdout)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def progress_enabled() -> bool:
    """Progress bars only when a person is watching stderr."""
    return sys.stderr.isatty()


def make_progress(description: str, total: int | None):
    """A Rich progress bar on stderr, or a do-nothing stand-in when stderr is not a terminal."""
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
        TimeRemainingColumn(), console=stderr(), transient=True,
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
