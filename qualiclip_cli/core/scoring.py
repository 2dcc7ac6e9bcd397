"""The scoring pipeline: found files → cache lookup → threaded decode → equal-shape batches → model → records.

Records come out in input order (a small reorder buffer), one per input, whatever happened to the file.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from qualiclip_cli.core.errors import ImageError
from qualiclip_cli.core.prompts import PAIR_NAMES
from qualiclip_cli.core.records import ScoreRecord
from qualiclip_cli.core.runtime import Runtime, make_runtime
from qualiclip_cli.core.weights import ResolvedWeights

DEFAULT_MAX_SIDE = 1024
# Native-resolution safety limit: a 12 MP photo needs ~4 GB in fp32; far larger ones would be killed for memory.
DEFAULT_NATIVE_MAX_PIXELS = 50_000_000
# Pixels (H·W summed) that may wait in partially filled batches before they are run anyway.
_BUCKET_PIXEL_BUDGET = 64 * 1024 * 1024


@dataclass(frozen=True)
class ScoreOptions:
    max_side: int = DEFAULT_MAX_SIDE  # 0 = native resolution (the reference)
    draft: bool = True  # JPEG DCT-scaled decoding when the result still covers the target size
    batch_size: int | None = None  # None: 1 on CPU (batching is slower there), 16 on GPU
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None  # decode threads; None: min(4, CPUs)
    use_cache: bool = True
    rescore: bool = False
    max_pixels: int | None = None  # None: DEFAULT_NATIVE_MAX_PIXELS at native resolution, no limit otherwise


def policy_identity(options: ScoreOptions, runtime: Runtime) -> str:
    """The scoring identity stored with every cached score: preprocessing policy plus numeric precision."""
    from qualiclip_cli.core.decode import policy_identity as preprocessing_identity

    return f"{preprocessing_identity(options.max_side, options.draft)}+{runtime.precision}"


class Scorer:
    """A loaded model on a device, ready to score many files. Build once per command."""

    def __init__(self, weights: ResolvedWeights, options: ScoreOptions = ScoreOptions()):
        import torch

        from qualiclip_cli.core.model import load_qualiclip, prepare_for_inference

        self.weights = weights
        self.options = options
        self.runtime = make_runtime(options.device, options.precision, exact=options.max_side == 0)
        self.identity = policy_identity(options, self.runtime)
        self.exact = options.max_side == 0 and self.runtime.precision == "fp32"
        if self.runtime.device_type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.model = prepare_for_inference(
            load_qualiclip(weights.path), self.runtime.device, self.runtime.precision, exact=self.exact
        )
        self.batch_size = options.batch_size or (1 if self.runtime.device_type == "cpu" else 16)
        self.workers = options.workers or min(4, os.cpu_count() or 1)
        self.max_pixels = options.max_pixels
        if self.max_pixels is None and options.max_side == 0:
            self.max_pixels = DEFAULT_NATIVE_MAX_PIXELS

    # ------------------------------------------------------------------ model

    def score_pixels(self, batch: list) -> list[tuple[float, dict[str, float]]]:
        """Score equal-shape H×W×3 uint8 arrays; returns (score, pairs) per image."""
        import numpy as np
        import torch

        stacked = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8, channels-last
        if self.runtime.device_type == "cuda":
            stacked = stacked.pin_memory().to(self.runtime.device, non_blocking=True)
        else:
            stacked = stacked.to(self.runtime.device)
        with torch.inference_mode():
            out = self.model(stacked)
        scores = out.scores.double().cpu().tolist()
        probs = out.pair_probs.double().cpu().tolist()
        return [(s, dict(zip(PAIR_NAMES, p))) for s, p in zip(scores, probs)]

    # ------------------------------------------------------------------ pipeline

    def score_files(
        self,
        found: Iterable,
        cache=None,
        on_record: Callable[[ScoreRecord], None] | None = None,
    ) -> Iterator[ScoreRecord]:
        """Yield one ScoreRecord per `Found` entry, in input order. `cache` is an open ResultsCache or None."""
        from qualiclip_cli.core.results_cache import FileIdentity

        reorder: dict[int, ScoreRecord] = {}
        next_out = 0
        pending: "OrderedDict[int, tuple[Future, str, FileIdentity]]" = OrderedDict()
        buckets: dict[tuple[int, int], list[tuple[int, str, FileIdentity, object]]] = {}
        bucket_pixels = 0
        prefetch = max(2 * self.workers, self.batch_size * 2)

        def emit(index: int, record: ScoreRecord) -> None:
            reorder[index] = record

        def run_bucket(shape: tuple[int, int]) -> None:
            nonlocal bucket_pixels
            items = buckets.pop(shape)
            bucket_pixels -= shape[0] * shape[1] * len(items)
            for index, record in self._score_bucket(items):
                if cache is not None:
                    cache.store(items_by_index[index], record)
                emit(index, record)

        items_by_index: dict[int, FileIdentity] = {}

        def collect(index: int) -> None:
            """Move a finished decode into its bucket (or emit its failure)."""
            nonlocal bucket_pixels
            future, display, ident = pending.pop(index)
            try:
                decoded = future.result()
            except ImageError as exc:
                emit(index, ScoreRecord.failure(display, exc.reason))
                return
            except Exception as exc:  # a decoder bug must not stop the batch
                emit(index, ScoreRecord.failure(display, f"could not decode: {type(exc).__name__}: {exc}"))
                return
            shape = (decoded.height, decoded.width)
            items_by_index[index] = ident
            buckets.setdefault(shape, []).append((index, display, ident, decoded))
            bucket_pixels += decoded.height * decoded.width
            if len(buckets[shape]) >= self.batch_size:
                run_bucket(shape)
            elif bucket_pixels > _BUCKET_PIXEL_BUDGET:
                run_bucket(max(buckets, key=lambda s: len(buckets[s]) * s[0] * s[1]))

        def drain_ready() -> Iterator[ScoreRecord]:
            nonlocal next_out
            while next_out in reorder:
                record = reorder.pop(next_out)
                items_by_index.pop(next_out, None)
                next_out += 1
                if on_record:
                    on_record(record)
                yield record

        from qualiclip_cli.core.decode import decode_image

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode") as pool:
            for index, entry in enumerate(found):
                display = str(entry.path)
                if entry.error:
                    emit(index, ScoreRecord.failure(display, entry.error))
                else:
                    try:
                        ident = FileIdentity.of(entry.path)
                    except OSError as exc:
                        emit(index, ScoreRecord.failure(display, exc.strerror or str(exc)))
                        ident = None
                    if ident is not None:
                        hit = None
                        if cache is not None and not self.options.rescore:
                            hit = cache.lookup(ident, display)
                        if hit is not None:
                            emit(index, hit)
                        else:
                            future = pool.submit(
                                decode_image, entry.path, self.options.max_side,
                                draft=self.options.draft, max_pixels=self.max_pixels,
                            )
                            pending[index] = (future, display, ident)
                while pending and (len(pending) > prefetch or next(iter(pending.values()))[0].done()):
                    collect(next(iter(pending)))
                yield from drain_ready()
            while pending:
                collect(next(iter(pending)))
            for shape in list(buckets):
                run_bucket(shape)
            yield from drain_ready()
        if cache is not None:
            cache.flush()

    def _score_bucket(self, items: list) -> list[tuple[int, ScoreRecord]]:
        pixels = [item[3].pixels for item in items]
        try:
            results = self.score_pixels(pixels)
        except RuntimeError as exc:  # e.g. out of memory for the batch: fall back to one at a time
            if len(items) > 1:
                out = []
                for item in items:
                    out += self._score_bucket([item])
                return out
            index, display, _, _ = items[0]
            return [(index, ScoreRecord.failure(display, f"scoring failed: {str(exc).splitlines()[0]}"))]
        out = []
        for (index, display, _, decoded), (score, pairs) in zip(items, results):
            out.append((index, ScoreRecord(
                path=display, score=score, pairs=pairs, width=decoded.width, height=decoded.height,
            )))
        return out


def open_cache(scorer: Scorer, enabled: bool = True):
    """The results cache for this scorer's weights and identity, or None when disabled."""
    if not enabled:
        return None
    from qualiclip_cli.core.paths import results_cache_path
    from qualiclip_cli.core.results_cache import ResultsCache

    return ResultsCache(results_cache_path(), scorer.weights.sha256, scorer.identity)


def score_paths(
    paths: Iterable[Path | str],
    weights: ResolvedWeights,
    options: ScoreOptions = ScoreOptions(),
    discovery: dict | None = None,
    on_record: Callable[[ScoreRecord], None] | None = None,
) -> list[ScoreRecord]:
    """Convenience for commands that need every record: walk, score (with cache), return the list."""
    from qualiclip_cli.core.discovery import find_images

    scorer = Scorer(weights, options)
    cache = open_cache(scorer, options.use_cache)
    try:
        return list(scorer.score_files(find_images(list(paths), **(discovery or {})), cache, on_record))
    finally:
        if cache is not None:
            cache.close()
