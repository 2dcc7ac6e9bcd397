"""Device and numeric precision choices for inference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from qualiclip_cli.core.errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")
#: auto: fp32 on every device (see pick_precision); bf16 and fp16 are opt-in.
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class Runtime:
    device: str  # "cpu", "cuda", "cuda:1", "mps"
    precision: str  # "fp32", "bf16", "fp16"

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]


def pick_device(requested: str = "auto") -> str:
    import torch

    kind = requested.split(":")[0]
    if kind not in DEVICES:
        raise UsageError(f"unknown device {requested!r}; choose one of {', '.join(DEVICES)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA GPU is available to PyTorch")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps was requested but Apple's MPS backend is not available")
    return requested


def pick_precision(requested: str) -> str:
    """Resolve `auto`. Reduced precision is the default only where bench/ shows its scores within 0.01 of
    fp32 at the same resolution (README, "Performance"). On the benchmark's batch-norm-calibrated random
    weights neither bf16 (0.10) nor fp16 (0.02, with the fp32 stem and pool of model.prepare_for_inference)
    met that bar, so `auto` is fp32 on every device (native resolution included) until a measurement shows
    otherwise (bench/gpu.sh measures it on CUDA).
    """
    if requested not in PRECISIONS:
        raise UsageError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    return "fp32"


def make_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    dev = pick_device(device)
    return Runtime(device=dev, precision=pick_precision(precision))


_ALLOCATOR_TUNED = False


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of returning large blocks to the OS (Linux only).

    Every activation of a forward pass is a fresh multi-megabyte allocation; by default glibc serves those with
    mmap and unmaps them on free, so each pass pays page faults on all of its memory again. Serving them from
    the heap and never trimming it makes the fp32 forward at 1024 px about 25 % faster on the 2-core machine
    (bench/, README "Performance"), for ~200 MB more resident memory. Process-wide; applied once, by the
    CPU scorer. Returns whether it took effect.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        ok = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, 1 << 30) == 1
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    _ALLOCATOR_TUNED = ok
    return ok
