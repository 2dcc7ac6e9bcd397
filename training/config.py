"""Every hyper-parameter of a training run, in one dataclass recorded as JSON (run dir and checkpoints).

The paper gives the recipe but not its values (its training code is unreleased); the defaults here are our
reconstruction. Margins follow our prototype measurements (m = 0.03, m_c = 0.01);
the learning rate default (1e-5) is for fine-tuning pretrained weights (QualiCLIP or CLIP): from a random
model the prototype used 1e-3 (and lr >= 3e-3 was unstable).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from qualiclip_cli.core.model.runtime import PRECISIONS, Precision

BnStats = Literal["auto", "frozen", "train"]
BN_CHOICES: tuple[str, ...] = get_args(BnStats)
Schedule = Literal["cosine", "constant"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)


@dataclass
class TrainConfig:
    # ----- data
    pristine: list[str] = field(default_factory=list)  # files and/or directories of clean photos
    recursive: bool = True
    max_side: int = 1024  # photos are first downscaled like `score` does (0 = native resolution)
    crop_size: int = 224
    max_offset: float = 0.5  # second crop offset by at most this fraction of a crop per axis (they overlap)
    levels: int = 5  # L: degradation levels 1..L per sample
    distortions: list[str] | None = None  # None: the whole degradation table
    compose: int = 1  # k > 1: compose up to k types from distinct groups, all at the same level
    balanced: bool = True  # distortion types cycle through shuffled rounds (each type equally often)
    workers: int | None = None  # DataLoader worker processes (0: in the training process; None: min(8, CPUs − 1))
    # ----- model
    init: str = "qualiclip"  # "qualiclip", "openai" or a weights file path
    bn_stats: BnStats = "auto"  # "frozen" (eval mode), "train", or "auto": follows the start (see trainer)
    # ----- losses
    margin: float = 0.03  # m, for L_pos and L_neg
    margin_cons: float = 0.01  # m_c, for L_cons
    lambda_cons: float = 1.0
    lambda_pos: float = 1.0
    lambda_neg: float = 1.0
    # ----- optimisation
    steps: int = 1000
    batch_size: int = 16  # pristine samples per step over all processes (each gives 2 crops x L levels)
    lr: float = 1e-5
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 50
    schedule: Schedule = "cosine"
    weight_decay: float = 0.01  # applied to conv/linear weights only, not to batch-norm or biases
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    # ----- run
    seed: int = 0
    device: str = "auto"
    precision: Precision = "auto"  # auto: bf16 autocast on GPUs that support it (else fp16), fp32 on CPU
    checkpoint_every: int = 100
    log_every: int = 10
    out_dir: str = "qualiclip-run"

    def validate(self) -> TrainConfig:
        from qualiclip_cli.core.errors import UsageError

        def need(cond: bool, message: str) -> None:
            if not cond:
                raise UsageError(message)

        need(self.crop_size >= 32, "--crop-size must be at least 32")
        need(0.0 <= self.max_offset <= 1.0, "--max-offset must be between 0 and 1")
        need(2 <= self.levels <= 5, "--levels must be between 2 and 5 (the table has 5)")
        need(self.compose >= 1, "--compose must be at least 1")
        need(self.steps >= 1, "--steps must be at least 1")
        need(self.batch_size >= 1, "--batch-size must be at least 1")
        need(self.lr > 0, "--lr must be positive")
        need(0.0 <= self.min_lr_ratio <= 1.0, "--min-lr-ratio must be between 0 and 1")
        need(self.warmup_steps >= 0, "--warmup-steps must be >= 0")
        need(self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}")
        need(self.bn_stats in BN_CHOICES, f"--bn-stats must be one of {', '.join(BN_CHOICES)}")
        need(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}")
        need(self.checkpoint_every >= 1, "--checkpoint-every must be at least 1")
        need(self.margin >= 0 and self.margin_cons >= 0, "margins must be >= 0")
        need(self.workers is None or self.workers >= 0, "--workers must be >= 0")
        need(self.max_side == 0 or self.max_side >= self.crop_size,
             "--max-side must be 0 (native) or at least the crop size")
        if self.distortions is not None:
            from training.degradations import check_known

            check_known(self.distortions)
            need(len(self.distortions) >= 1, "--distortions needs at least one type")
        return self

    def loader_workers(self) -> int:
        """DataLoader worker processes: `workers`, or by default min(8, CPUs − 1) and at least 1."""
        return self.workers if self.workers is not None else min(8, max(1, (os.cpu_count() or 2) - 1))

    # ----- JSON round trip
    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            from qualiclip_cli.core.errors import UsageError

            raise UsageError(f"unknown training option(s) in the recorded config: {', '.join(unknown)}")
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: Path) -> None:
        from qualiclip_cli.core.atomic import atomic_write_text

        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
