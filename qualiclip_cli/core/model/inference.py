"""Inference preparation: BatchNorm folded into the convolutions, reduced-precision stages, the fused CPU trunk."""

from __future__ import annotations

import torch
from torch import nn

from qualiclip_cli.core.model.architecture import ModifiedResNet
from qualiclip_cli.core.model.qualiclip import QualiCLIP


def fold_batchnorm(visual: ModifiedResNet) -> ModifiedResNet:
    """Fold every eval-mode BatchNorm into the convolution before it (in fp32), in place.

    Removes one memory pass per convolution. Scores move by float rounding only: 3e-7 on the golden
    vectors, and on full-size random weights at 2048×1536 the same-score mode stays within 1e-5 of the
    reference loop while running 1.4× faster than unfolded.
    """
    def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
        scale = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)
        # Built on the meta device: a real one would draw (and throw away) random weights, 0.25 s for RN50.
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          bias=True, device="meta")
        fused.weight = nn.Parameter((conv.weight.float() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype), requires_grad=False)
        fused.bias = nn.Parameter((bn.bias.float() - bn.running_mean.float() * scale).to(conv.weight.dtype), requires_grad=False)
        return fused

    for owner in [visual, *[m for m in visual.modules() if m.__class__.__name__ == "Bottleneck"]]:
        for i in (1, 2, 3):
            conv, bn = getattr(owner, f"conv{i}"), getattr(owner, f"bn{i}")
            if isinstance(bn, nn.BatchNorm2d):
                setattr(owner, f"conv{i}", fold(conv, bn))
                setattr(owner, f"bn{i}", nn.Identity())
        down = getattr(owner, "downsample", None)
        if down is not None and isinstance(down[2], nn.BatchNorm2d):
            down[1] = fold(down[1], down[2])
            down[2] = nn.Identity()
    return visual


def prepare_for_inference(model: QualiCLIP, device: str, precision: str) -> QualiCLIP:
    """Move to the device and pick the fastest layout: channels-last, BN folded into the convolutions, and for reduced
    precision the four residual stages' weights in bf16/fp16 (faster than autocast, which re-casts weights on
    every call). The stem and the pool stay fp32: quantising the normalised input to bf16 alone moves scores as
    much as ±1 grey level of noise, and both are a small share of the work. On the CPU the trunk then runs with
    ReLU and residual adds fused into the convolutions where PyTorch's oneDNN allows it (`fused_trunk`)."""
    model = model.to(device)
    fold_batchnorm(model.visual)
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        for name in ("layer1", "layer2", "layer3", "layer4"):
            getattr(model.visual, name).to(dtype)
    model = model.to(memory_format=torch.channels_last).eval()
    if model.visual.conv1.weight.device.type == "cpu":
        from qualiclip_cli.core.model.fused_trunk import build_fused_trunk

        model.fast_trunk = build_fused_trunk(model.visual)
    return model
