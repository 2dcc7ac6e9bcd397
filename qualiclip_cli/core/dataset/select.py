"""`select_keys`: the samples to keep, read from `dataset score`'s outputs (the shards are never opened).

DataComp-style filtering: every ok row of every ``*.parquet`` in the folder (qualiclip's outputs only; error rows
are never kept), kept when its score is at least ``min_score`` and, with ``top_percent``, when it is among the
best ``top_percent`` % of all ok rows (ties at the cut-off all stay). Both given: both
must hold. The kept rows come back in shard then row order.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from qualiclip_cli.core.dataset.table import read_provenance, require_pyarrow
from qualiclip_cli.core.errors import QualiclipError, UsageError


@dataclass(frozen=True)
class Kept:
    key: str
    shard: str  # the output file's name without .parquet: the input shard's name
    score: float


@dataclass
class Selection:
    kept: list[Kept]
    considered: int  # ok rows read
    errors: int  # error rows left out
    files: int
    threshold: float | None  # the lowest kept score (None: nothing kept)


def select_keys(folder: str | os.PathLike, min_score: float | None = None,
                top_percent: float | None = None) -> Selection:
    require_pyarrow()
    import pyarrow.parquet as pq

    if min_score is None and top_percent is None:
        raise UsageError("say what to keep: --min-score, --top-percent, or both")
    if top_percent is not None and not 0 < top_percent <= 100:
        raise UsageError(f"--top-percent must be more than 0 and at most 100, not {top_percent:g}")
    folder = Path(folder)
    if not folder.is_dir():
        raise QualiclipError(f"{folder}: not a folder of dataset score outputs")
    files = sorted(p for p in folder.glob("*.parquet") if read_provenance(p) is not None)
    if not files:
        raise QualiclipError(f"{folder}: no qualiclip dataset outputs (*.parquet written by qualiclip dataset score)")
    rows: list[Kept] = []
    errors = 0
    for path in files:
        try:
            table = pq.read_table(path, columns=["__key__", "score", "status"])
        except Exception as exc:
            raise QualiclipError(f"{path}: cannot read ({type(exc).__name__}: {exc})".splitlines()[0]) from None
        for key, score, status in zip(*(table.column(c).to_pylist() for c in ("__key__", "score", "status"))):
            if status == "ok" and score is not None and math.isfinite(score):
                rows.append(Kept(key, path.name[: -len(".parquet")], score))
            else:
                errors += 1
    kept = rows if min_score is None else [r for r in rows if r.score >= min_score]
    if top_percent is not None and rows:
        count = max(1, math.ceil(len(rows) * top_percent / 100))
        cut = sorted((r.score for r in rows), reverse=True)[count - 1]
        kept = [r for r in kept if r.score >= cut]
    threshold = min((r.score for r in kept), default=None)
    return Selection(kept, len(rows), errors, len(files), threshold)
