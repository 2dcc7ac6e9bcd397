"""`score_paths`: the one scoring entry every scoring command calls.

walk (`images.discovery`) → leave out files under `skip_under` → resolve the weights (hash in the background)
→ `Scorer` (waits for the hash's verdict) → results cache → ordered stream → records, in walk order.
Progress goes through callbacks; nothing here prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qualiclip_cli.core.images.discovery import find_images
from qualiclip_cli.core.model.weights import ProgressCallback, resolve_weights
from qualiclip_cli.core.paths import kernel_path
from qualiclip_cli.core.pipeline.options import ScoreOptions
from qualiclip_cli.core.pipeline.scorer import Scorer, open_cache
from qualiclip_cli.core.records import ScoreRecord


@dataclass(frozen=True)
class WalkOptions:
    """How PATH arguments are walked (see `images.discovery.find_images`)."""

    recursive: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = False
    follow_symlinks: bool = False


@dataclass
class ScoringRun:
    """What `score_paths` produced: the records (walk order), the scoring time, and which weights and scoring
    identity (preprocessing policy + precision) gave them, as XMP sidecars record."""

    records: list[ScoreRecord]
    elapsed: float
    weights_sha256: str
    identity: str


def score_paths(
    paths: Iterable[str | os.PathLike],
    *,
    walk: WalkOptions = WalkOptions(),
    options: ScoreOptions = ScoreOptions(),
    weights: str | os.PathLike | None = None,
    offline: bool = False,
    skip_under: Sequence[str | os.PathLike] = (),
    on_start: Callable[[int], None] | None = None,
    on_record: Callable[[ScoreRecord], None] | None = None,
    on_download_start: Callable[[Path, str], None] | None = None,
    on_download_progress: ProgressCallback | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> ScoringRun:
    """Score every image under ``paths``; one record per file found, failures included (status "error").

    Files under any folder of ``skip_under`` (e.g. the quarantine) are left out before scoring.
    ``on_start(n)`` is called with the number of files to score once the walk is done, ``on_record(record)``
    once per record as it is handed out; the download callbacks as in `weights.resolve_weights`;
    ``on_warning(message)`` with each one-line warning that is not about one file (the results cache: damaged and
    set aside, locked, or not usable; the run goes on either way).
    """
    found = list(find_images(
        paths, recursive=walk.recursive, include=walk.include, exclude=walk.exclude, hidden=walk.hidden,
        follow_symlinks=walk.follow_symlinks,
    ))
    if skip_under:
        skip = [kernel_path(d) for d in skip_under]
        found = [f for f in found if not any(kernel_path(f.path).is_relative_to(d) for d in skip)]
    # The weights hash runs while the Scorer loads the file; the Scorer waits for it before scoring anything.
    resolved = resolve_weights(weights, offline, progress=on_download_progress, hash_in_background=True,
                               on_download_start=on_download_start)
    start = time.perf_counter()
    scorer = Scorer(resolved, options)
    cache = open_cache(scorer, options.use_cache, warn=on_warning)
    if on_start is not None:
        on_start(len(found))
    try:
        records = list(scorer.score_files(found, cache, on_record=on_record))
    finally:
        if cache is not None:
            cache.close()
    return ScoringRun(records, time.perf_counter() - start, scorer.weights.sha256, scorer.identity)
