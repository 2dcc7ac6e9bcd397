"""Tiny random CLIP weights files in the real QualiCLIP layout, so tests never need the real 400 MB file."""

from __future__ import annotations

from pathlib import Path

import torch

TINY_VISION = dict(layers=(1, 1, 1, 1), width=8)
TINY_TEXT = dict(width=32, layers=1)
TINY_EMBED = 32


def tiny_clip_state_dict(
    seed: int = 0, width: int = TINY_VISION["width"], layers=TINY_VISION["layers"], embed: int = TINY_EMBED
) -> dict[str, torch.Tensor]:
    """OpenAI-layout state dict of a tiny random CLIP built by open_clip (so the layout is genuine)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(
        embed,
        vision_cfg=CLIPVisionCfg(layers=tuple(layers), width=width, image_size=64, patch_size=None),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=TINY_TEXT["width"], heads=1, layers=TINY_TEXT["layers"]),
        quick_gelu=True,
    )
    # open_clip zero-initialises each block's last batch-norm scale; give the trunk real signal instead.
    with torch.no_grad():
        for name, p in model.visual.named_parameters():
            if name.endswith("bn3.weight"):
                p.uniform_(0.5, 1.5)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def qualiclip_weights(clip_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CLIP state dict in the QualiCLIP layout, prompts_features from its own text tower."""
    from qualiclip_cli.core.model.layout import join_weights
    from qualiclip_cli.core.model.text_tower import build_open_clip, prompt_features

    return join_weights(clip_sd, prompt_features(build_open_clip(clip_sd)))


def tiny_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    return qualiclip_weights(tiny_clip_state_dict(seed))


def save_weights(weights: dict[str, torch.Tensor], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, path)
    return path


def write_tiny_weights(path: Path, seed: int = 0) -> Path:
    return save_weights(tiny_weights(seed), path)
