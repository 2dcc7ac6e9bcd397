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

from qualiclip_cli.core.errors import ImageError, UsageError
from qualiclip_cli.core.prompts import PAIR_NAMES
from qualiclip_cli.core.records import ScoreRecord
from qualiclip_cli.core.runtime import Runtime, make_runtime, reuse_freed_memory
from qualiclip_cli.core.weights import ResolvedWeights

DEFAULT_MAX_SIDE = 1024
# Native-resolution safety limit: a 12 MP photo needs ~4 GB in fp32; far larger ones would be killed for memory.
DEFAULT_NATIVE_MAX_PIXELS = 50_000_000
# Pixels (H·W summed) that may wait in partially filled batches before they are run anyway.
_BUCKET_PIXEL_BUDGET = 64 * 1024 * 1024


@dataclass(frozen=True)
class ScoreOptions:
    max_side: int = DEFAULT_MAX_SIDE  # 0 = native resolution (the reference)
    draft: bool = False  # JPEG DCT-scaled decoding when the result still covers the target size (opt-in, README)
    batch_size: int | None = None  # None: 1 on CPU (batching is slower there), 16 on GPU
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None  # decode threads; 0: decode inline; None: min(4, CPUs) on CPU, min(16, CPUs) on GPU
    use_cache: bool = True
    rescore: bool = False
    max_pixels: int | None = None  # None: DEFAULT_NATIVE_MAX_PIXELS at native resolution, no limit otherwise
    decoder: str = "auto"  # auto, pillow, nvjpeg (see pick_decoder)


DECODERS = ("auto", "pillow", "nvjpeg")
_GPU_DECODE_BATCH = 32
_JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})


def policy_identity(options: ScoreOptions, runtime: Runtime, decoder: str = "pillow") -> str:
    """The scoring identity stored with every cached score: preprocessing policy plus numeric precision."""
    from qualiclip_cli.core.decode import policy_identity as preprocessing_identity

    if decoder == "nvjpeg":
        from qualiclip_cli.core.gpu_decode import gpu_policy_identity

        return f"{gpu_policy_identity(options.max_side)}+{runtime.precision}"
    return f"{preprocessing_identity(options.max_side, options.draft)}+{runtime.precision}"


def pick_decoder(requested: str, runtime: Runtime, max_side: int) -> str:
    """`auto`: nvjpeg (batched GPU decoding) on CUDA at a reduced size, else Pillow. Native size always uses
    Pillow, the reference's decoder. `nvjpeg` on the CPU runs torchvision's libjpeg-turbo (used by tests)."""
    if requested not in DECODERS:
        raise UsageError(f"unknown decoder {requested!r}; choose one of {', '.join(DECODERS)}")
    if requested == "auto":
        return "nvjpeg" if runtime.device_type == "cuda" and max_side > 0 else "pillow"
    return requested


@dataclass
class _Ready:
    """A decoded image waiting in a same-shape bucket."""

    index: int
    display: str
    ident: object  # FileIdentity
    pixels: object  # H×W×3 uint8 numpy array (Pillow) or 3×H×W uint8 tensor on the device (nvjpeg)
    width: int
    height: int


