"""`qualiclip evaluate`: MOS correlations on a CSV whose answer is known; synthetic check structure."""

import csv
import json
import math

import numpy as np
import pytest

from qualiclip_cli.core.pipeline.options import ScoreOptions
from training.evaluate import (
    evaluate_mos,
    evaluate_synthetic,
    label_weights,
    quality_values,
    read_mos_csv,
    srcc,
)

from cli_support import run_cli
from training_support import write_photos

KEYS = ["gaublur", "whitenoise", "jpeg"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_photos(root, ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins"), views=1, side=96)
    return root


@pytest.fixture(scope="module")
def second_weights(tmp_path_factory):
    from tiny_weights import write_tiny_weights

    return write_tiny_weights(tmp_path_factory.mktemp("w2") / "other.pth", seed=1)


def scores_of(weights, photos):
    from qualiclip_cli.core.hashing import sha256_file
    from qualiclip_cli.core.images.discovery import Found
    from qualiclip_cli.core.model.weights import ResolvedWeights
    from qualiclip_cli.core.pipeline.scorer import Scorer

    scorer = Scorer(ResolvedWeights(weights, sha256_file(weights), "argument"), ScoreOptions(use_cache=False))
    files = sorted(photos.iterdir())
    return {f.name: r.score for f, r in zip(files, scorer.score_files([Found(f) for f in files]))}


def write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "mos"])
        writer.writerows(rows)
    return path


def test_mos_correlations_are_exact_when_mos_is_a_function_of_the_score(photos, tiny_weights_file, tmp_path):
    scores = scores_of(tiny_weights_file, photos)
    assert len(set(scores.values())) == len(scores)  # distinct, so the ranking is defined
    # Relative paths are relative to the CSV's folder; a missing file is skipped with a warning.
    rel = photos.relative_to(photos.parent)
    linear = write_csv(photos.parent / "linear.csv", [(f"{rel}/{n}", 3 * s + 1) for n, s in scores.items()]
                       + [(f"{rel}/missing.jpg", 2.0)])
    warnings = []
    [result] = evaluate_mos(linear, label_weights([tiny_weights_file]), warn=warnings.append)
    assert result.n == 6 and result.failed == 1 and len(warnings) == 1 and "missing.jpg" in warnings[0]
    assert result.srcc == pytest.approx(1.0) and result.plcc == pytest.approx(1.0)

    # A monotone but non-linear, reversed relation: SRCC exactly -1, PLCC only close to it.
    reversed_ = write_csv(tmp_path / "rev.csv", [(str(photos / n), -math.exp(20 * s)) for n, s in scores.items()])
    [result] = evaluate_mos(reversed_, label_weights([tiny_weights_file]))
    assert result.srcc == pytest.approx(-1.0) and -1.0 < result.plcc < 0


def test_mos_command_compares_weights_side_by_side(photos, tiny_weights_file, second_weights, tmp_path):
    scores = scores_of(tiny_weights_file, photos)
    table = write_csv(tmp_path / "mos.csv", [(str(photos / n), s) for n, s in scores.items()])
    result = run_cli("evaluate", "--mos", str(table), "--weights", str(tiny_weights_file), "--weights",
                     str(second_weights), "--format", "json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "mos" and [r["weights"] for r in data["results"]] == ["tiny.pth", "other.pth"]
    assert data["results"][0]["srcc"] == pytest.approx(1.0)
    assert data["results"][1]["srcc"] < 1.0
    text = run_cli("evaluate", "--mos", str(table), "--weights", str(tiny_weights_file))
    assert text.exit_code == 0 and "SRCC" in text.stdout and "tiny.pth" in text.stdout


def test_mos_csv_errors(tmp_path):
    from qualiclip_cli.core.errors import UsageError

    bad = tmp_path / "bad.csv"
    bad.write_text("image,rating\na.jpg,1\n")
    with pytest.raises(UsageError, match="'path' and 'mos'"):
        read_mos_csv(bad)
    bad.write_text("path,mos\na.jpg,good\nb.jpg,2\n")
    with pytest.raises(UsageError, match="not a number"):
        read_mos_csv(bad)


def test_synthetic_structure_and_determinism(photos, tiny_weights_file, second_weights):
    weights = label_weights([tiny_weights_file, second_weights])
    kwargs = dict(crop_size=48, crops_per_image=2, distortions=KEYS, max_side=0, seed=1)
    results = evaluate_synthetic([photos], weights, **kwargs)
    assert [r.label for r in results] == ["tiny.pth", "other.pth"]
    for r in results:
        assert set(r.per_crop) == set(r.pooled) == {"blur", "noise", "jpeg", "overall"}
        assert set(r.per_distortion) == set(KEYS)
        assert all(-1.0 <= v <= 1.0 for v in [*r.per_crop.values(), *r.pooled.values()])
        assert r.n_images == 6 and r.n_crops == 12 and len(r.mean_score_by_level) == 5
    again = evaluate_synthetic([photos], weights, **kwargs)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in results]


def test_quality_values_rank_without_saturating():
    import torch

    # Embeddings moving step by step towards the mean positive-minus-negative prompt direction: q must rank
    # them for any prompts. (Seeded: the score's behaviour depends on the prompts, see below.)
    for seed in range(8):
        generator = torch.Generator().manual_seed(seed)
        prompts = torch.nn.functional.normalize(torch.randn(14, 8, dtype=torch.float64, generator=generator), dim=-1)
        direction = (prompts[0::2] - prompts[1::2]).mean(0)
        emb = torch.stack([direction * k + 0.01 * torch.ones(8, dtype=torch.float64) for k in (1, 2, 3)])
        q, score = quality_values(torch.nn.functional.normalize(emb, dim=-1), prompts)
        assert np.all(np.diff(q) > 0), (seed, q)
        assert srcc(q, [1, 2, 3]) == 1.0
        if seed == 0:
            # ... while the scorer's formula (logit scale 100, per-pair softmax) has saturated: six pairs at 1,
            # one at 0, the same 6/7 for all three up to float rounding, so its ranking is noise.
            assert np.allclose(score, 6 / 7, atol=1e-7), score
            assert np.ptp(score) < 1e-7 and np.ptp(q) > 1e-4, (np.ptp(score), np.ptp(q))
    assert math.isnan(srcc([1, 1, 1], [1, 2, 3]))  # a constant has no ranking


def test_synthetic_command(photos, tiny_weights_file):
    args = ["evaluate", "--synthetic", str(photos), "--weights", str(tiny_weights_file), "--crop-size", "48",
            "--crops", "1", "--distortions", ",".join(KEYS), "--max-side", "0"]
    table = run_cli(*args)
    assert table.exit_code == 0, table.stderr
    assert "per-crop SRCC" in table.stdout and "pooled SRCC" in table.stdout and "overall" in table.stdout
    rows = list(csv.reader(run_cli(*args, "--format", "csv").stdout.splitlines()))
    assert rows[0] == ["measure", "group", "tiny.pth"] and len(rows) == 1 + 2 * 4
    assert run_cli("evaluate").exit_code == 2
    assert run_cli("evaluate", "--synthetic", str(photos), "--mos", "x.csv").exit_code == 2
