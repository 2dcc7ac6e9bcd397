"""`qualiclip cull PATH… --below T`: list, quarantine, copy or trash the low scorers; journaled, undoable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from qualiclip_cli.commands import console
from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands import plan_render as pr
from qualiclip_cli.commands.errors import handle_errors
from qualiclip_cli.core.curation.plan import CullAction


@handle_errors
@opt.with_options(*opt.GROUPING_OPTIONS, *opt.WALK, *opt.SCORING, "quiet")
def cull(
    paths: opt.PathsArg,
    below: Annotated[Optional[float], typer.Option("--below", help="Cull photos scoring strictly below this (0–1].")] = None,
    keep_top: Annotated[Optional[int], typer.Option("--keep-top", help="Cull all but the best N.")] = None,
    bottom_percent: Annotated[Optional[float], typer.Option("--bottom-percent", help="Cull the worst P percent (rounded down).")] = None,
    unreadable: Annotated[
        bool,
        typer.Option("--unreadable", help="Also cull the broken files: empty (0 bytes), truncated or not decodable as an "
                                          "image. Alone: only them; with --below etc.: those and the low scorers."),
    ] = False,
    by: opt.By = "score",
    per_group: Annotated[
        bool,
        typer.Option("--per-group", help="Apply the keep-top or bottom-percent cut within each burst "
                                         "group (as qualiclip group makes them) instead of over all photos; single "
                                         "photos are kept unless --below selects them; exposure brackets are never "
                                         "culled."),
    ] = False,
    action: Annotated[
        Optional[CullAction],
        typer.Option("--action", "-a", help="list, move (into the quarantine folder), copy (into it) or trash (the system "
                                            "trash; refused if there is none, never deleted). Default: move on a terminal, "
                                            "list when stdout is piped or redirected."),
    ] = None,
    to: Annotated[
        Optional[Path],
        typer.Option("--to", help="Quarantine folder for move/copy (default: _rejected/ inside each PATH, keeping "
                                  "sub-folders; a _rejected that is a symbolic link is refused, --to follows one)."),
    ] = None,
    with_siblings: pr.WithSiblings = True,
    on_collision: pr.OnCollision = "number",
    dry_run: pr.DryRun = False,
    fmt: pr.PlanFormat = "text",

    **shared,
) -> None:
    """Act on the low scorers: list them, move or copy them into a quarantine folder, or send them to the trash.

    Examples:

        qualiclip cull shoot/ --below 0.35 --dry-run    # the plan; nothing changes
        qualiclip cull shoot/ --below 0.35 --action move  # into shoot/_rejected/
        qualiclip cull shoot/ --per-group --keep-top 1    # the best frame of every burst stays

    Give --below, --keep-top or --bottom-percent (--below combines with either: a photo is culled only if all
    given criteria select it), and/or --unreadable (broken files, which have no score). --by sharpness (or any
    sub-score) makes the score criteria look at that sub-score. With --per-group they apply within each group
    of `qualiclip group` (its --burst-gap etc. thresholds). Sidecars and RAW+JPEG siblings go with their
    photo, all of them or none.
    Photos that are symbolic links are left in place. Nothing is ever deleted or overwritten; every change is
    journaled: `qualiclip undo` puts it back. Folders named _rejected (the quarantine) are not walked, so a
    second cull scores nothing again. The plan/report goes to stdout, the
    summary and the run id to stderr. Exit codes: 0 ok, 3 some files failed, 1 error, 2 bad usage.
    """
    from qualiclip_cli.commands.scoring import run_scoring, summarise
    from qualiclip_cli.core.curation.plan import QUARANTINE_DIRNAME, plan_cull, refuse_linked_quarantine
    from qualiclip_cli.core.curation.selection import CullCriteria
    from qualiclip_cli.core.errors import UsageError

    criteria = CullCriteria(below=below, keep_top=keep_top, bottom_percent=bottom_percent, by=by,
                            unreadable=unreadable)
    if by != "score" and not criteria.by_score:
        raise UsageError("--by applies to --below, --keep-top and --bottom-percent: give one of them")
    if action is None:
        action = "move" if console.stdout_is_terminal() else "list"
    if to is not None and action not in ("move", "copy"):
        raise UsageError("--to only applies to --action move or copy")

    if action in ("move", "copy") and to is None:
        refuse_linked_quarantine(paths)  # before scoring: a symlinked _rejected would send rejects elsewhere
    grouping = opt.group_options(shared)
    choices = opt.ScoringChoices.from_params({**shared, "paths": paths}, extra_exclude=[QUARANTINE_DIRNAME])
    scoring = run_scoring(choices, skip_under=[to] if to is not None else [], signals=per_group)
    summarise(scoring.records, scoring.elapsed, scoring.skipped)
    selection = None
    if per_group:
        from qualiclip_cli.core.curation.groups import group_records, select_per_group

        selection = select_per_group(scoring.records, group_records(scoring.records, grouping), criteria)
    plan = plan_cull(scoring.records, criteria, action=action, roots=paths, quarantine_dir=to,
                     with_siblings=with_siblings, on_collision=on_collision, selection=selection)
    # A broken file culled as asked is no failure of this run (one left out or failing to move still is).
    records = [r for r in scoring.records if not (unreadable and r.damaged)]
    code = pr.carry_out(plan, records=records, action=action, command="cull",
                        argv=pr.invocation("cull", paths), dry_run=dry_run, fmt=fmt)
    raise typer.Exit(code)
