"""Checkpoints: atomic writes, complete state, and `--resume` giving exactly the uninterrupted result."""

import json
import random

import numpy as np
import pytest
import torch

from qualiclip_cli.core.errors import UsageError
from qualiclip_cli.core.model.layout import load_weights_dict
from training.checkpoint import atomic_torch_save, load_checkpoint, rng_state, set_rng_state
from training.config import TrainConfig
from training.trainer import train

from training_support import write_photos


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    write_photos(root, ("astronaut", "coffee", "rocket"), views=2, side=80)
    return root


def config(photos, weights, out, **kw):
    values = dict(
        pristine=[str(photos)], init=str(weights), out_dir=str(out), steps=6, batch_size=2, crop_size=48, lr=1e-3,
        warmup_steps=2, checkpoint_every=3, log_every=1, workers=0, max_side=0, seed=5,
        distortions=["gaublur", "whitenoise", "jpeg"],
    )
    values.update(kw)
    return TrainConfig(**values)


def interrupt_at(step):
    def on_event(kind, **data):
        if kind == "checkpoint" and data["step"] == step:
            raise Interrupted()
    return on_event


def test_resume_equals_uninterrupted_run(photos, tiny_weights_file, tmp_path):
    straight = train(config(photos, tiny_weights_file, tmp_path / "straight"))

    cut = config(photos, tiny_weights_file, tmp_path / "cut", workers=2)  # the worker count must not matter
    with pytest.raises(Interrupted):
        train(cut, on_event=interrupt_at(3))
    state = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert state["step"] == 3 and not (tmp_path / "cut" / "qualiclip-finetuned.pth").exists()
    # The recorded config wins on resume (here: even the worker count), only the run folder is taken as given.
    resumed = train(TrainConfig(out_dir=str(tmp_path / "cut")), resume=True)

    a = load_weights_dict(straight.weights_path)
    b = load_weights_dict(resumed.weights_path)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log_a = [json.loads(l) for l in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(l) for l in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [e["loss"] for e in log_a] == [e["loss"] for e in log_b] and len(log_a) == 6


def test_checkpoint_holds_the_complete_state(photos, tiny_weights_file, tmp_path):
    out = tmp_path / "run"
    train(config(photos, tiny_weights_file, out, steps=3))
    state = load_checkpoint(out / "checkpoint.pt")
    assert {"model", "optimizer", "scaler", "scheduler", "step", "rng", "config", "data_order", "init"} <= state.keys()
    assert state["step"] == 3 and state["scheduler"]["step"] == 3
    assert state["optimizer"]["state"]  # AdamW moments
    assert {"torch", "numpy", "python"} <= state["rng"].keys()
    assert state["data_order"]["seed"] == 5 and len(state["data_order"]["files"]) == 6
    assert state["init"]["sha256"] and state["config"] == TrainConfig.load(out / "config.json").to_dict()
    assert "layer1.0.bn1.running_mean" in state["model"]


def test_refuses_to_overwrite_a_run_or_resume_nothing(photos, tiny_weights_file, tmp_path):
    out = tmp_path / "run"
    train(config(photos, tiny_weights_file, out, steps=1))
    with pytest.raises(UsageError, match="--resume"):
        train(config(photos, tiny_weights_file, out, steps=1))
    with pytest.raises(UsageError, match="no checkpoint"):
        train(TrainConfig(out_dir=str(tmp_path / "empty")), resume=True)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "state.pt"
    atomic_torch_save({"a": torch.ones(2)}, path)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("qualiclip_cli.core.atomic.os.replace", broken_replace)
    with pytest.raises(OSError):
        atomic_torch_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left behind


def test_rng_state_round_trip(tmp_path):
    state = rng_state()
    atomic_torch_save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_config_json_round_trip(tmp_path):
    cfg = TrainConfig(pristine=["a", "b"], distortions=["jpeg"], betas=(0.8, 0.9), lr=3e-4)
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(UsageError, match="unknown"):
        TrainConfig.from_dict({"not_an_option": 1})
