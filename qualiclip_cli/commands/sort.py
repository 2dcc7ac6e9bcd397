"""`qualiclip sort PATH…`: print the ranking, organise into tier folders, or rename by rank; undoable."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands import plan_render as pr
from qualiclip_cli.commands.errors import EXIT_OK, EXIT_PARTIAL, handle_errors
from qualiclip_cli.commands.formats import write_rows


@handle_errors
@opt.with_options(*opt.WALK, *opt.SCORING, "quiet")
def sort(
    paths: opt.PathsArg,
    into: Annotated[
        Optional[Path],
        typer.Option("--into", help="Copy (or --move) photos into tier folders DIR/1-poor, 2-fair, 3-good, 4-very-good, "
                                    "5-excellent, keeping their sub-folders under each PATH."),
    ] = None,
    tiers: Annotated[
        Optional[str],
        typer.Option("--tiers", help="Four increasing thresholds between the tiers, for --into (default: 0.2,0.4,0.6,0.8)."),
    ] = None,
    move: Annotated[bool, typer.Option("--move", help="With --into: move instead of copy.")] = False,
    rank_prefix: Annotated[
        bool,
        typer.Option("--rank-prefix", help="Rename photos in place by rank, best first: 0001_IMG_1.jpg (one ranking over "
                                           "all PATHs). Run again, it replaces the prefix it wrote before."),
    ] = False,
    by: opt.By = "score",
    with_siblings: pr.WithSiblings = True,
    on_collision: pr.OnCollision = "number",
    dry_run: pr.DryRun = False,
    fmt: pr.PlanFormat = "text",

    **shared,
) -> None:
    """Order photos by score: print the ranking (best first), or organise the files.

    Examples:

        qualiclip sort shoot/                      # the ranking, best first
        qualiclip sort shoot/ --into by-quality/   # copies into tier folders

    Without --into or --rank-prefix nothing changes: the ranked list goes to stdout (rank, score, path; or
    jsonl/json with --format). --into DIR copies (default) or moves photos into tier folders (sub-folders kept:
    shoot/2024/a.jpg goes to DIR/3-good/2024/a.jpg); --rank-prefix renames them in place, replacing a rank
    prefix that an earlier --rank-prefix run wrote (as its journal records). --by sharpness (or any sub-score)
    ranks and tiers by that sub-score instead of the score. Sidecars and RAW siblings follow their photo (all of them or none); photos that are
    symbolic links are left in place, a tier folder that is one is refused; nothing is overwritten; every
    change is journaled (`qualiclip undo`). Folders named _rejected (cull's quarantine) and the --into folder are not
    walked. Exit codes: 0 ok, 3 some files failed, 1 error, 2 bad usage.
    """
    from qualiclip_cli.commands.scoring import run_scoring, summarise
    from qualiclip_cli.core.curation.plan import QUARANTINE_DIRNAME, plan_rank_prefix, plan_sort_into
    from qualiclip_cli.core.errors import UsageError

    if into is not None and rank_prefix:
        raise UsageError("--into and --rank-prefix conflict: use one of them")
    if into is None and (move or tiers is not None):
        raise UsageError(f"{'--move' if move else '--tiers'} only applies with --into DIR")
    thresholds = pr.parse_tiers(tiers) if tiers is not None else None

    choices = opt.ScoringChoices.from_params({**shared, "paths": paths}, extra_exclude=[QUARANTINE_DIRNAME])
    scoring = run_scoring(choices, skip_under=[into] if into is not None else [])
    summarise(scoring.records, scoring.elapsed, scoring.skipped)
    records = scoring.records

    if into is None and not rank_prefix:
        _print_ranking(records, fmt, by)
        raise typer.Exit(EXIT_PARTIAL if any(not r.ok for r in records) else EXIT_OK)

    if into is not None:
        mode = "move" if move else "copy"
        kwargs = {"thresholds": thresholds} if thresholds is not None else {}
        plan = plan_sort_into(records, into, mode=mode, with_siblings=with_siblings, on_collision=on_collision,
                              roots=paths, by=by, **kwargs)
    else:
        mode = "rename"
        plan = plan_rank_prefix(records, with_siblings=with_siblings, on_collision=on_collision, by=by)
    code = pr.carry_out(plan, records=records, action=mode, command="sort", argv=pr.invocation("sort", paths),
                        dry_run=dry_run, fmt=fmt)
    raise typer.Exit(code)


def _print_ranking(records: list, fmt: str, by: str = "score") -> None:
    """rank, value, path per line (the value ranked by: the score, or the --by sub-score); jsonl/json rows
    carry rank, path and score, plus the sub-score under its own name with --by."""
    from qualiclip_cli.core.curation.selection import ranked, value_of

    order = ranked(records, by)
    out = sys.stdout
    if fmt == "text":
        width = len(str(len(order)))
        for rank, rec in order:
            out.write(f"{rank:>{width}}  {value_of(rec, by):.4f}  {pr.display_path(rec.path)}\n")
    else:
        rows = [{"rank": rank, "path": rec.path, "score": rec.score} for rank, rec in order]
        if by != "score":
            for row, (_, rec) in zip(rows, order):
                row[by] = value_of(rec, by)
        write_rows(rows, fmt, out)
    out.flush()
