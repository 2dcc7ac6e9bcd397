"""`qualiclip score PATH…`: score images and report (text, csv, jsonl, json)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands.errors import EXIT_OK, EXIT_PARTIAL, handle_errors
from qualiclip_cli.commands.render import ScoreFormat, ScoreSort


@handle_errors
@opt.with_options(*opt.GROUPING_OPTIONS, *opt.PATH_LISTS, *opt.WALK, *opt.SCORING, "quiet")
def score(
    paths: opt.InputPathsArg = None,
    fmt: Annotated[Optional[ScoreFormat], typer.Option("--format", "-f", help="text (a table), csv, jsonl, json or parquet (needs pyarrow); table: same as text \\[default: text on a terminal, jsonl otherwise, or from --output's extension].")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write results to this file instead of stdout.")] = None,
    details: Annotated[bool, typer.Option("--details", help="Include the 7 sub-scores (pair probabilities).")] = False,
    embeddings: Annotated[bool, typer.Option("--embeddings", help="parquet: add each image's L2-normalised embedding (a list of float16).")] = False,
    full_precision: opt.FullPrecision = False,
    sort: Annotated[ScoreSort, typer.Option("--sort", help="path; -score: best first, the ranking `qualiclip sort` prints (equal scores by path); score: worst first, its exact reverse.")] = "path",
    with_groups: Annotated[bool, typer.Option("--groups", help="Also the group columns of qualiclip group (group, group size, rank in group, best, margin, bracket, capture time, time source), with its thresholds.")] = False,

    **shared,
) -> None:
    """Score images with QualiCLIP (0–1, higher is better).

    Examples:

        qualiclip score shoot/ --sort -score      (a table, best first)
        qualiclip score library/ -o scores.csv    (csv, from the extension)
        qualiclip score shoot/ --groups -f jsonl  (with each photo's burst group, as `qualiclip group`)
        qualiclip score library/ -o scores.parquet --embeddings  (a table for dataset tools)

    Camera RAW files (CR3, NEF, ARW, RAF, DNG...) are scored from the JPEG preview the camera embedded
    (LibRaw's half-size development when there is none big enough); the source field says which. A RAW and a
    JPEG of the same name are scored once, from the JPEG (--raw-pairs).

    Results go to stdout; progress and the summary to stderr. Exit code 0 when every file was scored,
    3 when some could not be read (they get status "error" rows), 1 on a fatal error or when there is no image
    to score (checked before the model loads), 2 on bad usage.
    """
    from qualiclip_cli.commands.render import choose_format, sort_records, write_output_file, write_records
    from qualiclip_cli.commands.scoring import run_scoring, summarise

    requested, fmt = fmt, choose_format(fmt, output)
    _check_parquet(fmt, output, embeddings, with_groups)
    grouping = opt.group_options(shared)
    paths = opt.input_paths(paths, shared["files_from"], shared["null"])
    choices = opt.ScoringChoices.from_params({**shared, "paths": paths})
    run = run_scoring(choices, signals=with_groups or embeddings)
    records, elapsed = run.records, run.elapsed
    machine = {"provenance": {"weights_sha256": run.weights_sha256, "identity": run.identity},
               "full_precision": full_precision}
    if with_groups:
        from qualiclip_cli.core.curation.groups import group_records

        machine["groups"] = {id(r): g for r, g in zip(records, group_records(records, grouping)) if g is not None}
    records = sort_records(records, sort)
    if fmt == "parquet":
        _write_parquet(records, run, choices, embeddings, output)
        if output is not None:
            _say_format(output, fmt, requested)
    elif output is not None:
        write_output_file(output, records, fmt, details, **machine)
        _say_format(output, fmt, requested)
    else:
        write_records(records, fmt, sys.stdout, details, **machine)
        sys.stdout.flush()
    failed = sum(1 for r in records if not r.ok)
    summarise(records, elapsed, run.skipped)
    raise typer.Exit(EXIT_PARTIAL if failed else EXIT_OK)


#: The format each extension of --output names (any other extension names none).
_EXTENSION_FORMATS = {"csv": "csv", "jsonl": "jsonl", "json": "json", "txt": "text", "parquet": "parquet",
                      "pq": "parquet"}


def _check_parquet(fmt: str, output: Path | None, embeddings: bool, with_groups: bool) -> None:
    """Before any work: parquet's own requirements (pyarrow, not a terminal), and --embeddings only with it."""
    from qualiclip_cli.core.errors import UsageError

    if fmt != "parquet":
        if embeddings:
            raise UsageError("--embeddings goes with --format parquet (or -o FILE.parquet)")
        return
    from qualiclip_cli.commands.console import stdout_is_terminal
    from qualiclip_cli.core.dataset.table import require_pyarrow

    require_pyarrow()
    if with_groups:
        raise UsageError("--groups is not written in parquet; use jsonl, json or csv for it")
    if output is None and stdout_is_terminal():
        raise UsageError("parquet is binary: write it to a file with -o scores.parquet (or pipe stdout)")


def _write_parquet(records: list, run, choices, embeddings: bool, output: Path | None) -> None:
    """The records as parquet (`core.dataset.table`: the columns of the jsonl rows, the sub-scores always), to the
    file atomically or to stdout."""
    from qualiclip_cli.core.dataset.table import Provenance, records_table, table_bytes, write_table
    from qualiclip_cli.core.model.runtime import pick_precision

    provenance = Provenance(run.weights_sha256, run.identity, pick_precision(choices.precision))
    vectors = [r.signals.embedding if r.ok and r.signals is not None else None for r in records] if embeddings else None
    table = records_table({"path": [r.path for r in records]}, records, provenance, vectors)
    if output is not None:
        write_table(table, output)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(table_bytes(table))
        sys.stdout.buffer.flush()


def _say_format(output: Path, fmt: str, requested: str | None) -> None:
    """One note on stderr when the file's extension does not say what was written in it (scores.txt as jsonl,
    results.csv as jsonl by --format), so a script never reads a file in the wrong format unawares."""
    from qualiclip_cli.commands.console import markup_safe, notes

    if _EXTENSION_FORMATS.get(output.suffix.lower().lstrip(".")) == fmt:
        return
    why = "from --format" if requested else "the default when the extension names no format; choose with --format"
    notes().print(f"qualiclip: wrote {markup_safe(output)} as {fmt} ({why})", highlight=False)
