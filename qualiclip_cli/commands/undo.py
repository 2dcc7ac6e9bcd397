"""`qualiclip undo [RUN_ID]`: put back what a cull, sort or tag run changed, verified by content hash."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands import plan_render as pr
from qualiclip_cli.commands.console import notes, stderr
from qualiclip_cli.commands.errors import EXIT_OK, EXIT_PARTIAL, handle_errors
from qualiclip_cli.commands.formats import write_rows


@handle_errors
def undo(
    run_id: Annotated[
        Optional[str],
        typer.Argument(help="The run to undo, as listed by `qualiclip history`; default: the latest run not yet undone.",
                       show_default=False),
    ] = None,
    fmt: Annotated[
        pr.PlanFormatChoice, typer.Option("--format", "-f", help="text, jsonl or json (index, action, path, status, message)."),
    ] = "text",
    quiet: opt.Quiet = False,
) -> None:
    """Undo a run: every moved, copied, renamed or trashed file goes back where it was, sidecars get their
    previous content back.

    Examples:

        qualiclip undo           # put back the latest run
        qualiclip undo RUN_ID    # or a run that qualiclip history lists

    Each file is found by its SHA-256, so a file changed since the run, or a place now taken by another file,
    is never overwritten: it is left where it is and reported (exit 3). Symbolic links are never followed: an
    original path that is now a link is reported and the photo stays where the run put it; a file is only
    removed while another file holds the same bytes. A journal that does not match what qualiclip writes
    (edited, forged, touching paths outside the run's folders) is refused before anything changes (exit 1).
    A partially undone run can be undone again. One line per operation on stdout, the summary on stderr.
    """
    from qualiclip_cli.core.curation.undo import undo as undo_run
    from qualiclip_cli.core.curation.undo import undo_latest
    from qualiclip_cli.core.names import display

    report = undo_run(run_id) if run_id is not None else undo_latest()
    run_id = report.run_id
    items = list(reversed(report.items))  # plan order
    out = sys.stdout
    if fmt == "text":
        for item in items:
            out.write(f"{item.status:<13} {pr.display_path(item.path) if item.path else '?'}  ({display(item.message)})\n")
    else:
        write_rows([{"index": i.index, "action": i.action, "path": i.path, "status": i.status, "message": i.message}
                    for i in items], fmt, out)
    out.flush()

    console = stderr()
    for item in report.problems:
        console.print(f"qualiclip: warning: not restored: {display(item.path)}: {display(item.message)}", highlight=False,
                      markup=False)
    unchanged = sum(1 for i in report.items if i.status == "nothing_to_do")
    summary = f"undo {run_id}: {len(report.restored)} restored"
    if unchanged:
        summary += f", {unchanged} needed nothing"
    if report.problems:
        summary += f", {len(report.problems)} could not be restored (left where they are; run undo again after fixing)"
    notes().print("qualiclip: " + summary, highlight=False, markup=False)
    raise typer.Exit(EXIT_OK if report.complete else EXIT_PARTIAL)
