"""Rendering of score records: a Rich table for people (format "text"), the stable machine formats for programs."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, TextIO, get_args

from rich.table import Table

from qualiclip_cli.commands.console import markup_safe, print_table

#: text: a table for people ("table" is accepted as another name for it); csv, jsonl, json: for programs.
ScoreFormat = Literal["text", "table", "csv", "jsonl", "json"]
FORMATS: tuple[str, ...] = get_args(ScoreFormat)
ScoreSort = Literal["path", "score", "-score"]
SORTS: tuple[str, ...] = get_args(ScoreSort)


def sort_records(records: list, order: ScoreSort) -> list:
    """path: walk order. -score: the core's ranking (`selection.best_first`, the order `sort` prints: equal
    scores by path). score: its exact reverse. Records without a score come last either way, in walk order."""
    from qualiclip_cli.core.curation.selection import best_first

    if order == "path":
        return records  # walk order is already sorted by path
    ranking = best_first(records)
    ranked_ids = {id(r) for r in ranking}
    if order == "score":
        ranking.reverse()
    return ranking + [r for r in records if id(r) not in ranked_ids]


def records_table(records: Iterable, details: bool = False) -> Table:
    """One row per record. Names are shown escaped (`core.names.display`): one row is one line of text, and
    nothing in a name is read as markup or reaches the terminal as a control character."""
    from qualiclip_cli.core.records import PAIR_NAMES

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("path", overflow="fold")
    table.add_column("score", justify="right")
    if details:
        for name in PAIR_NAMES:
            table.add_column(name, justify="right")
    table.add_column("status")
    for rec in records:
        if rec.ok:
            row = [markup_safe(rec.path), f"{rec.score:.3f}"]
            if details:
                row += [f"{(rec.pairs or {}).get(n, float('nan')):.3f}" for n in PAIR_NAMES]
            row.append("ok" + (" (cached)" if rec.cached else ""))
        else:
            row = [markup_safe(rec.path), "—"] + (["—"] * len(PAIR_NAMES) if details else []) + [
                f"[red]error[/]: {markup_safe(rec.error)}"]
        table.add_row(*row)
    return table


def write_records(records: list, fmt: str, out: TextIO, details: bool) -> None:
    from qualiclip_cli.commands.formats import WRITERS

    if fmt == "text":
        print_table(records_table(records, details), None if out is sys.stdout else out)
    else:
        WRITERS[fmt](records, out, details=details)


def write_output_file(path: Path, records: list, fmt: str, details: bool) -> None:
    """Write atomically (temp file + rename), so a crash never leaves a half-written results file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write_records(records, fmt, fh, details)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def choose_format(requested: str | None, output: Path | None) -> str:
    """Explicit --format wins ("table" read as "text"); else from the output file's extension; else text on a
    terminal, jsonl in a pipe."""
    from qualiclip_cli.commands.console import stdout_is_terminal
    from qualiclip_cli.commands.formats import canonical

    if requested:
        return canonical(requested)
    if output is not None:
        ext = Path(output).suffix.lower().lstrip(".")
        return ext if ext in ("csv", "jsonl", "json") else "jsonl"
    return "text" if stdout_is_terminal() else "jsonl"
