"""Benchmark of `qualiclip explain`: its cost next to `score`, and whether its maps find a degraded region.

    python bench/explain.py [--out bench/out] [--photos 6] [--trials 12] [--weights FILE]

1. Cost. The same JPEGs (2048×1536, scored at 1024×768) through `qualiclip score --no-cache` and through
   `qualiclip explain --format json` and `qualiclip explain` (PNGs), each a fresh process; and in-process, the
   time of the trunk + pool (a forward pass) against the extra time of the attribution (model/attribution.py)
   on the same feature map.
2. Localisation, without human labels. A clean photo gets one rectangle covering 10–30 % of its area degraded
   (Gaussian blur, white noise or JPEG at quality 5); the score map's "badness" (minus the map) is compared with
   the rectangle's mask over the trunk's grid (a cell is inside when most of it is) as a ROC-AUC, averaged over
   ``--trials`` photos per type. 0.5 is chance, 1 perfect. Also the AUC of |map(degraded) − map(clean)|: whether
   the map changes where the pixels changed (the mechanism's locality, which random weights can measure).

Full-size random RN50 weights stand in for the real file unless ``--weights`` names it: with random weights the
localisation numbers measure the mechanism (does a map respond where the pixels changed?), NOT the model's
judgement of quality; only the real weights say that. Writes bench/out/explain.json. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import full_size_weights, make_photo, photo_set  # noqa: E402


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive cell outscores a random negative one (ties count half)."""
    from scipy.stats import rankdata

    pos = labels.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def degrade(image, kind: str, rng: np.random.Generator):
    from PIL import Image, ImageFilter

    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(4))
    if kind == "noise":
        pixels = np.asarray(image).astype(np.float64)
        return Image.fromarray(np.clip(pixels + rng.normal(0, 30, pixels.shape), 0, 255).astype(np.uint8))
    if kind == "jpeg":
        import io

        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=5)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    raise ValueError(kind)


def cost(weights: Path, photos: list[Path], workdir: Path) -> dict:
    env = {"QUALICLIP_HOME": str(workdir / "home"), "QUALICLIP_OFFLINE": "1"}
    folder = photos[0].parent
    runs = {}
    for name, args in (
        ("score", ["score", folder, "--no-cache", "--format", "jsonl", "--weights", weights]),
        ("explain_json", ["explain", folder, "--format", "json", "--weights", weights, "-q"]),
        ("explain_png", ["explain", folder, "-o", workdir / "maps", "--weights", weights, "-q"]),
    ):
        import os
        import subprocess

        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "qualiclip_cli", *map(str, args)], capture_output=True,
                              text=True, env=dict(os.environ, **env))
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        runs[name] = time.perf_counter() - start
    return runs


def in_process(weights: Path, photos: list[Path], repeats: int = 3) -> dict:
    import torch

    from qualiclip_cli.core.images.decode import decode_image
    from qualiclip_cli.core.model.attribution import attribute_features, pair_directions
    from qualiclip_cli.core.model.inference import prepare_for_inference
    from qualiclip_cli.core.model.qualiclip import load_qualiclip

    model = prepare_for_inference(load_qualiclip(weights), "cpu", "fp32")
    directions = pair_directions(model)
    forward, extra, sums = [], [], []
    for path in photos:
        pixels = decode_image(path, 1024).pixels
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous(memory_format=torch.channels_last)
        best_f = best_a = float("inf")
        for _ in range(repeats):
            with torch.inference_mode():
                t = time.perf_counter()
                fmap = model.feature_map(x)
                model.pool(fmap)
                best_f = min(best_f, time.perf_counter() - t)
            t = time.perf_counter()
            result = attribute_features(model, fmap, directions)
            best_a = min(best_a, time.perf_counter() - t)
        forward.append(best_f)
        pool_only = min(_time_pool(model, fmap) for _ in range(repeats))
        extra.append(best_a - pool_only)
        sums.append(float((result.maps.sum((2, 3)) + result.constants - result.logits).abs().max()))
    t = time.perf_counter()
    pair_directions(model)
    return {"forward_s": float(np.median(forward)), "attribution_extra_s": float(np.median(extra)),
            "attribution_share_of_forward": float(np.median(extra) / np.median(forward)),
            "directions_once_per_model_s": time.perf_counter() - t, "max_sum_error": max(sums)}


