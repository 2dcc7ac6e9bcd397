"""model.attribution: each pair's logit is exactly its map's sum plus a constant, on the golden model and on
random full-size RN50 weights, and the map is each token's share computed token by token through the pool."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from qualiclip_cli.core.model.architecture import RN50, ModifiedResNet, reference_attention_pool
from qualiclip_cli.core.model.attribution import attention_weights, attribute
from qualiclip_cli.core.model.inference import prepare_for_inference
from qualiclip_cli.core.model.prompts import LOGIT_SCALE
from qualiclip_cli.core.model.qualiclip import QualiCLIP, load_qualiclip

GOLDEN_IMAGES = ["astronaut_1024.png", "astronaut_512.png", "camera_gray_300.png", "chelsea_97x61.png",
                 "coffee_333x217.png", "rocket.jpg"]


@pytest.fixture(autouse=True)
def _no_autograd():
    with torch.inference_mode():
        yield


@pytest.fixture(scope="module")
def golden_model(golden):
    return load_qualiclip(golden / "tiny_qualiclip.pth")


def _pixels(path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name", GOLDEN_IMAGES)
def test_golden_maps_add_up_to_the_logits(golden, golden_model, name):
    reference = json.loads((golden / "golden.json").read_text())["images"][name]
    images = _pixels(golden / "images" / name)
    result = attribute(golden_model, images)
    h, w = images.shape[-2:]
    assert result.grid == (h // 32, w // 32)
    assert torch.allclose(result.maps.sum((2, 3)) + result.constants, result.logits, atol=1e-4, rtol=0)
    # The logits are the model's own: their sigmoid is each pair's probability, which is the reference's.
    assert torch.allclose(torch.sigmoid(result.logits), result.pair_probs.double(), atol=1e-6, rtol=0)
    assert torch.allclose(result.pair_probs[0], torch.tensor(reference["pair_probs"]), atol=1e-4, rtol=0)
    assert abs(result.scores.item() - reference["score"]) <= 1e-5
    if result.grid[0] * result.grid[1] > 1:  # a real map, not a constant spread over the grid
        assert result.maps[0].flatten(1).std(dim=1).min() > 1e-4


def _random_rn50(seed: int = 0) -> QualiCLIP:
    torch.manual_seed(seed)
    visual = ModifiedResNet(RN50).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics (folded by prepare_for_inference)
        for m in visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    prompts = torch.nn.functional.normalize(torch.randn(14, RN50.output_dim), dim=-1)
    return QualiCLIP(visual, prompts).eval()


def test_full_size_random_weights_as_scoring_runs_them():
    model = _random_rn50()
    images = torch.randint(0, 256, (2, 3, 192, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        eager = model(images)
    prepared = prepare_for_inference(model, "cpu", "fp32")  # folded BN, channels-last, the fused CPU trunk
    result = attribute(prepared, images.contiguous(memory_format=torch.channels_last))
    assert result.grid == (6, 8)
    assert torch.allclose(result.maps.sum((2, 3)) + result.constants, result.logits, atol=1e-4, rtol=0)
    assert torch.allclose(result.pair_probs, eager.pair_probs, atol=1e-4, rtol=0)
    assert torch.allclose(torch.sigmoid(result.logits), result.pair_probs.double(), atol=1e-6, rtol=0)
    assert result.maps.abs().max() > 1e-3  # not a degenerate all-zero map


def test_each_cell_is_its_tokens_share_computed_head_by_head(golden_model, golden):
    """An independent computation of the map: per token, its value vectors through v_proj and c_proj, weighted by
    its attention (plus its share of the mean token's), dotted with the pair's prompt difference."""
    model = golden_model
    pool = model.visual.attnpool
    images = _pixels(golden / "images" / "coffee_333x217.png")
    result = attribute(model, images)
    with torch.inference_mode():
        fmap = model.feature_map(images).double()
    tokens = fmap.flatten(2).transpose(1, 2)[0]  # (N, C)
    n, c = tokens.shape
    heads = pool.num_heads
    attn = attention_weights(model, tokens[None])[0]  # (heads, N+1)
    values = tokens @ pool.v_proj.weight.double().T  # (N, C): W_v t_j, heads side by side
    weighted = torch.cat([values[:, h * (c // heads):(h + 1) * (c // heads)]
                          * (attn[h, 1:] + attn[h, 0] / n)[:, None] for h in range(heads)], dim=1)
    per_token = weighted @ pool.c_proj.weight.double().T  # (N, D)
    g = per_token.sum(0) + pool.c_proj.weight.double() @ pool.v_proj.bias.double() + pool.c_proj.bias.double()
    # g is the pool's output, as the reference attention computes it.
    with torch.inference_mode():
        ref = reference_attention_pool(pool, fmap.float())[0].double()
    assert torch.allclose(g, ref, atol=1e-4 * ref.abs().max().item(), rtol=0)
    t = model.prompts_features.double()
    for p in range(7):
        d = t[2 * p] - t[2 * p + 1]
        expected = LOGIT_SCALE * per_token @ d / g.norm()
        assert torch.allclose(result.maps[0, p].flatten(), expected, atol=1e-6, rtol=0)


def test_a_token_the_pool_does_not_attend_to_reads_zero(golden_model, golden):
    """Push one token's attention to ~0 (a large negative logit bias along the folded key): its map cell goes to
    ~0 however large its features, the sum still adds up."""
    model = golden_model
    images = _pixels(golden / "images" / "astronaut_512.png")
    with torch.inference_mode():
        fmap = model.feature_map(images).clone()
    from qualiclip_cli.core.model.attribution import attribute_features

    base = attribute_features(model, fmap)
    # Scale one token up along minus each head's folded key direction: that head's logit for it plummets.
    tokens = fmap.flatten(2).transpose(1, 2)
    attn = attention_weights(model, tokens.double())
    assert attn.shape[-1] == tokens.shape[1] + 1
    pool = model.visual.attnpool
    heads, c = pool.num_heads, tokens.shape[-1]
    q = torch.nn.functional.linear(tokens.mean(1), pool.q_proj.weight, pool.q_proj.bias).view(heads, c // heads)
    k_dir = torch.einsum("hd,hdc->c", q, pool.k_proj.weight.view(heads, c // heads, c))
    changed = fmap.clone()
    changed[0, :, 3, 3] -= 60 * k_dir / k_dir.norm()
    after = attribute_features(model, changed)
    cell = after.maps[0, :, 3, 3].abs().max().item()
    assert cell < 1e-3 * after.maps.abs().max().item()
    assert base.maps[0, :, 3, 3].abs().max().item() > cell  # it carried something before
    assert torch.allclose(after.maps.sum((2, 3)) + after.constants, after.logits, atol=1e-4, rtol=0)
