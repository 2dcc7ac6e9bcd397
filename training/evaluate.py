"""Did a fine-tune help? Two checks (`qualiclip evaluate`).

MOS: correlation of the product's scores (`score`'s preprocessing) with human opinion scores from a CSV
(columns path, mos): Spearman (SRCC, ranking) and Pearson (PLCC, linear, on the raw scores, no logistic fit).

Synthetic: the model's sensitivity to distortions on the user's own held-out photos. Each photo gives a few
random crops; each crop is degraded with every distortion type at levels 1..5 (one set of random parameters
per crop and type, only the intensity changes), and the quality the model sees should fall as the level rises.
We report the Spearman correlation between quality and −level (so +1 is perfect, 0 is blind):

- per crop: within one crop and distortion (5 values), averaged over crops and distortions. Content does not
  enter, so this is the steady measure of "does the model notice the damage getting worse";
- pooled: over all crops, distortions and levels of a group at once (content differences mix in).

Quality is ranked on q = mean over the 7 prompt pairs of cos(f, T_pos) − cos(f, T_neg), in float64. The score
itself is mean_k sigmoid(100·q_k), which saturates (exactly 0.0 or 1.0 in float32) for trained models; q ranks
the same way without ties. Identical inputs (same crops, same random parameters) are given to every weights file.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from qualiclip_cli.core.errors import UsageError
from qualiclip_cli.core.names import csv_text

# ------------------------------------------------------------------------------------------- statistics

def srcc(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def plcc(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import pearsonr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(pearsonr(x, y).statistic)


# ------------------------------------------------------------------------------------------- weights

@dataclass(frozen=True)
class WeightsChoice:
    label: str
    path: Path


def label_weights(paths: Sequence[Path], names: Sequence[str | None] | None = None) -> list[WeightsChoice]:
    """Short unique labels: the given name (e.g. "official"), else the file name; when file names collide, the
    unnamed files are labelled by their whole path."""
    given = list(names) if names else [None] * len(paths)
    labels = [name or Path(p).name for name, p in zip(given, paths)]
    if len(set(labels)) != len(labels):
        labels = [name or str(p) for name, p in zip(given, paths)]
    return [WeightsChoice(label, Path(p)) for label, p in zip(labels, paths)]


def load_scorer_model(path: Path, device: str):
    from qualiclip_cli.core.model.qualiclip import load_qualiclip

    return load_qualiclip(path).to(device).eval()


# ------------------------------------------------------------------------------------------- MOS

@dataclass
class MosResult:
    label: str
    n: int
    srcc: float
    plcc: float
    failed: int
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"weights": self.label, "n": self.n, "srcc": self.srcc, "plcc": self.plcc, "failed": self.failed}


def read_mos_csv(path: Path) -> list[tuple[Path, float]]:
    """Rows of (image path, MOS). Relative paths are relative to the CSV's folder. Columns named path and mos
    (case-insensitive; 'image', 'file', 'filename' and 'score' accepted too).

    The CSV is UTF-8. A file name that is not valid UTF-8 may be given either as its own bytes (read with
    surrogateescape, so they name the file exactly) or in the csv form of `core.names.csv_cell`, which
    qualiclip's machine formats write: each undecodable byte as ``\\udcXX``, a control character as
    ``\\u000a`` etc., and a backslash standing before such a sequence doubled."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such MOS file")
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh)
        fields = {name.strip().lower(): name for name in (reader.fieldnames or [])}
        path_col = next((fields[c] for c in ("path", "image", "file", "filename", "image_name") if c in fields), None)
        mos_col = next((fields[c] for c in ("mos", "score", "dmos_inverted") if c in fields), None)
        if path_col is None or mos_col is None:
            raise UsageError(f"{path}: expected a header with columns 'path' and 'mos', found {list(reader.fieldnames or [])}")
        rows = []
        for line, row in enumerate(reader, start=2):
            raw_path, raw_mos = (row.get(path_col) or "").strip(), (row.get(mos_col) or "").strip()
            if not raw_path:
                continue
            try:
                mos = float(raw_mos)
            except ValueError:
                raise UsageError(f"{path}:{line}: MOS {raw_mos!r} is not a number") from None
            image = Path(csv_text(raw_path)).expanduser()
            rows.append((image if image.is_absolute() else path.parent / image, mos))
    if len(rows) < 2:
        raise UsageError(f"{path}: needs at least 2 rows to compute a correlation")
    return rows


