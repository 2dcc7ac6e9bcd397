"""`qualiclip tag PATH…`: write star ratings and scores into XMP sidecars, merged, journaled, undoable."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands import plan_render as pr
from qualiclip_cli.commands.console import notes
from qualiclip_cli.commands.errors import handle_errors
from qualiclip_cli.core.curation.xmp import SidecarNaming


@handle_errors
@opt.with_options(*opt.GROUPING_OPTIONS, *opt.WALK, *opt.SCORING, "quiet")
def tag(
    paths: opt.PathsArg,
    tiers: Annotated[
        str, typer.Option("--tiers", help="Four increasing score thresholds between 1, 2, 3, 4 and 5 stars."),
    ] = "0.2,0.4,0.6,0.8",
    reject_below: Annotated[
        Optional[float],
        typer.Option("--reject-below", help="Rate photos scoring below this -1 (rejected) instead of giving stars."),
    ] = None,
    reject_label: Annotated[
        Optional[str],
        typer.Option("--reject-label",
                     help="With --reject-below: also give the rejects this xmp:Label (e.g. Red). A label a photo "
                          "already has is kept (see --overwrite-labels)."),
    ] = None,
    label: Annotated[Optional[str], typer.Option("--label", hidden=True)] = None,
    overwrite_ratings: Annotated[
        bool,
        typer.Option("--overwrite-ratings",
                     help="Also replace ratings qualiclip did not write (set by you or another program); without "
                          "it they are kept and counted in the summary."),
    ] = False,
    overwrite_labels: Annotated[
        bool,
        typer.Option("--overwrite-labels", help="With --reject-label: also replace labels qualiclip did not write."),
    ] = False,
    sidecar: Annotated[
        SidecarNaming,
        typer.Option("--sidecar", help="Sidecar naming: adobe (IMG_1.xmp: Lightroom, digiKam) or append (IMG_1.jpg.xmp: "
                                       "darktable)."),
    ] = "adobe",
    rewrite_read_only: Annotated[
        bool,
        typer.Option("--rewrite-read-only",
                     help="Also rewrite sidecars that are read-only (no write permission, e.g. chmod 444), keeping "
                          "their permissions; without it they are left untouched and reported (exit 3)."),
    ] = False,
    per_group: Annotated[
        bool,
        typer.Option("--per-group", help="Also write each photo's burst group as keywords (its "
                                         "group's id, and whether it is the best of its group or in an exposure "
                                         "bracket, under a qualiclip keyword); ours are replaced on each such run, "
                                         "yours are kept."),
    ] = False,
    dry_run: pr.DryRun = False,
    fmt: pr.PlanFormat = "text",

    **shared,
) -> None:
    """Write XMP sidecars: xmp:Rating stars from the score's tier (-1 = rejected with --reject-below), an
    optional label for the rejects, and the score, sub-scores, weights hash and preprocessing in the
    qualiclip: namespace.

    Examples:

        qualiclip tag shoot/                                         # 1-5 stars in XMP sidecars
        qualiclip tag shoot/ --reject-below 0.3 --reject-label Red   # rating -1 and a red label below 0.3
        qualiclip tag shoot/ --per-group                             # and keywords qualiclip|group|<id>, qualiclip|best

    Your own choices come first: a rating or label qualiclip did not write is kept (--overwrite-ratings,
    --overwrite-labels replace them); ratings qualiclip wrote earlier are updated. An existing sidecar in
    either naming (IMG_1.xmp, IMG_1.jpg.xmp) is updated rather than joined by a second one; a RAW+JPEG pair's
    RAW sidecar (IMG_1.CR2.xmp) gets the same rating when it exists or with --sidecar append.

    Existing sidecars are merged: everything else in them is kept, permissions and encoding too. A sidecar
    that is not valid XMP, contains a DTD, is larger than 4 MiB, is a symbolic link or a FIFO (or anything but
    a regular file), or is read-only (see --rewrite-read-only) is left untouched and reported (exit 3).
    Folders named _rejected (cull's quarantine) are not walked, nor the folders earlier cull --to and sort
    --into runs (not undone) put photos into. Every write is journaled (`qualiclip undo`
    restores the previous sidecars). Exit codes: 0 ok, 3 some files failed, 1 error, 2 bad usage.
    """
    from qualiclip_cli.commands.scoring import run_scoring, summarise
    from qualiclip_cli.core.curation import xmp
    from qualiclip_cli.core.curation.execute import predict_failures
    from qualiclip_cli.core.curation.plan import QUARANTINE_DIRNAME, curated_folders, plan_tag
    from qualiclip_cli.core.errors import UsageError

    if label is not None:
        raise UsageError("--label was removed: it labelled every photo, replacing labels you had set; use "
                         "--reject-below T --reject-label LABEL to label the rejects only")
    if reject_label is not None and reject_below is None:
        raise UsageError("--reject-label only applies with --reject-below T (it labels the photos rated -1)")
    if overwrite_labels and reject_label is None:
        raise UsageError("--overwrite-labels only applies with --reject-label LABEL")
    thresholds = pr.parse_tiers(tiers)
    xmp.rating_for(0.5, thresholds, reject_below)  # validates --reject-below before any scoring
    xmp.check_label(reject_label)

    curated = curated_folders(paths)
    for folder, run_id in curated:
        notes().print(f"qualiclip: note: not walking {pr.display_path(folder)} (photos put there by run {run_id})",
                       highlight=False, markup=False)
    grouping = opt.group_options(shared)
    choices = opt.ScoringChoices.from_params({**shared, "paths": paths}, extra_exclude=[QUARANTINE_DIRNAME])
    scoring = run_scoring(choices, skip_under=[folder for folder, _ in curated], signals=per_group)
    summarise(scoring.records, scoring.elapsed, scoring.skipped)
    keywords = None
    if per_group:
        from qualiclip_cli.core.curation.groups import group_keywords, group_records

        keywords = group_keywords(scoring.records, group_records(scoring.records, grouping))
    plan = plan_tag(scoring.records, scoring.weights_sha256, scoring.identity, thresholds=thresholds,
                    reject_below=reject_below, reject_label=reject_label, naming=sidecar,
                    rewrite_read_only=rewrite_read_only, overwrite_ratings=overwrite_ratings,
                    overwrite_labels=overwrite_labels, keywords=keywords)
    predicted = predict_failures(plan) if dry_run else {}
    code = pr.carry_out(plan, records=scoring.records, action="write_sidecar", command="tag",
                        argv=pr.invocation("tag", paths), dry_run=dry_run, fmt=fmt, predicted_failures=predicted)
    raise typer.Exit(code)

