"""`qualiclip dataset score SHARDS… --out DIR` and `qualiclip dataset select DIR`: WebDataset tar shards and
parquet tables, one parquet of scores per shard, and the keys to keep."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands.errors import EXIT_OK, EXIT_PARTIAL, handle_errors

app = typer.Typer(help="Score dataset shards (WebDataset tar, parquet) into parquet, and select the keys to keep.",
                  no_args_is_help=True)

#: Bad samples named one by one on stderr before the rest are only counted (they are all rows in the outputs).
_WARNED_SAMPLES = 10

KeysFormat = Literal["lines", "parquet"]


@app.command("score")
@handle_errors
@opt.with_options("max_side", "jpeg_draft", "batch_size", "device", "precision", "workers", "max_pixels", "decode_memory", "weights", "offline", "quiet")
def score(
    shards: Annotated[list[str], typer.Argument(help="Tar shards and parquet files; brace ranges and "
                      "lists as in bash (a range keeps its zero padding) and globs (shards/*.tar) expand.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Folder of the outputs: one `<shard name>.parquet` per shard.",
                                      show_default=False)],
    image_column: Annotated[Optional[str], typer.Option(
        "--image-column", help="The image: a tar member's extension (jpg; several: jpg,png, the first present) "
        "or a parquet column \\[default: tar: the first picture member; parquet: bytes, image, jpg...].")] = None,
    key_column: Annotated[Optional[str], typer.Option(
        "--key-column", help="The parquet column of the sample key \\[default: __key__, key, else the row number].")] = None,
    embeddings: Annotated[bool, typer.Option("--embeddings", help="Add each image's L2-normalised embedding "
                          "(a list of float16).")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Score on a Ray cluster: the one at --ray-address, else a "
                   "local one (the `data` extra).")] = False,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="With --ray: the cluster's address "
                           "(e.g. auto, or ray://head:10001) \\[default: a local cluster].")] = None,
    actors: Annotated[Optional[int], typer.Option("--actors", min=1, help="With --ray: scoring actors \\[default: "
                      "one per GPU with --gpus-per-actor, else one per CPU].")] = None,
    gpus_per_actor: Annotated[float, typer.Option("--gpus-per-actor", min=0, help="With --ray: GPUs each actor "
                              "takes (1 for one GPU per actor).")] = 0,
    rescore: Annotated[bool, typer.Option("--rescore", help="Score shards again even when their output is up "
                       "to date.")] = False,

    **shared,
) -> None:
    """Score every sample of WebDataset tar shards or parquet files into `DIR/<shard name>.parquet`.

    Examples:

        qualiclip dataset score 'shards/*.tar' --out scores/
        qualiclip dataset score 'data/*.parquet' --image-column image --out scores/
        qualiclip dataset score 'shards/*.tar' --out scores/ --ray --gpus-per-actor 1

    Each output holds one row per sample, keyed by `__key__`, with its score, status, error, sub-scores and the
    weights and policy that gave them; it is written whole or not at all. A shard whose output already holds
    scores of the same weights and policy is skipped (--rescore redoes it). Bad samples (not an image, cut
    short, no image member) are rows with status "error"; a shard that cannot be read is reported and the
    others go on. Quote brace ranges and globs so the shell leaves them to qualiclip.

    Exit code 0 when every sample was scored, 3 when some samples or shards failed, 1 on a fatal error, 2 on
    bad usage.
    """
    from qualiclip_cli.commands.console import advance, make_progress, markup_safe, notes, warn
    from qualiclip_cli.core.dataset.run import DatasetOptions
    from qualiclip_cli.core.errors import UsageError

    if not ray and (ray_address is not None or actors is not None or gpus_per_actor):
        raise UsageError("--ray-address, --actors and --gpus-per-actor go with --ray")
    # The scoring options of `score`, with what shards fix: no results cache (the outputs are the record), Pillow.
    options = opt.ScoringChoices.from_params({
        **{name: opt.SHARED[name][1] for name in opt.WALK}, **shared, "paths": (), "decoder": "pillow",
        "no_cache": True, "rescore": False, "profile": None}).score_options()
    dataset = DatasetOptions(image_field=image_column, key_column=key_column, embeddings=embeddings,
                             rescore=rescore)
    import contextlib

    warned = 0
    with contextlib.ExitStack() as stack:
        bar = None

        def on_start(total: int) -> None:
            nonlocal bar
            bar = stack.enter_context(make_progress("Scoring samples", total))

        def on_record(record) -> None:
            nonlocal warned
            advance(bar)
            if not record.ok:
                warned += 1
                if warned <= _WARNED_SAMPLES:
                    warn(f"{record.path}: {record.error}")

        def on_shard(outcome) -> None:
            if outcome.state == "failed":
                warn(outcome.error)

        common = dict(options=options, dataset=dataset, weights=shared["weights"], offline=shared["offline"], on_start=on_start,
                      on_record=on_record, on_shard=on_shard)
        if not ray:
            from qualiclip_cli.commands.weights_progress import announce_download, download_bar
            from qualiclip_cli.core.dataset.run import score_shards

            on_bytes = stack.enter_context(download_bar())
            run = score_shards(shards, out, on_download_start=announce_download, on_download_progress=on_bytes,
                               **common)
        else:
            from qualiclip_cli.ray import score_shards_on_ray

            run = score_shards_on_ray(shards, out, address=ray_address, actors=actors,
                                      gpus_per_actor=gpus_per_actor, **common)
    for problem in run.problems:
        warn(problem)
    for outcome in run.outcomes:
        detail = {"scored": f"{outcome.samples} samples" + (f", {outcome.failed} errors" if outcome.failed else ""),
                  "skipped": "up to date", "failed": "no output"}[outcome.state]
        typer.echo(f"{outcome.state}\t{outcome.output}\t{detail}")
    sys.stdout.flush()
    if warned > _WARNED_SAMPLES:
        warn(f"{warned - _WARNED_SAMPLES} more samples failed (see the error column of the outputs)")
    counts = {state: sum(o.state == state for o in run.outcomes) for state in ("scored", "skipped", "failed")}
    rate = run.samples / run.elapsed if run.elapsed > 0 and run.samples else 0.0
    line = (f"qualiclip: {counts['scored']} shards scored ({run.samples} samples, {run.failed_samples} errors), "
            f"{counts['skipped']} up to date, {counts['failed']} failed; {run.elapsed:.1f} s"
            + (f", {rate:.2f} samples/s" if rate else ""))
    notes().print(markup_safe(line), highlight=False)
    partial = run.failed_samples or run.failed_shards or run.problems
    raise typer.Exit(EXIT_PARTIAL if partial else EXIT_OK)


@app.command("select")
@handle_errors
def select(
    folder: Annotated[Path, typer.Argument(help="The --out folder of qualiclip dataset score.", show_default=False)],
    min_score: Annotated[Optional[float], typer.Option("--min-score", help="Keep samples scoring at least this.")] = None,
    top_percent: Annotated[Optional[float], typer.Option("--top-percent", help="Keep the best P percent of the "
                           "scored samples (ties at the cut-off stay).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the keys to this file instead "
                      "of stdout (.parquet: a parquet of __key__, shard, score).")] = None,
    fmt: Annotated[Optional[KeysFormat], typer.Option("--format", "-f", help="lines: one key per line; parquet: "
                   "__key__, shard and score columns \\[default: from --output's extension, else lines].")] = None,
    quiet: opt.Quiet = False,
) -> None:
    """Write the keys of the samples to keep, read from dataset score's outputs (the shards are not opened).

    Examples:

        qualiclip dataset select scores/ --min-score 0.5 > keep.txt
        qualiclip dataset select scores/ --top-percent 30 -o keep.parquet

    Error rows are never kept. With both --min-score and --top-percent a sample must pass both. Exit code 0,
    1 on an error (no outputs in the folder), 2 on bad usage.
    """
    from qualiclip_cli.commands.console import markup_safe, notes
    from qualiclip_cli.core.dataset.select import select_keys
    from qualiclip_cli.core.errors import UsageError

    if fmt is None:
        from qualiclip_cli.core.dataset.shards import PARQUET_SUFFIXES

        fmt = "parquet" if output is not None and output.suffix.lower() in PARQUET_SUFFIXES else "lines"
    if fmt == "parquet" and output is None and sys.stdout.isatty():
        raise UsageError("parquet is binary: write it to a file with -o keys.parquet (or pipe stdout)")
    selection = select_keys(folder, min_score, top_percent)
    if fmt == "parquet":
        data = _keys_parquet(selection.kept)
    else:
        from qualiclip_cli.core.names import csv_cell

        data = "".join(csv_cell(k.key) + "\n" for k in selection.kept).encode("utf-8")
    if output is not None:
        from qualiclip_cli.core.atomic import atomic_write_bytes

        atomic_write_bytes(output, data)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    cut = f", lowest kept score {selection.threshold:.4f}" if selection.threshold is not None else ""
    notes().print(markup_safe(f"qualiclip: kept {len(selection.kept)} of {selection.considered} scored samples "
                              f"({selection.errors} error rows left out) from {selection.files} files{cut}"),
                  highlight=False)
    raise typer.Exit(EXIT_OK)


def _keys_parquet(kept) -> bytes:
    import pyarrow as pa

    from qualiclip_cli.core.dataset.table import table_bytes

    table = pa.table({"__key__": pa.array([k.key for k in kept], pa.string()),
                      "shard": pa.array([k.shard for k in kept], pa.string()),
                      "score": pa.array([k.score for k in kept], pa.float64())})
    return table_bytes(table)
