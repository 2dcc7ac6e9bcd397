"""Burst grouping benchmark: synthetic bursts from real photos, raw vs prompt-projected embeddings.

    python bench/bursts.py [--weights FILE] [--seed N] [--side PX]

From each scikit-image picture, several *scenes*: the picture, its mirror image, and its left and right halves
(non-overlapping crops), each a hard negative for the others. Each scene becomes a burst of 3-8 frames 0.1-0.5 s
apart: camera drift (shift, zoom, rotation of a few percent), exposure changes and light degradations (blur,
noise, JPEG), one frame left pristine. The bursts follow one another in one camera's stream, most within the
burst gap of the last (different photos taken within 2 s), some within the scene gap, some minutes apart.

Reports, for the raw embedding and for it with the 14 prompt directions projected out: the pairwise ROC-AUC of
the similarity (pairs of frames within the scene gap: same burst or not), B-cubed precision/recall/F1 and the
adjusted Rand index of `group_records` at the default thresholds and at the best burst similarity of a sweep,
how often the pristine frame is ranked best, and the time to group 50,000 synthetic cached photos.

Weights: --weights (the official file, if you have it), else the golden tiny random model (64-d, batch-norm
calibrated on natural images): its numbers say how the pipeline behaves, not how the trained model does.
Nothing here is part of the test suite. Writes bench/out/bursts.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PICTURES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "motorcycle_left", "hubble_deep_field",
            "retina", "cat", "horse", "grass", "gravel", "brick", "moon", "page", "text", "clock")


def _picture(name: str) -> Image.Image | None:
    from skimage import data

    try:
        array = getattr(data, name)()
    except Exception:  # needs a download
        return None
    if array.dtype != np.uint8:
        array = (255 * (array.astype(np.float64) / max(1, array.max()))).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(array[..., :3]))


def _scenes(side: int) -> list[tuple[str, Image.Image]]:
    out = []
    for name in PICTURES:
        image = _picture(name)
        if image is None:
            continue
        w, h = image.size
        base = image.resize((side, round(side * 3 / 4)), Image.Resampling.BICUBIC) if w >= h else image
        out.append((name, base))
        out.append((name + ":mirror", base.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
        for half, box in (("left", (0, 0, w // 2, h)), ("right", (w - w // 2, 0, w, h))):
            crop = image.crop(box).resize((side, round(side * 3 / 4)), Image.Resampling.BICUBIC)
            out.append((f"{name}:{half}", crop))
    return out


def _frame(scene: Image.Image, rng: np.random.Generator, pristine: bool) -> Image.Image:
    """Camera drift (always a little), and for all but the pristine frame exposure and light degradations."""
    w, h = scene.size
    zoom = 1 + rng.uniform(0.0, 0.05)
    angle = rng.uniform(-2.0, 2.0)
    dx, dy = rng.uniform(-0.03, 0.03) * w, rng.uniform(-0.03, 0.03) * h
    big = scene.resize((round(w * zoom * 1.1), round(h * zoom * 1.1)), Image.Resampling.BICUBIC).rotate(angle)
    left = (big.width - w) / 2 + dx
    top = (big.height - h) / 2 + dy
    frame = big.crop((round(left), round(top), round(left) + w, round(top) + h))
    if pristine:
        return frame
    frame = ImageEnhance.Brightness(frame).enhance(rng.uniform(0.7, 1.3))
    kind = rng.integers(0, 3)
    if kind == 0:
        frame = frame.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 2.0)))
    elif kind == 1:
        noisy = np.asarray(frame, dtype=np.float32) + rng.normal(0, rng.uniform(6, 16), (h, w, 3))
        frame = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    else:
        import io

        buffer = io.BytesIO()
        frame.save(buffer, format="JPEG", quality=int(rng.integers(15, 35)))
        frame = Image.open(buffer).convert("RGB")
    return frame


def _timeline(scenes, rng):
    """(frame image, burst index, is pristine, capture time) in capture order."""
    order = rng.permutation(len(scenes))
    frames, t = [], 0.0
    for burst, s in enumerate(order):
        count = int(rng.integers(3, 9))
        pristine = int(rng.integers(0, count))
        for k in range(count):
            frames.append((_frame(scenes[s][1], rng, k == pristine), burst, k == pristine, t))
            t += rng.uniform(0.1, 0.5)
        roll = rng.random()
        t += rng.uniform(0.5, 1.5) if roll < 0.5 else rng.uniform(5, 50) if roll < 0.8 else rng.uniform(120, 400)
    return frames


def _embed(weights: Path, frames) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores, raw embeddings and projected embeddings of every frame (fp32, CPU)."""
    import torch

    from qualiclip_cli.core.model.inference import prepare_for_inference
    from qualiclip_cli.core.model.qualiclip import load_qualiclip, project_out_prompts

    model = prepare_for_inference(load_qualiclip(weights), torch.device("cpu"), "fp32")
    scores, raw = [], []
    with torch.inference_mode():
        for image, *_ in frames:
            x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)[None]
            out = model(x)
            scores.append(float(out.scores[0]))
            raw.append(out.embeddings[0].float())
        raw_t = torch.stack(raw)
        projected = project_out_prompts(raw_t, model.prompts_features)
    return np.array(scores), raw_t.numpy(), projected.numpy()


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """ROC-AUC as the Mann-Whitney statistic (ties count a half)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([positive, negative]))
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _bcubed(truth: list[int], predicted: list[str]) -> tuple[float, float, float]:
    from collections import Counter

    pairs = Counter(zip(truth, predicted))
    t_sizes, p_sizes = Counter(truth), Counter(predicted)
    precision = sum(pairs[(t, p)] / p_sizes[p] for t, p in zip(truth, predicted)) / len(truth)
    recall = sum(pairs[(t, p)] / t_sizes[t] for t, p in zip(truth, predicted)) / len(truth)
    return precision, recall, 2 * precision * recall / (precision + recall)


def _ari(truth: list[int], predicted: list[str]) -> float:
    from collections import Counter

    comb = lambda n: n * (n - 1) / 2
    n = len(truth)
    index = sum(comb(c) for c in Counter(zip(truth, predicted)).values())
    a = sum(comb(c) for c in Counter(truth).values())
    b = sum(comb(c) for c in Counter(predicted).values())
    expected = a * b / comb(n)
    top = (a + b) / 2
    return float((index - expected) / (top - expected)) if top != expected else 1.0


def _records(frames, scores, embeddings):
    from qualiclip_cli.core.records import ScoreRecord, Signals

    out = []
    for n, ((image, _, _, t), score, vector) in enumerate(zip(frames, scores, embeddings)):
        signals = Signals(t, "", "exif", "bench", None, np.asarray(vector, dtype="<f2").tobytes())
        out.append(ScoreRecord(path=f"f{n:05d}.jpg", score=float(score), width=image.width, height=image.height,
                               signals=signals))
    return out


def _evaluate(frames, scores, embeddings) -> dict:
    from qualiclip_cli.core.curation.groups import GroupOptions, group_records

    times = np.array([f[3] for f in frames])
    bursts = np.array([f[1] for f in frames])
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sims = unit @ unit.T
    i, j = np.triu_indices(len(frames), k=1)
    near = np.abs(times[i] - times[j]) <= 60
    same = bursts[i] == bursts[j]
    auc = _auc(sims[i, j][near & same], sims[i, j][near & ~same])
    records = _records(frames, scores, embeddings)
    truth = [int(b) for b in bursts]

    def run(options: GroupOptions) -> dict:
        groups = [g.group for g in group_records(records, options)]
        p, r, f1 = _bcubed(truth, groups)
        return {"burst_similarity": options.burst_similarity, "scene_similarity": options.scene_similarity,
                "bcubed_precision": p, "bcubed_recall": r, "bcubed_f1": f1, "ari": _ari(truth, groups),
                "groups": len(set(groups))}

    default = run(GroupOptions())
    sweep = [run(GroupOptions(burst_similarity=b, scene_similarity=min(1.0, b + (1 - b) / 2)))
             for b in np.round(np.arange(0.30, 0.995, 0.02), 2)]
    best = max(sweep, key=lambda row: (row["bcubed_f1"], row["ari"]))
    return {"pair_auc": auc, "pairs_positive": int((near & same).sum()), "pairs_negative": int((near & ~same).sum()),
            "default": default, "best": best}


def _pristine_best(frames, scores) -> float:
    by_burst: dict[int, list[tuple[float, bool]]] = {}
    for (_, burst, pristine, _), score in zip(frames, scores):
        by_burst.setdefault(burst, []).append((score, pristine))
    return float(np.mean([max(members)[1] for members in by_burst.values()]))


def _timing(count: int = 50_000, dim: int = 1024, seed: int = 0) -> dict:
    """Group `count` synthetic cached photos (bursts of 1-8 frames, random 1024-d embeddings)."""
    from qualiclip_cli.core.curation.groups import group_records
    from qualiclip_cli.core.records import ScoreRecord, Signals

    rng = np.random.default_rng(seed)
    records, t = [], 1.7e9
    while len(records) < count:
        base = rng.normal(size=dim).astype(np.float32)
        for _ in range(int(rng.integers(1, 9))):
            v = base + 0.2 * rng.normal(size=dim).astype(np.float32)
            v /= np.linalg.norm(v)
            signals = Signals(t, "", "exif", f"cam{len(records) % 3}", None, v.astype("<f2").tobytes())
            records.append(ScoreRecord(path=f"p{len(records):06d}.jpg", score=float(rng.random()), width=4000,
                                       height=3000, signals=signals))
            t += float(rng.uniform(0.1, 0.5))
        t += float(rng.uniform(1, 120))
    records = records[:count]
    start = time.perf_counter()
    groups = group_records(records)
    return {"photos": count, "seconds": time.perf_counter() - start, "groups": len({g.group for g in groups})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--side", type=int, default=256, help="frame width in pixels")
    args = parser.parse_args()
    weights = args.weights
    if weights is None:
        golden = Path(os.environ.get("QUALICLIP_GOLDEN_DIR", REPO.parent / "shared" / "golden"))
        weights = golden / "tiny_qualiclip.pth"
    rng = np.random.default_rng(args.seed)
    scenes = _scenes(args.side)
    frames = _timeline(scenes, rng)
    start = time.perf_counter()
    scores, raw, projected = _embed(weights, frames)
    embed_seconds = time.perf_counter() - start
    result = {"weights": str(weights), "scenes": len(scenes), "frames": len(frames), "embed_seconds": embed_seconds,
              "pristine_ranked_best": _pristine_best(frames, scores),
              "raw": _evaluate(frames, scores, raw), "projected": _evaluate(frames, scores, projected),
              "timing": _timing()}
    out = REPO / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bursts.json").write_text(json.dumps(result, indent=2))
    print(f"{result['frames']} frames in {result['scenes']} bursts, weights {weights.name}; "
          f"pristine frame ranked best in {100 * result['pristine_ranked_best']:.0f}% of bursts")
    print("| embedding | pair ROC-AUC | B³ F1 (defaults) | ARI (defaults) | best burst sim. | B³ F1 (best) | ARI (best) |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("raw", "projected"):
        r = result[kind]
        print(f"| {kind} | {r['pair_auc']:.3f} | {r['default']['bcubed_f1']:.3f} | {r['default']['ari']:.3f} | "
              f"{r['best']['burst_similarity']:.2f} | {r['best']['bcubed_f1']:.3f} | {r['best']['ari']:.3f} |")
    timing = result["timing"]
    print(f"grouping {timing['photos']:,} cached photos: {timing['seconds']:.2f} s")
    if not math.isfinite(result["raw"]["pair_auc"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
