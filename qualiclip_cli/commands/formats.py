"""The stable machine formats (jsonl, json, csv) of score records and of the commands' other rows.

Field order and names are documented in the README; changing them is a breaking change. Any file name is
carried losslessly (see `core.names`): the output is always valid UTF-8, a name's undecodable bytes are
\\udcXX escapes (JSON's own in jsonl/json, the same text in csv), and NaN is never written (null, or an empty
csv cell).

Floats are written rounded to `SIGNIFICANT` significant digits (the model's own float32 precision is about 7, and
scores that differ past the 6th digit rank the same photos alike); ``full_precision`` writes them exactly. Score
rows carry the run's provenance (`PROVENANCE_FIELDS`: the weights' SHA-256 and the scoring identity) after the
documented fields; `pairs` is null without details, never absent.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from typing import TextIO

from qualiclip_cli.commands.console import machine_stream
from qualiclip_cli.core.names import csv_cell, csv_text, json_dumps
from qualiclip_cli.core.records import BASE_FIELDS, LATER_FIELDS, PAIR_NAMES, ScoreRecord


def canonical(fmt: str) -> str:
    """The human format is called "text" in every command; "table", its old name in score, history and
    evaluate, is read as "text"."""
    return "text" if fmt == "table" else fmt


#: Significant digits of every float in the machine formats, unless full precision is asked for.
SIGNIFICANT = 6

#: The fields after the documented ones in every score row: which weights and which scoring rules gave the scores.
PROVENANCE_FIELDS = ("weights_sha256", "identity")


def rounded(value, full_precision: bool = False):
    """``value`` with every float in it (also inside dicts and lists) rounded to `SIGNIFICANT` significant
    digits, as written; NaN and infinities are left for the writers to drop."""
    if full_precision:
        return value
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def write_rows(rows: Iterable[dict], fmt: str, out: TextIO, full_precision: bool = False) -> None:
    """The two JSON machine formats for any list of flat dicts: one object per line, or one indented list.
    Floats are rounded (see `rounded`) unless ``full_precision``."""
    out = machine_stream(out)
    rows = (rounded(row, full_precision) for row in rows)
    if fmt == "jsonl":
        for row in rows:
            out.write(json_dumps(row) + "\n")
    elif fmt == "json":
        out.write(json_dumps(list(rows), indent=2) + "\n")
    else:
        raise ValueError(f"unknown JSON format {fmt!r}")


#: The fields `group` and `score --groups` add at the end (after `source`; csv: the last columns).
GROUP_FIELDS = ("group", "group_size", "rank_in_group", "best", "margin", "bracket", "capture_time", "time_source")


def group_fields(rec: ScoreRecord, groups: Mapping[int, object]) -> dict:
    """The `GROUP_FIELDS` of one record; ``groups`` maps id(record) to its `groups.GroupInfo` (absent: none)."""
    g = groups.get(id(rec))
    signals = rec.signals
    return {
        "group": g.group if g else None, "group_size": g.size if g else None, "rank_in_group": g.rank if g else None,
        "best": g.best if g else None, "margin": g.margin if g else None, "bracket": g.bracket if g else None,
        "capture_time": signals.capture_text if signals else None,
        "time_source": signals.time_source if signals else None,
    }


def score_rows(records: Iterable[ScoreRecord], details: bool = False, provenance: Mapping[str, str] | None = None,
               groups: Mapping[int, object] | None = None):
    """The jsonl/json objects of score records: the documented fields, `pairs` (null without ``details``), the
    provenance fields when given, the fields added since (`records.LATER_FIELDS`: `source`), then the group
    fields with ``groups`` (see `group_fields`). New fields only ever come at the end."""
    extra = {name: (provenance or {}).get(name) for name in PROVENANCE_FIELDS} if provenance is not None else {}
    for rec in records:
        row = rec.to_dict(details)
        later = {name: row.pop(name) for name in LATER_FIELDS}
        yield {**row, **extra, **later, **(group_fields(rec, groups) if groups is not None else {})}


def write_jsonl(records: Iterable[ScoreRecord], out: TextIO, details: bool = False,
                provenance: Mapping[str, str] | None = None, full_precision: bool = False,
                groups: Mapping[int, object] | None = None) -> None:
    write_rows(score_rows(records, details, provenance, groups), "jsonl", out, full_precision)


def write_json(records: Iterable[ScoreRecord], out: TextIO, details: bool = False,
               provenance: Mapping[str, str] | None = None, full_precision: bool = False,
               groups: Mapping[int, object] | None = None) -> None:
    write_rows(score_rows(records, details, provenance, groups), "json", out, full_precision)


def csv_header(details: bool = False, provenance: bool = False, groups: bool = False) -> list[str]:
    return (list(BASE_FIELDS) + ([f"pair_{name}" for name in PAIR_NAMES] if details else [])
            + (list(PROVENANCE_FIELDS) if provenance else []) + list(LATER_FIELDS)
            + (list(GROUP_FIELDS) if groups else []))


def write_csv(records: Iterable[ScoreRecord], out: TextIO, details: bool = False,
              provenance: Mapping[str, str] | None = None, full_precision: bool = False,
              groups: Mapping[int, object] | None = None) -> None:
    writer = csv.writer(machine_stream(out), lineterminator="\n")
    writer.writerow(csv_header(details, provenance is not None, groups is not None))
    extra = [csv_cell(str(provenance.get(name) or "")) for name in PROVENANCE_FIELDS] if provenance is not None else []
    for rec in records:
        row = [csv_cell(rec.path), _fmt(rec.score, full_precision), rec.status, csv_cell(rec.error or ""),
               _int(rec.width), _int(rec.height)]
        if details:
            row += [_fmt((rec.pairs or {}).get(name), full_precision) for name in PAIR_NAMES]
        row += extra + [rec.source or ""]
        if groups is not None:
            row += [_cell(value, full_precision) for value in group_fields(rec, groups).values()]
        writer.writerow(row)


def _cell(value, full_precision: bool = False) -> str:
    """A group field as a csv cell: empty for null, true/false for booleans (as in JSON)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _fmt(value, full_precision)
    return csv_cell(str(value))


def _fmt(x: float | None, full_precision: bool = False) -> str:
    return "" if x is None or not math.isfinite(x) else repr(rounded(float(x), full_precision))


def _int(x: int | None) -> str:
    return "" if x is None else str(x)


WRITERS = {"jsonl": write_jsonl, "json": write_json, "csv": write_csv}


def read_records(text: str, fmt: str) -> list[ScoreRecord]:
    """Parse any of the machine formats back into records (the inverse of the writers, up to the rounding of
    floats). Files of older versions (floats in full, no provenance fields, no `pairs` without details) read the
    same; fields a reader does not know are ignored."""
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
                "source": r.get("source") or None,
                "pairs": pairs,
            })
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return [ScoreRecord(**{k: row.get(k) for k in (*BASE_FIELDS, "pairs", *LATER_FIELDS)}) for row in rows]
