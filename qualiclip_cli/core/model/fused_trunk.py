"""The CPU trunk as oneDNN convolutions with their ReLU and residual add fused in (inference only).

Eager PyTorch runs each bottleneck as convolution → ReLU → ... → convolution → add → ReLU, and every ReLU and add
is one more pass over a large activation in memory (11 % of the 1024 px forward on the 2-core benchmark
machine). oneDNN can apply them as post-ops while the convolution's output is still in cache. PyTorch exposes
that through ``torch.ops.mkldnn._convolution_pointwise`` (what ``torch.compile`` itself emits for CPU
convolutions), usable without compiling: same convolution kernels, same fp32 arithmetic, and on the benchmark's
weights bit-identical feature maps, about 8 % faster end to end.

The ops are private, so `build_fused_trunk` checks them against the eager trunk on a small input before
use and returns None when they are missing (a PyTorch built without oneDNN) or disagree; the caller then keeps
the eager trunk. The model must already have its batch-norms folded (`model.fold_batchnorm`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from qualiclip_cli.core.model.architecture import ModifiedResNet

# The self-check's input: small, but every stage still has a spatial extent (the trunk downsamples by 32).
_CHECK_SHAPE = (1, 3, 96, 128)
_CHECK_TOLERANCE = 1e-4  # relative to the feature map's largest magnitude


def _conv(x: torch.Tensor, conv: nn.Conv2d, unary: str) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise(
        x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
        unary, [], None,
    )


def _conv_add_relu_(x: torch.Tensor, residual: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """relu(conv(x) + residual), accumulated into ``residual`` (which must not be needed afterwards)."""
    return torch.ops.mkldnn._convolution_pointwise_(
        residual, x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation),
        conv.groups, "add", 1.0, "relu", [], None,
    )


def _bottleneck(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = _conv(x, block.conv1, "relu")
    out = _conv(out, block.conv2, "relu")
    out = block.avgpool(out)
    if block.downsample is None:
        residual = x  # the previous block's output, needed by nothing else: the sum may overwrite it
    else:
        residual = _conv(block.downsample[0](x), block.downsample[1], "none")
    return _conv_add_relu_(out, residual, block.conv3)


def _fused_trunk(visual: ModifiedResNet, x: torch.Tensor) -> torch.Tensor:
    x = _conv(x, visual.conv1, "relu")
    x = _conv(x, visual.conv2, "relu")
    x = _conv(x, visual.conv3, "relu")
    x = visual.avgpool(x)
    stage_dtype = visual.layer1[0].conv1.weight.dtype
    x = x.to(stage_dtype)  # the same tensor when it already is
    for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        for block in stage:
            x = _bottleneck(block, x)
    return x


def _is_folded(visual: ModifiedResNet) -> bool:
    return not any(isinstance(m, nn.BatchNorm2d) for m in visual.modules())


def build_fused_trunk(visual: ModifiedResNet) -> Callable[[ModifiedResNet, torch.Tensor], torch.Tensor] | None:
    """A function ``f(visual, x)`` computing ``visual.trunk(x)`` with fused kernels, or None where they are
    unavailable or do not reproduce the eager trunk on ``visual`` (a batch-norm-folded trunk on the CPU, in eval
    mode; the check runs on it, and ``f`` suits it and its copies)."""
    if not _is_folded(visual) or visual.conv1.weight.device.type != "cpu":
        return None
    if not torch.backends.mkldnn.is_available() or not hasattr(torch.ops.mkldnn, "_convolution_pointwise_"):
        return None
    generator = torch.Generator().manual_seed(0)
    probe = torch.rand(_CHECK_SHAPE, generator=generator).contiguous(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            expected = visual.trunk(probe).float()
            got = _fused_trunk(visual, probe).float()
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return None
    scale = float(expected.abs().max()) or 1.0
    if got.shape != expected.shape or not bool((got - expected).abs().max() <= _CHECK_TOLERANCE * scale):
        return None
    return run_fused_trunk


def run_fused_trunk(visual: ModifiedResNet, x: torch.Tensor) -> torch.Tensor:
    """``visual.trunk(x)`` with fused kernels, for a trunk `build_fused_trunk` accepted."""
    return _fused_trunk(visual, x)
