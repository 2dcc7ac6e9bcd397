"""A personal profile learned from the photographer's own star ratings (`qualiclip train --from-ratings`) and its
honest evaluation (`qualiclip evaluate --ratings`).

What is learned: the 14 prompt features of QualiCLIP's head (`model.profile`), starting from the base's, on the
frozen image embeddings the results cache keeps with every score (scoring the photos not scored yet first,
through the normal pipeline). A rating is read as a judgement relative to its shoot (the photo's folder): the
training pairs are two photos of one shoot with different ratings (a reject below every star), and the loss is
a logistic ranking loss on their score difference, plus a pull towards the base features (so little data moves
the head little). Whole shoots are held out (`holdout`) and never trained on; the metrics reported for them
are pairwise accuracy (within-shoot pairs ordered like the ratings, ties half), the mean per-shoot Spearman
correlation of score and rating, and the reject-vs-keep ROC-AUC pooled over the held-out photos.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qualiclip_cli.core.errors import CurationError, QualiclipError, UsageError

#: The least there must be to learn from: rated photos, and shoots holding at least two different ratings (one
#: or more to train on, one or more held out).
MIN_PHOTOS = 20
MIN_SHOOTS = 2
HOLDOUT = 0.2  # the fraction of shoots held out (at least one, and at least one left to train on)
STEPS = 300
LEARNING_RATE = 0.01
TEMPERATURE = 0.05  # score differences (in [0, 1]) are divided by it inside the ranking loss
PULL = 0.1  # weight of the squared distance to the base features, relative to their squared norm
MAX_PAIRS = 200_000  # training pairs drawn (seeded) when a library holds more


@dataclass(frozen=True)
class RatedPhoto:
    path: str | os.PathLike
    shoot: str
    rating: int  # -1 (reject) or 1..5


@dataclass
class RatingsFound:
    """The ratings a walk found, and what was left out."""

    photos: list[RatedPhoto] = field(default_factory=list)
    unrated: int = 0
    ours: int = 0  # ratings qualiclip wrote: never learned from
    problems: list[str] = field(default_factory=list)

    @property
    def shoots(self) -> int:
        return len({p.shoot for p in self.photos})

    @property
    def distinct(self) -> list[int]:
        return sorted({p.rating for p in self.photos})

    def summary(self) -> str:
        stars = ", ".join("reject" if r < 0 else f"{r}" for r in self.distinct) or "none"
        return (f"{len(self.photos)} rated photos in {self.shoots} shoots (ratings: {stars}); "
                f"{self.unrated} unrated, {self.ours} rated by qualiclip itself (left out)")


def find_ratings(paths: Iterable, walk=None, on_problem: Callable[[str], None] | None = None) -> RatingsFound:
    """Walk ``paths`` like `score` does and read each photo's rating (`curation.ratings`); a sidecar or file
    that cannot be read is a problem line, never the end of the walk."""
    from qualiclip_cli.core.curation.ratings import read_rating
    from qualiclip_cli.core.curation.siblings import DirectoryIndex
    from qualiclip_cli.core.pipeline.run import WalkOptions, walk_paths

    found_entries, _ = walk_paths(paths, walk or WalkOptions())
    found = RatingsFound()
    index = DirectoryIndex()
    for entry in found_entries:
        if not entry.ok:
            _problem(found, on_problem, f"{entry.path}: {entry.error}")
            continue
        try:
            rated = read_rating(entry.path, index)
        except CurationError as exc:
            _problem(found, on_problem, str(exc))
            continue
        if rated.rating is None:
            found.unrated += 1
        elif rated.ours:
            found.ours += 1
        else:
            found.photos.append(RatedPhoto(entry.path, _shoot(entry.path), rated.rating))
    return found


def _problem(found: RatingsFound, on_problem, text: str) -> None:
    found.problems.append(text)
    if on_problem is not None:
        on_problem(text)


def _shoot(path) -> str:
    return os.fsdecode(os.path.dirname(os.path.abspath(os.fspath(path)))) or "."


def comparable_shoots(photos: list[RatedPhoto]) -> list[str]:
    """The shoots holding at least two different ratings (the only ones that give pairs), sorted."""
    ratings: dict[str, set[int]] = {}
    for p in photos:
        ratings.setdefault(p.shoot, set()).add(p.rating)
    return sorted(s for s, r in ratings.items() if len(r) >= 2)


def check_enough(found: RatingsFound, what: str = "learn from") -> None:
    """UsageError (one line, stating the minimum) when there is too little to ``what``."""
    shoots = comparable_shoots(found.photos)
    if len(found.photos) < MIN_PHOTOS or len(shoots) < MIN_SHOOTS:
        raise UsageError(
            f"too few ratings to {what}: {found.summary()}; at least {MIN_PHOTOS} rated photos and {MIN_SHOOTS} "
            f"shoots (folders) each holding two different ratings are needed, found {len(shoots)} such shoots")


# ------------------------------------------------------------------------------------------- embeddings

@dataclass
class Embedded:
    """The rated photos that scored, with their cached embeddings (N, D) and base scores."""

    photos: list[RatedPhoto]
    embeddings: np.ndarray
    base_scores: np.ndarray
    weights_sha256: str
    base_features: np.ndarray  # (14, D), the base weights' prompt features
    failed: int = 0


def embed_rated(photos: list[RatedPhoto], options, weights=None, offline: bool = False, on_start=None,
                on_record=None, on_warning=None, on_download_progress=None) -> Embedded:
    """Score the rated photos through the normal pipeline (cached ones are not decoded again) and take each
    one's embedding; the base weights' prompt features come from the same weights file."""
    from dataclasses import replace

    from qualiclip_cli.core.model.prompts import GROUPING_EMBEDDING
    from qualiclip_cli.core.pipeline.run import WalkOptions, score_paths

    if GROUPING_EMBEDDING != "raw":  # the cached embedding must be the one the head dots with
        raise RuntimeError("the cached embedding is not the head's image feature; ratings training needs it")
    run = score_paths([p.path for p in photos], walk=WalkOptions(recursive=False, hidden=True),
                      options=replace(options, signals=True, profile=None), weights=weights, offline=offline,
                      on_start=on_start, on_record=on_record, on_warning=on_warning,
                      on_download_progress=on_download_progress)
    by_path = {os.fspath(p.path) if isinstance(p.path, str) else str(p.path): p for p in photos}
    kept, rows, scores = [], [], []
    for record in run.records:
        photo = by_path.get(record.path)
        if photo is None or not record.ok or record.signals is None:
            continue
        kept.append(photo)
        rows.append(np.frombuffer(record.signals.embedding, dtype="<f2").astype(np.float32))
        scores.append(record.score)
    base = base_features(weights, offline, run.weights_sha256)
    dim = base.shape[1]
    matrix = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
    return Embedded(kept, matrix, np.asarray(scores, np.float64), run.weights_sha256, base,
                    failed=len(photos) - len(kept))


def base_features(weights, offline: bool, expected_sha256: str) -> np.ndarray:
    """The prompt features (14, D) of the weights the photos were scored with."""
    from qualiclip_cli.core.errors import WeightsError
    from qualiclip_cli.core.model.layout import load_weights_dict, split_weights
    from qualiclip_cli.core.model.weights import resolve_weights

    resolved = resolve_weights(weights, offline)
    if resolved.sha256 != expected_sha256:
        raise WeightsError(f"{resolved.path}: the weights changed while they were in use; run again")
    _, prompts = split_weights(load_weights_dict(resolved.path))
    return prompts.float().numpy()


# ------------------------------------------------------------------------------------------- the head

def head_scores(embeddings: np.ndarray, features: np.ndarray) -> np.ndarray:
    """QualiCLIP's head (`qualiclip.scores_from_features`) on cached embeddings: the scores (N,)."""
    import torch

    from qualiclip_cli.core.model.qualiclip import scores_from_features

    with torch.no_grad():
        scores, _ = scores_from_features(torch.from_numpy(np.ascontiguousarray(embeddings, np.float32)),
                                         torch.from_numpy(np.ascontiguousarray(features, np.float32)))
    return scores.double().numpy()


