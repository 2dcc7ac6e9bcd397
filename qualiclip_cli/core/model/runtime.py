"""Device and numeric precision choices for inference."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from qualiclip_cli.core.errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")
#: auto: fp16 on CUDA (the reference's autocast), fp32 elsewhere (see pick_precision); fp32 is the strict mode.
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

    kind = check_device_name(requested)
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


def pick_precision(requested: str, device_type: str = "cpu") -> str:
    """Resolve `auto` for a device of kind ``device_type``: fp16 on CUDA, fp32 elsewhere.

    On CUDA the reference's own inference runs under `torch.cuda.amp.autocast()`: fp16 convolutions *are* its
    GPU behaviour, so `auto` follows it there (`inference.prepare_for_inference`: the four residual stages in
    fp16, the stem and the pool in fp32; bench/gpu.sh reports its difference from fp32 on the same photos).
    `fp32` stays the strict mode (and `--max-side 0 --precision fp32` the golden one). On the CPU and MPS `auto`
    is fp32: there reduced precision is slower or no faster, and it moved scores by more than 0.01 (bf16 0.10,
    fp16 0.02 on the benchmark's calibrated random weights).
    """
    if requested not in PRECISIONS:
        raise UsageError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    return "fp16" if device_type == "cuda" else "fp32"


def check_device_name(requested: str) -> str:
    """The device kind of ``requested`` ("auto", "cpu", "cuda", "mps"), or the UsageError of an unknown one."""
    kind = requested.split(":")[0]
    if kind not in DEVICES:
        raise UsageError(f"unknown device {requested!r}; choose one of {', '.join(DEVICES)}")
    return kind


def cuda_impossible() -> bool:
    """True when this process certainly cannot use CUDA, decided without importing torch: the installed torch
    was built without CUDA (its `torch/version.py` says `cuda = None`), CUDA_VISIBLE_DEVICES hides every GPU
    ("" or "-1"), or there is no NVIDIA driver (Linux: neither /proc/driver/nvidia/version nor /dev/nvidia0,
    and no WSL GPU at /dev/dxg; macOS: CUDA does not exist there). Anything else counts as "CUDA may exist"
    (False): only torch can then tell."""
    import importlib.util
    import os
    import sys

    if sys.platform == "darwin":
        return True
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    try:
        spec = importlib.util.find_spec("torch")
        origin = spec.origin if spec is not None else None
        if origin:
            version = Path(origin).with_name("version.py").read_text(encoding="utf-8")
            if re.search(r"^cuda\s*(:\s*[^=]+)?=\s*None\s*$", version, re.MULTILINE):
                return True
    except (OSError, ValueError, ImportError):
        pass
    if sys.platform.startswith("linux"):
        return not any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/dxg"))
    return False


def device_type_without_torch(requested: str = "auto") -> str | None:
    """The kind of device `pick_device(requested)` would give, as far as the scoring identity cares ("cuda" or
    "cpu", which also stands for MPS: precision and decoder are the same there), without importing torch; None
    when only torch can tell (`auto` on a machine where CUDA may exist). An explicit device is taken at its word:
    one that is not there is refused when the model loads, on the first file the cache does not hold."""
    kind = check_device_name(requested)
    if kind == "cuda":
        return "cuda"
    if kind in ("cpu", "mps"):
        return "cpu"
    return "cpu" if cuda_impossible() else None


def make_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    dev = pick_device(device)
    return Runtime(device=dev, precision=pick_precision(precision, dev.split(":")[0]))


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