def _time_pool(model, fmap) -> float:
    import torch

    with torch.inference_mode():
        t = time.perf_counter()
        model.pool(fmap)
        return time.perf_counter() - t


def localisation(weights: Path, workdir: Path, trials: int, seed: int = 0) -> dict:
    import torch
    from PIL import Image

    from qualiclip_cli.core.model.attribution import attribute, pair_directions
    from qualiclip_cli.core.model.inference import prepare_for_inference
    from qualiclip_cli.core.model.qualiclip import load_qualiclip

    model = prepare_for_inference(load_qualiclip(weights), "cpu", "fp32")
    directions = pair_directions(model)
    rng = np.random.default_rng(seed)
    out = {}
    for kind in ("blur", "noise", "jpeg"):
        aucs, changes, areas = [], [], []
        for trial in range(trials):
            clean = Image.open(make_photo(workdir / "clean" / f"{trial}.jpg", (640, 480), trial, quality=95)).convert("RGB")
            w, h = clean.size
            area = rng.uniform(0.10, 0.30)
            aspect = rng.uniform(0.6, 1.6)
            rw = int(min(w, round((area * w * h * aspect) ** 0.5)))
            rh = int(min(h, round(area * w * h / rw)))
            x0, y0 = int(rng.integers(0, w - rw + 1)), int(rng.integers(0, h - rh + 1))
            damaged = clean.copy()
            damaged.paste(degrade(clean, kind, rng).crop((x0, y0, x0 + rw, y0 + rh)), (x0, y0))
            pixels = torch.from_numpy(np.asarray(damaged).copy()).permute(2, 0, 1)[None]
            result = attribute(model, pixels.contiguous(memory_format=torch.channels_last), directions)
            score_map = result.maps[0].sum(0).numpy()  # the score's map
            rows, cols = score_map.shape
            mask = np.zeros((rows, cols), bool)
            for r in range(rows):
                for c in range(cols):
                    ix = max(0, min(x0 + rw, 32 * c + 32) - max(x0, 32 * c))
                    iy = max(0, min(y0 + rh, 32 * r + 32) - max(y0, 32 * r))
                    mask[r, c] = ix * iy > 0.5 * 32 * 32
            auc = roc_auc(-score_map.flatten(), mask.flatten())
            # The mechanism: where does the map change when the rectangle is degraded?
            clean_pixels = torch.from_numpy(np.asarray(clean).copy()).permute(2, 0, 1)[None]
            before = attribute(model, clean_pixels.contiguous(memory_format=torch.channels_last), directions)
            change = np.abs(score_map - before.maps[0].sum(0).numpy())
            change_auc = roc_auc(change.flatten(), mask.flatten())
            if np.isfinite(auc):
                aucs.append(auc)
                changes.append(change_auc)
                areas.append(rw * rh / (w * h))
        out[kind] = {"roc_auc_mean": float(np.mean(aucs)), "roc_auc_min": float(np.min(aucs)),
                     "roc_auc_max": float(np.max(aucs)), "change_roc_auc_mean": float(np.mean(changes)),
                     "change_roc_auc_min": float(np.min(changes)), "trials": len(aucs),
                     "area_mean": float(np.mean(areas))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--weights", type=Path, default=None, help="the real weights file (else random RN50)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "explain-work"
    photos = photo_set(work / "photos", args.photos, (2048, 1536))
    weights = args.weights or full_size_weights(work / "random-rn50.pth", calibrate_on=photos)
    result = {"weights": "given" if args.weights else "random RN50 (measures the mechanism, not the model)"}
    result["in_process_1024x768"] = in_process(weights, photos)
    result["cli_seconds"] = cost(weights, photos, work)
    result["cli_seconds"]["photos"] = len(photos)
    result["localisation"] = localisation(weights, work, args.trials)
    (args.out / "explain.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
