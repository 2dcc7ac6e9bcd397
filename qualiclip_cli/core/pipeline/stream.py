"""The ordered scoring stream: cache lookup, threaded decode, equal-shape batches, model, records in input order.

One `ScoreStream` runs one pass of a `Scorer` over a sequence of `Found` entries. Each entry becomes exactly one
`ScoreRecord`, whatever happens to its file: a cache hit, a decode in a worker thread (or, with the nvjpeg
decoder, JPEG bytes read in a thread and decoded on the device in batches of `GPU_DECODE_BATCH`), a place in a
bucket of images of the same scored size, and a forward pass once the bucket is full or the pixels waiting in
all buckets exceed `BUCKET_PIXEL_BUDGET` (or once a batch's worth of finished records waits behind it). A small
reorder buffer hands records out in input order, each as soon as it and every record before it are done.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qualiclip_cli.core.errors import ImageError
from qualiclip_cli.core.records import ScoreRecord

if TYPE_CHECKING:
    from qualiclip_cli.core.pipeline.cache import FileIdentity, ResultsCache

#: Pixels (H·W summed) that may wait in partially filled batches before they are run anyway.
BUCKET_PIXEL_BUDGET = 64 * 1024 * 1024
#: JPEGs decoded together by the nvjpeg decoder.
GPU_DECODE_BATCH = 32


@dataclass
class Ready:
    """A decoded image waiting in a same-shape bucket."""

    index: int
    display: str
    ident: object  # FileIdentity
    pixels: object  # H×W×3 uint8 numpy array (Pillow) or 3×H×W uint8 tensor on the device (nvjpeg)
    width: int
    height: int
    source: str = "file"  # where the pixels came from (`images.raw.SOURCES`)
    capture: object = None  # images.capture.Capture, read in the decode thread (None: read when recorded)


class BucketScorer(Protocol):
    """What the stream needs of its scorer (`scorer.Scorer` is one); the stream never imports the scorer."""

    options: Any  # ScoreOptions
    runtime: Any  # Runtime
    decoder: str
    workers: int
    batch_size: int

    def load(self, path: Path) -> Any: ...
    def load_with_capture(self, path: Path, ident: Any) -> tuple[Any, Any]: ...
    def decode_cpu(self, path: Path) -> Any: ...
    def score_bucket(self, items: list[Ready]) -> list[tuple[Ready, ScoreRecord]]: ...


class ScoreStream:
    """One ordered pass of a scorer over found files; iterate `run(found)` for the records."""

    def __init__(self, scorer: BucketScorer, cache: ResultsCache | None = None,
                 on_record: Callable[[ScoreRecord], None] | None = None):
        self.scorer = scorer
        self.cache = cache
        self.on_record = on_record
        self.reorder: dict[int, ScoreRecord] = {}  # finished records not yet handed out
        self.next_out = 0
        self.pending: OrderedDict[int, tuple[Future, str, FileIdentity]] = OrderedDict()  # loads in flight
        self.buckets: dict[tuple[int, int], list[Ready]] = {}
        self.bucket_pixels = 0
        self.gpu_pending: list[tuple[int, str, FileIdentity, object, object]] = []  # JPEG bytes (and capture) awaiting nvjpeg
        gpu_prefetch = 2 * GPU_DECODE_BATCH if scorer.decoder == "nvjpeg" else 0
        self.prefetch = max(2 * scorer.workers, scorer.batch_size * 2, gpu_prefetch)
        if scorer.workers == 0:
            self.prefetch = 0  # decoding inline: nothing to wait for

    # ------------------------------------------------------------------ the pass

    def run(self, found: Iterable) -> Iterator[ScoreRecord]:
        """Yield one ScoreRecord per `Found` entry, in input order."""
        from qualiclip_cli.core.pipeline.cache import FileIdentity

        scorer, cache = self.scorer, self.cache
        workers = scorer.workers
        pool_context = InlinePool() if workers == 0 else ThreadPoolExecutor(workers, thread_name_prefix="decode")
        with pool_context as pool:
            for index, entry in enumerate(found):
                display = str(entry.path)
                ident = None
                if entry.error:
                    self.reorder[index] = ScoreRecord.failure(display, entry.error)
                else:
                    try:
                        ident = FileIdentity.of(entry.path)
                    except OSError as exc:
                        self.reorder[index] = ScoreRecord.failure(display, exc.strerror or str(exc))
                if ident is not None:
                    hit = (cache.lookup(ident, display, need_signals=scorer.options.signals)
                           if cache is not None and not scorer.options.rescore else None)
                    if hit is not None:
                        self.reorder[index] = hit
                    else:
                        self.pending[index] = (pool.submit(scorer.load_with_capture, entry.path, ident), display, ident)
                while self.pending and (len(self.pending) > self.prefetch
                                        or next(iter(self.pending.values()))[0].done()):
                    self.collect(next(iter(self.pending)))
                    yield from self.drain_ready()  # each record as soon as it is scored, not after the next load
                if not self.pending and self.gpu_pending:
                    self.flush_gpu()
                self.release_held_back()
                yield from self.drain_ready()
            while self.pending:
                self.collect(next(iter(self.pending)))
                self.release_held_back()
                yield from self.drain_ready()
            if self.gpu_pending:
                self.flush_gpu()
                yield from self.drain_ready()
            # The rest, in input order: the bucket holding the next record to hand out first.
            for shape in sorted(self.buckets, key=lambda s: min(item.index for item in self.buckets[s])):
                self.run_bucket(shape)
                yield from self.drain_ready()
        if cache is not None:
            cache.flush()

    # ------------------------------------------------------------------ steps

    def fail(self, index: int, display: str, exc: BaseException) -> None:
        reason = exc.reason if isinstance(exc, ImageError) else f"could not decode: {type(exc).__name__}: {exc}"
        self.reorder[index] = ScoreRecord.failure(display, reason, damaged=isinstance(exc, ImageError) and exc.damaged)

    def run_bucket(self, shape: tuple[int, int]) -> None:
        items = self.buckets.pop(shape)
        self.bucket_pixels -= shape[0] * shape[1] * len(items)
        for item, record in self.scorer.score_bucket(items):
            if self.cache is not None:
                self.cache.store(item.ident, record)
            self.reorder[item.index] = record

    def release_held_back(self) -> None:
        """Run the partially filled bucket that holds the next record to hand out once a batch's worth of finished
        records waits behind it: a bucket of a rare shape then never holds back the records of the others (the
        bar would stall, then jump) while waiting for images of its shape that may never come."""
        if self.next_out in self.reorder or len(self.reorder) < self.scorer.batch_size:
            return
        for shape, items in self.buckets.items():
            if any(item.index == self.next_out for item in items):
                self.run_bucket(shape)
                return

    def add_ready(self, item: Ready) -> None:
        shape = (item.height, item.width)
        self.buckets.setdefault(shape, []).append(item)
        self.bucket_pixels += item.height * item.width
        if len(self.buckets[shape]) >= self.scorer.batch_size:
            self.run_bucket(shape)
        elif self.bucket_pixels > BUCKET_PIXEL_BUDGET:
            self.run_bucket(max(self.buckets, key=lambda s: len(self.buckets[s]) * s[0] * s[1]))

    def add_decoded(self, index: int, display: str, ident, decoded, capture=None) -> None:
        self.add_ready(Ready(index, display, ident, decoded.pixels, decoded.width, decoded.height, decoded.source,
                             capture))

    def flush_gpu(self) -> None:
        from qualiclip_cli.core.images.gpu_decode import GpuDecodeError, decode_resize_batch

        batch = list(self.gpu_pending)
        self.gpu_pending.clear()
        results = decode_resize_batch([(display, jpeg) for _, display, _, jpeg, _ in batch],
                                      self.scorer.options.max_side, self.scorer.runtime.device)
        for (index, display, ident, _, capture), result in zip(batch, results):
            if isinstance(result, GpuDecodeError):  # data nvjpeg refuses: let libjpeg/Pillow try
                try:
                    self.add_decoded(index, display, ident, self.scorer.decode_cpu(Path(display)), capture)
                except Exception as exc:
                    self.fail(index, display, exc)
            elif isinstance(result, ImageError):
                self.fail(index, display, result)
            else:
                self.add_ready(Ready(index, display, ident, result, int(result.shape[2]), int(result.shape[1]),
                                     capture=capture))

    def collect(self, index: int) -> None:
        """Move a finished load into its bucket (or the GPU decode queue), or record its failure."""
        future, display, ident = self.pending.pop(index)
        try:
            loaded, capture = future.result()
        except Exception as exc:  # ImageError, or a decoder bug: either way one file, not the batch
            self.fail(index, display, exc)
            return
        if hasattr(loaded, "pixels"):
            self.add_decoded(index, display, ident, loaded, capture)
        else:
            self.gpu_pending.append((index, display, ident, loaded, capture))
            if len(self.gpu_pending) >= GPU_DECODE_BATCH:
                self.flush_gpu()

    def drain_ready(self) -> Iterator[ScoreRecord]:
        while self.next_out in self.reorder:
            record = self.reorder.pop(self.next_out)
            self.next_out += 1
            if self.on_record:
                self.on_record(record)
            yield record


class InlinePool:
    """`--workers 0`: decode in the calling thread, between forward passes (no thread competes with the
    forward pass's own threads; on the 2-core machine it measured the same as decode threads)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # delivered through the future, like a worker thread's
            future.set_exception(exc)
        return future
