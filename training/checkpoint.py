"""Resumable training state, written atomically (temporary file + fsync + os.replace + directory fsync).

A checkpoint holds everything needed to continue a run bit-for-bit: the image encoder's state (parameters and
batch-norm buffers), the optimizer, the gradient scaler, the step, the RNG states of torch (CPU and CUDA),
NumPy and Python, the config, and the data order (the list of pristine files and the seed: every batch is a
pure function of (seed, step), see `training.dataset`). It is loaded with `weights_only=True` like every
other file this project reads.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import torch

from qualiclip_cli.core.atomic import atomic_write_bytes

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def atomic_torch_save(obj, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# ------------------------------------------------------------------------------------------- RNG states

def rng_state() -> dict:
    """RNG states as tensors and plain values only (so `weights_only=True` can load them)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gauss": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        ("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"],
         np_state["cached_gauss"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ------------------------------------------------------------------------------------------- save / load

def save_checkpoint(
    path: Path,
    *,
    step: int,
    model_state: dict,
    optimizer_state: dict,
    scaler_state: dict | None,
    config: dict,
    data_order: dict,
    init: dict,
    loss_history: list | None = None,
) -> None:
    state = {
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "model": {k: v.detach().cpu().clone() for k, v in model_state.items()},
        "optimizer": optimizer_state,
        "scaler": scaler_state or {},
        # The learning rate is a pure function of the step (warm-up + cosine, see trainer.lr_at): the step is
        # the scheduler's whole state, recorded here for readers of the file.
        "scheduler": {"kind": config.get("schedule"), "step": int(step)},
        "rng": rng_state(),
        "config": config,
        "data_order": data_order,
        "init": init,
        "loss_history": loss_history or [],
    }
    atomic_torch_save(state, path)


def load_checkpoint(path: Path) -> dict:
    from qualiclip_cli.core.errors import UsageError, first_line

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise UsageError(f"{path}: unreadable checkpoint ({first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise UsageError(f"{path}: not a qualiclip training checkpoint (or from an incompatible version)")
    return state
