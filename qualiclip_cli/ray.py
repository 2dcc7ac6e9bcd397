"""QualiCLIP on Ray Data: `QualiCLIPScorer`, a callable class for `ray.data.Dataset.map_batches`, and
`score_shards_on_ray`, what `qualiclip dataset score --ray` runs.

    import ray
    from ray.data import ActorPoolStrategy
    from qualiclip_cli.ray import QualiCLIPScorer

    ds = ray.data.read_webdataset("s3://bucket/shards/{000000..000146}.tar", decoder=None)
    scored = ds.map_batches(QualiCLIPScorer, fn_constructor_kwargs={"bytes_column": "jpg"},
                            batch_size=64, compute=ActorPoolStrategy(size=4), num_gpus=1)

Each actor builds one scorer (the model is loaded once per actor) and scores every batch it is given with the
core's own pipeline (`core.dataset.scoring`: the project's decoder and policy, one record per row). A row whose
bytes are missing or are not an image becomes an error row; the actor goes on. Every input column but the bytes is kept; the
columns `score`, `status`, `error`, `width`, `height`, the seven `pair_<name>` columns and `source` are added
(`embedding` too with ``embeddings=True``). Only the core is imported here, never the commands; ray itself is
imported by the functions that need it (the `data` extra).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qualiclip_cli.core.records import PAIR_NAMES

#: The columns `QualiCLIPScorer` adds, in order (with ``embeddings``: `embedding` after them).
ADDED_COLUMNS = ("score", "status", "error", "width", "height", *(f"pair_{n}" for n in PAIR_NAMES), "source")
RAY_HINT = 'Ray is not installed: pip install "qualiclip[data]" (or pip install "ray[data]")'


class QualiCLIPScorer:
    """Scores a batch's image bytes; built once per Ray actor.

    ``weights``: a weights file (None: the resolved official weights, as `qualiclip score` finds them; pass a
    path on a cluster whose nodes have no cache). ``device``: auto, cpu, cuda, cuda:N. ``max_side``,
    ``precision``, ``batch_size`` (images per forward pass), ``workers`` (decode threads), ``draft``,
    ``max_pixels``: as `qualiclip score`'s options. ``bytes_column``: the column of image bytes (``bytes`` from
    `read_binary_files` and parquet; ``jpg`` etc. from `read_webdataset(decoder=None)`). ``key_column``: names
    rows in error messages (default: ``__key__`` or ``path`` when present). ``offline``: never download.
    """

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "auto", max_side: int = 1024,
                 precision: str = "auto", batch_size: int | None = None, workers: int | None = None,
                 bytes_column: str = "bytes", key_column: str | None = None, draft: bool = False,
                 max_pixels: int | None = None, embeddings: bool = False, offline: bool = False):
        from qualiclip_cli.core.model.weights import resolve_weights
        from qualiclip_cli.core.pipeline.options import ScoreOptions
        from qualiclip_cli.core.pipeline.scorer import Scorer

        options = ScoreOptions(max_side=max_side, draft=draft, batch_size=batch_size, device=device,
                               precision=precision, workers=workers, use_cache=False, max_pixels=max_pixels,
                               decoder="pillow")
        self.scorer = Scorer(resolve_weights(weights, offline, file_option=None), options)
        self.bytes_column = bytes_column
        self.key_column = key_column
        self.embeddings = embeddings
        self.weights_sha256 = self.scorer.weights.sha256
        self.identity = self.scorer.identity
        self.precision = self.scorer.runtime.precision

    def __call__(self, batch: Any) -> dict:
        """``batch``: a dict of columns (numpy arrays or lists; Ray's "numpy" batch format) or a pandas
        DataFrame; returns a dict of columns, the input's first."""
        import numpy as np

        from qualiclip_cli.core.dataset.scoring import score_samples

        columns = {name: batch[name] for name in batch}  # a DataFrame iterates its column names too
        if self.bytes_column not in columns:
            raise KeyError(f"the batch has no column {self.bytes_column!r} (it has {', '.join(columns)}); "
                           "pass bytes_column=")
        blobs = list(columns[self.bytes_column])
        key_column = self.key_column or next((c for c in ("__key__", "path", "key") if c in columns), None)
        keys = [str(k) for k in columns[key_column]] if key_column else [str(i) for i in range(len(blobs))]
        extension = self.bytes_column if self.bytes_column not in ("bytes", "image") else ""
        samples = [_sample(key, blob, extension) for key, blob in zip(keys, blobs)]
        results = list(score_samples(self.scorer, samples))
        out = {name: values if isinstance(values, np.ndarray) else np.asarray(values)
               for name, values in columns.items() if name != self.bytes_column}
        records = [r.record for r in results]
        out["score"] = np.array([np.nan if r.score is None else r.score for r in records], np.float64)
        out["status"] = np.array([r.status for r in records], object)
        out["error"] = np.array([r.error for r in records], object)
        out["width"] = np.array([-1 if r.width is None else r.width for r in records], np.int32)
        out["height"] = np.array([-1 if r.height is None else r.height for r in records], np.int32)
        for name in PAIR_NAMES:
            out[f"pair_{name}"] = np.array([(r.pairs or {}).get(name, np.nan) for r in records], np.float64)
        out["source"] = np.array([r.source for r in records], object)
        if self.embeddings:
            embedded = np.empty(len(results), object)  # one array (or None) per row, never a 2-d stack
            embedded[:] = [None if r.embedding is None else np.frombuffer(r.embedding, "<f2") for r in results]
            out["embedding"] = embedded
        return out


def _sample(key: str, blob, extension: str):
    from qualiclip_cli.core.dataset.shards import Sample

    if isinstance(blob, dict):  # an image struct ({"bytes": ..., "path": ...})
        blob = blob.get("bytes")
    if blob is None or (isinstance(blob, float) and blob != blob):  # None, or pandas' NaN for a missing value
        return Sample(key, key, error="no image bytes (null)")
    return Sample(key, key, bytes(blob), extension)


def score_shards_on_ray(
    patterns: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    address: str | None = None,
    options=None,
    dataset=None,
    weights: str | os.PathLike | None = None,
    offline: bool = False,
    actors: int | None = None,
    gpus_per_actor: float = 0,
    on_start: Callable[[int], None] | None = None,
    on_record: Callable[[object], None] | None = None,
    on_shard: Callable[[object], None] | None = None,
):
    """`core.dataset.run.score_shards` with the work on a Ray cluster (``address``; None: a local one started
    here, or the one this process is already connected to): the same plan, resume rule, error rows and outputs.
    Ray tasks read the shards with the project's reader (`read_shard_rows`: the paths must be readable on the
    nodes), one pool of ``actors`` `QualiCLIPScorer` actors (``gpus_per_actor`` GPUs each; the model loaded once
    per actor for the whole job) scores them, and the driver writes each shard's parquet once all its rows are
    in. A shard that cannot be read is a failed outcome; the others go on."""
    import time

    ray = _import_ray()
    from ray.data import ActorPoolStrategy

    from qualiclip_cli.core.dataset.run import (
        DatasetOptions,
        DatasetRun,
        ShardOutcome,
        expected_provenance,
        plan_shards,
        up_to_date,
    )
    from qualiclip_cli.core.dataset.shards import ShardError, count_samples
    from qualiclip_cli.core.dataset.table import records_table, require_pyarrow, write_table
    from qualiclip_cli.core.model.weights import resolve_weights
    from qualiclip_cli.core.pipeline.options import ScoreOptions

    require_pyarrow()
    options = options or ScoreOptions()
    dataset = dataset or DatasetOptions()
    plans, problems = plan_shards(patterns, out_dir)
    resolved = resolve_weights(weights, offline)
    provenance = expected_provenance(resolved.sha256, options)
    start = time.perf_counter()
    outcomes: dict[int, ShardOutcome] = {}
    todo: dict[int, int] = {}  # plan index -> samples
    for i, plan in enumerate(plans):
        try:
            if up_to_date(plan.output, provenance.weights_sha256, provenance.identity) and not dataset.rescore:
                outcomes[i] = ShardOutcome(plan.shard, plan.output, "skipped")
            else:
                todo[i] = count_samples(plan.shard, dataset.image_field, dataset.key_column)
        except ShardError as exc:
            outcomes[i] = ShardOutcome(plan.shard, plan.output, "failed", error=str(exc))
        if i in outcomes and on_shard is not None:
            on_shard(outcomes[i])
    if on_start is not None:
        on_start(sum(todo.values()))
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        size = actors or max(1, int(ray.available_resources().get("GPU" if gpus_per_actor else "CPU", 1)
                                    // (gpus_per_actor or 1)))
        kwargs = {"weights": str(Path(resolved.path).resolve()), "device": options.device,
                  "max_side": options.max_side, "precision": options.precision, "batch_size": options.batch_size,
                  "workers": options.workers, "draft": options.draft, "max_pixels": options.max_pixels,
                  "offline": True, "key_column": "__name__", "embeddings": dataset.embeddings}
        shards = ray.data.from_items([{"shard": i, "path": os.fspath(plans[i].shard)} for i in todo],
                                     override_num_blocks=len(todo))
        rows = shards.flat_map(read_shard_rows, fn_kwargs={"image_field": dataset.image_field,
                                                           "key_column": dataset.key_column})
        scored = rows.map_batches(QualiCLIPScorer, fn_constructor_kwargs=kwargs, batch_size=options.batch_size or 16,
                                  compute=ActorPoolStrategy(size=size), num_gpus=gpus_per_actor or None,
                                  batch_format="numpy")
        collected: dict[int, list[dict]] = {i: [] for i in todo}
        broken: dict[int, str] = {}
        for row in scored.iter_rows():
            shard = int(row["__shard__"])
            if _text(row.get("__shard_error__")):
                broken[shard] = _text(row["__shard_error__"])
                continue
            record = _record_of(row)
            collected[shard].append((int(row["__index__"]), row["__key__"], record, row.get("embedding")))
            if on_record is not None:
                on_record(record)
            if len(collected[shard]) == todo[shard] and shard not in broken:
                outcomes[shard] = _write(plans[shard], collected.pop(shard), provenance, dataset, records_table,
                                         write_table, ShardOutcome)
                if on_shard is not None:
                    on_shard(outcomes[shard])
        for shard, rows_of in collected.items():
            if shard in broken:
                outcomes[shard] = ShardOutcome(plans[shard].shard, plans[shard].output, "failed", len(rows_of),
                                               error=broken[shard])
            else:  # fewer samples than counted (the shard changed meanwhile): write what was read
                outcomes[shard] = _write(plans[shard], rows_of, provenance, dataset, records_table, write_table,
                                         ShardOutcome)
            if on_shard is not None:
                on_shard(outcomes[shard])
    ordered = [outcomes[i] for i in range(len(plans))]
    return DatasetRun(ordered, time.perf_counter() - start, provenance.weights_sha256, provenance.identity, problems)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        from qualiclip_cli.core.dataset.table import MissingExtra

        raise MissingExtra(RAY_HINT) from None
    return ray


def read_shard_rows(item: dict, image_field: str | None = None, key_column: str | None = None) -> list[dict]:
    """A Ray task's part: one shard's samples as rows (``__shard__``, ``__index__``, ``__key__``, ``__name__``,
    ``bytes``, ``__error__``, ``__shard_error__``). A sample that has no usable bytes carries its reason in
    ``__error__``; a shard that cannot be read is one row with ``__shard_error__``."""
    from qualiclip_cli.core.dataset.scoring import RAW_UNSUPPORTED
    from qualiclip_cli.core.dataset.shards import ShardError, read_samples
    from qualiclip_cli.core.filetypes import RAW_EXTENSIONS

    shard = int(item["shard"])
    rows = []
    try:
        for index, sample in enumerate(read_samples(Path(item["path"]), image_field, key_column)):
            error = sample.error or (RAW_UNSUPPORTED if sample.extension.lower() in RAW_EXTENSIONS else None)
            rows.append({"__shard__": shard, "__index__": index, "__key__": sample.key, "__name__": sample.name,
                         "bytes": None if error else sample.data, "__error__": error, "__shard_error__": None})
    except ShardError as exc:
        return [{"__shard__": shard, "__index__": -1, "__key__": "", "__name__": "", "bytes": None,
                 "__error__": None, "__shard_error__": str(exc)}]
    return rows


def _text(value) -> str | None:
    """A text cell as Ray hands it back: a missing value may come as None or as NaN."""
    return value if isinstance(value, str) and value else None


def _record_of(row: dict):
    from qualiclip_cli.core.records import STATUS_OK, ScoreRecord

    if _text(row.get("__error__")):
        return ScoreRecord.failure(row["__name__"], _text(row["__error__"]))
    if row["status"] != STATUS_OK:
        return ScoreRecord.failure(row["__name__"], _text(row["error"]) or "could not be scored")
    return ScoreRecord(path=row["__name__"], score=float(row["score"]), width=int(row["width"]),
                       height=int(row["height"]), source=row["source"],
                       pairs={n: float(row[f"pair_{n}"]) for n in PAIR_NAMES})


def _write(plan, rows: list, provenance, dataset, records_table, write_table, ShardOutcome):
    import numpy as np

    rows.sort(key=lambda r: r[0])
    records = [r[2] for r in rows]
    embeddings = [None if (row[3] is None or not row[2].ok) else np.asarray(row[3], "<f2").tobytes() for row in rows]
    try:
        write_table(records_table({"__key__": [r[1] for r in rows]}, records, provenance,
                                  embeddings if dataset.embeddings else None), plan.output)
    except OSError as exc:
        return ShardOutcome(plan.shard, plan.output, "failed", len(records),
                            error=f"{plan.output}: cannot write ({exc.strerror or exc})")
    return ShardOutcome(plan.shard, plan.output, "scored", len(records), sum(not r.ok for r in records))
