"""`qualiclip score PATH…`: score images and report (table, csv, jsonl, json)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional, Sequence

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands.console import advance, make_progress, stderr, warn
from qualiclip_cli.commands.errors import EXIT_OK, EXIT_PARTIAL, handle_errors


@handle_errors
def score(
    paths: opt.PathsArg,
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", help="table, csv, jsonl or json \\[default: table on a terminal, jsonl otherwise, or from --output's extension].")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write results to this file instead of stdout.")] = None,
    details: Annotated[bool, typer.Option("--details", help="Include the 7 sub-scores (pair probabilities).")] = False,
    sort: Annotated[str, typer.Option("--sort", help="path, score (ascending) or -score (best first).")] = "path",
    recursive: opt.Recursive = True,
    include: opt.Include = None,
    exclude: opt.Exclude = None,
    hidden: opt.Hidden = False,
    follow: opt.Follow = False,
    max_side: opt.MaxSide = "1024",
    jpeg_draft: opt.JpegDraft = False,
    batch_size: opt.BatchSize = None,
    device: opt.Device = "auto",
    precision: opt.Precision = "auto",
    workers: opt.Workers = None,
    decoder: opt.Decoder = "auto",
    max_pixels: opt.MaxPixels = None,
    no_cache: opt.NoCache = False,
    rescore: opt.Rescore = False,
    weights: opt.Weights = None,
    offline: opt.Offline = False,
) -> None:
    """Score images with QualiCLIP (0–1, higher is better).

    Results go to stdout; progress and the summary to stderr. Exit code 0 when every file was scored,
    3 when some could not be read (they get status "error" rows), 1 on a fatal error, 2 on bad usage.
    """
    from qualiclip_cli.commands.render import SORTS, choose_format, sort_records, write_output_file, write_records
    from qualiclip_cli.core.errors import UsageError

    if sort not in SORTS:
        raise UsageError(f"unknown sort {sort!r}; choose one of {', '.join(SORTS)}")
    choices = opt.ScoringChoices.from_params(locals())
    fmt = choose_format(fmt, output)
    run = score_choices(choices)
    records, elapsed = run.records, run.elapsed
    records = sort_records(records, sort)
    if output is not None:
        write_output_file(output, records, fmt, details)
    else:
        write_records(records, fmt, sys.stdout, details)
        sys.stdout.flush()
    failed = sum(1 for r in records if not r.ok)
    summarise(records, elapsed)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)


@dataclass
class ScoringRun:
    """What `score_choices` produced: the records (walk order), the scoring time, and which weights and
    scoring identity (preprocessing policy + precision) gave them, as XMP sidecars record."""

    records: list
    elapsed: float
    weights_sha256: str
    identity: str


def score_choices(choices: "opt.ScoringChoices", skip_under: Sequence[Path] = ()) -> ScoringRun:
    """Walk, resolve weights, score with a progress bar on stderr; shared by score, cull, sort and tag. Files
    found under any folder in `skip_under` (e.g. the quarantine) are left out before scoring."""
    from qualiclip_cli.commands.weights_progress import resolve_with_progress
    from qualiclip_cli.core.images.discovery import find_images
    from qualiclip_cli.core.pipeline.scorer import Scorer, open_cache

    options = choices.score_options()
    found = list(find_images(choices.paths, **choices.discovery()))
    if skip_under:
        skip = [Path(os.path.abspath(d)) for d in skip_under]
        found = [f for f in found if not any(Path(os.path.abspath(f.path)).is_relative_to(d) for d in skip)]
    # The weights hash runs while the Scorer loads the file; the Scorer waits for it before scoring anything.
    resolved = resolve_with_progress(choices.weights, choices.offline, hash_in_background=True)
    start = time.perf_counter()
    scorer = Scorer(resolved, options)
    cache = open_cache(scorer, options.use_cache)
    records = []
    try:
        with make_progress("Scoring", len(found)) as progress:
            for record in scorer.score_files(found, cache):
                records.append(record)
                advance(progress)
                if not record.ok:
                    warn(f"{record.path}: {record.error}")
    finally:
        if cache is not None:
            cache.close()
    return ScoringRun(records, time.perf_counter() - start, scorer.weights.sha256, scorer.identity)


def summarise(records: list, elapsed: float) -> None:
    ok = sum(1 for r in records if r.ok)
    cached = sum(1 for r in records if r.ok and r.cached)
    failed = len(records) - ok
    rate = (ok - cached) / elapsed if elapsed > 0 and ok > cached else 0.0
    parts = [f"{ok} scored" + (f" ({cached} from cache)" if cached else "")]
    if failed:
        parts.append(f"{failed} failed")
    parts.append(f"{elapsed:.1f} s" + (f", {rate:.2f} images/s" if rate else ""))
    stderr().print("qualiclip: " + ", ".join(parts), highlight=False)
