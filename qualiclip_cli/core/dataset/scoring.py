"""Scoring images held in memory (dataset samples) with a `Scorer`, in input order.

Each sample's bytes are decoded in the scorer's decode threads by the project's own decoder
(`images.decode.decode_embedded`: the same policy, EXIF orientation, HEIC/AVIF support and error texts as a file),
then same-shape images go through the model together (`Scorer.score_and_embed`, batches of the scorer's batch
size). Every sample becomes exactly one record: a sample without bytes, bytes that are not an image, a truncated
image, camera RAW bytes (not supported in shards) are error rows, never an exception. The scorer must decode with
Pillow (`decoder="pillow"`): its scoring identity then names the decoding these samples get.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qualiclip_cli.core.dataset.shards import Sample
from qualiclip_cli.core.errors import ImageError, first_line
from qualiclip_cli.core.filetypes import RAW_EXTENSIONS
from qualiclip_cli.core.pipeline.stream import BUCKET_PIXEL_BUDGET, InlinePool
from qualiclip_cli.core.records import PAIR_NAMES, ScoreRecord

RAW_UNSUPPORTED = "camera RAW bytes in a dataset cannot be scored (score the RAW files with qualiclip score)"


@dataclass
class Scored:
    """One sample's outcome: its key, its record (path: the sample's name), its embedding (float16 bytes; None on
    error)."""

    key: str
    record: ScoreRecord
    embedding: bytes | None = None


def decode_sample(scorer: Any, sample: Sample):
    """The sample's pixels under the scorer's policy, or the `ImageError` that says why not."""
    from qualiclip_cli.core.images.decode import decode_embedded

    path = Path(sample.name)
    if sample.error is not None:
        raise ImageError(path, sample.error)
    if sample.extension.lower() in RAW_EXTENSIONS:
        raise ImageError(path, RAW_UNSUPPORTED)
    if not sample.data:
        raise ImageError(path, "empty image (0 bytes)", damaged=True)
    return decode_embedded(sample.data, path, scorer.options.max_side, orientation=None, source="file", what=None,
                           draft=scorer.options.draft, max_pixels=scorer.max_pixels, budget=scorer.decode_budget)


def score_samples(scorer: Any, samples: Iterable[Sample],
                  on_result: Callable[[Scored], None] | None = None) -> Iterator[Scored]:
    """One `Scored` per sample, in input order (``on_result`` hears each as it is handed out)."""
    return _SampleStream(scorer, on_result).run(samples)


class _SampleStream:
    def __init__(self, scorer: Any, on_result: Callable[[Scored], None] | None):
        self.scorer = scorer
        self.on_result = on_result
        self.done: dict[int, Scored] = {}
        self.next_out = 0
        self.buckets: dict[tuple[int, int], list[tuple[int, str, str, Any]]] = {}
        self.bucket_pixels = 0

    def run(self, samples: Iterable[Sample]) -> Iterator[Scored]:
        scorer = self.scorer
        window = 0 if scorer.workers == 0 else max(2 * scorer.workers, 2 * scorer.batch_size)
        pool_context = InlinePool() if scorer.workers == 0 else ThreadPoolExecutor(scorer.workers,
                                                                                   thread_name_prefix="decode")
        pending: dict[int, tuple[Future, str, str]] = {}
        with pool_context as pool:
            for index, sample in enumerate(samples):
                pending[index] = (pool.submit(decode_sample, scorer, sample), sample.key, sample.name)
                del sample  # its bytes go once decoded
                while pending and (len(pending) > window or next(iter(pending.values()))[0].done()):
                    self.collect(next(iter(pending)), pending)
                    yield from self.drain()
            while pending:
                self.collect(next(iter(pending)), pending)
                yield from self.drain()
            for shape in sorted(self.buckets, key=lambda s: min(item[0] for item in self.buckets[s])):
                self.run_bucket(shape)
                yield from self.drain()

    def collect(self, index: int, pending: dict) -> None:
        future, key, name = pending.pop(index)
        try:
            decoded = future.result()
        except ImageError as exc:
            self.done[index] = Scored(key, ScoreRecord.failure(name, exc.reason, damaged=exc.damaged))
            return
        except Exception as exc:  # a decoder bug: one sample, not the batch
            self.done[index] = Scored(key, ScoreRecord.failure(name, f"could not decode: {type(exc).__name__}: {exc}"))
            return
        shape = (decoded.height, decoded.width)
        self.buckets.setdefault(shape, []).append((index, key, name, decoded))
        self.bucket_pixels += decoded.height * decoded.width
        if len(self.buckets[shape]) >= self.scorer.batch_size:
            self.run_bucket(shape)
        elif self.bucket_pixels > BUCKET_PIXEL_BUDGET:
            self.run_bucket(max(self.buckets, key=lambda s: len(self.buckets[s]) * s[0] * s[1]))
        elif self.next_out not in self.done and len(self.done) >= self.scorer.batch_size:
            for held, items in self.buckets.items():  # a rare shape never holds the others back for long
                if any(item[0] == self.next_out for item in items):
                    self.run_bucket(held)
                    break

    def run_bucket(self, shape: tuple[int, int]) -> None:
        items = self.buckets.pop(shape)
        self.bucket_pixels -= shape[0] * shape[1] * len(items)
        for (index, key, _, _), scored in zip(items, self.score(items)):
            self.done[index] = Scored(key, *scored)

    def score(self, items: list) -> list[tuple[ScoreRecord, bytes | None]]:
        try:
            results = self.scorer.score_and_embed([decoded.pixels for *_, decoded in items])
        except RuntimeError as exc:  # e.g. out of memory for the batch: one at a time
            if len(items) > 1:
                return [scored for item in items for scored in self.score([item])]
            return [(ScoreRecord.failure(items[0][2], f"scoring failed: {first_line(exc)}"), None)]
        out = []
        for (_, _, name, decoded), (score, pairs, embedding) in zip(items, results):
            values = [score, *pairs.values()]
            if not all(math.isfinite(v) for v in values):
                what = "NaN" if any(math.isnan(v) for v in values) else "an infinite value"
                out.append((ScoreRecord.failure(name, f"the model produced {what} (damaged or diverged weights?)"),
                            None))
                continue
            out.append((ScoreRecord(path=name, score=score, pairs=dict(zip(PAIR_NAMES, pairs.values())),
                                    width=decoded.width, height=decoded.height, source=decoded.source), embedding))
        return out

    def drain(self) -> Iterator[Scored]:
        while self.next_out in self.done:
            scored = self.done.pop(self.next_out)
            self.next_out += 1
            if self.on_result is not None:
                self.on_result(scored)
            yield scored
