"""The training loop (nanoGPT style: one readable function, no framework).

    weights ─► the scorer's QualiCLIP module (QualiCLIP.from_weights, as `score` builds it): its .visual trains
    text encoder (frozen) ─► 14 prompt features T, computed once
    each step: B pristine samples × 2 crops × L levels ─► normalised features f ─► s = f·Tᵀ (cosine)
               ─► λ_c·L_cons + λ_p·L_pos + λ_n·L_neg ─► AdamW step (warm-up + cosine lr, clipped gradients)
    every N steps: an atomic, resumable checkpoint; at the end: a weights file in the QualiCLIP layout.

Runs on the CPU, one GPU (bf16/fp16 autocast), or several GPUs/nodes under `torchrun` (DDP; each process takes
its slice of the global batch, so the result does not depend on the number of processes except through
batch-norm statistics when those train).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from qualiclip_cli.core.atomic import atomic_write_text
from qualiclip_cli.core.errors import UsageError
from qualiclip_cli.core.model.architecture import ModifiedResNet
from qualiclip_cli.core.model.layout import join_weights, validate_weights, visual_state_dict
from qualiclip_cli.core.model.qualiclip import QualiCLIP
from training import distributed as D
from training.checkpoint import CHECKPOINT_NAME, atomic_torch_save, load_checkpoint, save_checkpoint, set_rng_state
from training.config import TrainConfig
from training.losses import LossWeights, qualiclip_loss

if TYPE_CHECKING:
    from training.init_weights import InitWeights

WEIGHTS_NAME = "qualiclip-finetuned.pth"
Event = Callable[..., None]  # on_event(kind, **data); kinds: "start", "step", "log", "checkpoint", "done"


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    weights_path: Path
    checkpoint_path: Path
    steps: int
    seconds: float
    final: dict  # last logged losses
    visual: nn.Module | None = None  # the trained image encoder (this process's copy)


# ------------------------------------------------------------------------------------------- model

class ImageEncoder(nn.Module):
    """The scorer's own image path, trainable: uint8 (or [0, 1] float) RGB crops → L2-normalised image features.

    It holds the very QualiCLIP module that `score` runs (built by `build_scorer` through
    `QualiCLIP.from_weights`) and calls its normalisation and its `.visual` (trunk + QualiCLIP pool), so the
    encoder trained here is the scoring encoder by construction. (`QualiCLIP.embed` adds only dtype casts,
    no-ops on these fp32 weights, and a size check; training calls `.visual` directly so that autocast
    alone decides the precision, as it always has.)
    """

    def __init__(self, scorer: QualiCLIP):
        super().__init__()
        self.scorer = scorer

    @property
    def visual(self) -> ModifiedResNet:
        return self.scorer.visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.scorer.visual(self.scorer.normalise(images)).float(), dim=-1)


def build_scorer(
    clip_sd: dict[str, torch.Tensor], prompts: torch.Tensor, visual_sd: dict[str, torch.Tensor] | None = None
) -> QualiCLIP:
    """The scorer's module (`QualiCLIP.from_weights`, as `score` builds it), made trainable: fp32 on its own
    contiguous, writable copies of the image encoder's tensors (the starting weights' own, or ``visual_sd``:
    a checkpoint's), so training never writes into the starting weights."""
    start = visual_state_dict(clip_sd) if visual_sd is None else visual_sd
    own = {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in start.items()}
    scorer = QualiCLIP.from_weights(join_weights(clip_sd, prompts, visual_sd=own))
    # The QualiCLIP pool does not use the positional embedding: keep it (file layout) but never train it.
    scorer.visual.attnpool.positional_embedding.requires_grad_(False)
    return scorer


