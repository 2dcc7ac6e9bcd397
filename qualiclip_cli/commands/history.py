"""`qualiclip history`: the journaled runs, newest first, and whether each was undone."""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Annotated, Literal, Optional, get_args

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands.errors import handle_errors
from qualiclip_cli.commands.formats import canonical, write_rows

#: text: a table for people ("table" is accepted as another name for it); jsonl, json: for programs.
HistoryFormat = Literal["text", "table", "jsonl", "json"]
HISTORY_FORMATS: tuple[str, ...] = get_args(HistoryFormat)


@handle_errors
def history(
    fmt: Annotated[
        Optional[HistoryFormat],
        typer.Option("--format", "-f", help="text (a table), jsonl or json; table: same as text (default: text on a "
                                            "terminal, jsonl otherwise)."),
    ] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Only the N newest runs.")] = None,
    quiet: opt.Quiet = False,
) -> None:
    """List the runs of cull, sort and tag (newest first) with their run ids, counts and undo state.

    Examples:

        qualiclip history --limit 5

    Times are local (run ids are in UTC). Dry runs and list-only culls change nothing and are not recorded. Undo a
    run with `qualiclip undo RUN_ID`.
    """
    from qualiclip_cli.commands.console import print_table, stdout_is_terminal
    from qualiclip_cli.core.curation import journal

    fmt = canonical(fmt) if fmt is not None else "text" if stdout_is_terminal() else "jsonl"
    runs = journal.history()
    if limit is not None:
        runs = runs[:limit]
    if fmt == "text":
        if not runs:
            from qualiclip_cli.commands.console import notes

            notes().print("qualiclip: no runs yet", highlight=False)
            return
        print_table(_table(runs))
        return
    write_rows([{**asdict(r), "state": r.state} for r in runs], fmt, sys.stdout)
    sys.stdout.flush()


def _table(runs):
    from rich.table import Table

    from qualiclip_cli.commands.console import markup_safe

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    for name, justify in (("run", "left"), ("local time", "left"), ("command", "left"), ("done", "right"),
                          ("failed", "right"), ("state", "left"), ("command line", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for run in runs:
        if run.problem:
            table.add_row(run.run_id, "", "", "", "", "[red]unreadable[/]", markup_safe(run.problem))
            continue
        when = _local_time(run.time)
        table.add_row(run.run_id, when, run.command, str(run.counts.get("done", 0)), str(run.counts.get("failed", 0)),
                      run.state, markup_safe(" ".join(run.argv)))
    return table


def _local_time(recorded: str) -> str:
    """A journal's ISO time (with its UTC offset) as this machine's local time, to the second."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(recorded).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):
        return recorded[:19].replace("T", " ")
