"""The three margin ranking losses of QualiCLIP (the paper's recipe), as pure functions of similarity tensors.

Shapes: a batch of similarities is (B, 2, L, 14): B samples, crops A and B, levels 1..L (increasing
severity), and the 14 prompts in weights-file order pos1, neg1, …, pos7, neg7. `split_prompts` turns the
last axis into positive (…, 7) and negative (…, 7) similarities.

With s(x, T) the cosine similarity, i < j two levels (j more degraded):
  L_pos  = Σ_{i<j} max(0, s(x_j, T_p) − s(x_i, T_p) + m)     positive similarity must fall with the level
  L_neg  = Σ_{i<j} max(0, s(x_i, T_n) − s(x_j, T_n) + m)     negative similarity must rise with the level
  L_cons = Σ_i Σ_{T∈{T_p,T_n}} max(0, |s(A_i, T) − s(B_i, T)| − m_c)   the two crops agree
summed over level pairs (and both crops for L_pos / L_neg), averaged over the 7 prompt pairs and the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qualiclip_cli.core.model.prompts import split_prompts
from training.config import TrainConfig


def _level_pairs(levels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    i, j = torch.triu_indices(levels, levels, offset=1, device=device)
    return i, j  # every (i, j) with i < j


def positive_ranking_loss(pos: torch.Tensor, margin: float) -> torch.Tensor:
    """L_pos for positive-prompt similarities of shape (B, crops, L, P); returns a scalar."""
    i, j = _level_pairs(pos.shape[-2], pos.device)
    violations = torch.relu(pos[..., j, :] - pos[..., i, :] + margin)  # (B, crops, pairs, P)
    return violations.sum(dim=(1, 2)).mean()  # sum over crops and level pairs, mean over prompts and batch


def negative_ranking_loss(neg: torch.Tensor, margin: float) -> torch.Tensor:
    """L_neg for negative-prompt similarities of shape (B, crops, L, P); returns a scalar."""
    i, j = _level_pairs(neg.shape[-2], neg.device)
    violations = torch.relu(neg[..., i, :] - neg[..., j, :] + margin)
    return violations.sum(dim=(1, 2)).mean()


def consistency_loss(sims_a: torch.Tensor, sims_b: torch.Tensor, margin: float) -> torch.Tensor:
    """L_cons for the two crops' similarities to all prompts, each (B, L, 2P) (pos and neg prompts alike).

    For each level and prompt: max(0, |s(A) − s(B)| − m_c), summed over levels and over {T_p, T_n},
    averaged over the prompt pairs and the batch.
    """
    excess = torch.relu((sims_a - sims_b).abs() - margin)  # (B, L, 2P)
    pairs = excess.shape[-1] // 2
    return excess.sum(dim=(1, 2)).mean() / pairs


@dataclass(frozen=True)
class LossWeights:
    """The loss hyper-parameters; their defaults are TrainConfig's (stated there once)."""

    margin: float = TrainConfig.margin
    margin_cons: float = TrainConfig.margin_cons
    lambda_cons: float = TrainConfig.lambda_cons
    lambda_pos: float = TrainConfig.lambda_pos
    lambda_neg: float = TrainConfig.lambda_neg


def qualiclip_loss(sims: torch.Tensor, weights: LossWeights = LossWeights()) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its parts for similarities of shape (B, 2, L, 14) (crops A and B, levels, prompts)."""
    if sims.dim() != 4 or sims.shape[1] != 2:
        raise ValueError(f"expected similarities of shape (B, 2, L, prompts), got {tuple(sims.shape)}")
    pos, neg = split_prompts(sims)
    l_pos = positive_ranking_loss(pos, weights.margin)
    l_neg = negative_ranking_loss(neg, weights.margin)
    l_cons = consistency_loss(sims[:, 0], sims[:, 1], weights.margin_cons)
    total = weights.lambda_cons * l_cons + weights.lambda_pos * l_pos + weights.lambda_neg * l_neg
    return total, {"cons": l_cons.detach(), "pos": l_pos.detach(), "neg": l_neg.detach()}
