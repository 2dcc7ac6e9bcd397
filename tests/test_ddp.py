"""DistributedDataParallel on the CPU: 2 processes with the gloo backend (what torchrun sets up).

Each process takes half of the global batch; gradients are averaged, so with frozen batch-norm statistics the
result equals a single-process run with the same global batch (up to float rounding). With training statistics
each process normalises its own half, but both end with identical weights (rank 0's statistics are broadcast).
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from qualiclip_cli.core.model.layout import load_weights_dict
from training.config import TrainConfig
from training.trainer import train

from training_support import write_photos


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, jobs: list, result_dir: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(QUALICLIP_OFFLINE="1", MASTER_ADDR="127.0.0.1", RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    for name, port, cfg in jobs:
        os.environ["MASTER_PORT"] = str(port)
        result = train(TrainConfig.from_dict(cfg))
        torch.save({k: v.detach().clone() for k, v in result.visual.state_dict().items()},
                   os.path.join(result_dir, f"{name}-rank{rank}.pt"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    write_photos(root, ("astronaut", "coffee", "chelsea"), views=2, side=80)
    return root


def test_two_gloo_processes_agree_and_match_one_process(photos, tiny_weights_file, tmp_path, monkeypatch):
    base = dict(pristine=[str(photos)], init=str(tiny_weights_file), steps=4, batch_size=4, crop_size=48, lr=1e-3,
                warmup_steps=0, workers=0, max_side=0, checkpoint_every=2, log_every=1, seed=2,
                distortions=["gaublur", "whitenoise", "jpeg", "pixelate"], device="cpu")
    frozen = TrainConfig(**base, bn_stats="frozen", out_dir=str(tmp_path / "ddp-frozen")).to_dict()
    trained = TrainConfig(**base, bn_stats="train", out_dir=str(tmp_path / "ddp-train")).to_dict()
    jobs = [("frozen", _free_port(), frozen), ("train", _free_port(), trained)]
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    mp.spawn(_worker, args=(2, jobs, str(tmp_path)), nprocs=2, join=True)

    for name in ("frozen", "train"):
        r0 = torch.load(tmp_path / f"{name}-rank0.pt", weights_only=True)
        r1 = torch.load(tmp_path / f"{name}-rank1.pt", weights_only=True)
        assert all(torch.equal(r0[k], r1[k]) for k in r0), name  # parameters and batch-norm buffers
        written = load_weights_dict(tmp_path / f"ddp-{name}" / "qualiclip-finetuned.pth")
        assert all(torch.equal(written[f"clip_model.visual.{k}"], v) for k, v in r0.items())
        assert (tmp_path / f"ddp-{name}" / "checkpoint.pt").is_file()

    # One process, the same global batch: the same result with frozen statistics.
    single = train(TrainConfig(**base, bn_stats="frozen", out_dir=str(tmp_path / "single")))
    r0 = torch.load(tmp_path / "frozen-rank0.pt", weights_only=True)
    start = load_weights_dict(tiny_weights_file)
    moved = 0.0
    for key, value in single.visual.state_dict().items():
        torch.testing.assert_close(r0[key], value, rtol=0, atol=1e-5)
        moved = max(moved, (value - start[f"clip_model.visual.{key}"].float()).abs().max().item())
    assert moved > 1e-3  # the comparison is not between two untouched models
