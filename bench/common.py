"""Shared pieces of the benchmarks: test photos, full-size random weights, the reference loop, child runs.

Nothing here is imported by the product or the test suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NATURAL = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "immunohistochemistry", "motorcycle_left",
           "hubble_deep_field", "retina", "page", "cat")


# ---------------------------------------------------------------------------------------------- photos

def _natural(index: int) -> np.ndarray:
    from skimage import data

    name = NATURAL[index % len(NATURAL)]
    try:
        array = getattr(data, name)()
    except Exception:  # some datasets need a download; fall back to one that is bundled
        array = data.astronaut()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3]).astype(np.uint8)


def make_photo(path: Path, size: tuple[int, int], index: int, quality: int = 90) -> Path:
    """A camera-like JPEG: a natural image upscaled, with a different crop per index and sensor-like noise."""
    rng = np.random.default_rng(index)
    base = Image.fromarray(_natural(index))
    w, h = base.size
    crop = base.crop((int(w * 0.05 * (index % 3)), 0, w, h))
    big = crop.resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(big).astype(np.int16)
    noisy = np.clip(pixels + rng.normal(0, 4.0, pixels.shape).astype(np.int16), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noisy).save(path, quality=quality, subsampling=0 if quality > 95 else 2)
    return path


def photo_set(folder: Path, count: int, size: tuple[int, int], prefix: str = "IMG") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}_{i:04d}.jpg"
        if not path.exists():
            make_photo(path, size, i)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------- weights

RN50_TEXT = dict(width=512, layers=12, context=77, vocab=49408, embed=1024)


def fill_folder(folder: Path, files: list[tuple[Path, str]], distinct: bool = False) -> Path:
    """Put each (source, name) into `folder` unless already there: a hard link, or with `distinct` a copy.

    The walk visits each file (device, inode) once, so hard links of one photo under several names are
    scored once: a folder meant to hold N copies of a photo needs `distinct`.
    """
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for source, name in files:
        dest = folder / name
        if dest.exists() and not (distinct and os.path.samefile(dest, source)):
            continue
        if distinct:
            tmp = dest.with_name(dest.name + ".tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        else:
            os.link(source, dest)
    return folder


def full_size_weights(path: Path, seed: int = 0, calibrate_on: list[Path] | None = None) -> Path:
    """Random CLIP RN50 weights in the QualiCLIP layout (every tensor, real shapes, ~400 MB like the real file).

    Batch-norm statistics are calibrated on natural images so activations have realistic ranges, which makes
    precision comparisons (bf16 vs fp32) meaningful.
    """
    import torch

    from qualiclip_cli.core.model.architecture import RN50, ModifiedResNet

    if path.exists():
        return path
    torch.manual_seed(seed)
    visual = ModifiedResNet(RN50)
    std = RN50.embed_dim ** -0.5
    for proj in (visual.attnpool.q_proj, visual.attnpool.k_proj, visual.attnpool.v_proj, visual.attnpool.c_proj):
        torch.nn.init.normal_(proj.weight, std=std)
    if calibrate_on:
        _calibrate_batchnorm(visual, calibrate_on)
    sd = {f"visual.{k}": v.detach().clone() for k, v in visual.state_dict().items()}
    t = RN50_TEXT
    g = torch.Generator().manual_seed(seed + 1)

    def rnd(*shape, scale=0.02):
        return torch.randn(*shape, generator=g) * scale

    sd.update({
        "positional_embedding": rnd(t["context"], t["width"]),
        "text_projection": rnd(t["width"], t["embed"]),
        "logit_scale": torch.tensor(4.6052),
        "token_embedding.weight": rnd(t["vocab"], t["width"]),
        "ln_final.weight": torch.ones(t["width"]),
        "ln_final.bias": torch.zeros(t["width"]),
    })
    for i in range(t["layers"]):
        p = f"transformer.resblocks.{i}."
        sd.update({
            p + "attn.in_proj_weight": rnd(3 * t["width"], t["width"]),
            p + "attn.in_proj_bias": torch.zeros(3 * t["width"]),
            p + "attn.out_proj.weight": rnd(t["width"], t["width"]),
            p + "attn.out_proj.bias": torch.zeros(t["width"]),
            p + "ln_1.weight": torch.ones(t["width"]), p + "ln_1.bias": torch.zeros(t["width"]),
            p + "mlp.c_fc.weight": rnd(4 * t["width"], t["width"]), p + "mlp.c_fc.bias": torch.zeros(4 * t["width"]),
            p + "mlp.c_proj.weight": rnd(t["width"], 4 * t["width"]), p + "mlp.c_proj.bias": torch.zeros(t["width"]),
            p + "ln_2.weight": torch.ones(t["width"]), p + "ln_2.bias": torch.zeros(t["width"]),
        })
    weights = {f"clip_model.{k}": v for k, v in sd.items()}
    weights["prompts_features"] = torch.nn.functional.normalize(torch.randn(14, t["embed"], generator=g), dim=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, path)
    return path


def _calibrate_batchnorm(visual, images: list[Path], side: int = 320) -> None:
    import torch

    from qualiclip_cli.core.model.prompts import CLIP_MEAN, CLIP_STD

    for m in visual.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    visual.train()
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        for path in images:
            im = Image.open(path).convert("RGB")
            im.thumbnail((side, side))
            x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float() / 255
            visual.trunk((x - mean) / std)
    visual.eval()


# ---------------------------------------------------------------------------------------------- reference

def reference_scores(weights_path: Path, images: list[Path]) -> tuple[list[float], float]:
    """The reference loop: Pillow full decode, native size, fp32 NCHW, every token a query in the pool,
    one image at a time, no BN folding, no channels-last. Returns (scores, seconds per image)."""
    import torch

    from qualiclip_cli.core.model.architecture import reference_attention_pool
    from qualiclip_cli.core.model.layout import load_weights_dict
    from qualiclip_cli.core.model.qualiclip import QualiCLIP, scores_from_features

    model = QualiCLIP.from_weights(load_weights_dict(weights_path, mmap=False)).eval()
    mean, std = model.mean, model.std
    scores = []
    start = time.perf_counter()
    with torch.no_grad():
        for path in images:
            im = Image.open(path).convert("RGB")
            x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(255)[None]
            x = (x - mean) / std
            feat = reference_attention_pool(model.visual.attnpool, model.visual.trunk(x))
            emb = torch.nn.functional.normalize(feat, dim=-1)
            scores.append(float(scores_from_features(emb, model.prompts_features)[0][0]))
    return scores, (time.perf_counter() - start) / len(images)


# ---------------------------------------------------------------------------------------------- child runs

@dataclass
class Run:
    name: str
    seconds: float
    peak_rss_mb: float
    returncode: int
    records: list[dict] = field(default_factory=list)
    stderr: str = ""

    @property
    def scores(self) -> dict[str, float]:
        return {os.path.basename(r["path"]): r["score"] for r in self.records}


def run_cli(name: str, args: list[str], env: dict | None = None) -> Run:
    """Run `python -m qualiclip_cli ARGS`; measure wall time and the child's own peak RSS (via wait4 in a wrapper)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    wrapper = (
        "import os, resource, subprocess, sys\n"
        "p = subprocess.Popen(sys.argv[1:])\n"
        "_, status, ru = os.wait4(p.pid, 0)\n"
        "sys.stderr.write('\\nPEAK_RSS_KB=%d\\n' % ru.ru_maxrss)\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, sys.executable, "-m", "qualiclip_cli", *map(str, args)],
                          capture_output=True, text=True, env=full_env, cwd=REPO)
    seconds = time.perf_counter() - start
    rss_kb = 0
    for line in proc.stderr.splitlines():
        if line.startswith("PEAK_RSS_KB="):
            rss_kb = int(line.split("=")[1])
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return Run(name, seconds, rss_kb / 1024, proc.returncode, records, proc.stderr)


def max_diff(a: dict[str, float], b: dict[str, float]) -> float:
    keys = [k for k in a if k in b and a[k] is not None and b[k] is not None]
    return max((abs(a[k] - b[k]) for k in keys), default=float("nan"))
