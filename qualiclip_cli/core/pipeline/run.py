"""`score_paths`: the one scoring entry every scoring command calls.

walk (`images.discovery`) → leave out files under `skip_under` → nothing to score: `NothingToScore`, before the
weights are looked for → resolve the weights (hash in the background, none for a pinned file unchanged since it
was last verified) → results cache, opened with the identity computed without torch where it can be
(`scorer.planned_identities`) → every file a hit: the records, with no torch imported and no model loaded →
else `Scorer` (waits for the hash's verdict) → ordered stream → records, in walk order. Progress goes through
callbacks; nothing here prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qualiclip_cli.core.errors import QualiclipError
from qualiclip_cli.core.images.discovery import Found, RawPairs, Skipped, find_images
from qualiclip_cli.core.model.weights import ProgressCallback, resolve_weights
from qualiclip_cli.core.paths import kernel_path
from qualiclip_cli.core.pipeline.options import ScoreOptions
from qualiclip_cli.core.pipeline.scorer import Scorer, open_cache, open_results_cache, planned_identities
from qualiclip_cli.core.records import ScoreRecord


@dataclass(frozen=True)
class WalkOptions:
    """How PATH arguments are walked (see `images.discovery.find_images`)."""

    recursive: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    hidden: bool = False
    follow_symlinks: bool = False
    raw_pairs: RawPairs = "jpeg"  # which half of a RAW+JPEG pair is scored


#: At most this many PATH arguments are named in the "no images in ..." message.
_PATHS_NAMED = 3


class NothingToScore(QualiclipError):
    """The walk found no image to score (every PATH missing, empty, or holding only other files). Raised before
    the weights are looked for, so a typo costs neither a model load nor a download."""


@dataclass
class ScoringRun:
    """What `score_paths` produced: the records (walk order), the scoring time, which weights and scoring
    identity (preprocessing policy + precision) gave them, as XMP sidecars record, and what the walk skipped."""

    records: list[ScoreRecord]
    elapsed: float
    weights_sha256: str
    identity: str
    skipped: Skipped = field(default_factory=Skipped)


class _Arguments:
    """The PATH arguments as they are walked: how many, and the first few, for the messages."""

    def __init__(self, paths: Iterable[str | os.PathLike]) -> None:
        self.paths = paths
        self.count = 0
        self.first: list[str] = []

    def __iter__(self):
        for path in self.paths:
            self.count += 1
            if len(self.first) < _PATHS_NAMED:
                self.first.append(str(path))
            yield path

    def named(self) -> str:
        if self.count > _PATHS_NAMED:
            return ", ".join(self.first) + f" and {self.count - len(self.first)} more paths"
        return ", ".join(self.first)


def walk_paths(
    paths: Iterable[str | os.PathLike] | str | os.PathLike,
    walk: WalkOptions = WalkOptions(),
    skip_under: Sequence[str | os.PathLike] = (),
) -> tuple[list[Found], Skipped]:
    """The walk of `score_paths`: the entries to score (images and problems, walk order) and what was skipped.

    Files under any folder of ``skip_under`` are left out (counted as excluded). Raises `NothingToScore` when
    there is no image to score, naming what was found instead.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    arguments = _Arguments(paths)
    skipped = Skipped()
    skip = [kernel_path(d) for d in skip_under]
    found: list[Found] = []
    images = 0
    for entry in find_images(
        arguments, recursive=walk.recursive, include=walk.include, exclude=walk.exclude, hidden=walk.hidden,
        follow_symlinks=walk.follow_symlinks, skipped=skipped, raw_pairs=walk.raw_pairs,
    ):
        if skip and any(kernel_path(entry.path).is_relative_to(d) for d in skip):
            skipped.excluded_files += entry.ok
            continue
        found.append(entry)
        images += entry.ok
    if not images:
        raise NothingToScore(_nothing_to_score(arguments, found, skipped))
    return found, skipped


def _nothing_to_score(arguments: _Arguments, problems: list[Found], skipped: Skipped) -> str:
    if arguments.count == 0:
        return "no images to score: no paths were given (the list of paths is empty)"
    what = skipped.describe()
    if arguments.count == 1 and len(problems) == 1 and not what:
        return f"{problems[0].path}: {problems[0].error}"  # e.g. a typo: the one thing the user needs to hear
    if problems:
        first = f"{problems[0].path}: {problems[0].error}"
        what.append(f"1 path that could not be read ({first})" if len(problems) == 1 else
                    f"{len(problems)} paths that could not be read (the first: {first})")
    if not what:
        what = ["no files there"]
    return f"no images in {arguments.named()}: " + ", ".join(what)


