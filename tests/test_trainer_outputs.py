"""What a training run leaves behind (a valid weights file that `score --weights` loads), batch-norm modes,
the learning-rate schedule, the `--init` choices, and the `train` / `train preview` commands."""

import dataclasses
import json

import pytest
import torch
from PIL import Image

from qualiclip_cli.core.errors import OfflineError, WeightsError
from qualiclip_cli.core.model import layout
from qualiclip_cli.core.model import weights as W
from training.config import TrainConfig
from training.init_weights import OPENAI_RN50, load_init
from training.trainer import lr_at, train

from cli_support import run_cli
from training_support import write_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    write_photos(root, ("astronaut", "coffee", "chelsea", "rocket"), views=1, side=80, fmt="jpg")
    return root


def config(photos, weights, out, **kw):
    values = dict(pristine=[str(photos)], init=str(weights), out_dir=str(out), steps=3, batch_size=2, crop_size=48,
                  lr=1e-3, warmup_steps=0, workers=0, max_side=0, checkpoint_every=10, log_every=1)
    values.update(kw)
    return TrainConfig(**values)


def test_final_weights_file_validates_and_scores(photos, tiny_weights_file, tmp_path):
    result = train(config(photos, tiny_weights_file, tmp_path / "run"))
    path = result.weights_path
    assert path == tmp_path / "run" / "qualiclip-finetuned.pth"
    trained = layout.load_weights_dict(path)
    layout.validate_weights(trained, path)
    start = layout.load_weights_dict(tiny_weights_file)
    assert trained.keys() == start.keys()
    for key, value in start.items():
        if key.startswith("clip_model.visual."):
            continue
        if key == "prompts_features":  # recomputed by the frozen text encoder: the same features
            assert torch.allclose(trained[key], value, atol=1e-6)
        else:
            assert torch.equal(trained[key], value), key  # the text tower is untouched
    assert not torch.equal(trained["clip_model.visual.conv1.weight"], start["clip_model.visual.conv1.weight"])
    assert torch.equal(trained["clip_model.visual.attnpool.positional_embedding"],
                       start["clip_model.visual.attnpool.positional_embedding"])  # unused by the pool: not trained
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["bn_stats"] == "train" and summary["steps"] == 3  # the tiny model is random: statistics train

    scored = run_cli("score", str(photos), "--weights", str(path), "--no-cache", "--format", "jsonl")
    assert scored.exit_code == 0, scored.stderr
    rows = [json.loads(line) for line in scored.stdout.splitlines()]
    assert len(rows) == 4 and all(0.0 <= r["score"] <= 1.0 for r in rows)


def test_frozen_batch_norm_statistics_do_not_move(photos, tiny_weights_file, tmp_path):
    start = layout.load_weights_dict(tiny_weights_file)
    # Give the start trained-looking statistics, so that --bn-stats auto freezes them.
    pretrained = {k: (v + 0.1 if k.endswith("running_mean") else v) for k, v in start.items()}
    pretrained_path = tmp_path / "pretrained.pth"
    torch.save(pretrained, pretrained_path)
    result = train(config(photos, pretrained_path, tmp_path / "run"))
    trained = layout.load_weights_dict(result.weights_path)
    stats = [k for k in start if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(trained[k], pretrained[k]) for k in stats)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["bn_stats"] == "frozen"
    # Forced to train, the statistics move.
    result = train(config(photos, pretrained_path, tmp_path / "run2", bn_stats="train"))
    trained = layout.load_weights_dict(result.weights_path)
    assert any(not torch.equal(trained[k], pretrained[k]) for k in stats)


