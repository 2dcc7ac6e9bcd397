"""The ordered scoring stream: cache lookup, threaded decode, equal-shape batches, model, records in input order.

One `ScoreStream` runs one pass of a `Scorer` over a sequence of `Found` entries. Each entry becomes exactly one
`ScoreRecord`, whatever happens to its file: a cache hit, a decode in a worker thread (or, with the nvjpeg
decoder, JPEG bytes read in a thread and decoded on the device in batches of `GPU_DECODE_BATCH`, by a decode thread
on its own CUDA stream while the model runs on the batches before: `GPU_DECODE_AHEAD`), a place in a
bucket of images of the same scored size, and a forward pass once the bucket is full or the pixels waiting in
all buckets exceed `BUCKET_PIXEL_BUDGET` (or once a batch's worth of finished records waits behind it). A small
reorder buffer hands records out in input order, each as soon as it and every record before it are done.
"""

from __future__ import annotations

from collections import OrderedDict, deque
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
#: nvjpeg batches decoding (in their own thread, on their own CUDA stream) while the model runs on the ones before;
#: 0 decodes each batch in the calling thread when it is full (the sequential path). A batch's results join the
#: buckets when the next batch is handed over (or at the end), never "when done", so which images are scored
#: together never depends on timing.
GPU_DECODE_AHEAD = 1


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
        self.gpu_inflight: deque[tuple[list, Future]] = deque()  # batches handed to the decode thread, oldest first
        self.gpu_thread: ThreadPoolExecutor | None = None  # the nvjpeg decode thread, started with the first batch
        self.gpu_stream = None  # its CUDA stream
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
            if self.gpu_pending or self.gpu_inflight:
                self.flush_gpu()
                self.finish_gpu()
                yield from self.drain_ready()
            # The rest, in input order: the bucket holding the next record to hand out first.
            for shape in sorted(self.buckets, key=lambda s: min(item.index for item in self.buckets[s])):
                self.run_bucket(shape)
                yield from self.drain_ready()
        if self.gpu_thread is not None:
            self.gpu_thread.shutdown(wait=True)
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
        """Hand the waiting JPEGs to the decode thread as one batch, then take in the batches before it beyond
        `GPU_DECODE_AHEAD` (in the order they were handed over)."""
        batch = list(self.gpu_pending)
        self.gpu_pending.clear()
        if batch:
            if GPU_DECODE_AHEAD <= 0:
                done: Future = Future()
                done.set_result(self._decode_gpu_batch(batch))
                self.gpu_inflight.append((batch, done))
            else:
                if self.gpu_thread is None:
                    self.gpu_thread = ThreadPoolExecutor(1, thread_name_prefix="nvjpeg")
                self.gpu_inflight.append((batch, self.gpu_thread.submit(self._decode_gpu_batch, batch)))
        while len(self.gpu_inflight) > max(GPU_DECODE_AHEAD, 0):
            self._take_gpu_batch()

    def finish_gpu(self) -> None:
        """Take in every batch still decoding."""
        while self.gpu_inflight:
            self._take_gpu_batch()

    def _decode_gpu_batch(self, batch: list):
        """In the decode thread: one batch through nvjpeg, on the thread's own CUDA stream (on CUDA), and the event
        the model's stream must wait for before it reads the results."""
        from qualiclip_cli.core.images.gpu_decode import decode_resize_batch

        items = [(display, jpeg) for _, display, _, jpeg, _ in batch]
        max_side, device = self.scorer.options.max_side, self.scorer.runtime.device
        if self.scorer.runtime.device_type != "cuda":
            return decode_resize_batch(items, max_side, device), None
        import torch

        if self.gpu_stream is None:
            self.gpu_stream = torch.cuda.Stream(device=device)
        with torch.cuda.stream(self.gpu_stream):
            results = decode_resize_batch(items, max_side, device)
            event = torch.cuda.Event()
            event.record(self.gpu_stream)
        return results, event

    def _take_gpu_batch(self) -> None:
        from qualiclip_cli.core.images.gpu_decode import GpuDecodeError

        batch, future = self.gpu_inflight.popleft()
        try:
            results, event = future.result()
        except Exception as exc:  # a decoder bug: the batch's files fail, the run goes on
            for index, display, _, _, _ in batch:
                self.fail(index, display, exc)
            return
        if event is not None:  # the model's stream reads what the decode stream wrote
            import torch

            current = torch.cuda.current_stream(self.scorer.runtime.device)
            current.wait_event(event)
            for result in results:
                if isinstance(result, torch.Tensor):
                    result.record_stream(current)
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
