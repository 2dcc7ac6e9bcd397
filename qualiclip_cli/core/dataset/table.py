"""Score records as parquet: the schema (stable, documented in the README), the atomic write, the provenance read
back for resuming.

One row per record. Columns, in order: the key columns (`path` for `score --format parquet`; `__key__` for
`dataset score`), then `score`, `status`, `error`, `width`, `height` (as in jsonl), one `pair_<name>` column per
sub-score (`records.PAIR_NAMES`; null on error rows), `weights_sha256`, `identity` (the preprocessing policy and
precision, as the jsonl rows carry it), `source`, `precision`, and with embeddings `embedding`: the L2-normalised
grouping embedding as a list of float16 (null on error rows). Floats are written in full (float64). The
file's schema metadata `qualiclip` holds a JSON object with the weights hash, the identity and `SCHEMA_VERSION`,
which is how `dataset score` recognises an output it may skip or replace.

pyarrow is an optional dependency: `require_pyarrow` says in one line how to install it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from qualiclip_cli.core.atomic import atomic_write_with
from qualiclip_cli.core.errors import QualiclipError
from qualiclip_cli.core.names import csv_cell
from qualiclip_cli.core.records import PAIR_NAMES, ScoreRecord

#: Bumped whenever a column changes meaning or type (new columns only ever come at the end).
SCHEMA_VERSION = 1
#: The schema metadata key of qualiclip's provenance.
METADATA_KEY = b"qualiclip"
INSTALL_HINT = 'parquet needs pyarrow: pip install "qualiclip[data]" (or pip install pyarrow)'


class MissingExtra(QualiclipError):
    """An optional dependency is not installed (the message says how to install it)."""


def require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise MissingExtra(INSTALL_HINT) from None


@dataclass(frozen=True)
class Provenance:
    """Which weights and scoring rules gave a file's scores."""

    weights_sha256: str
    identity: str
    precision: str


def result_columns(embeddings: bool = False) -> list[str]:
    """The columns after the key column(s), in order."""
    return (["score", "status", "error", "width", "height"] + [f"pair_{n}" for n in PAIR_NAMES]
            + ["weights_sha256", "identity", "source", "precision"] + (["embedding"] if embeddings else []))


def schema(key_columns: Sequence[str], embeddings: bool = False, provenance: Provenance | None = None):
    import pyarrow as pa

    types = {"score": pa.float64(), "status": pa.string(), "error": pa.string(), "width": pa.int32(),
             "height": pa.int32(), "weights_sha256": pa.string(), "identity": pa.string(), "source": pa.string(),
             "precision": pa.string(), "embedding": pa.list_(pa.float16())}
    fields = [pa.field(name, pa.string()) for name in key_columns]
    fields += [pa.field(name, types.get(name, pa.float64())) for name in result_columns(embeddings)]
    metadata = None
    if provenance is not None:
        metadata = {METADATA_KEY: json.dumps({"schema_version": SCHEMA_VERSION,
                                              "weights_sha256": provenance.weights_sha256,
                                              "identity": provenance.identity}).encode()}
    return pa.schema(fields, metadata=metadata)


def records_table(keys: dict[str, list[str]], records: Sequence[ScoreRecord], provenance: Provenance,
                  embeddings: Sequence[bytes | None] | None = None):
    """The table of ``records``; ``keys``: the key columns' values (one per record, names are stored as the
    machine formats store them: `names.csv_cell`); ``embeddings``: float16 bytes per record (None: no column)."""
    import numpy as np
    import pyarrow as pa

    columns: dict[str, list] = {name: [csv_cell(str(v)) for v in values] for name, values in keys.items()}
    columns["score"] = [r.score for r in records]
    columns["status"] = [r.status for r in records]
    columns["error"] = [r.error for r in records]
    columns["width"] = [r.width for r in records]
    columns["height"] = [r.height for r in records]
    for name in PAIR_NAMES:
        columns[f"pair_{name}"] = [(r.pairs or {}).get(name) for r in records]
    columns["weights_sha256"] = [provenance.weights_sha256] * len(records)
    columns["identity"] = [provenance.identity] * len(records)
    columns["source"] = [r.source for r in records]
    columns["precision"] = [provenance.precision] * len(records)
    if embeddings is not None:
        columns["embedding"] = [None if e is None else np.frombuffer(e, "<f2") for e in embeddings]
    target = schema(list(keys), embeddings is not None, provenance)
    arrays = [_array(columns[field.name], field.type) for field in target]
    return pa.Table.from_arrays(arrays, schema=target)


def _array(values: list, kind):
    import pyarrow as pa

    if pa.types.is_list(kind):
        import numpy as np

        offsets, flat, mask = [0], [], []
        for v in values:
            mask.append(v is None)
            if v is not None:
                flat.append(np.asarray(v, np.float16))
            offsets.append(offsets[-1] + (0 if v is None else len(v)))
        data = pa.array(np.concatenate(flat) if flat else np.zeros(0, np.float16), pa.float16())
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), data, mask=pa.array(mask, pa.bool_()))
    return pa.array(values, kind)


def write_table(table, path: str | os.PathLike) -> None:
    """Write ``table`` to ``path`` as parquet, all or nothing (temporary file beside it, fsync, rename)."""
    import pyarrow.parquet as pq

    atomic_write_with(path, lambda fh: pq.write_table(table, fh))


def table_bytes(table) -> bytes:
    """``table`` as the bytes of a parquet file (for a stream such as stdout)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The qualiclip metadata of a parquet file we wrote (weights_sha256, identity, schema_version), None when
    the file is not one of ours or cannot be read."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
        value = json.loads(metadata[METADATA_KEY])
    except Exception:  # not parquet, no metadata, not JSON: not a file we wrote
        return None
    return value if isinstance(value, dict) else None
