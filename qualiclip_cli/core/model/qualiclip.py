"""The QualiCLIP module: image tensor in, quality score, 7 pair probabilities and the embedding out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from qualiclip_cli.core.model.architecture import ModifiedResNet, VisualConfig
from qualiclip_cli.core.model.layout import (
    load_weights_dict,
    load_weights_file,
    split_weights,
    validate_weights,
    visual_state_dict,
)
from qualiclip_cli.core.model.prompts import CLIP_MEAN, CLIP_STD, GROUPING_EMBEDDING, LOGIT_SCALE, PROMPT_PAIRS

MIN_SIDE = 32  # the trunk downsamples by 32; smaller images have no spatial token


@dataclass
class ScoreOutput:
    scores: torch.Tensor  # (B,) in [0, 1]
    pair_probs: torch.Tensor  # (B, 7) positive-prompt probability per pair
    embeddings: torch.Tensor  # (B, D) L2-normalised image features


def scores_from_features(
    embeddings: torch.Tensor, prompts_features: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference scoring head on normalised features: fixed scale 100, per-pair softmax, mean of positives."""
    logits = LOGIT_SCALE * embeddings @ prompts_features.T  # (B, 14), rows pos1, neg1, ...
    probs = logits.view(-1, len(PROMPT_PAIRS), 2).softmax(dim=-1)[..., 0]  # (B, 7)
    return probs.mean(dim=-1), probs


def project_out_prompts(embeddings: torch.Tensor, prompts_features: torch.Tensor) -> torch.Tensor:
    """``embeddings`` (B, D) without their components along the prompt directions (rows of ``prompts_features``),
    L2-normalised again: what is left describes the picture, not how degraded it is."""
    basis, _ = torch.linalg.qr(prompts_features.float().T)  # (D, 14), orthonormal columns
    rest = embeddings.float() - (embeddings.float() @ basis) @ basis.T
    return F.normalize(rest, dim=-1)


def grouping_embeddings(embeddings: torch.Tensor, prompts_features: torch.Tensor) -> torch.Tensor:
    """The embeddings grouping compares (`GROUPING_EMBEDDING`), from the forward pass's own embeddings."""
    if GROUPING_EMBEDDING == "projected":
        return project_out_prompts(embeddings, prompts_features)
    return embeddings


class QualiCLIP(nn.Module):
    """Visual trunk + QualiCLIP pooling + prompt head. Input: (B, 3, H, W) RGB, uint8 or float in [0, 1].

    Normalisation happens inside so that uint8 batches can travel to the GPU at a quarter of the bytes.
    """

    def __init__(self, visual: ModifiedResNet, prompts_features: torch.Tensor):
        super().__init__()
        self.visual = visual
        self.register_buffer("prompts_features", prompts_features.float().clone(), persistent=False)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        # Set by prepare_for_inference where a faster equivalent of visual.trunk exists (fused_trunk): called as
        # fast_trunk(self.visual, x), so that a copy of the model runs its own weights.
        self.fast_trunk: Callable[[ModifiedResNet, torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def from_weights(cls, weights: dict[str, torch.Tensor]) -> QualiCLIP:
        """Build from a loaded weights dict without random initialisation (meta device, then assign)."""
        clip_sd, prompts = split_weights(weights)
        visual_sd = {k: v.float() if v.is_floating_point() else v for k, v in visual_state_dict(clip_sd).items()}
        cfg = VisualConfig.from_state_dict(visual_sd, prefix="")
        with torch.device("meta"):
            visual = ModifiedResNet(cfg)
        visual.load_state_dict(visual_sd, strict=True, assign=True)
        model = cls(visual, prompts)
        return model.eval()

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - self.mean) / self.std

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """The trunk's (B, C, H/32, W/32) output, in the pool's dtype (what `embed` pools; `attribution` reads it)."""
        if images.shape[-1] < MIN_SIDE or images.shape[-2] < MIN_SIDE:
            raise ValueError(f"image of {images.shape[-1]}x{images.shape[-2]} px is smaller than {MIN_SIDE}x{MIN_SIDE}")
        x = self.normalise(images)
        trunk_dtype = self.visual.conv1.weight.dtype
        x = x.to(trunk_dtype)  # the same tensor when it already is
        feature_map = self.fast_trunk(self.visual, x) if self.fast_trunk else self.visual.trunk(x)
        # The pool and head stay in fp32 whatever the trunk runs in: they are cheap and set the score's precision.
        return feature_map.to(self.visual.attnpool.c_proj.weight.dtype)

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        """The L2-normalised image features of a `feature_map`."""
        return F.normalize(self.visual.attnpool(feature_map).float(), dim=-1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(images))

    def forward(self, images: torch.Tensor) -> ScoreOutput:
        emb = self.embed(images)
        scores, probs = scores_from_features(emb, self.prompts_features)
        return ScoreOutput(scores=scores, pair_probs=probs, embeddings=emb)


def load_qualiclip(path, expected_shapes=None, file=None) -> QualiCLIP:
    """Load and structurally check a weights file, then build the scorer (CPU, fp32, eval mode).

    ``file``: the file already open (binary; ``path`` then only names it in messages), see
    `weights.ResolvedWeights.open_for_loading`.
    """
    weights = load_weights_dict(path) if file is None else load_weights_file(file, path)
    validate_weights(weights, path, expected_shapes)
    return QualiCLIP.from_weights(weights)
