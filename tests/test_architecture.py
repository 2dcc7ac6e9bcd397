"""Our ModifiedResNet equals open_clip's RN50 architecture; the folded pool equals the reference attention."""

import pytest
import torch

from qualiclip_cli.core.model.architecture import RN50, ModifiedResNet, VisualConfig, reference_attention_pool


def _open_clip_visual(cfg: VisualConfig):
    from open_clip.modified_resnet import ModifiedResNet as OpenClipResNet

    return OpenClipResNet(list(cfg.layers), cfg.output_dim, cfg.heads, image_size=224, width=cfg.width)


def test_rn50_layout_matches_open_clip_rn50_quickgelu():
    import open_clip

    with torch.device("meta"):
        reference = open_clip.create_model("RN50-quickgelu", pretrained=None, device="meta").visual
        ours = ModifiedResNet(RN50)
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert our_shapes == ref_shapes
    assert VisualConfig.from_state_dict(reference.state_dict(), prefix="") == RN50


@pytest.mark.parametrize("size", [(64, 64), (96, 160), (33, 47)])
def test_features_equal_open_clip_trunk_and_reference_pool(size):
    torch.manual_seed(1)
    cfg = VisualConfig(layers=(1, 2, 1, 1), width=8, heads=4, output_dim=16, attnpool_tokens=50)
    reference = _open_clip_visual(cfg).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics so every layer matters
        for m in reference.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    ours = ModifiedResNet(cfg).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref_map = reference.layer4(reference.layer3(reference.layer2(reference.layer1(reference.stem(x)))))
        our_map = ours.trunk(x)
        assert torch.equal(ref_map, our_map)
        fast = ours.attnpool(our_map)
        slow = reference_attention_pool(ours.attnpool, our_map)
    assert fast.shape == (2, 16)
    assert torch.allclose(fast, slow, atol=1e-5, rtol=1e-4)


def test_pool_ignores_positional_embedding():
    torch.manual_seed(0)
    cfg = VisualConfig(layers=(1, 1, 1, 1), width=8, heads=4, output_dim=16, attnpool_tokens=50)
    model = ModifiedResNet(cfg).eval()
    feat = torch.randn(1, cfg.embed_dim, 3, 5)
    with torch.no_grad():
        before = model.attnpool(feat)
        model.attnpool.positional_embedding.normal_(0, 10)
        after = model.attnpool(feat)
    assert torch.equal(before, after)
