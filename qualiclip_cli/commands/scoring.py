"""Shared by score, cull, sort and tag: run the core's `score_paths` with a progress bar, and its summary line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from qualiclip_cli.commands.console import advance, make_progress, markup_safe, notes, warn

if TYPE_CHECKING:
    from qualiclip_cli.commands.options import ScoringChoices
    from qualiclip_cli.core.pipeline.run import ScoringRun


def run_scoring(choices: ScoringChoices, skip_under: Sequence[Path] = (), signals: bool = False) -> ScoringRun:
    """Walk, resolve weights, score; progress and per-file warnings on stderr. Files found under any folder in
    `skip_under` (e.g. the quarantine) are left out before scoring. A walk that finds no image is an error
    (exit 1) before the weights are looked for; paths the walk could not use are warned about before the model
    loads, once (their error rows are not warned about again). ``signals``: the run groups (see
    `ScoringChoices.score_options`)."""
    import contextlib

    from qualiclip_cli.commands.weights_progress import announce_download, download_bar
    from qualiclip_cli.core.pipeline.run import score_paths

    with contextlib.ExitStack() as stack, contextlib.ExitStack() as downloading:
        on_bytes = downloading.enter_context(download_bar())
        bar = None
        warned: set[str] = set()  # paths already warned about by the walk

        def on_walk_problem(found) -> None:
            warned.add(str(found.path))
            warn(f"{found.path}: {found.error}")

        def on_start(total: int) -> None:
            nonlocal bar
            downloading.close()  # one live display at a time: the download bar goes before the scoring bar
            bar = stack.enter_context(make_progress("Scoring", total))

        def on_record(record) -> None:
            advance(bar)
            if not record.ok and record.path not in warned:
                warn(f"{record.path}: {record.error}")

        return score_paths(
            choices.paths, walk=choices.walk(), options=choices.score_options(signals), weights=choices.weights,
            offline=choices.offline, skip_under=skip_under, on_start=on_start,
            on_record=on_record, on_download_start=announce_download, on_download_progress=on_bytes,
            on_warning=warn, on_walk_problem=on_walk_problem,
        )


def summarise(records: list, elapsed: float, skipped=None) -> None:
    """The summary line on stderr: scored, from cache, failed, time and rate, and what the walk skipped (a
    `discovery.Skipped`, e.g. "skipped 3 files with other extensions (.ARW, .DNG, .xmp), 1 hidden folder")."""
    ok = sum(1 for r in records if r.ok)
    cached = sum(1 for r in records if r.ok and r.cached)
    failed = len(records) - ok
    rate = (ok - cached) / elapsed if elapsed > 0 and ok > cached else 0.0
    parts = [f"{ok} scored" + (f" ({cached} from cache)" if cached else "")]
    if failed:
        parts.append(f"{failed} failed")
    parts.append(f"{elapsed:.1f} s" + (f", {rate:.2f} images/s" if rate else ""))
    line = "qualiclip: " + ", ".join(parts)
    if skipped is not None and skipped.total:
        line += "; skipped " + ", ".join(skipped.describe())
    notes().print(markup_safe(line), highlight=False)