def evaluate_mos(
    csv_path: Path,
    weights: Sequence[WeightsChoice],
    *,
    options=None,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[MosResult]:
    """SRCC and PLCC between each weights file's scores and the MOS (files that cannot be read are skipped)."""
    from qualiclip_cli.core.hashing import sha256_file
    from qualiclip_cli.core.images.discovery import Found
    from qualiclip_cli.core.model.weights import ResolvedWeights
    from qualiclip_cli.core.pipeline.options import ScoreOptions
    from qualiclip_cli.core.pipeline.scorer import Scorer

    rows = read_mos_csv(csv_path)
    options = options or ScoreOptions(use_cache=False)
    results = []
    for choice in weights:
        scorer = Scorer(ResolvedWeights(choice.path, sha256_file(choice.path), "argument"), options)
        predicted, truth, failed, scores = [], [], 0, {}
        for (image, mos), record in zip(rows, scorer.score_files([Found(p) for p, _ in rows])):
            if progress:
                progress(1)
            if not record.ok:
                failed += 1
                if warn:
                    warn(f"{record.path}: {record.error} (skipped)")
                continue
            predicted.append(record.score)
            truth.append(mos)
            scores[str(image)] = record.score
        results.append(MosResult(choice.label, len(predicted), srcc(predicted, truth), plcc(predicted, truth), failed, scores))
        warn = None  # one warning per unreadable file, not one per weights file
    return results


# ------------------------------------------------------------------------------------------- synthetic

@dataclass
class SyntheticResult:
    label: str
    per_crop: dict[str, float]  # group → mean per-crop SRCC, plus "overall"
    pooled: dict[str, float]  # group → pooled SRCC, plus "overall"
    per_distortion: dict[str, float]  # distortion key → mean per-crop SRCC
    n_images: int
    n_crops: int
    mean_score_by_level: list[float]  # float64 scores averaged over everything, levels 1..L

    def to_dict(self) -> dict:
        return {
            "weights": self.label, "per_crop_srcc": self.per_crop, "pooled_srcc": self.pooled,
            "per_distortion_srcc": self.per_distortion, "images": self.n_images, "crops": self.n_crops,
            "mean_score_by_level": self.mean_score_by_level,
        }


def quality_values(embeddings: torch.Tensor, prompts: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(q, score) in float64: q = mean_k cos(f, T_pos,k) − cos(f, T_neg,k); score = the scorer's formula."""
    from qualiclip_cli.core.model.prompts import split_prompts
    from qualiclip_cli.core.model.qualiclip import scores_from_features

    embeddings, prompts = embeddings.double(), prompts.double()
    sims = embeddings @ prompts.T  # (N, 14)
    positive, negative = split_prompts(sims)
    q = (positive - negative).mean(dim=1)
    scores, _ = scores_from_features(embeddings, prompts)
    return q.cpu().numpy(), scores.cpu().numpy()


def synthetic_crops(image: torch.Tensor, count: int, size: int, seed: int, index: int) -> list[torch.Tensor]:
    """`count` random size×size crops of a C×H×W image (upscaled first if smaller), seeded by (seed, index)."""
    from training.crops import ensure_min_side, overlapping_boxes
    from training.dataset import generator

    image = ensure_min_side(image, size)
    rng = generator(seed, 11, index)
    crops = []
    for _ in range(count):
        box, _ = overlapping_boxes(image.shape[-2], image.shape[-1], size, 0.0, rng)
        crops.append(box.cut(image).contiguous())
    return crops


def evaluate_synthetic(
    paths: Sequence[Path | str],
    weights: Sequence[WeightsChoice] | None = None,
    *,
    models: Sequence[tuple[str, torch.nn.Module]] | None = None,
    crop_size: int = 224,
    crops_per_image: int = 2,
    distortions: Sequence[str] | None = None,
    levels: int = 5,
    seed: int = 0,
    max_side: int = 1024,
    device: str = "cpu",
    batch_size: int = 32,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[SyntheticResult]:
    """Distortion-ranking check on held-out photos for each weights file (or already built QualiCLIP models)."""
    from qualiclip_cli.core.errors import ImageError
    from training.dataset import degraded_levels, derived_seed, find_pristine, load_image, to_uint8
    from training.degradations import DISTORTIONS, check_known

    keys = list(distortions) if distortions else list(DISTORTIONS)
    check_known(keys)
    if not 2 <= levels <= 5:
        raise UsageError("--levels must be between 2 and 5")
    if models is None:
        models = [(w.label, load_scorer_model(w.path, device)) for w in (weights or [])]
    if not models:
        raise UsageError("no weights to evaluate")
    files = find_pristine(paths, warn=warn)
    if not files:
        raise UsageError(f"no images found in {', '.join(map(str, paths))}")

    # q[label][key] -> list of arrays (levels,) per crop
    q_values: dict[str, dict[str, list[np.ndarray]]] = {label: {k: [] for k in keys} for label, _ in models}
    score_sum = {label: np.zeros(levels) for label, _ in models}
    n_images = n_crops = 0
    for index, path in enumerate(files):
        try:
            image = load_image(path, max_side)
        except ImageError as exc:
            if warn:
                warn(f"{exc.path}: {exc.reason} (skipped)")
            continue
        n_images += 1
        for c, crop in enumerate(synthetic_crops(image, crops_per_image, crop_size, seed, index)):
            n_crops += 1
            batch = torch.cat([
                to_uint8(degraded_levels(crop, [key], levels, derived_seed(seed, 12, index, c, k)))
                for k, key in enumerate(keys)
            ])  # (len(keys) * levels, 3, S, S), key-major
            for label, model in models:
                q, scores = _model_quality(model, batch, device, batch_size)
                q = q.reshape(len(keys), levels)
                score_sum[label] += scores.reshape(len(keys), levels).sum(axis=0)
                for k, key in enumerate(keys):
                    q_values[label][key].append(q[k])
        if progress:
            progress(1)
    if n_images == 0:
        raise UsageError("none of the images could be read")

    results = []
    severity = -np.arange(1, levels + 1, dtype=np.float64)
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(DISTORTIONS[key].group, []).append(key)
    for label, _ in models:
        per_key_crop = {key: [_nan_to_zero(srcc(v, severity)) for v in q_values[label][key]] for key in keys}
        per_distortion = {key: float(np.mean(v)) for key, v in per_key_crop.items()}
        per_crop, pooled = {}, {}
        for group, members in list(groups.items()) + [("overall", keys)]:
            per_crop[group] = float(np.mean([s for key in members for s in per_key_crop[key]]))
            values = np.concatenate([np.concatenate(q_values[label][key]) for key in members])
            levels_col = np.tile(severity, len(values) // levels)
            pooled[group] = _nan_to_zero(srcc(values, levels_col))
        mean_scores = (score_sum[label] / (n_crops * len(keys))).tolist()
        results.append(SyntheticResult(label, per_crop, pooled, per_distortion, n_images, n_crops, mean_scores))
    return results


def _nan_to_zero(value: float) -> float:
    """A model that gives all levels the same quality ranks nothing: count it as 0, not as missing."""
    return 0.0 if math.isnan(value) else value


@torch.no_grad()
def _model_quality(model, batch: torch.Tensor, device: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    qs, scores = [], []
    for start in range(0, batch.shape[0], batch_size):
        emb = model.embed(batch[start : start + batch_size].to(device))
        q, s = quality_values(emb, model.prompts_features)
        qs.append(q)
        scores.append(s)
    return np.concatenate(qs), np.concatenate(scores)
