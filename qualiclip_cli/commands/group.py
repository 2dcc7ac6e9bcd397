"""`qualiclip group PATH…`: bursts and near-duplicates grouped, each group's photos ranked best first."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands.errors import EXIT_OK, EXIT_PARTIAL, handle_errors
from qualiclip_cli.commands.render import ScoreFormat


@handle_errors
@opt.with_options(*opt.GROUPING_OPTIONS, *opt.PATH_LISTS, *opt.WALK, *opt.SCORING, "quiet")
def group(
    paths: opt.InputPathsArg = None,
    fmt: Annotated[Optional[ScoreFormat], typer.Option("--format", "-f", help="text (a table), csv, jsonl or json \\[default: text on a terminal, jsonl otherwise, or from --output's extension].")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write results to this file instead of stdout.")] = None,
    details: Annotated[bool, typer.Option("--details", help="Include the 7 sub-scores (pair probabilities).")] = False,
    full_precision: opt.FullPrecision = False,

    **shared,
) -> None:
    """Group bursts and near-duplicates (same camera, close in time, similar picture) and rank each group.

    Examples:

        qualiclip group shoot/                      (a table: each group together, best first)
        qualiclip group shoot/ -o groups.csv        (csv with group, rank_in_group, best, margin, ...)
        qualiclip group shoot/ --burst-gap 1 --burst-sim 0.85

    Photos are scored as by `qualiclip score` (the results cache keeps what grouping needs: a scored library
    is grouped without decoding anything). Frames of one camera whose capture times (EXIF, else the file's
    modification time) are within --burst-gap and whose pictures are similar, or within --scene-gap and more
    similar still, form a group; never across cameras, portrait and landscape, or more than --max-span.
    Exposure brackets are marked. Exit codes: 0 ok, 3 some files could not be read, 1 error, 2 bad usage.
    """
    from qualiclip_cli.commands.render import choose_format, write_output_file, write_records
    from qualiclip_cli.commands.scoring import run_scoring, summarise
    from qualiclip_cli.core.curation.groups import group_records, grouped_order
    from qualiclip_cli.core.errors import UsageError

    fmt = choose_format(fmt, output)
    if fmt == "parquet":  # checked before any work, as `score --groups` refuses it
        raise UsageError("the group columns are not written in parquet; use jsonl, json or csv")
    grouping = opt.group_options(shared)
    paths = opt.input_paths(paths, shared["files_from"], shared["null"])
    choices = opt.ScoringChoices.from_params({**shared, "paths": paths})
    run = run_scoring(choices, signals=True)
    infos = group_records(run.records, grouping)
    groups = {id(rec): info for rec, info in zip(run.records, infos) if info is not None}
    records = grouped_order(run.records, infos)
    machine = {"provenance": {"weights_sha256": run.weights_sha256, "identity": run.identity},
               "full_precision": full_precision, "groups": groups}
    if output is not None:
        write_output_file(output, records, fmt, details, **machine)
    else:
        write_records(records, fmt, sys.stdout, details, **machine)
        sys.stdout.flush()
    summarise(run.records, run.elapsed, run.skipped)
    _say_groups(infos)
    raise typer.Exit(EXIT_PARTIAL if any(not r.ok for r in records) else EXIT_OK)


def _say_groups(infos) -> None:
    from qualiclip_cli.commands.console import notes

    names = {info.group: info.size for info in infos if info is not None}
    several = sum(1 for size in names.values() if size > 1)
    photos = sum(size for size in names.values() if size > 1)
    notes().print(f"qualiclip: {several} group(s) of 2 or more photos ({photos} photos), "
                  f"{len(names) - several} single photo(s)", highlight=False, markup=False)
