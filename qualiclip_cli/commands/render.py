"""Rendering of score records: a Rich table for people (format "text"), the stable machine formats for programs."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, TextIO, get_args

from rich.markup import escape
from rich.table import Table

from qualiclip_cli.commands.console import markup_safe, print_table, table_width

#: text: a table for people ("table" is accepted as another name for it); csv, jsonl, json: for programs; parquet
#: (binary, the `data` extra): for dataset tools.
ScoreFormat = Literal["text", "table", "csv", "jsonl", "json", "parquet"]
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


#: The sub-score columns' headers in the text table, short enough that `--details` fits 80 columns.
PAIR_HEADERS = {"overall": "ovrl", "sharpness": "shrp", "edges": "edge", "resolution": "res", "noise": "nois",
                "quality": "qual", "picture": "pict"}
#: A path is never shortened below this many cells.
MIN_PATH_WIDTH = 16


def records_table(records: Iterable, details: bool = False, width: int | None = None, groups=None) -> Table:
    """One row per record: the score with 4 decimals (as the plans show it), the sub-scores with 2 (the machine
    formats carry them in full), under short headers (`PAIR_HEADERS`), and, when a RAW is among them, where each
    one's pixels came from (`source`). Names are shown escaped
    (`core.names.display`): one row is one line of text, and nothing in a name is read as markup or reaches the
    terminal as a control character. With `width` (a terminal's), paths too long for what the other columns
    leave are shortened from the left ("…/shoot/IMG_0042.jpg"), so each photo's file name stays readable.
    ``groups`` (id(record) -> `groups.GroupInfo`): a group column, named on each group's first row, and each
    photo's rank in it ("1/4 best", "2/4", "bracket" for an exposure bracket's frames) with the best's margin."""
    from rich.cells import cell_len

    from qualiclip_cli.core.names import display
    from qualiclip_cli.core.records import PAIR_NAMES

    records = list(records)
    # Where the pixels came from, shown once a RAW is among the rows (its preview, or its development).
    sources = any(rec.source not in (None, "file") for rec in records)
    rows = []
    previous = None
    for rec in records:
        if rec.ok:
            row = [f"{rec.score:.4f}"]
            if details:
                row += [f"{(rec.pairs or {}).get(n, float('nan')):.2f}" for n in PAIR_NAMES]
            row += [rec.source or ""] if sources else []
            row.append("cached" if rec.cached else "ok")
        else:
            row = (["—"] + (["—"] * len(PAIR_NAMES) if details else []) + (["—"] if sources else [])
                   + [f"[red]error[/]: {markup_safe(rec.error)}"])
        if groups is not None:
            row = _group_cells(groups.get(id(rec)), previous) + row
            previous = groups.get(id(rec))
        rows.append((display(rec.path), row))

    def build(paths: list[str], measuring: bool = False, path_width: int | None = None) -> Table:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False, padding=(0, 1, 0, 0))
        table.add_column("path", overflow="fold", width=path_width)  # a long error folds, not the path
        if groups is not None:
            table.add_column("group")
            table.add_column("rank")
            table.add_column("margin", justify="right")
        table.add_column("score", justify="right")
        if details:
            for name in PAIR_NAMES:
                table.add_column(PAIR_HEADERS[name], justify="right")
        if sources:
            table.add_column("source")
        table.add_column("status", overflow="fold")
        for path, (_, row) in zip(paths, rows):
            if measuring:  # an error's text may fold in its column; the path keeps its room
                row = [*row[:-1], "cached"]
            table.add_row(escape(path), *row)
        return table

    paths = [path for path, _ in rows]
    if width is not None and paths:
        others = table_width(build(["" for _ in paths], measuring=True))  # the columns but the path
        budget = max(MIN_PATH_WIDTH, width - others - 1)
        paths = [shorten_left(path, budget) for path in paths]
        return build(paths, path_width=max(cell_len(path) for path in paths))
    return build(paths)


def _group_cells(info, previous) -> list[str]:
    """group, rank, margin cells of one row; the group id only where a new group starts."""
    if info is None:
        return ["—", "", ""]
    rank = f"{info.rank}/{info.size}" + (" best" if info.best and info.size > 1 else "")
    if info.bracket:
        rank += " bracket"
    margin = f"+{info.margin:.4f}" if info.best and info.margin is not None else ""
    same = previous is not None and previous.group == info.group
    return ["" if same else info.group, rank, margin]


def shorten_left(text: str, width: int) -> str:
    """`text` in at most `width` terminal cells, its beginning replaced by "…" when it is longer (the end of a
    path, the file name, is what tells photos apart)."""
    from rich.cells import cell_len

    if cell_len(text) <= width:
        return text
    kept = ""
    for ch in reversed(text):
        if cell_len(kept) + cell_len(ch) + 1 > width:
            break
        kept = ch + kept
    return "…" + kept


def write_records(records: list, fmt: str, out: TextIO, details: bool, **machine) -> None:
    """``machine``: options of the machine formats' writers (`formats.WRITERS`: provenance, full_precision,
    groups); the table takes ``groups`` too."""
    from qualiclip_cli.commands.formats import WRITERS

    if fmt == "text":
        from qualiclip_cli.commands.console import stdout, stdout_is_terminal

        width = stdout().width if out is sys.stdout and stdout_is_terminal() else None
        table = records_table(records, details, width, groups=machine.get("groups"))
        print_table(table, None if out is sys.stdout else out)
    else:
        WRITERS[fmt](records, out, details=details, **machine)


def write_output_file(path: Path, records: list, fmt: str, details: bool, **machine) -> None:
    """Write atomically (temp file + rename), so a crash never leaves a half-written results file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write_records(records, fmt, fh, details, **machine)
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
        if ext == "pq":
            return "parquet"
        return ext if ext in ("csv", "jsonl", "json", "parquet") else "jsonl"
    return "text" if stdout_is_terminal() else "jsonl"
