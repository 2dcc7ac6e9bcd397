"""The scorer: a loaded QualiCLIP model on a device, the decoder it reads files with, and batched forward passes.

Build one per command (`Scorer(resolved_weights, ScoreOptions(...))`); `score_files` runs the ordered stream
(`stream.ScoreStream`) over found files. The weights hash may still be computing in a thread while the model
loads: the scorer waits for it (and its verdict) before it scores anything.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from qualiclip_cli.core.errors import UsageError, first_line
from qualiclip_cli.core.filetypes import JPEG_EXTENSIONS, extension, is_raw_name
from qualiclip_cli.core.images.policy import DEFAULT_DECODE_MEMORY, raw_scoring_identity, scoring_identity
from qualiclip_cli.core.model.profile import profile_identity
from qualiclip_cli.core.model.runtime import (
    Runtime,
    device_type_without_torch,
    make_runtime,
    pick_precision,
    reuse_freed_memory,
)
from qualiclip_cli.core.model.weights import ResolvedWeights
from qualiclip_cli.core.pipeline.options import DECODERS, DEFAULT_NATIVE_MAX_PIXELS, ScoreOptions
from qualiclip_cli.core.pipeline.stream import Ready, ScoreStream
from qualiclip_cli.core.records import PAIR_NAMES, ScoreRecord, Signals

if TYPE_CHECKING:
    from qualiclip_cli.core.pipeline.cache import ResultsCache



def pick_decoder(requested: str, runtime: Runtime, max_side: int) -> str:
    """`auto`: nvjpeg (batched GPU decoding) on CUDA at a reduced size, else Pillow. Native size always uses
    Pillow, the reference's decoder. `nvjpeg` on the CPU runs torchvision's libjpeg-turbo (used by tests)."""
    if requested not in DECODERS:
        raise UsageError(f"unknown decoder {requested!r}; choose one of {', '.join(DECODERS)}")
    if requested == "auto":
        return "nvjpeg" if runtime.device_type == "cuda" and max_side > 0 else "pillow"
    return requested


def identities(options: ScoreOptions, runtime: Runtime, profile_sha256: str | None = None) -> tuple[str, str]:
    """The scoring identity of a run with these options on ``runtime`` (decoder, policy, precision, and the
    profile's SHA-256 when one is used), and the identity of its RAW files' scores."""
    decoder = pick_decoder(options.decoder, runtime, options.max_side)
    identity = profile_identity(scoring_identity(options.max_side, options.draft, decoder, runtime.precision),
                                profile_sha256)
    # A RAW's score also depends on the preview-or-development rule: cached under its own identity.
    return identity, raw_scoring_identity(identity)


def planned_identities(options: ScoreOptions) -> tuple[str, str] | None:
    """`identities` of the Scorer these options would build, computed without importing torch or loading
    anything; None when only torch can tell which device `auto` means (CUDA may exist on this machine)."""
    device_type = device_type_without_torch(options.device)
    if device_type is None:
        return None
    profile_sha256 = None
    if options.profile is not None:
        # Its hash alone names the cached rows (they were stored by a run that checked the profile against the
        # weights); a profile that cannot be read is reported by the Scorer that the first miss builds.
        from qualiclip_cli.core.hashing import sha256_file

        try:
            profile_sha256 = sha256_file(options.profile)
        except OSError:
            return None
    return identities(options, Runtime(device_type, pick_precision(options.precision, device_type)), profile_sha256)


class Scorer:
    """A loaded model on a device, ready to score many files. Build once per command."""

    def __init__(self, weights: ResolvedWeights, options: ScoreOptions = ScoreOptions()):
        import torch

        from qualiclip_cli.core.model.inference import prepare_for_inference
        from qualiclip_cli.core.model.qualiclip import load_qualiclip

        if options.decode_memory is not None and options.decode_memory <= 0:
            raise UsageError("the decode memory budget must be a positive number of bytes")
        self.weights = weights
        self.options = options
        self.runtime = make_runtime(options.device, options.precision)
        self.decoder = pick_decoder(options.decoder, self.runtime, options.max_side)
        self.profile = _load_profile(options.profile)
        self.identity, self.raw_identity = identities(
            options, self.runtime, None if self.profile is None else self.profile.sha256)
        if self.runtime.device_type == "cpu" and 0 < options.max_side <= 2048:
            # Not at native size: a never-trimmed heap would keep the peak of a 12 MP pass (6 GB vs 3.6 GB).
            reuse_freed_memory()
        if self.runtime.device_type == "cuda":
            torch.backends.cudnn.benchmark = True
            # fp32 means fp32: TF32 tensor cores would round inputs to 10 mantissa bits.
            torch.backends.cudnn.allow_tf32 = self.runtime.precision != "fp32"
            torch.backends.cuda.matmul.allow_tf32 = self.runtime.precision != "fp32"
        # The weights hash may be computing in a thread meanwhile (resolve_weights(hash_in_background=True)),
        # through the very open file loaded here: a file renamed over it meanwhile is neither loaded nor credited
        # to the pinned hash. A file that fails its check is reported as such, not by how it fails to load, and
        # nothing is scored with an unverified file.
        try:
            with weights.open_for_loading() as file:
                model = load_qualiclip(weights.path, file=file)
        except Exception:
            weights.wait_verified()
            raise
        weights.wait_verified()
        # The grouping embedding stays the base's whatever the profile (only the quality head changes).
        self.grouping_prompts = model.prompts_features.clone()
        if self.profile is not None:
            self.profile.check_base(weights.sha256, weights.path)
            _apply_profile(model, self.profile)
        self.model = prepare_for_inference(model, self.runtime.device, self.runtime.precision)
        self.grouping_prompts = self.grouping_prompts.to(self.runtime.device)
        on_cpu = self.runtime.device_type == "cpu"
        self.batch_size = options.batch_size or (1 if on_cpu else 16)
        if options.workers is not None:
            self.workers = options.workers
        else:
            self.workers = min(4 if on_cpu else 16, os.cpu_count() or 1)
        self.max_pixels = options.max_pixels
        if self.max_pixels is None and options.max_side == 0:
            self.max_pixels = DEFAULT_NATIVE_MAX_PIXELS
        # Shared by every decode thread (and the nvjpeg decoder's CPU fallbacks): the estimated bytes of the
        # decodes in flight never exceed it, and a file that would need more than all of it is an error row.
        self.decode_budget = _memory_budget(options.decode_memory or DEFAULT_DECODE_MEMORY)

    # ------------------------------------------------------------------ model

    def score_and_embed(self, batch: list) -> list[tuple[float, dict[str, float], bytes]]:
        """Score equal-shape images (H×W×3 uint8 arrays or 3×H×W uint8 tensors): (score, pairs) per image, plus each
        image's grouping embedding (`qualiclip.grouping_embeddings`) as float16
        bytes, from the same forward pass."""
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
        from qualiclip_cli.core.model.qualiclip import grouping_embeddings

        with torch.inference_mode():
            out = self.model(stacked)
            grouping = grouping_embeddings(out.embeddings, self.grouping_prompts)
        scores = out.scores.double().cpu().tolist()
        probs = out.pair_probs.double().cpu().tolist()
        embedded = grouping.to(torch.float16).cpu().numpy().astype("<f2")
        return [(s, dict(zip(PAIR_NAMES, p)), e.tobytes()) for s, p, e in zip(scores, probs, embedded)]

    # ------------------------------------------------------------------ decoding

    def load(self, path: Path):
        """Runs in a decode thread: JPEG bytes for the GPU decoder, else a Pillow-decoded image."""
        if self.decoder == "nvjpeg" and extension(Path(path).name) in JPEG_EXTENSIONS:
            from qualiclip_cli.core.images.gpu_decode import JpegBytes, read_jpeg_bytes

            jpeg = read_jpeg_bytes(path, self.max_pixels)
            if isinstance(jpeg, JpegBytes):
                return jpeg
        return self.decode_cpu(path)

    def load_with_capture(self, path: Path, ident) -> tuple:
        """`load`, then the file's capture signals (EXIF time, camera: a header read) in the same decode thread, so
        the forward pass never waits for them."""
        from qualiclip_cli.core.images.capture import read_capture

        loaded = self.load(path)
        return loaded, read_capture(path, getattr(ident, "mtime_ns", None))

    def decode_cpu(self, path: Path):
        """Pillow for pictures, LibRaw for camera RAW files (`images.raw`: the embedded preview first)."""
        # With nvjpeg the cache identity says "no draft": keep the CPU fallbacks to the same policy.
        draft = self.options.draft and self.decoder == "pillow"
        if is_raw_name(Path(path).name):
            from qualiclip_cli.core.images.raw import decode_raw

            return decode_raw(path, self.options.max_side, draft=draft, max_pixels=self.max_pixels,
                              budget=self.decode_budget)
        from qualiclip_cli.core.images.decode import decode_image

        return decode_image(path, self.options.max_side, draft=draft, max_pixels=self.max_pixels,
                            budget=self.decode_budget)

    # ------------------------------------------------------------------ pipeline

    def score_files(
        self,
        found: Iterable,
        cache: ResultsCache | None = None,
        on_record: Callable[[ScoreRecord], None] | None = None,
    ) -> Iterator[ScoreRecord]:
        """Yield one ScoreRecord per `Found` entry, in input order (see `stream.ScoreStream`)."""
        return ScoreStream(self, cache, on_record).run(found)

    def score_bucket(self, items: list[Ready]) -> list[tuple[Ready, ScoreRecord]]:
        """Score one bucket of same-shape images; a batch that fails is retried one image at a time."""
        try:
            results = self.score_and_embed([item.pixels for item in items])
        except RuntimeError as exc:  # e.g. out of memory for the batch: fall back to one at a time
            if len(items) > 1:
                out = []
                for item in items:
                    out += self.score_bucket([item])
                return out
            return [(items[0], ScoreRecord.failure(items[0].display, f"scoring failed: {first_line(exc)}"))]
        return [(item, _record(item, score, pairs, embedding)) for item, (score, pairs, embedding) in zip(items, results)]


def _record(item: Ready, score: float, pairs: dict[str, float], embedding: bytes) -> ScoreRecord:
    """The record of one scored image, with its grouping signals (the capture read by the decode thread, else here:
    the file's header only); a NaN or infinite output (e.g. diverged weights) is an error row."""
    from qualiclip_cli.core.images.capture import read_capture

    values = [score, *pairs.values()]
    if not all(math.isfinite(v) for v in values):
        what = "NaN" if any(math.isnan(v) for v in values) else "an infinite value"
        return ScoreRecord.failure(item.display, f"the model produced {what} (damaged or diverged weights?)")
    capture = item.capture or read_capture(item.display, getattr(item.ident, "mtime_ns", None))
    signals = Signals(capture.capture_time, capture.capture_text, capture.time_source, capture.camera,
                      capture.exposure_bias, embedding)
    return ScoreRecord(path=item.display, score=score, pairs=pairs, width=item.width, height=item.height,
                       source=item.source, signals=signals)


def _load_profile(path):
    if path is None:
        return None
    from qualiclip_cli.core.model.profile import load_profile

    return load_profile(path)


def _apply_profile(model, profile) -> None:
    """The profile's prompt features in place of the base's (same shape, checked here against the weights)."""
    from qualiclip_cli.core.errors import WeightsError

    if tuple(profile.features.shape) != tuple(model.prompts_features.shape):
        raise WeightsError(f"{profile.path}: profile features of shape {tuple(profile.features.shape)}, the weights' "
                           f"head has {tuple(model.prompts_features.shape)}")
    model.prompts_features = profile.features.to(model.prompts_features.dtype).clone()


def _memory_budget(total: int):
    from qualiclip_cli.core.images.decode import MemoryBudget

    return MemoryBudget(total)


def open_cache(scorer: Scorer, enabled: bool = True, warn: Callable[[str], None] | None = None) -> ResultsCache | None:
    """The results cache for this scorer's weights and identity, or None when disabled. ``warn`` receives its
    one-line warnings (a damaged cache set aside, a locked one, one turned off); the cache never raises."""
    if not enabled:
        return None
    return open_results_cache(scorer.weights.sha256, (scorer.identity, scorer.raw_identity), warn)


def open_results_cache(weights_sha256: str, identities: tuple[str, str],
                       warn: Callable[[str], None] | None = None) -> ResultsCache:
    """The results cache for these weights and (identity, RAW identity), with no scorer (a pass that may need
    no model at all). Imports neither torch nor the model."""
    from qualiclip_cli.core.paths import results_cache_path
    from qualiclip_cli.core.pipeline.cache import ResultsCache

    identity, raw_identity = identities
    return ResultsCache(results_cache_path(), weights_sha256, identity, warn=warn, raw_identity=raw_identity)