def rating_pairs(ratings: np.ndarray, shoots: list[str]) -> np.ndarray:
    """(P, 2) index pairs (better, worse) of photos of one shoot with different ratings."""
    ratings = np.asarray(ratings)
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(shoots):
        groups.setdefault(s, []).append(i)
    out = []
    for members in groups.values():
        idx = np.asarray(members)
        r = ratings[idx]
        better, worse = np.nonzero(r[:, None] > r[None, :])
        if len(better):
            out.append(np.stack([idx[better], idx[worse]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def fit_features(embeddings: np.ndarray, ratings: np.ndarray, shoots: list[str], base: np.ndarray, seed: int = 0,
                 steps: int = STEPS) -> np.ndarray:
    """The learned prompt features (14, D), from the base's, by full-batch Adam on the within-shoot pairs."""
    import torch

    from qualiclip_cli.core.model.qualiclip import scores_from_features

    pairs = rating_pairs(ratings, shoots)
    if len(pairs) > MAX_PAIRS:
        pairs = pairs[np.random.default_rng(seed).choice(len(pairs), MAX_PAIRS, replace=False)]
    torch.manual_seed(seed)
    emb = torch.from_numpy(np.ascontiguousarray(embeddings, np.float32))
    start = torch.from_numpy(np.ascontiguousarray(base, np.float32))
    features = start.clone().requires_grad_(True)
    better, worse = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    scale = float((start ** 2).sum())
    # Adam by hand: torch.optim's import (it loads the compiler stack) costs seconds, the whole fit less.
    first, second = torch.zeros_like(start), torch.zeros_like(start)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, steps + 1):
        scores, _ = scores_from_features(emb, features)
        rank = torch.nn.functional.softplus(-(scores[better] - scores[worse]) / TEMPERATURE).mean()
        loss = rank + PULL * ((features - start) ** 2).sum() / scale
        (grad,) = torch.autograd.grad(loss, features)
        with torch.no_grad():
            first.mul_(beta1).add_(grad, alpha=1 - beta1)
            second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            update = (first / (1 - beta1 ** step)) / ((second / (1 - beta2 ** step)).sqrt() + eps)
            features -= LEARNING_RATE * update
    return features.detach().numpy().copy()


# ------------------------------------------------------------------------------------------- metrics

def metrics(scores: np.ndarray, ratings: np.ndarray, shoots: list[str]) -> dict:
    """pairwise_accuracy, srcc (mean over shoots with two different ratings), reject_auc (pooled), and the
    per-shoot SRCC."""
    scores, ratings = np.asarray(scores, np.float64), np.asarray(ratings)
    pairs = rating_pairs(ratings, shoots)
    if len(pairs):
        diff = scores[pairs[:, 0]] - scores[pairs[:, 1]]
        accuracy = float(((diff > 0) + 0.5 * (diff == 0)).mean())
    else:
        accuracy = math.nan
    per_shoot = {}
    for shoot in sorted(set(shoots)):
        idx = [i for i, s in enumerate(shoots) if s == shoot]
        if len(set(ratings[idx].tolist())) >= 2:
            per_shoot[shoot] = _spearman(scores[idx], ratings[idx])
    valid = [v for v in per_shoot.values() if math.isfinite(v)]
    srcc = float(np.mean(valid)) if valid else math.nan
    return {"pairwise_accuracy": accuracy, "srcc": srcc, "reject_auc": _auc(scores[ratings >= 0], scores[ratings < 0]),
            "pairs": len(pairs), "srcc_per_shoot": per_shoot}


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(x)]
    average = (starts + ends + 1) / 2.0  # ranks start..end-1 (0-based) are start+1..end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _auc(keep: np.ndarray, reject: np.ndarray) -> float:
    """P(a kept photo scores above a rejected one), ties half (Mann-Whitney); NaN without both kinds."""
    if not len(keep) or not len(reject):
        return math.nan
    ranks = _ranks(np.concatenate([keep, reject]))
    return float((ranks[:len(keep)].sum() - len(keep) * (len(keep) + 1) / 2) / (len(keep) * len(reject)))


# ------------------------------------------------------------------------------------------- train and evaluate

def split_shoots(shoots: list[str], holdout: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held out) shoots: a seeded shuffle of the sorted shoots, ``holdout`` of them held out (at least
    one each side)."""
    if not 0 < holdout < 1:
        raise UsageError(f"--holdout must be a fraction between 0 and 1, not {holdout}")
    order = sorted(shoots)
    np.random.default_rng(seed).shuffle(order)
    held = min(len(order) - 1, max(1, round(holdout * len(order))))
    return sorted(order[held:]), sorted(order[:held])


@dataclass
class Trained:
    features: np.ndarray
    base_sha256: str
    report: dict  # the evaluation JSON shape, on the held-out shoots
    provenance: dict
    train_photos: int
    seconds: float


def train_profile(embedded: Embedded, holdout: float = HOLDOUT, seed: int = 0, steps: int = STEPS) -> Trained:
    """Learn the features on the training shoots; the report is on the held-out shoots only."""
    import datetime
    import time

    start = time.perf_counter()
    photos = embedded.photos
    usable = set(comparable_shoots(photos))
    train_shoots, held_shoots = split_shoots(sorted(usable), holdout, seed)
    train_set, held_set = set(train_shoots), set(held_shoots)
    tr = [i for i, p in enumerate(photos) if p.shoot in train_set]
    te = [i for i, p in enumerate(photos) if p.shoot in held_set]
    ratings = np.asarray([p.rating for p in photos])
    shoots = [p.shoot for p in photos]
    features = fit_features(embedded.embeddings[tr], ratings[tr], [shoots[i] for i in tr], embedded.base_features,
                            seed=seed, steps=steps)
    report = compare(embedded, features, te)
    seconds = time.perf_counter() - start
    provenance = {
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "photos": len(photos), "shoots": len(set(shoots)), "train_photos": len(tr), "train_shoots": len(train_shoots),
        "held_out_photos": len(te), "held_out_shoots": len(held_shoots), "seed": seed, "steps": steps,
        # A metric that is undefined on these shoots (SRCC of scores that are all equal) is NaN: stored as null.
        "held_out": {k: {m: (None if v is None or v != v else v) for m, v in report[k].items()
                         if m in ("pairwise_accuracy", "srcc", "reject_auc")}
                     for k in ("base", "personal")},
        "ratings": sorted({int(r) for r in ratings.tolist()}),
    }
    return Trained(features, embedded.weights_sha256, report, provenance, len(tr), seconds)


def compare(embedded: Embedded, features: np.ndarray | None, subset: list[int] | None = None) -> dict:
    """The evaluation report: base and personal metrics on ``subset`` (default: every photo)."""
    idx = list(range(len(embedded.photos))) if subset is None else subset
    ratings = np.asarray([embedded.photos[i].rating for i in idx])
    shoots = [embedded.photos[i].shoot for i in idx]
    base = metrics(embedded.base_scores[idx], ratings, shoots)
    personal = None
    if features is not None:
        personal = metrics(head_scores(embedded.embeddings[idx], features), ratings, shoots)
    per_shoot = [{"shoot": s, "photos": shoots.count(s), "base_srcc": base["srcc_per_shoot"].get(s, math.nan),
                  "personal_srcc": personal["srcc_per_shoot"].get(s, math.nan) if personal else None}
                 for s in sorted(set(shoots))]

    def block(m):
        return None if m is None else {k: m[k] for k in ("pairwise_accuracy", "srcc", "reject_auc", "pairs")}

    return {"base": block(base), "personal": block(personal), "photos": len(idx), "shoots": len(set(shoots)),
            "per_shoot": per_shoot}


def beats_base(report: dict) -> bool:
    """Whether the personal model orders the held-out pairs better than the base."""
    base, personal = report["base"]["pairwise_accuracy"], report["personal"]["pairwise_accuracy"]
    return math.isfinite(personal) and (not math.isfinite(base) or personal > base)


def save_trained(trained: Trained, out: Path) -> str:
    from qualiclip_cli.core.model.profile import save_profile

    return save_profile(out, trained.features, trained.base_sha256, trained.provenance)


class NotBetter(QualiclipError):
    """The profile does not beat the base on the held-out shoots (written only with --force)."""


@dataclass
class RatingsRun:
    found: RatingsFound
    embedded: Embedded
    trained: Trained | None = None
    report: dict | None = None
    profile_sha256: str | None = None


def train_from_ratings(paths: Iterable, out: Path, *, walk=None, options=None, weights=None, offline: bool = False,
                       seed: int = 0, holdout: float = HOLDOUT, steps: int = STEPS, force: bool = False,
                       on_found: Callable[[RatingsFound], None] | None = None, on_report=None, **scoring) -> RatingsRun:
    """Find the ratings, score what is not scored yet, learn, report on the held-out shoots, write ``out``
    (refused, NotBetter, when the profile does not beat the base there, unless ``force``)."""
    from qualiclip_cli.core.pipeline.options import ScoreOptions

    found = find_ratings(paths, walk, scoring.pop("on_problem", None))
    if on_found is not None:
        on_found(found)
    check_enough(found)
    embedded = embed_rated(found.photos, options or ScoreOptions(), weights, offline, **scoring)
    enough = RatingsFound(embedded.photos, found.unrated, found.ours)
    check_enough(enough, "learn from once the photos that failed to score are left out")
    trained = train_profile(embedded, holdout, seed, steps)
    if on_report is not None:
        on_report(trained.report)
    run = RatingsRun(found, embedded, trained, trained.report)
    if not beats_base(trained.report) and not force:
        raise NotBetter(
            f"the personal profile does not beat the base on the held-out shoots (pairwise accuracy "
            f"{trained.report['personal']['pairwise_accuracy']:.4f} vs {trained.report['base']['pairwise_accuracy']:.4f}); "
            f"{out} not written (--force writes it anyway)")
    run.profile_sha256 = save_trained(trained, out)
    return run


def evaluate_ratings(paths: Iterable, *, walk=None, options=None, weights=None, offline: bool = False,
                     profile: os.PathLike | str | None = None, on_found=None, **scoring) -> RatingsRun:
    """Base and personal (``profile``) metrics on every rated photo of ``paths`` (give held-out shoots)."""
    from qualiclip_cli.core.model.profile import load_profile
    from qualiclip_cli.core.pipeline.options import ScoreOptions

    loaded = load_profile(profile) if profile is not None else None  # a bad profile fails before any scoring
    found = find_ratings(paths, walk, scoring.pop("on_problem", None))
    if on_found is not None:
        on_found(found)
    if not comparable_shoots(found.photos):
        raise UsageError(f"nothing to evaluate: {found.summary()}; at least one shoot (folder) holding two "
                         "different ratings is needed")
    embedded = embed_rated(found.photos, options or ScoreOptions(), weights, offline, **scoring)
    features = None
    if loaded is not None:
        from qualiclip_cli.core.model.weights import resolve_weights

        loaded.check_base(embedded.weights_sha256, resolve_weights(weights, offline).path)
        features = loaded.features.numpy()
    return RatingsRun(found, embedded, report=compare(embedded, features))