def test_learning_rate_schedule():
    cfg = TrainConfig(lr=1e-3, steps=100, warmup_steps=10, min_lr_ratio=0.1)
    rates = [lr_at(s, cfg) for s in range(100)]
    assert rates[0] == pytest.approx(1e-3 / 11) and rates[9] == pytest.approx(1e-3 * 10 / 11)
    assert rates[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # cosine: never rises after warm-up
    assert rates[-1] == pytest.approx(1e-4, rel=0.01)
    constant = dataclasses.replace(cfg, schedule="constant")
    assert lr_at(50, constant) == lr_at(99, constant) == 1e-3


def test_init_qualiclip_resolves_like_score(tiny_weights_file, monkeypatch):
    monkeypatch.setenv("QUALICLIP_WEIGHTS", str(tiny_weights_file))
    init = load_init("qualiclip")
    assert init.source == "qualiclip" and init.path == tiny_weights_file
    assert init.sha256 == W.sha256_file(tiny_weights_file)
    assert "visual.conv1.weight" in init.clip_sd and "token_embedding.weight" in init.clip_sd
    with pytest.raises(WeightsError, match="not 'qualiclip', 'openai'"):
        load_init("no-such-file.pth")


def test_init_openai_downloads_a_safetensors_clip_and_pins_it(tiny_weights_file, isolated_home, monkeypatch):
    """The `openai` path end to end on a tiny CLIP served from 127.0.0.1 (same format as the hub file)."""
    from safetensors.torch import save_file

    from http_server import FileServer

    start = layout.load_weights_dict(tiny_weights_file)
    clip_sd = {k[len("clip_model."):]: v.contiguous() for k, v in start.items() if k.startswith("clip_model.")}
    body_path = isolated_home.parent / "clip.safetensors"
    save_file(clip_sd, str(body_path))
    spec = dataclasses.replace(OPENAI_RN50, expected_shapes={"clip_model.visual.conv1.weight": tuple(clip_sd["visual.conv1.weight"].shape)})

    with pytest.raises(OfflineError, match="offline"):
        load_init("openai", openai_spec=spec)
    with FileServer() as server:
        server.files["/clip.safetensors"] = body_path.read_bytes()
        monkeypatch.setenv("QUALICLIP_CLIP_URL", server.url("/clip.safetensors"))
        monkeypatch.delenv("QUALICLIP_OFFLINE")
        init = load_init("openai", openai_spec=spec)
        assert server.requests == 1
    assert init.source == "openai" and init.path == isolated_home / "openai-clip-rn50.safetensors"
    assert W.read_recorded_hash(init.path) == init.sha256
    assert init.clip_sd.keys() == clip_sd.keys()
    assert all(torch.equal(init.clip_sd[k], clip_sd[k]) for k in clip_sd)
    monkeypatch.setenv("QUALICLIP_OFFLINE", "1")
    assert load_init("openai", openai_spec=spec).sha256 == init.sha256  # from the cache from now on
    # The official pins refuse a CLIP of the wrong size.
    with pytest.raises(WeightsError, match="expected \\(32, 3, 3, 3\\)"):
        OPENAI_RN50.check(init.path, "test", OPENAI_RN50)


def test_train_command_end_to_end(photos, tiny_weights_file, tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--pristine", str(photos), "--init", str(tiny_weights_file), "--out", str(out),
                     "--steps", "2", "--batch-size", "2", "--crop-size", "48", "--lr", "1e-3", "--workers", "0",
                     "--max-side", "0", "--distortions", "jpeg,gaublur", "--log-every", "1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out / "qualiclip-finetuned.pth")
    assert "loss" in result.stderr and "trained to step 2" in result.stderr
    recorded = TrainConfig.load(out / "config.json")
    assert recorded.distortions == ["jpeg", "gaublur"] and recorded.steps == 2
    again = run_cli("train", "--out", str(out), "--resume")  # already finished: rewrites the same result
    assert again.exit_code == 0, again.stderr


def test_train_command_usage_errors(photos, tmp_path):
    assert run_cli("train").exit_code == 2
    bad = run_cli("train", "--pristine", str(photos), "--distortions", "nope", "--out", str(tmp_path / "r"))
    assert bad.exit_code == 2 and "unknown distortion" in bad.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = run_cli("train", "--pristine", str(empty), "--init", "nothing.pth", "--out", str(tmp_path / "r2"))
    assert missing.exit_code == 1 and "nothing.pth" in missing.stderr


def test_preview_grid(photos, tmp_path):
    out = tmp_path / "grid.png"
    result = run_cli("train", "preview", "--pristine", str(photos), "--out", str(out), "--crop-size", "64",
                     "--distortions", "gaublur,jpeg,darken")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == str(out)
    grid = Image.open(out)
    from training.preview import HEADER_HEIGHT, LABEL_WIDTH, PAD

    assert grid.size == (LABEL_WIDTH + 6 * (64 + PAD), HEADER_HEIGHT + 3 * (64 + PAD))
    pixels = torch.from_numpy(__import__("numpy").array(grid.convert("RGB"))).float()
    row = pixels[HEADER_HEIGHT : HEADER_HEIGHT + 64]  # the gaublur row: level 5 is blurrier than pristine
    tile = lambda c: row[:, LABEL_WIDTH + c * (64 + PAD) : LABEL_WIDTH + c * (64 + PAD) + 64]  # noqa: E731
    detail = lambda t: (t[1:] - t[:-1]).abs().mean()  # noqa: E731
    assert detail(tile(5)) < detail(tile(0))
    assert run_cli("train", "preview", "--pristine", str(photos), "--out", str(out), "--index", "99").exit_code == 2
