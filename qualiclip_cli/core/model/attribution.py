"""Exact attribution of each prompt pair's logit to the trunk's spatial tokens, through the attention pool.

QualiCLIP pools the trunk's (C, h, w) map with ONE query (the mean token's), so given the attention weights the
pooled feature is affine in the tokens. Per head h, with a_h,0 the weight of the mean token and a_h,j that of
spatial token t_j (j = 1..N, N = h·w), the mean token being (1/N) Σ_j t_j:

    mixed_h = Σ_j (a_h,j + a_h,0 / N) t_j                  (what the head averages, Σ weights = 1)
    g       = W_c [W_v,h mixed_h + b_v,h]_heads + b_c       (the pool's output, before normalisation)

and with f = g / |g|, T_pos and T_neg a pair's prompt features, d = T_pos − T_neg, the pair's logit is

    z = 100 · f · d = Σ_j  100/|g| · Σ_h (a_h,j + a_h,0/N) · (W_v,hᵀ [W_cᵀ d]_h) · t_j   +   100/|g| · d · (W_c b_v + b_c)
                      └────────────────── map[j] ─────────────────────────────┘        └──── constant ────┘

so ``sum(map) + constant == z`` exactly (up to float rounding), and sigmoid(z) is the pair's positive probability
(a softmax over two logits). The map is the share of the logit each token carries through the pool, holding the
attention weights and the normalisation fixed; a token the pool gives (almost) no weight reads (almost) zero
whatever is in it: "not looked at" is not "good". Cost: per pair and head one folded C-vector
(W_v,hᵀ [W_cᵀ d]_h, computed once per model) dotted with every token, 7·heads·C·N multiply-adds, about 0.35 G at
1024×768 for RN50, against about 60 G for the forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qualiclip_cli.core.model.prompts import LOGIT_SCALE, split_prompts
from qualiclip_cli.core.model.qualiclip import QualiCLIP, scores_from_features


@dataclass
class Attribution:
    """A batch's pair logits and their maps. Shapes: B images, P = 7 pairs, (rows, cols) the trunk's grid."""

    logits: torch.Tensor  # (B, P) float64: 100·f·(T_pos − T_neg), from the model's own pooling
    constants: torch.Tensor  # (B, P) float64: the part of each logit no token carries (the pool's biases)
    maps: torch.Tensor  # (B, P, rows, cols) float64: each token's share; maps.sum((2, 3)) + constants == logits
    scores: torch.Tensor  # (B,) the score, as `QualiCLIP.forward` gives it
    pair_probs: torch.Tensor  # (B, P) the pair probabilities, as `QualiCLIP.forward` gives them

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.maps.shape[-2]), int(self.maps.shape[-1])


def pair_directions(model: QualiCLIP) -> torch.Tensor:
    """(P, heads, C) float64: per pair and head the vector W_v,hᵀ [W_cᵀ (T_pos − T_neg)]_h that a token is dotted
    with (see the module's docstring); depends on the weights only."""
    pool = model.visual.attnpool
    heads = pool.num_heads
    c = pool.v_proj.weight.shape[1]
    positive, negative = split_prompts(model.prompts_features.double().T)  # (D, P) each
    d = (positive - negative).T  # (P, D)
    u = d @ pool.c_proj.weight.double()  # (P, C): W_cᵀ d, per pair
    w_v = pool.v_proj.weight.double().view(heads, c // heads, c)
    return torch.einsum("phd,hdc->phc", u.view(len(d), heads, c // heads), w_v)


def attention_weights(model: QualiCLIP, tokens: torch.Tensor) -> torch.Tensor:
    """(B, heads, N+1) the single query's attention over [mean, spatial tokens] of (B, N, C) ``tokens``, in their
    dtype, computed as `architecture.attention_pool` computes it."""
    pool = model.visual.attnpool
    b, _, c = tokens.shape
    heads = pool.num_heads
    head_dim = c // heads
    mean = tokens.mean(dim=1, keepdim=True)
    all_tokens = torch.cat([mean, tokens], dim=1)
    dtype = tokens.dtype
    q = F.linear(mean[:, 0], pool.q_proj.weight.to(dtype), pool.q_proj.bias.to(dtype)) * head_dim**-0.5
    q = q.view(b, heads, head_dim)
    k_folded = torch.einsum("bhd,hdc->bhc", q, pool.k_proj.weight.to(dtype).view(heads, head_dim, c))
    k_bias = (q * pool.k_proj.bias.to(dtype).view(heads, head_dim)).sum(-1)
    return (torch.einsum("bhc,bnc->bhn", k_folded, all_tokens) + k_bias[..., None]).softmax(dim=-1)


def attribute(model: QualiCLIP, images: torch.Tensor, directions: torch.Tensor | None = None) -> Attribution:
    """Score a batch of equal-shape images and attribute each pair's logit to the trunk's grid.

    ``images`` as `QualiCLIP.forward` takes them. ``directions``: `pair_directions(model)`, to reuse across
    batches. One trunk pass; the pool runs once the model's way (the logits, scores and probabilities, exactly as
    `score` computes them) and once more in float64 for the maps.
    """
    with torch.inference_mode():
        return attribute_features(model, model.feature_map(images), directions)


def attribute_features(model: QualiCLIP, feature_map: torch.Tensor,
                       directions: torch.Tensor | None = None) -> Attribution:
    """`attribute` from the trunk's (B, C, rows, cols) output (`QualiCLIP.feature_map`): the pool and the maps."""
    with torch.inference_mode():
        embeddings = model.pool(feature_map)
        scores, probs = scores_from_features(embeddings, model.prompts_features)
        sims = LOGIT_SCALE * embeddings.double() @ model.prompts_features.double().T
        positive, negative = split_prompts(sims)
        logits = positive - negative

        if directions is None:
            directions = pair_directions(model)
        pool = model.visual.attnpool
        b, c, rows, cols = feature_map.shape
        heads = pool.num_heads
        n = rows * cols
        tokens = feature_map.double().flatten(2).transpose(1, 2)  # (B, N, C)
        attn = attention_weights(model, tokens)  # (B, heads, N+1)
        weights = attn[:, :, 1:] + attn[:, :, :1] / n  # (B, heads, N): each spatial token's share, mean token's spread
        # The pool's output g, computed from the same weights (its norm turns the dot products into cosines).
        mixed = torch.einsum("bhn,bnc->bhc", weights, tokens)
        w_v = pool.v_proj.weight.double().view(heads, c // heads, c)
        values = torch.einsum("bhc,hdc->bhd", mixed, w_v).reshape(b, c) + pool.v_proj.bias.double()
        g = F.linear(values, pool.c_proj.weight.double(), pool.c_proj.bias.double())
        scale = LOGIT_SCALE / g.norm(dim=-1)  # (B,)
        # Σ_h weights[b,h,j] · (directions[p,h] · t_j): weight the tokens per head first, then one contraction.
        per_token = torch.einsum("phc,bnc->bphn", directions, tokens)  # (B, P, heads, N)
        maps = (per_token * weights[:, None]).sum(2) * scale[:, None, None]
        bias = pool.c_proj.weight.double() @ pool.v_proj.bias.double() + pool.c_proj.bias.double()  # (D,)
        pos_f, neg_f = split_prompts(model.prompts_features.double().T)
        constants = ((pos_f - neg_f).T @ bias)[None] * scale[:, None]  # (B, P)
    return Attribution(logits=logits, constants=constants, maps=maps.view(b, -1, rows, cols), scores=scores,
                       pair_probs=probs)
