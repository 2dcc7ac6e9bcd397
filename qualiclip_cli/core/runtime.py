"""Device and numeric precision choices for inference."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from qualiclip_cli.core.errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Runtime:
    device: str  # "cpu", "cuda", "cuda:1", "mps"
    precision: str  # "fp32", "bf16", "fp16"

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    def autocast(self):
        """Autocast context for the forward pass (a no-op in fp32)."""
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device_type, dtype=dtype)


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


def pick_precision(requested: str, device: str, exact: bool = False) -> str:
    """Resolve `auto`. Reduced precision is the default only where bench/ showed its scores within 0.01 of
    fp32 at the same resolution (README, "Performance"): fp16 on CUDA (with the fp32 stem and pool of
    model.prepare_for_inference). bf16 missed that bar on the CPU, so the CPU stays fp32 unless asked.

    exact=True (native-resolution scoring, `--max-side 0`) makes `auto` mean fp32, the reference's precision.
    """
    if requested not in PRECISIONS:
        raise UsageError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if exact:
        return "fp32"
    return "fp16" if device.split(":")[0] == "cuda" else "fp32"


def make_runtime(device: str = "auto", precision: str = "auto", exact: bool = False) -> Runtime:
    dev = pick_device(device)
    return Runtime(device=dev, precision=pick_precision(precision, dev, exact))
