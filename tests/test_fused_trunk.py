"""fused_trunk: the CPU trunk with oneDNN-fused ReLU and residual add computes what the eager trunk computes."""

import pytest
import torch

from qualiclip_cli.core.model import fused_trunk
from qualiclip_cli.core.model.architecture import ModifiedResNet, VisualConfig
from qualiclip_cli.core.model.inference import fold_batchnorm, prepare_for_inference
from qualiclip_cli.core.model.qualiclip import QualiCLIP

# Two blocks in the first stages: the blocks without a downsample branch (residual = the block's input,
# accumulated in place) are exercised as well as the first block of each stage.
CFG = VisualConfig(layers=(2, 2, 1, 1), width=8, heads=4, output_dim=16, attnpool_tokens=50)


def _visual(seed: int = 0) -> ModifiedResNet:
    torch.manual_seed(seed)
    visual = ModifiedResNet(CFG).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so that folding them matters
        for m in visual.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return visual


def _model(seed: int = 0) -> QualiCLIP:
    prompts = torch.nn.functional.normalize(torch.randn(14, CFG.output_dim), dim=-1)
    return QualiCLIP(_visual(seed), prompts).eval()


def _folded() -> ModifiedResNet:
    return fold_batchnorm(_visual()).to(memory_format=torch.channels_last)


def test_built_on_a_cpu_with_onednn():
    fused = fused_trunk.build_fused_trunk(_folded())
    assert (fused is not None) == torch.backends.mkldnn.is_available()
    assert torch.backends.mkldnn.is_available()  # the CI machine has it: the fast path is what it tests


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 96, 160), (1, 3, 47, 33), (1, 3, 200, 150)])
def test_fused_trunk_equals_eager_trunk(shape):
    visual = _folded()
    fused = fused_trunk.build_fused_trunk(visual)
    torch.manual_seed(1)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    before = x.clone()
    with torch.inference_mode():
        expected = visual.trunk(x)
        got = fused(visual, x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert torch.equal(x, before)  # the in-place residual sums never write into the caller's input


def test_prepared_cpu_model_uses_it_and_scores_like_the_eager_model():
    model = prepare_for_inference(_model(), "cpu", "fp32")
    assert model.fast_trunk is not None
    images = torch.randint(0, 256, (2, 3, 80, 120), dtype=torch.uint8)
    with torch.inference_mode():
        fused = model(images)
        model.fast_trunk = None
        eager = model(images)
    assert torch.allclose(fused.scores, eager.scores, atol=1e-6)
    assert torch.allclose(fused.embeddings, eager.embeddings, atol=1e-5)


def test_a_copy_of_the_model_runs_its_own_weights():
    import copy

    model = prepare_for_inference(_model(), "cpu", "fp32")
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.visual.layer4[0].conv3.weight.mul_(-1)
    images = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        mine, theirs = model(images).embeddings, twin(images).embeddings
        twin.fast_trunk = None
        theirs_eager = twin(images).embeddings
    assert not torch.allclose(mine, theirs, atol=1e-3)
    assert torch.allclose(theirs, theirs_eager, atol=1e-5)


def test_unfolded_trunk_is_refused():
    assert fused_trunk.build_fused_trunk(_visual()) is None  # batch-norms still in place


def test_falls_back_when_the_fused_kernels_disagree(monkeypatch):
    visual = _folded()
    monkeypatch.setattr(fused_trunk, "_fused_trunk", lambda v, x: visual.trunk(x) * 1.01)
    assert fused_trunk.build_fused_trunk(visual) is None


def test_falls_back_when_the_fused_kernels_fail(monkeypatch):
    def broken(visual, x):
        raise RuntimeError("mkldnn_convolution_pointwise: unsupported")

    monkeypatch.setattr(fused_trunk, "_fused_trunk", broken)
    model = prepare_for_inference(_model(), "cpu", "fp32")
    assert model.fast_trunk is None
    with torch.inference_mode():
        out = model(torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8))
    assert out.scores.shape == (1,) and torch.isfinite(out.scores).all()


def test_reduced_precision_keeps_the_eager_trunk():
    # bf16 fused post-ops round once where eager bf16 rounds after every op: not the same numbers, so the
    # self-check declines and bf16 scores stay what the benchmark measured.
    model = prepare_for_inference(_model(), "cpu", "bf16")
    assert model.fast_trunk is None