def freeze_bn_stats(module: nn.Module) -> None:
    """Batch-norm layers to eval mode: running statistics used and left unchanged (affine params still train)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def resolve_bn_mode(requested: str, clip_sd: dict[str, torch.Tensor]) -> str:
    """auto: train the statistics when the start is a random (never trained) encoder, else freeze them."""
    if requested != "auto":
        return requested
    from training.init_weights import bn_stats_untrained

    return "train" if bn_stats_untrained(clip_sd) else "frozen"


def resolve_precision(requested: str, device: str) -> str:
    kind = device.split(":")[0]
    if requested == "auto":
        if kind == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if requested == "fp16" and kind != "cuda":
        raise UsageError("--precision fp16 needs a CUDA GPU; use fp32 (or bf16) on the CPU")
    return requested


def autocast(precision: str, device: str):
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


# ------------------------------------------------------------------------------------------- optimisation

def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of (0-based) step: linear warm-up, then cosine decay to lr·min_lr_ratio (or constant)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: str) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # conv and linear weights
    no_decay = [p for p in params if p.dim() < 2]  # batch-norm affine and biases
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=device.startswith("cuda"))


# ------------------------------------------------------------------------------------------- outputs

def final_weights(clip_sd: dict[str, torch.Tensor], visual: ModifiedResNet, prompts: torch.Tensor) -> dict[str, torch.Tensor]:
    """QualiCLIP layout (`layout.join_weights`): every original CLIP tensor, the visual ones replaced by the
    trained (fp32) ones, and prompts_features from the frozen text encoder."""
    trained = {k: v.detach().cpu().clone() for k, v in visual.state_dict().items()}
    return join_weights(clip_sd, prompts.detach().cpu().float().clone(), visual_sd=trained)


def _write_log(path: Path, history: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))


# ------------------------------------------------------------------------------------------- where a run starts

@dataclass
class Start:
    """Where a run starts, decided once, here: a fresh run from ``cfg.init``'s weights at step 0, or a resumed
    one from the checkpoint in ``cfg.out_dir`` (its recorded config, starting weights, image encoder, optimizer,
    gradient scaler, RNG states, step, loss history and data order). Every fresh/resume difference lives in
    this class; `train` reads as one straight line."""

    cfg: TrainConfig
    checkpoint: dict | None = None  # None: a fresh run

    @classmethod
    def of(cls, cfg: TrainConfig, resume: bool) -> Start:
        """With resume=True the recorded config wins (only the run folder is taken from cfg)."""
        out = Path(cfg.out_dir)
        ckpt_path = out / CHECKPOINT_NAME
        if resume:
            state = load_checkpoint(ckpt_path)
            return cls(TrainConfig.from_dict({**state["config"], "out_dir": str(out)}).validate(), state)
        if ckpt_path.exists():
            raise UsageError(f"{out} already holds a training run; pass --resume to continue it, or choose another --out")
        return cls(cfg.validate())

    @property
    def resumed(self) -> bool:
        return self.checkpoint is not None

    @property
    def step(self) -> int:
        return int(self.checkpoint["step"]) if self.resumed else 0

    @property
    def history(self) -> list[dict]:
        return list(self.checkpoint.get("loss_history") or []) if self.resumed else []

    def init_weights(self, offline: bool, progress=None) -> InitWeights:
        """The starting weights: cfg.init's, or on resume the recorded file (offline, and unchanged since)."""
        from training.init_weights import InitWeights, load_init

        if not self.resumed:
            return load_init(self.cfg.init, offline=offline, progress=progress)
        rec = self.checkpoint["init"]
        init = load_init(rec["path"], offline=True)
        if init.sha256 != rec["sha256"]:
            raise UsageError(f"{rec['path']}: the starting weights changed since the run began (SHA-256 differs)")
        return InitWeights(init.clip_sd, rec["source"], init.path, init.sha256)

    def visual_state(self) -> dict[str, torch.Tensor] | None:
        """The image encoder to continue from (None: the starting weights' own)."""
        return self.checkpoint["model"] if self.resumed else None

    def restore(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        """On resume: the optimizer, the gradient scaler and the RNG states as they were at the checkpoint."""
        if not self.resumed:
            return
        optimizer.load_state_dict(self.checkpoint["optimizer"])
        if self.checkpoint.get("scaler"):
            scaler.load_state_dict(self.checkpoint["scaler"])
        set_rng_state(self.checkpoint["rng"])

    def files(self, warn: Callable[[str], None]) -> list[Path]:
        """The pristine photos: found from cfg.pristine, or on resume the recorded list (the data order)."""
        from training.dataset import find_pristine

        if self.resumed:
            return [Path(p) for p in self.checkpoint["data_order"]["files"]]
        return find_pristine(self.cfg.pristine, self.cfg.recursive, warn=warn)


# ------------------------------------------------------------------------------------------- the loop

def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    offline: bool = False,
    on_event: Event | None = None,
    download_progress=None,
    warn: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (or continue) the run in cfg.out_dir. With resume=True the recorded config wins."""
    from qualiclip_cli.core.model.runtime import pick_device
    from training.dataset import DistortionPlan, PristinePairs, StepBatchSampler, make_loader
    from training.init_weights import compute_prompt_features

    start = Start.of(cfg, resume)  # scratch/init or resume: decided here, once
    cfg = start.cfg
    out = Path(cfg.out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    emit = on_event or (lambda kind, **data: None)

    info = D.setup(pick_device(cfg.device))
    try:
        device = info.device
        emit = emit if info.is_main else (lambda kind, **data: None)
        precision = resolve_precision(cfg.precision, device)
        torch.manual_seed(cfg.seed)
        if device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True

        # ----- starting weights (rank 0 first: it may download) and the frozen text side
        init = start.init_weights(offline, download_progress) if info.is_main else None
        D.barrier(info)
        if init is None:
            init = start.init_weights(offline, download_progress)
        prompts = compute_prompt_features(init.clip_sd)  # (14, D), fixed for the whole run
        bn_mode = resolve_bn_mode(cfg.bn_stats, init.clip_sd)

        # ----- model (the scorer's own module; on resume the checkpoint's encoder), optimizer
        encoder = ImageEncoder(build_scorer(init.clip_sd, prompts, start.visual_state())).to(device)
        prompts = prompts.to(device)
        if device.startswith("cuda"):
            encoder = encoder.to(memory_format=torch.channels_last)
        model: nn.Module = encoder
        if info.enabled:
            model = nn.parallel.DistributedDataParallel(
                encoder, device_ids=[info.local_rank] if device.startswith("cuda") else None
            )
        optimizer = make_optimizer(encoder, cfg, device)
        scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        start.restore(optimizer, scaler)
        start_step = start.step
        history = start.history

        # ----- data: every batch is a pure function of (seed, step)
        files = start.files(warn if info.is_main else (lambda m: None))
        if not files:
            raise UsageError(f"no images found in {', '.join(map(str, cfg.pristine)) or '(no --pristine given)'}")
        plan = DistortionPlan.from_keys(cfg.distortions, cfg.balanced, cfg.compose)
        dataset = PristinePairs(
            files, seed=cfg.seed, crop_size=cfg.crop_size, max_offset=cfg.max_offset, levels=cfg.levels, plan=plan,
            max_side=cfg.max_side, warn=warn,
        )
        sampler = StepBatchSampler(start_step, cfg.steps, cfg.batch_size, info.rank, info.world_size)
        loader = make_loader(dataset, sampler, cfg.loader_workers(), pin_memory=device.startswith("cuda"))
        data_order = {"seed": cfg.seed, "files": [str(f) for f in files], "global_batch": cfg.batch_size,
                      "rule": "sample g = step * global_batch + i; photo, distortion, crops from (seed, g)"}
        loss_weights = LossWeights(cfg.margin, cfg.margin_cons, cfg.lambda_cons, cfg.lambda_pos, cfg.lambda_neg)

        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            cfg.save(out / "config.json")

        def checkpoint(step: int) -> None:
            if info.is_main:
                save_checkpoint(
                    ckpt_path, step=step, model_state=encoder.visual.state_dict(),
                    optimizer_state=optimizer.state_dict(), scaler_state=scaler.state_dict() if scaler.is_enabled() else None,
                    config=cfg.to_dict(), data_order=data_order, init=init.describe(), loss_history=history,
                )
                _write_log(out / "log.jsonl", history)
                emit("checkpoint", step=step, path=ckpt_path)
            D.barrier(info)

        emit("start", step=start_step, steps=cfg.steps, device=device, precision=precision, bn=bn_mode,
             world_size=info.world_size, files=len(files), init=init.describe())

        # ----- the loop
        model.train()
        if bn_mode == "frozen":
            freeze_bn_stats(encoder)
        levels = cfg.levels
        trainable = [p for p in encoder.parameters() if p.requires_grad]
        started = time.perf_counter()
        window_loss = torch.zeros(4, device=device)
        window_steps = 0
        for step, batch in zip(range(start_step, cfg.steps), loader):
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = batch["images"].to(device, non_blocking=True)  # (b, 2, L, 3, S, S) uint8
            b = images.shape[0]
            flat = images.flatten(0, 2)
            if device.startswith("cuda"):
                flat = flat.contiguous(memory_format=torch.channels_last)
            with autocast(precision, device):
                features = model(flat)
            sims = (features.float() @ prompts.T).view(b, 2, levels, -1)
            loss, parts = qualiclip_loss(sims, loss_weights)

            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()

            done = step + 1
            window_loss += torch.stack([loss.detach(), parts["cons"], parts["pos"], parts["neg"]])
            window_steps += 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                mean = D.mean_over_ranks(window_loss / window_steps, info).tolist()
                entry = {"step": done, "loss": mean[0], "cons": mean[1], "pos": mean[2], "neg": mean[3], "lr": lr,
                         "elapsed_s": round(time.perf_counter() - started, 3)}
                history.append(entry)
                window_loss.zero_()
                window_steps = 0
                emit("log", **entry)
            emit("step", step=done, steps=cfg.steps)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                checkpoint(done)
        seconds = time.perf_counter() - started

        # ----- outputs
        if bn_mode == "train":
            D.broadcast_buffers(encoder.visual, info)  # one set of running statistics (rank 0's) in the file
        weights_path = out / WEIGHTS_NAME
        if info.is_main:
            weights = final_weights(init.clip_sd, encoder.visual, prompts)
            validate_weights(weights, weights_path)
            atomic_torch_save(weights, weights_path)
            summary = {
                "steps": cfg.steps, "resumed_from": start_step if start.resumed else None, "seconds": round(seconds, 2),
                "seconds_per_step": round(seconds / max(1, cfg.steps - start_step), 4), "device": device,
                "precision": precision, "world_size": info.world_size, "bn_stats": bn_mode, "init": init.describe(),
                "images": len(files), "final": history[-1] if history else None,
            }
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
            emit("done", weights=weights_path, seconds=seconds, summary=summary)
        D.barrier(info)
        return TrainResult(out, weights_path, ckpt_path, cfg.steps, seconds, history[-1] if history else {}, encoder.visual)
    finally:
        D.cleanup(info)
