"""Resolve weights for a command, showing a download progress bar on stderr when one is needed."""

from __future__ import annotations

from pathlib import Path

from qualiclip_cli.commands.console import progress_enabled, stderr


def resolve_with_progress(explicit: Path | None, offline: bool, force_download: bool = False):
    from qualiclip_cli.core import weights as W

    bar = None
    task = None

    def on_progress(done: int, total: int | None) -> None:
        nonlocal bar, task
        if not progress_enabled():
            return
        if bar is None:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            bar = Progress("Downloading QualiCLIP weights", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                           console=stderr(), transient=True)
            bar.start()
            task = bar.add_task("download", total=total)
        bar.update(task, completed=done)

    try:
        if force_download:
            path = W.download_weights(progress=on_progress, force=True)
            return W.ResolvedWeights(path, W.read_recorded_hash(path) or W.sha256_file(path), "download")
        needs_download = not explicit and not W.os.environ.get("QUALICLIP_WEIGHTS") and not W.cached_weights_path().exists()
        if needs_download and not W.offline_requested(offline):
            stderr().print(f"Weights not found in {W.cached_weights_path().parent}; downloading {W.QUALICLIP.download_url}",
                           highlight=False)
        return W.resolve_weights(explicit, offline, progress=on_progress)
    finally:
        if bar is not None:
            bar.stop()
