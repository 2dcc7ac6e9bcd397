"""`score_shards`: score every sample of dataset shards, one parquet per shard, resumably.

expand the SHARDS arguments (`shards.expand_shards`; none at all: `NoShards`, before the weights are looked for)
→ plan each shard's output ``out_dir/<shard name>.parquet`` (two shards with one name, or an output that would
replace a shard, are refused up front) → resolve the weights → `Scorer` (decoding with Pillow) → per shard: skip it
when its output already holds this weights hash and identity (unless ``rescore``), else read its samples
(`shards.read_samples`), score them (`scoring.score_samples`) and write the table atomically (`table.write_table`).
A shard that cannot be read is reported (``on_shard_error``) and left without output; the others go on. Nothing
here prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from qualiclip_cli.core.dataset.shards import ShardError, count_samples, expand_shards, read_samples, shard_stem
from qualiclip_cli.core.dataset.table import Provenance, read_provenance, records_table, require_pyarrow, write_table
from qualiclip_cli.core.errors import QualiclipError, UsageError
from qualiclip_cli.core.pipeline.options import ScoreOptions


class NoShards(QualiclipError):
    """The SHARDS arguments name no shard file."""


@dataclass(frozen=True)
class DatasetOptions:
    """How shards are read and what the outputs hold."""

    image_field: str | None = None  # tar member extension(s) / parquet column of the image (None: found)
    key_column: str | None = None  # parquet column of the key (None: __key__, key, else the row number)
    embeddings: bool = False
    rescore: bool = False


@dataclass
class ShardPlan:
    shard: Path
    output: Path


@dataclass
class ShardOutcome:
    """What became of one shard: "scored", "skipped" (its output was up to date) or "failed" (``error``)."""

    shard: Path
    output: Path
    state: str
    samples: int = 0
    failed: int = 0
    error: str | None = None


@dataclass
class DatasetRun:
    outcomes: list[ShardOutcome]
    elapsed: float
    weights_sha256: str = ""
    identity: str = ""
    problems: list[str] = field(default_factory=list)  # SHARDS arguments that named no file

    @property
    def samples(self) -> int:
        return sum(o.samples for o in self.outcomes)

    @property
    def failed_samples(self) -> int:
        return sum(o.failed for o in self.outcomes)

    @property
    def failed_shards(self) -> int:
        return sum(o.state == "failed" for o in self.outcomes)


def plan_shards(patterns: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> tuple[list[ShardPlan], list[str]]:
    """Each shard's output file, and the arguments that named no shard. Raises `NoShards` when nothing is left,
    `UsageError` when two shards would write one output or an output would replace a shard."""
    shards, problems = expand_shards(list(patterns))
    if not shards:
        raise NoShards("no shards to score: " + ("; ".join(problems) if problems else "no SHARDS given"))
    out_dir = Path(out_dir)
    plans: list[ShardPlan] = []
    by_output: dict[Path, Path] = {}
    inputs = {os.path.realpath(s) for s in shards}
    for shard in shards:
        output = out_dir / f"{shard_stem(shard)}.parquet"
        if output in by_output:
            raise UsageError(f"{shard} and {by_output[output]} would both write {output}: give them "
                             "different names or score them into different --out folders")
        if os.path.realpath(output) in inputs:
            raise UsageError(f"{output} is an input shard: choose another --out folder")
        by_output[output] = shard
        plans.append(ShardPlan(shard, output))
    return plans, problems


def expected_provenance(weights_sha256: str, options: ScoreOptions) -> Provenance:
    """The provenance the scores of ``options`` will carry (decoded by Pillow), known before the model loads."""
    from qualiclip_cli.core.images.policy import scoring_identity
    from qualiclip_cli.core.model.runtime import pick_precision

    precision = pick_precision(options.precision)
    return Provenance(weights_sha256, scoring_identity(options.max_side, options.draft, "pillow", precision),
                      precision)


def up_to_date(output: Path, weights_sha256: str, identity: str) -> bool | None:
    """True when ``output`` holds scores of these weights and identity; False when it is ours but from other
    weights or rules (to be replaced); None when there is no file. Raises ShardError when a file is there that
    qualiclip did not write (it is never replaced)."""
    if not output.exists():
        return None
    provenance = read_provenance(output)
    if provenance is None:
        raise ShardError(f"{output}: exists and is not a qualiclip output; move it away or choose another --out")
    return provenance.get("weights_sha256") == weights_sha256 and provenance.get("identity") == identity


def score_shards(
    patterns: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    options: ScoreOptions = ScoreOptions(),
    dataset: DatasetOptions = DatasetOptions(),
    weights: str | os.PathLike | None = None,
    offline: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_record: Callable[[object], None] | None = None,
    on_shard: Callable[[ShardOutcome], None] | None = None,
    on_download_start=None,
    on_download_progress=None,
) -> DatasetRun:
    """Score the shards ``patterns`` name into ``out_dir`` (module docstring). ``on_start(n)``: the samples
    to score, once the model is ready (shards up to date and unreadable ones not counted); ``on_record(record)``
    once per sample scored; ``on_shard(outcome)`` once per shard as its fate is known, failures included."""
    from qualiclip_cli.core.model.weights import resolve_weights
    from qualiclip_cli.core.pipeline.scorer import Scorer

    require_pyarrow()
    plans, problems = plan_shards(patterns, out_dir)
    resolved = resolve_weights(weights, offline, progress=on_download_progress, hash_in_background=True,
                               on_download_start=on_download_start)
    start = time.perf_counter()
    options = replace(options, decoder="pillow", use_cache=False)
    provenance = expected_provenance(resolved.sha256, options)
    outcomes: dict[int, ShardOutcome] = {}
    todo: list[tuple[int, ShardPlan, int]] = []
    for i, plan in enumerate(plans):
        try:
            fresh = up_to_date(plan.output, provenance.weights_sha256, provenance.identity)
            if fresh and not dataset.rescore:
                outcomes[i] = ShardOutcome(plan.shard, plan.output, "skipped")
                continue
            todo.append((i, plan, count_samples(plan.shard, dataset.image_field, dataset.key_column)))
        except ShardError as exc:
            outcomes[i] = ShardOutcome(plan.shard, plan.output, "failed", error=str(exc))
        if i in outcomes and on_shard is not None:
            on_shard(outcomes[i])
    scorer = None
    if todo:  # the model loads only when there is something to score
        scorer = Scorer(resolved, options)
        if scorer.identity != provenance.identity:  # defensive: the plan's identity must be the scores'
            raise QualiclipError(f"internal error: scoring identity {scorer.identity} is not {provenance.identity}")
    if on_start is not None:
        on_start(sum(n for *_, n in todo))
    for i, plan, _ in todo:
        outcomes[i] = score_one_shard(scorer, plan, provenance, dataset, on_record)
        if on_shard is not None:
            on_shard(outcomes[i])
    ordered = [outcomes[i] for i in range(len(plans))]
    return DatasetRun(ordered, time.perf_counter() - start, provenance.weights_sha256, provenance.identity, problems)


def score_one_shard(scorer, plan: ShardPlan, provenance: Provenance, dataset: DatasetOptions,
                    on_record: Callable[[object], None] | None = None) -> ShardOutcome:
    """Score one shard and write its output; a shard that cannot be read leaves no output (a failed outcome)."""
    from qualiclip_cli.core.dataset.scoring import score_samples

    keys, records, embeddings = [], [], []
    try:
        samples = read_samples(plan.shard, dataset.image_field, dataset.key_column)
        for scored in score_samples(scorer, samples):
            keys.append(scored.key)
            records.append(scored.record)
            embeddings.append(scored.embedding)
            if on_record is not None:
                on_record(scored.record)
    except ShardError as exc:
        return ShardOutcome(plan.shard, plan.output, "failed", len(records), error=str(exc))
    table = records_table({"__key__": keys}, records, provenance, embeddings if dataset.embeddings else None)
    try:
        write_table(table, plan.output)
    except OSError as exc:
        return ShardOutcome(plan.shard, plan.output, "failed", len(records),
                            error=f"{plan.output}: cannot write ({exc.strerror or exc})")
    return ShardOutcome(plan.shard, plan.output, "scored", len(records), sum(not r.ok for r in records))
