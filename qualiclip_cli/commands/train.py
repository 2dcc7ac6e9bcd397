"""`qualiclip train --pristine DIR` (self-supervised fine-tuning) and `qualiclip train preview`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from qualiclip_cli.commands import options as opt
from qualiclip_cli.commands.console import make_progress, markup_safe, notes, progress_enabled, warn
from qualiclip_cli.commands.errors import handle_errors
from qualiclip_cli.commands.weights_progress import download_bar
from qualiclip_cli.core.names import display
from training.config import BnStats, Schedule, TrainConfig

app = typer.Typer(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback(invoke_without_command=True)
@handle_errors
def train(
    ctx: typer.Context,
    pristine: Annotated[Optional[list[Path]], typer.Option("--pristine", help="Folder(s) or files of clean, undistorted photos (repeatable).", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: config.json, checkpoint.pt, log.jsonl, qualiclip-finetuned.pth.")] = Path(TrainConfig.out_dir),
    init: Annotated[str, typer.Option("--init", help="Starting weights: 'qualiclip' (official, adapt to your photos), 'openai' (CLIP RN50, as in the paper) or a weights file.")] = TrainConfig.init,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimizer steps.")] = TrainConfig.steps,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Photos per step over all processes (each gives 2 crops x L levels).")] = TrainConfig.batch_size,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW). From a random model try 1e-3.")] = TrainConfig.lr,
    warmup_steps: Annotated[int, typer.Option("--warmup-steps", min=0, help="Linear warm-up steps.")] = TrainConfig.warmup_steps,
    schedule: Annotated[Schedule, typer.Option("--schedule", help="cosine (decay to lr x --min-lr-ratio) or constant.")] = TrainConfig.schedule,
    min_lr_ratio: Annotated[float, typer.Option("--min-lr-ratio", help="Final learning rate as a fraction of --lr.")] = TrainConfig.min_lr_ratio,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay (conv/linear weights only).")] = TrainConfig.weight_decay,
    grad_clip: Annotated[float, typer.Option("--grad-clip", help="Clip the global gradient norm to this (0: off).")] = TrainConfig.grad_clip,
    crop_size: Annotated[int, typer.Option("--crop-size", help="Training crop side in px.")] = TrainConfig.crop_size,
    max_offset: Annotated[float, typer.Option("--max-offset", help="Second crop's offset, at most this fraction of a crop per axis.")] = TrainConfig.max_offset,
    levels: Annotated[int, typer.Option("--levels", help="Degradation levels per sample (L, 2..5).")] = TrainConfig.levels,
    distortions: Annotated[Optional[str], typer.Option("--distortions", help="Comma-separated distortion types \\[default: all 24; see `train preview`].")] = None,
    compose: Annotated[int, typer.Option("--compose", min=1, help="Compose up to K types from distinct groups per sample.")] = TrainConfig.compose,
    balanced: Annotated[bool, typer.Option("--balanced/--uniform", help="Cycle through the types (each equally often) or draw uniformly.")] = TrainConfig.balanced,
    margin: Annotated[float, typer.Option("--margin", help="Ranking margin m of L_pos and L_neg.")] = TrainConfig.margin,
    margin_cons: Annotated[float, typer.Option("--margin-cons", help="Margin m_c of the consistency loss.")] = TrainConfig.margin_cons,
    lambda_cons: Annotated[float, typer.Option("--lambda-cons", help="Weight of L_cons.")] = TrainConfig.lambda_cons,
    lambda_pos: Annotated[float, typer.Option("--lambda-pos", help="Weight of L_pos.")] = TrainConfig.lambda_pos,
    lambda_neg: Annotated[float, typer.Option("--lambda-neg", help="Weight of L_neg.")] = TrainConfig.lambda_neg,
    bn_stats: Annotated[BnStats, typer.Option("--bn-stats", help="Batch-norm statistics: frozen, train, or auto (train only from a random, never-trained model).")] = TrainConfig.bn_stats,
    max_side: Annotated[int, typer.Option("--max-side", help="Downscale photos like `score` does before cropping (0: native resolution).")] = TrainConfig.max_side,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="Walk --pristine folders recursively.")] = TrainConfig.recursive,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N (under torchrun: one GPU per process).")] = TrainConfig.device,
    precision: Annotated[opt.PrecisionChoice, typer.Option("--precision", help="auto: bf16 (or fp16) autocast on GPU, fp32 on CPU.")] = TrainConfig.precision,
    workers: Annotated[Optional[int], typer.Option("--workers", min=0, help="Data-loading processes \\[default: min(8, CPUs - 1)].")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed: with the same photos and options, the same result.")] = TrainConfig.seed,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1, help="Write the resumable checkpoint every N steps.")] = TrainConfig.checkpoint_every,
    log_every: Annotated[int, typer.Option("--log-every", min=1, help="Average and log the loss every N steps.")] = TrainConfig.log_every,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint, with its recorded options.")] = False,
    from_ratings: Annotated[Optional[list[Path]], typer.Option("--from-ratings", help="Learn a personal profile from your own star ratings and rejects (XMP sidecars, XMP in JPEG/TIFF/DNG) under these photos or folders (repeatable); -o is then the profile file \\[default: qualiclip-profile.pth].", show_default=False)] = None,
    weights: opt.Weights = None,
    holdout: Annotated[float, typer.Option("--holdout", help="--from-ratings: fraction of the shoots (folders) held out to check the profile on.")] = 0.2,
    force: Annotated[bool, typer.Option("--force", help="--from-ratings: write the profile even when it does not beat the base on the held-out shoots.")] = False,
    offline: opt.Offline = False,
    quiet: opt.Quiet = False,
) -> None:
    """Fine-tune QualiCLIP's image encoder on your own clean photos (self-supervised, no ratings needed).

    Examples:

        qualiclip train --pristine ~/Photos/clean --out runs/mine --steps 1000
        qualiclip train --out runs/mine --resume
        qualiclip train --from-ratings ~/Photos/2023 --from-ratings ~/Photos/2024 -o my-taste.pth

    Each photo gives two overlapping crops, degraded at 5 increasing levels with the same distortion; the model learns to score each level below the one before and the two crops of a level alike (the QualiCLIP paper's self-supervised training). The result, OUT/qualiclip-finetuned.pth, is printed on stdout and loads with `qualiclip score --weights`.

    With --from-ratings it learns your taste instead, in seconds on a CPU: from pairs of photos of one folder with different ratings (a reject below every star), a profile of the head's prompt features on the frozen base network, checked on held-out folders; `score`, `cull`, `sort`, `tag`, `group` and `report` use it with --profile (it keeps --weights, --device, --max-side and --precision for scoring the photos not scored yet).

    Check it on held-out photos: `qualiclip evaluate --synthetic DIR --weights official --weights OUT/qualiclip-finetuned.pth`. Several GPUs or nodes: `torchrun --nproc_per_node N -m qualiclip_cli train ...`. See the distortions with `qualiclip train preview`.
    """
    if ctx.invoked_subcommand is not None:
        return
    from qualiclip_cli.core.errors import UsageError

    if from_ratings:
        if pristine or resume:
            raise UsageError("--from-ratings learns from ratings; it does not take --pristine or --resume")
        out = Path("qualiclip-profile.pth") if out == Path(TrainConfig.out_dir) else out
        _train_from_ratings(from_ratings, out, weights, device, precision, max_side, recursive, seed, holdout,
                            force, offline)
        return

    if not pristine and not resume:
        raise UsageError("--pristine DIR is required (or --resume to continue the run in --out); see `qualiclip train --help`")
    cfg = TrainConfig(
        pristine=[str(p) for p in (pristine or [])], recursive=recursive, max_side=max_side, crop_size=crop_size,
        max_offset=max_offset, levels=levels,
        distortions=opt.comma_list(distortions),
        compose=compose, balanced=balanced, workers=workers, init=init, bn_stats=bn_stats, margin=margin,
        margin_cons=margin_cons, lambda_cons=lambda_cons, lambda_pos=lambda_pos, lambda_neg=lambda_neg, steps=steps,
        batch_size=batch_size, lr=lr, min_lr_ratio=min_lr_ratio, warmup_steps=warmup_steps, schedule=schedule,
        weight_decay=weight_decay, grad_clip=grad_clip, seed=seed, device=device, precision=precision,
        checkpoint_every=checkpoint_every, log_every=log_every, out_dir=str(out),
    )
    result = run_training(cfg, resume=resume, offline=offline)
    if result is not None:
        typer.echo(display(result.weights_path))


def _train_from_ratings(paths, out, weights, device, precision, max_side, recursive, seed, holdout, force,
                        offline) -> None:
    from qualiclip_cli.commands.console import advance
    from qualiclip_cli.core.pipeline.options import ScoreOptions
    from qualiclip_cli.core.pipeline.run import WalkOptions
    from training.ratings import train_from_ratings

    console = notes()
    bar = make_progress("Scoring rated photos", None)
    with bar, download_bar("Downloading weights") as download:
        run = train_from_ratings(
            paths, out, walk=WalkOptions(recursive=recursive),
            options=ScoreOptions(max_side=max_side, device=device, precision=precision), weights=weights,
            offline=offline, seed=seed, holdout=holdout, force=force,
            on_found=lambda found: console.print(f"qualiclip: {markup_safe(found.summary())}", highlight=False),
            on_report=lambda report: console.print(ratings_table(report, "held-out shoots"), highlight=False),
            on_problem=warn, on_start=lambda n: bar.update(bar.tasks[0].id, total=n) if bar.tasks else None,
            on_record=lambda record: advance(bar), on_download_progress=download,
        )
    t = run.trained
    console.print(f"qualiclip: learned on {t.train_photos} photos of {t.provenance['train_shoots']} shoots in "
                  f"{t.seconds:.1f} s; profile sha256 {run.profile_sha256}", highlight=False)
    typer.echo(display(out))


def ratings_table(report: dict, where: str) -> str:
    """The base and personal metrics side by side, as text lines."""
    def cell(block, key):
        value = None if block is None else block.get(key)
        return "n/a" if value is None or value != value else f"{value:.4f}"

    lines = [f"{report['photos']} photos, {report['shoots']} shoots ({where})",
             f"{'':<20}{'base':>10}{'personal':>10}"]
    for key, name in (("pairwise_accuracy", "pairwise accuracy"), ("srcc", "SRCC (mean/shoot)"),
                      ("reject_auc", "reject ROC-AUC")):
        lines.append(f"{name:<20}{cell(report['base'], key):>10}{cell(report['personal'], key):>10}")
    return "\n".join(lines)


def run_training(cfg, resume: bool = False, offline: bool = False):
    """Train with a Rich progress bar (loss in the description) on stderr; rank 0 reports. Paths are shown
    escaped, one line each, never read as markup (`markup_safe`)."""
    from training import distributed as D
    from training.trainer import train

    console = notes()  # what training says (start, losses, checkpoints, the summary); warnings go through warn
    show_bar = progress_enabled()
    bar = None
    task = None
    last = {}

    def on_event(kind: str, **data) -> None:
        nonlocal bar, task
        if kind == "start":
            init = data["init"]
            console.print(
                f"Training from {init['source']} weights ({markup_safe(init['path'])}) on {data['files']} photos: "
                f"{data['device']}, {data['precision']}, batch-norm statistics {data['bn']}"
                + (f", {data['world_size']} processes" if data["world_size"] > 1 else "")
                + (f"; resuming at step {data['step']}" if data["step"] else ""),
                highlight=False, soft_wrap=True,
            )
            bar = make_progress("Training", data["steps"])
            bar.__enter__()
            if bar.tasks:
                task = bar.tasks[0].id
                bar.update(task, completed=data["step"])
        elif kind == "step" and bar is not None and task is not None:
            bar.update(task, completed=data["step"])
        elif kind == "log":
            last.update(data)
            text = (f"step {data['step']}: loss {data['loss']:.4f} (cons {data['cons']:.4f}, pos {data['pos']:.4f}, "
                    f"neg {data['neg']:.4f}), lr {data['lr']:.2e}")
            if bar is not None and task is not None:
                bar.update(task, description=f"Training · loss {data['loss']:.4f}")
            if not show_bar:
                console.print(text, highlight=False)
        elif kind == "checkpoint" and not show_bar:
            console.print(f"checkpoint at step {data['step']}: {markup_safe(data['path'])}", highlight=False)
        elif kind == "done":
            if bar is not None:
                bar.__exit__(None, None, None)
                bar = None
            summary = data["summary"]
            console.print(
                f"qualiclip: trained to step {summary['steps']} in {summary['seconds']:.1f} s "
                f"({summary['seconds_per_step']:.3f} s/step)"
                + (f", final loss {last['loss']:.4f}" if last else "") + f"; weights: {markup_safe(data['weights'])}",
                highlight=False, soft_wrap=True,
            )

    try:
        with download_bar("Downloading starting weights") as download:
            result = train(cfg, resume=resume, offline=offline, on_event=on_event, warn=warn,
                           download_progress=download)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    # Under torchrun only rank 0 prints the result path.
    return result if not D.launched_distributed() or _rank() == 0 else None


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


@app.command("preview")
@handle_errors
def preview(
    pristine: Annotated[Path, typer.Option("--pristine", help="A photo, or a folder (its first photo is used; see --index).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("degradations.png"),
    index: Annotated[int, typer.Option("--index", min=0, help="Which photo of the folder (in walk order).")] = 0,
    crop_size: Annotated[int, typer.Option("--crop-size", help="Side of the centre crop, as in training.")] = TrainConfig.crop_size,
    tile: Annotated[Optional[int], typer.Option("--tile", min=16, help="Display size of each tile \\[default: the crop size].")] = None,
    distortions: Annotated[Optional[str], typer.Option("--distortions", help="Comma-separated types \\[default: all 24].")] = None,
    max_side: Annotated[int, typer.Option("--max-side", help="Downscale the photo like training does first (0: native).")] = TrainConfig.max_side,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random parameters (noise, angles, signs).")] = 0,
    quiet: opt.Quiet = False,
) -> None:
    """Render one photo under every distortion type (rows) and level (columns) as a labelled PNG grid.

    Examples:

        qualiclip train preview --pristine ~/Photos/clean --out degradations.png
    """
    from qualiclip_cli.core.errors import UsageError
    from training.dataset import find_pristine, load_image
    from training.preview import preview_crop, render_grid

    files = find_pristine([pristine], warn=warn)
    if not files:
        raise UsageError(f"no images found in {pristine}")
    if index >= len(files):
        raise UsageError(f"--index {index}: {pristine} holds only {len(files)} photo(s)")
    from training.degradations import DISTORTIONS, check_known

    keys = opt.comma_list(distortions)
    if keys:
        check_known(keys)
    image = load_image(files[index], max_side)
    grid = render_grid(preview_crop(image, crop_size), keys, seed=seed, tile=tile)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    typer.echo(display(out))
    notes().print(f"{markup_safe(files[index])}: {grid.width}x{grid.height} px grid of {len(keys or DISTORTIONS)} distortions x 5 levels", highlight=False)
