"""The three margin ranking losses on hand-made similarity tensors: zero when the ordering holds by more than
the margin, positive with the right gradient sign when it does not."""

import pytest
import torch

from qualiclip_cli.core.model.prompts import split_prompts
from training.losses import (
    LossWeights,
    consistency_loss,
    negative_ranking_loss,
    positive_ranking_loss,
    qualiclip_loss,
)

M, MC = 0.03, 0.01


def sims_from(pos_levels, neg_levels, crop_b_shift=0.0, batch=1):
    """(B, 2, L, 14) similarities: every prompt pair gets pos_levels / neg_levels along the level axis."""
    pos = torch.tensor(pos_levels, dtype=torch.float64)
    neg = torch.tensor(neg_levels, dtype=torch.float64)
    levels = len(pos)
    sims = torch.empty(batch, 2, levels, 14, dtype=torch.float64)
    sims[..., 0::2] = pos.view(1, 1, levels, 1)
    sims[..., 1::2] = neg.view(1, 1, levels, 1)
    sims[:, 1] += crop_b_shift
    return sims


def test_split_prompts_takes_alternate_rows():
    sims = torch.arange(14.0).view(1, 14)
    pos, neg = split_prompts(sims)
    assert pos.tolist() == [[0, 2, 4, 6, 8, 10, 12]]
    assert neg.tolist() == [[1, 3, 5, 7, 9, 11, 13]]


def test_zero_when_ordering_holds_by_more_than_the_margin():
    sims = sims_from([0.5, 0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4, 0.5], crop_b_shift=0.005, batch=3)
    total, parts = qualiclip_loss(sims, LossWeights(margin=M, margin_cons=MC))
    assert total.item() == 0.0
    assert all(v.item() == 0.0 for v in parts.values())


def test_positive_loss_exact_value_and_gradient_when_violated():
    # Two levels, positive similarity RISES with the level: violation 0.6 - 0.5 + m per crop and prompt pair.
    pos = torch.tensor([0.5, 0.6], dtype=torch.float64).view(1, 1, 2, 1).expand(1, 2, 2, 7).clone().requires_grad_()
    loss = positive_ranking_loss(pos, M)
    assert loss.item() == pytest.approx(2 * (0.1 + M))  # summed over 2 crops, averaged over the 7 pairs
    loss.backward()
    assert (pos.grad[:, :, 1] > 0).all()  # gradient descent lowers the more degraded crop's similarity
    assert (pos.grad[:, :, 0] < 0).all()  # and raises the less degraded one's


def test_positive_loss_within_the_margin_is_positive():
    pos = torch.tensor([0.5, 0.49], dtype=torch.float64).view(1, 1, 2, 1).expand(1, 1, 2, 7)
    assert positive_ranking_loss(pos, M).item() == pytest.approx(M - 0.01)
    assert positive_ranking_loss(pos, 0.005).item() == 0.0


def test_negative_loss_exact_value_and_gradient_when_violated():
    # Negative similarity FALLS with the level: the opposite of what L_neg wants.
    neg = torch.tensor([0.6, 0.5], dtype=torch.float64).view(1, 1, 2, 1).expand(1, 1, 2, 7).clone().requires_grad_()
    loss = negative_ranking_loss(neg, M)
    assert loss.item() == pytest.approx(0.1 + M)
    loss.backward()
    assert (neg.grad[:, :, 1] < 0).all()  # raise the more degraded crop's negative similarity
    assert (neg.grad[:, :, 0] > 0).all()


def test_ranking_losses_sum_over_all_level_pairs():
    # Constant similarity over 5 levels: each of the 10 pairs (i < j) violates by exactly the margin.
    flat = torch.full((1, 1, 5, 7), 0.3, dtype=torch.float64)
    assert positive_ranking_loss(flat, M).item() == pytest.approx(10 * M)
    assert negative_ranking_loss(flat, M).item() == pytest.approx(10 * M)


def test_consistency_loss_value_and_gradient():
    a = torch.full((1, 3, 14), 0.40, dtype=torch.float64, requires_grad=True)
    b = torch.full((1, 3, 14), 0.35, dtype=torch.float64, requires_grad=True)
    loss = consistency_loss(a, b, MC)
    # |0.05| - 0.01 = 0.04, summed over 3 levels and both prompts of a pair, averaged over 7 pairs: 3 * 2 * 0.04
    assert loss.item() == pytest.approx(3 * 2 * 0.04)
    loss.backward()
    assert (a.grad > 0).all() and (b.grad < 0).all()  # pull the two crops together
    close = torch.full((1, 3, 14), 0.355, dtype=torch.float64)
    assert consistency_loss(close, b.detach(), MC).item() == 0.0


def test_total_is_the_weighted_sum_of_the_parts():
    sims = sims_from([0.3, 0.35, 0.2], [0.5, 0.45, 0.6], crop_b_shift=0.05, batch=2)
    weights = LossWeights(margin=M, margin_cons=MC, lambda_cons=0.5, lambda_pos=2.0, lambda_neg=3.0)
    total, parts = qualiclip_loss(sims, weights)
    expected = 0.5 * parts["cons"] + 2.0 * parts["pos"] + 3.0 * parts["neg"]
    assert total.item() == pytest.approx(expected.item())
    assert all(v.item() > 0 for v in parts.values())


def test_shape_is_checked():
    with pytest.raises(ValueError, match="shape"):
        qualiclip_loss(torch.zeros(2, 3, 5, 14))