class Scorer:
    """A loaded model on a device, ready to score many files. Build once per command."""

    def __init__(self, weights: ResolvedWeights, options: ScoreOptions = ScoreOptions()):
        import torch

        from qualiclip_cli.core.model import load_qualiclip, prepare_for_inference

        self.weights = weights
        self.options = options
        self.runtime = make_runtime(options.device, options.precision)
        self.decoder = pick_decoder(options.decoder, self.runtime, options.max_side)
        self.identity = policy_identity(options, self.runtime, self.decoder)
        if self.runtime.device_type == "cpu" and 0 < options.max_side <= 2048:
            # Not at native size: a never-trimmed heap would keep the peak of a 12 MP pass (6 GB vs 3.6 GB).
            reuse_freed_memory()
        if self.runtime.device_type == "cuda":
            torch.backends.cudnn.benchmark = True
            # fp32 means fp32: TF32 tensor cores would round inputs to 10 mantissa bits.
            torch.backends.cudnn.allow_tf32 = self.runtime.precision != "fp32"
            torch.backends.cuda.matmul.allow_tf32 = self.runtime.precision != "fp32"
        # The weights hash may be computing in a thread meanwhile (resolve_weights(hash_in_background=True)).
        # Reading it waits for it and raises its verification's WeightsError: a file that fails the check is
        # reported as such, not by how it fails to load, and nothing is scored with an unverified file.
        try:
            model = load_qualiclip(weights.path)
        except Exception:
            weights.sha256
            raise
        weights.sha256
        self.model = prepare_for_inference(model, self.runtime.device, self.runtime.precision)
        on_cpu = self.runtime.device_type == "cpu"
        self.batch_size = options.batch_size or (1 if on_cpu else 16)
        if options.workers is not None:
            self.workers = options.workers
        else:
            self.workers = min(4 if on_cpu else 16, os.cpu_count() or 1)
        self.max_pixels = options.max_pixels
        if self.max_pixels is None and options.max_side == 0:
            self.max_pixels = DEFAULT_NATIVE_MAX_PIXELS

    # ------------------------------------------------------------------ model

    def score_pixels(self, batch: list) -> list[tuple[float, dict[str, float]]]:
        """Score equal-shape images (H×W×3 uint8 arrays or 3×H×W uint8 tensors); (score, pairs) per image."""
        import numpy as np
        import torch

        if all(isinstance(p, np.ndarray) for p in batch):
            stacked = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)  # (B, 3, H, W), channels-last
            if self.runtime.device_type == "cuda":
                stacked = stacked.pin_memory().to(self.runtime.device, non_blocking=True)
            else:
                stacked = stacked.to(self.runtime.device)
        else:
            tensors = [torch.from_numpy(p).permute(2, 0, 1) if isinstance(p, np.ndarray) else p for p in batch]
            stacked = torch.stack([t.to(self.runtime.device) for t in tensors])
            stacked = stacked.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self.model(stacked)
        scores = out.scores.double().cpu().tolist()
        probs = out.pair_probs.double().cpu().tolist()
        return [(s, dict(zip(PAIR_NAMES, p))) for s, p in zip(scores, probs)]

    # ------------------------------------------------------------------ decoding

    def _load(self, path: Path):
        """Runs in a decode thread: JPEG bytes for the GPU decoder, else a Pillow-decoded image."""
        if self.decoder == "nvjpeg" and Path(path).suffix.lower() in _JPEG_SUFFIXES:
            from qualiclip_cli.core.gpu_decode import JpegBytes, read_jpeg_bytes

            jpeg = read_jpeg_bytes(path, self.max_pixels)
            if isinstance(jpeg, JpegBytes):
                return jpeg
        return self._decode_cpu(path)

    def _decode_cpu(self, path: Path):
        from qualiclip_cli.core.decode import decode_image

        # With nvjpeg the cache identity says "no draft": keep the CPU fallbacks to the same policy.
        draft = self.options.draft and self.decoder == "pillow"
        return decode_image(path, self.options.max_side, draft=draft, max_pixels=self.max_pixels)

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
        buckets: dict[tuple[int, int], list[_Ready]] = {}
        gpu_pending: list[tuple[int, str, FileIdentity, object]] = []
        bucket_pixels = 0
        prefetch = max(2 * self.workers, self.batch_size * 2, 2 * _GPU_DECODE_BATCH if self.decoder == "nvjpeg" else 0)
        if self.workers == 0:
            prefetch = 0  # decoding inline: nothing to wait for

        def fail(index: int, display: str, exc: BaseException) -> None:
            reason = exc.reason if isinstance(exc, ImageError) else f"could not decode: {type(exc).__name__}: {exc}"
            reorder[index] = ScoreRecord.failure(display, reason)

        def run_bucket(shape: tuple[int, int]) -> None:
            nonlocal bucket_pixels
            items = buckets.pop(shape)
            bucket_pixels -= shape[0] * shape[1] * len(items)
            for item, record in self._score_bucket(items):
                if cache is not None:
                    cache.store(item.ident, record)
                reorder[item.index] = record

        def add_ready(item: _Ready) -> None:
            nonlocal bucket_pixels
            shape = (item.height, item.width)
            buckets.setdefault(shape, []).append(item)
            bucket_pixels += item.height * item.width
            if len(buckets[shape]) >= self.batch_size:
                run_bucket(shape)
            elif bucket_pixels > _BUCKET_PIXEL_BUDGET:
                run_bucket(max(buckets, key=lambda s: len(buckets[s]) * s[0] * s[1]))

        def add_decoded(index: int, display: str, ident, decoded) -> None:
            add_ready(_Ready(index, display, ident, decoded.pixels, decoded.width, decoded.height))

        def flush_gpu() -> None:
            from qualiclip_cli.core.gpu_decode import GpuDecodeError, decode_resize_batch

            batch = list(gpu_pending)
            gpu_pending.clear()
            results = decode_resize_batch([(display, jpeg) for _, display, _, jpeg in batch],
                                          self.options.max_side, self.runtime.device)
            for (index, display, ident, _), result in zip(batch, results):
                if isinstance(result, GpuDecodeError):  # data nvjpeg refuses: let libjpeg/Pillow try
                    try:
                        add_decoded(index, display, ident, self._decode_cpu(Path(display)))
                    except Exception as exc:
                        fail(index, display, exc)
                elif isinstance(result, ImageError):
                    fail(index, display, result)
                else:
                    add_ready(_Ready(index, display, ident, result, int(result.shape[2]), int(result.shape[1])))

        def collect(index: int) -> None:
            """Move a finished load into its bucket (or the GPU decode queue), or record its failure."""
            future, display, ident = pending.pop(index)
            try:
                loaded = future.result()
            except Exception as exc:  # ImageError, or a decoder bug: either way one file, not the batch
                fail(index, display, exc)
                return
            if hasattr(loaded, "pixels"):
                add_decoded(index, display, ident, loaded)
            else:
                gpu_pending.append((index, display, ident, loaded))
                if len(gpu_pending) >= _GPU_DECODE_BATCH:
                    flush_gpu()

        def drain_ready() -> Iterator[ScoreRecord]:
            nonlocal next_out
            while next_out in reorder:
                record = reorder.pop(next_out)
                next_out += 1
                if on_record:
                    on_record(record)
                yield record

        pool_context = _InlinePool() if self.workers == 0 else ThreadPoolExecutor(self.workers, thread_name_prefix="decode")
        with pool_context as pool:
            for index, entry in enumerate(found):
                display = str(entry.path)
                ident = None
                if entry.error:
                    reorder[index] = ScoreRecord.failure(display, entry.error)
                else:
                    try:
                        ident = FileIdentity.of(entry.path)
                    except OSError as exc:
                        reorder[index] = ScoreRecord.failure(display, exc.strerror or str(exc))
                if ident is not None:
                    hit = cache.lookup(ident, display) if cache is not None and not self.options.rescore else None
                    if hit is not None:
                        reorder[index] = hit
                    else:
                        pending[index] = (pool.submit(self._load, entry.path), display, ident)
                while pending and (len(pending) > prefetch or next(iter(pending.values()))[0].done()):
                    collect(next(iter(pending)))
                if not pending and gpu_pending:
                    flush_gpu()
                yield from drain_ready()
            while pending:
                collect(next(iter(pending)))
            if gpu_pending:
                flush_gpu()
            for shape in list(buckets):
                run_bucket(shape)
            yield from drain_ready()
        if cache is not None:
            cache.flush()

    def _score_bucket(self, items: list[_Ready]) -> list[tuple[_Ready, ScoreRecord]]:
        try:
            results = self.score_pixels([item.pixels for item in items])
        except RuntimeError as exc:  # e.g. out of memory for the batch: fall back to one at a time
            if len(items) > 1:
                out = []
                for item in items:
                    out += self._score_bucket([item])
                return out
            return [(items[0], ScoreRecord.failure(items[0].display, f"scoring failed: {str(exc).splitlines()[0]}"))]
        return [
            (item, ScoreRecord(path=item.display, score=score, pairs=pairs, width=item.width, height=item.height))
            for item, (score, pairs) in zip(items, results)
        ]


class _InlinePool:
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


def open_cache(scorer: Scorer, enabled: bool = True):
    """The results cache for this scorer's weights and identity, or None when disabled."""
    if not enabled:
        return None
    from qualiclip_cli.core.paths import results_cache_path
    from qualiclip_cli.core.results_cache import ResultsCache

    return ResultsCache(results_cache_path(), scorer.weights.sha256, scorer.identity)
