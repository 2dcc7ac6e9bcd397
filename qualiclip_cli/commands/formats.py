"""The stable machine formats (jsonl, json, csv) of score records and of the commands' other rows.

Field order and names are documented in the README; changing them is a breaking change. Any file name is
carried losslessly (see `core.names`): the output is always valid UTF-8, a name's undecodable bytes are
\\udcXX escapes (JSON's own in jsonl/json, the same text in csv), and NaN is never written (null, or an empty
csv cell).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from typing import TextIO

from qualiclip_cli.commands.console import machine_stream
from qualiclip_cli.core.names import csv_cell, csv_text, json_dumps
from qualiclip_cli.core.records import BASE_FIELDS, PAIR_NAMES, ScoreRecord


def canonical(fmt: str) -> str:
    """The human format is called "text" in every command; "table", its old name in score, history and
    evaluate, is read as "text"."""
    return "text" if fmt == "table" else fmt


def write_rows(rows: Iterable[dict], fmt: str, out: TextIO) -> None:
    """The two JSON machine formats for any list of flat dicts: one object per line, or one indented list."""
    out = machine_stream(out)
    if fmt == "jsonl":
        for row in rows:
            out.write(json_dumps(row) + "\n")
    elif fmt == "json":
        out.write(json_dumps(list(rows), indent=2) + "\n")
    else:
        raise ValueError(f"unknown JSON format {fmt!r}")


def write_jsonl(records: Iterable[ScoreRecord], out: TextIO, details: bool = False) -> None:
    write_rows((rec.to_dict(details) for rec in records), "jsonl", out)


def write_json(records: Iterable[ScoreRecord], out: TextIO, details: bool = False) -> None:
    write_rows((rec.to_dict(details) for rec in records), "json", out)


def csv_header(details: bool = False) -> list[str]:
    return list(BASE_FIELDS) + ([f"pair_{name}" for name in PAIR_NAMES] if details else [])


def write_csv(records: Iterable[ScoreRecord], out: TextIO, details: bool = False) -> None:
    writer = csv.writer(machine_stream(out), lineterminator="\n")
    writer.writerow(csv_header(details))
    for rec in records:
        row = [csv_cell(rec.path), _fmt(rec.score), rec.status, csv_cell(rec.error or ""), _int(rec.width),
               _int(rec.height)]
        if details:
            row += [_fmt((rec.pairs or {}).get(name)) for name in PAIR_NAMES]
        writer.writerow(row)


def _fmt(x: float | None) -> str:
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def _int(x: int | None) -> str:
    return "" if x is None else str(x)


WRITERS = {"jsonl": write_jsonl, "json": write_json, "csv": write_csv}


def read_records(text: str, fmt: str) -> list[ScoreRecord]:
    """Parse any of the machine formats back into records (the inverse of the writers)."""
    if fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    elif fmt == "json":
        rows = json.loads(text)
    elif fmt == "csv":
        rows = []
        for r in csv.DictReader(io.StringIO(text)):
            pairs = {n: float(r[f"pair_{n}"]) for n in PAIR_NAMES if r.get(f"pair_{n}")} or None
            rows.append({
                "path": csv_text(r["path"]),
                "score": float(r["score"]) if r["score"] else None,
                "status": r["status"],
                "error": csv_text(r["error"]) or None,
                "width": int(r["width"]) if r["width"] else None,
                "height": int(r["height"]) if r["height"] else None,
                "pairs": pairs,
            })
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return [ScoreRecord(**{k: row.get(k) for k in (*BASE_FIELDS, "pairs")}) for row in rows]