def walk_then_weights(
    paths, walk: WalkOptions, skip_under: Sequence[str | os.PathLike], weights, offline: bool,
    on_walk_problem: Callable[[Found], None] | None, on_download_start, on_download_progress,
) -> tuple[list[Found], Skipped, object]:
    """The start every pass over files shares: the walk (`walk_paths`, which raises `NothingToScore`), each walk
    problem told to ``on_walk_problem``, then the weights resolved (`weights.resolve_weights`; their hash runs in
    the background while the model loads, and is waited for before anything is scored)."""
    found, skipped = walk_paths(paths, walk, skip_under)
    if on_walk_problem is not None:
        for entry in found:
            if not entry.ok:
                on_walk_problem(entry)
    resolved = resolve_weights(weights, offline, progress=on_download_progress, hash_in_background=True,
                               on_download_start=on_download_start)
    return found, skipped, resolved


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
    on_walk_problem: Callable[[Found], None] | None = None,
) -> ScoringRun:
    """Score every image under ``paths``; one record per file found, failures included (status "error").

    The walk (`walk_paths`) comes first and is complete before the weights are looked for: a walk with no image
    raises `NothingToScore` without touching the weights or the network, and ``on_walk_problem(found)`` hears
    of each path the walk could not use (missing, unreadable, a loop) before the model loads; those paths are
    also records (status "error"), in walk order. Files under any folder of ``skip_under`` (e.g. the
    quarantine) are left out before scoring. ``on_start(n)`` is called with the number of files to score once
    the model is ready, ``on_record(record)`` once per record as it is handed out; the download callbacks as in
    `weights.resolve_weights`; ``on_warning(message)`` with each one-line warning that is not about one file
    (the results cache: damaged and set aside, locked, or not usable; the run goes on either way).
    """
    found, skipped, resolved = walk_then_weights(paths, walk, skip_under, weights, offline, on_walk_problem,
                                                 on_download_start, on_download_progress)
    start = time.perf_counter()
    cached = _all_cached(found, resolved, options, on_warning)
    if cached is not None:
        records, identity = cached
        if on_start is not None:
            on_start(len(found))
        for record in records:
            if on_record is not None:
                on_record(record)
        return ScoringRun(records, time.perf_counter() - start, resolved.sha256, identity, skipped)
    scorer = Scorer(resolved, options)
    cache = open_cache(scorer, options.use_cache, warn=on_warning)
    if on_start is not None:
        on_start(len(found))
    try:
        records = list(scorer.score_files(found, cache, on_record=on_record))
    finally:
        if cache is not None:
            cache.close()
    return ScoringRun(records, time.perf_counter() - start, scorer.weights.sha256, scorer.identity, skipped)


def _all_cached(found: list[Found], resolved, options: ScoreOptions,
                on_warning: Callable[[str], None] | None) -> tuple[list[ScoreRecord], str] | None:
    """The records of a pass whose every file is in the results cache (walk problems included, as error rows),
    and the identity they were scored under, found without importing torch or loading the model; None as soon
    as one file is not there (or the identity needs torch to be known: `auto` where CUDA may exist), and the pass
    then runs the model as usual (its stream looks each file up again: a lookup costs microseconds)."""
    if not options.use_cache or options.rescore:
        return None
    planned = planned_identities(options)
    if planned is None:
        return None
    from qualiclip_cli.core.pipeline.cache import FileIdentity

    # The hash (or the pin's verdict) first: nothing is served for a weights file that fails its check.
    cache = open_results_cache(resolved.sha256, planned, warn=on_warning)
    records: list[ScoreRecord] = []
    try:
        for entry in found:
            display = str(entry.path)
            if entry.error:
                records.append(ScoreRecord.failure(display, entry.error))
                continue
            try:
                ident = FileIdentity.of(entry.path)
            except OSError:
                return None  # the stream reports it, exactly as it always has
            hit = cache.lookup(ident, display, need_signals=options.signals)
            if hit is None:
                return None
            records.append(hit)
    finally:
        cache.close()
    return records, planned[0]
