"""Resolve or download weights for a command, with a download progress bar on stderr."""

from __future__ import annotations

import contextlib
from pathlib import Path

from qualiclip_cli.commands.console import markup_safe, notes, progress_enabled, stderr


@contextlib.contextmanager
def download_bar(label: str = "Downloading QualiCLIP weights"):
    """Yields a progress callback for weights.download_weights; the bar appears only once bytes arrive."""
    bar = task = None

    def on_progress(done: int, total: int | None) -> None:
        nonlocal bar, task
        if not progress_enabled():
            return
        if bar is None:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            bar = Progress(label, BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                           console=stderr(), transient=True)
            bar.start()
            task = bar.add_task("download", total=total)
        bar.update(task, completed=done)

    try:
        yield on_progress
    finally:
        if bar is not None:
            bar.stop()


def announce_download(cache_dir: Path, url: str) -> None:
    """Say on stderr that the weights are about to be downloaded (resolve_weights' on_download_start)."""
    notes().print(f"Weights not found in {markup_safe(cache_dir)}; downloading {markup_safe(url)}", highlight=False)


def resolve_with_progress(explicit: Path | None, offline: bool):
    """weights.resolve_weights, saying on stderr when it is about to download."""
    from qualiclip_cli.core.model import weights as W

    with download_bar() as on_progress:
        return W.resolve_weights(explicit, offline, progress=on_progress, on_download_start=announce_download)


def download_with_progress(force: bool = False):
    """weights.download_weights (an installed, verified file is kept unless force) → ResolvedWeights."""
    from qualiclip_cli.core.model import weights as W

    with download_bar() as on_progress:
        path = W.download_weights(progress=on_progress, force=force)
    return W.downloaded(path)
