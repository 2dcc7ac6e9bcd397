"""Personal profiles from the photographer's ratings: reading the ratings, learning a hidden rule, the profile
file in `score` (identity, base weights pin), evaluation's JSON, the too-little-data refusal, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qualiclip_cli.core.curation.ratings import read_rating

from cli_support import natural_image, run_cli

XMP_RATING = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
              'xmlns:xmpDM="http://ns.adobe.com/xmp/1.0/DynamicMedia/" xmlns:digiKam="http://www.digikam.org/ns/1.0/" '
              'xmlns:qualiclip="http://ns.qualiclip.org/1.0/" {attrs}/></rdf:RDF></x:xmpmeta>')


def packet(**attrs) -> bytes:
    return XMP_RATING.format(attrs=" ".join(f'{k.replace("_", ":", 1)}="{v}"' for k, v in attrs.items())).encode()


def photo(path: Path, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    natural_image("coffee", (64, 48)).save(path, **save)
    return path


# ------------------------------------------------------------------------------------------- reading


def test_ratings_from_sidecars_embedded_xmp_and_reject_flags(tmp_path):
    adobe = photo(tmp_path / "a.jpg")
    (tmp_path / "a.xmp").write_bytes(packet(xmp_Rating=4))
    darktable = photo(tmp_path / "b.jpg")
    (tmp_path / "b.jpg.xmp").write_bytes(packet(xmp_Rating=2))
    embedded_jpeg = photo(tmp_path / "c.jpg", xmp=packet(xmp_Rating=5))
    embedded_tiff = photo(tmp_path / "d.tif", tiffinfo={700: packet(xmp_Rating=3)})
    embedded_dng = photo(tmp_path / "e.dng", format="TIFF", tiffinfo={700: packet(xmp_Rating=1)})
    lr_reject = photo(tmp_path / "f.jpg")
    (tmp_path / "f.xmp").write_bytes(packet(xmp_Rating=-1))
    pick_reject = photo(tmp_path / "g.jpg")
    (tmp_path / "g.xmp").write_bytes(packet(xmp_Rating=3, xmpDM_pick=-1))
    digikam_reject = photo(tmp_path / "h.jpg")
    (tmp_path / "h.xmp").write_bytes(packet(digiKam_PickLabel=1))
    unrated = photo(tmp_path / "i.jpg")
    (tmp_path / "i.xmp").write_bytes(packet(xmp_Rating=0))
    expected = {adobe: 4, darktable: 2, embedded_jpeg: 5, embedded_tiff: 3, embedded_dng: 1, lr_reject: -1,
                pick_reject: -1, digikam_reject: -1, unrated: None}
    got = {p: read_rating(p).rating for p in expected}
    assert got == expected
    assert read_rating(embedded_jpeg).source == embedded_jpeg
    assert read_rating(adobe).source == tmp_path / "a.xmp"


def test_ratings_qualiclip_wrote_are_recognised_and_left_out(tmp_path):
    from training.ratings import find_ratings

    ours = photo(tmp_path / "ours.jpg")
    (tmp_path / "ours.xmp").write_bytes(packet(xmp_Rating=3, qualiclip_Rating=3))
    changed = photo(tmp_path / "changed.jpg")  # ours once, changed by the photographer since: theirs
    (tmp_path / "changed.xmp").write_bytes(packet(xmp_Rating=5, qualiclip_Rating=3))
    mine = photo(tmp_path / "mine.jpg")
    (tmp_path / "mine.xmp").write_bytes(packet(xmp_Rating=2))
    assert read_rating(ours).ours and not read_rating(changed).ours and not read_rating(mine).ours
    found = find_ratings([tmp_path])
    assert sorted((Path(p.path).name, p.rating) for p in found.photos) == [("changed.jpg", 5), ("mine.jpg", 2)]
    assert found.ours == 1 and found.unrated == 0


def test_tag_output_is_not_learned_from(tmp_path, tiny_weights_file):
    """Sidecars written by `qualiclip tag` carry ratings that are ours: none of them counts."""
    from training.ratings import find_ratings

    for i in range(3):
        photo(tmp_path / f"IMG_{i}.jpg")
    assert run_cli("tag", tmp_path, "--weights", tiny_weights_file).exit_code == 0
    found = find_ratings([tmp_path])
    assert found.photos == [] and found.ours == 3


# ------------------------------------------------------------------------------------------- learning

SCENES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "cat", "astronaut", "coffee")


def blur_library(root: Path, shoots: int = 8, per_shoot: int = 10) -> Path:
    """Synthetic shoots whose hidden rule is the blur level (the project's gaussian blur, levels 1..5): level 1
    gets 5 stars, 4 gets 2, the most blurred a reject."""
    from training.degradations import gaussian_blur

    generator = torch.Generator().manual_seed(0)
    for s in range(shoots):
        big = np.asarray(natural_image(SCENES[s % len(SCENES)], (192 + 8 * s, 144)))
        folder = root / f"shoot{s}"
        folder.mkdir(parents=True)
        for k in range(per_shoot):
            y, x = (k * 7 + s) % 48, (k * 13 + 3 * s) % 64
            crop = torch.from_numpy(big[y:y + 96, x:x + 128].copy()).permute(2, 0, 1).float() / 255
            level = k % 5 + 1
            image = gaussian_blur(crop, level, generator).permute(1, 2, 0).numpy()
            Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / f"IMG_{k}.jpg", quality=95)
            (folder / f"IMG_{k}.xmp").write_bytes(packet(xmp_Rating=-1 if level == 5 else 6 - level))
    return root


@pytest.fixture(scope="module")
def learned(tmp_path_factory, tiny_weights_file):
    """The blur library, embedded once (tiny random weights), and a profile learned on it (seed 1)."""
    import os

    from qualiclip_cli.core.pipeline.options import ScoreOptions
    from training import ratings as R

    root = tmp_path_factory.mktemp("ratings")
    previous = os.environ.get("QUALICLIP_HOME")
    os.environ["QUALICLIP_HOME"] = str(root / "home")
    try:
        library = blur_library(root / "lib")
        found = R.find_ratings([library])
        embedded = R.embed_rated(found.photos, ScoreOptions(), weights=tiny_weights_file, offline=True)
    finally:
        if previous is None:
            os.environ.pop("QUALICLIP_HOME", None)
        else:
            os.environ["QUALICLIP_HOME"] = previous
    trained = R.train_profile(embedded, holdout=0.25, seed=1)
    return library, found, embedded, trained, root / "home"


def test_a_hidden_blur_rule_is_learned_on_held_out_shoots(learned):
    _, found, embedded, trained, _ = learned
    assert len(found.photos) == 80 and found.shoots == 8 and embedded.failed == 0
    held, base, personal = trained.provenance, trained.report["base"], trained.report["personal"]
    assert held["held_out_shoots"] == 2 and held["train_shoots"] == 6 and trained.report["photos"] == 20
    assert personal["pairwise_accuracy"] >= base["pairwise_accuracy"] + 0.25
    assert personal["pairwise_accuracy"] >= 0.75
    assert personal["srcc"] > base["srcc"]


def test_training_is_deterministic_with_a_seed(learned):
    from training import ratings as R

    _, _, embedded, trained, _ = learned
    again = R.train_profile(embedded, holdout=0.25, seed=1)
    assert np.array_equal(again.features, trained.features)
    other = R.train_profile(embedded, holdout=0.25, seed=2)
    assert not np.array_equal(other.features, trained.features)  # another split of the shoots


def test_a_metric_undefined_on_the_held_out_shoots_is_stored_as_null(learned, tmp_path):
    """Equal scores everywhere (one embedding for every photo) leave the SRCC undefined (NaN): the profile is still
    written, with null there (JSON has no NaN), instead of an internal error."""
    from dataclasses import replace

    from qualiclip_cli.core.model.profile import load_profile
    from training import ratings as R

    _, _, embedded, _, _ = learned
    flat = replace(embedded, embeddings=np.repeat(embedded.embeddings[:1], len(embedded.embeddings), axis=0),
                   base_scores=np.full(len(embedded.base_scores), 0.5))
    trained = R.train_profile(flat, holdout=0.25, seed=1, steps=5)
    assert trained.report["base"]["srcc"] != trained.report["base"]["srcc"]  # NaN: the case under test
    R.save_trained(trained, tmp_path / "flat.pth")
    assert load_profile(tmp_path / "flat.pth").provenance["held_out"]["base"]["srcc"] is None


def test_metrics_on_known_orders():
    from training.ratings import metrics

    shoots = ["a"] * 4 + ["b"] * 3
    ratings = np.array([5, 3, 1, -1, 4, 2, -1])
    perfect = metrics(np.array([0.9, 0.7, 0.5, 0.1, 0.8, 0.6, 0.2]), ratings, shoots)
    assert perfect["pairwise_accuracy"] == 1.0 and perfect["srcc"] == pytest.approx(1.0)
    assert perfect["reject_auc"] == 1.0 and perfect["pairs"] == 6 + 3
    reversed_ = metrics(-np.array([0.9, 0.7, 0.5, 0.1, 0.8, 0.6, 0.2]), ratings, shoots)
    assert reversed_["pairwise_accuracy"] == 0.0 and reversed_["reject_auc"] == 0.0
    ties = metrics(np.zeros(7), ratings, shoots)
    assert ties["pairwise_accuracy"] == 0.5 and ties["reject_auc"] == 0.5


# ------------------------------------------------------------------------------------------- the profile file


@pytest.fixture(scope="module")
def profile_file(learned, tmp_path_factory):
    from training.ratings import save_trained

    path = tmp_path_factory.mktemp("profile") / "my-taste.pth"
    save_trained(learned[3], path)
    return path


def test_profile_loads_in_score_and_changes_the_cached_identity(learned, profile_file, tiny_weights_file):
    shoot = learned[0] / "shoot0"
    base = json.loads(run_cli("score", shoot, "--weights", tiny_weights_file, "-f", "json").stdout)
    mine = run_cli("score", shoot, "--weights", tiny_weights_file, "--profile", profile_file, "-f", "json")
    assert mine.exit_code == 0, mine.output
    personal = json.loads(mine.stdout)
    from qualiclip_cli.core.hashing import sha256_file

    assert all(r["identity"].endswith("+profile:" + sha256_file(profile_file)) for r in personal)
    assert all("profile" not in r["identity"] for r in base)
    assert [r["score"] for r in base] != [r["score"] for r in personal]
    # Each served from the cache under its own identity: never the other's scores.
    again_base = json.loads(run_cli("score", shoot, "--weights", tiny_weights_file, "-f", "json").stdout)
    again_mine = json.loads(run_cli("score", shoot, "--weights", tiny_weights_file, "--profile", profile_file,
                                    "-f", "json").stdout)
    assert again_base == base and again_mine == personal
    # The cached pass with a profile needs neither torch nor the model either (its hash alone names the rows).
    from cli_support import torch_probe

    done, torch_imported = torch_probe("score", shoot, "--weights", tiny_weights_file, "--profile", profile_file,
                                       "--device", "cpu", "-f", "json", env={})
    assert done.returncode == 0, done.stderr
    assert not torch_imported and json.loads(done.stdout) == personal


def test_profile_is_refused_on_other_base_weights(profile_file, tmp_path):
    from tiny_weights import write_tiny_weights

    other = write_tiny_weights(tmp_path / "other.pth", seed=1)
    photo(tmp_path / "p" / "a.jpg")
    result = run_cli("score", tmp_path / "p", "--weights", other, "--profile", profile_file)
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "learned on base weights" in message and "my-taste.pth" in message


def test_profile_file_holds_provenance_and_never_unpickles(profile_file, tmp_path, tiny_weights_file):
    from qualiclip_cli.core.errors import WeightsError
    from qualiclip_cli.core.hashing import sha256_file
    from qualiclip_cli.core.model.profile import load_profile

    loaded = load_profile(profile_file)
    assert loaded.base_sha256 == sha256_file(tiny_weights_file)
    assert loaded.provenance["photos"] == 80 and loaded.provenance["shoots"] == 8
    assert set(loaded.provenance["held_out"]) == {"base", "personal"} and loaded.provenance["created"]
    shown = run_cli("weights", "verify", "--profile", profile_file, tiny_weights_file)
    assert shown.exit_code == 0 and "80 rated photos in 8 shoots" in shown.stdout and loaded.base_sha256 in shown.stdout
    pickled = tmp_path / "evil.pth"
    torch.save({"prompts_features": torch.zeros(14, 32)}, pickled)
    with pytest.raises(WeightsError, match="not a qualiclip profile"):
        load_profile(pickled)
    # An existing file that is not a profile is never replaced.
    from training.ratings import save_trained

    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    with pytest.raises(WeightsError, match="not replaced"):
        save_trained(type("T", (), {"features": loaded.features, "base_sha256": loaded.base_sha256,
                                    "provenance": {}})(), keep)
    assert keep.read_text() == "mine"


# ------------------------------------------------------------------------------------------- the commands


def test_train_refuses_too_little_data(tmp_path, tiny_weights_file):
    for i in range(6):
        photo(tmp_path / "shoot" / f"IMG_{i}.jpg")
        (tmp_path / "shoot" / f"IMG_{i}.xmp").write_bytes(packet(xmp_Rating=1 + i % 5))
    out = tmp_path / "taste.pth"
    result = run_cli("train", "--from-ratings", tmp_path, "--weights", tiny_weights_file, "-o", out)
    assert result.exit_code == 2
    assert "at least 20 rated photos and 2 shoots" in result.stderr and "6 rated photos in 1 shoots" in result.stderr
    assert not out.exists()


def test_train_and_evaluate_commands(learned, tmp_path, tiny_weights_file, monkeypatch):
    library = learned[0]
    monkeypatch.setenv("QUALICLIP_HOME", str(learned[4]))  # the photos scored by the fixture: served from the cache
    out = tmp_path / "taste.pth"
    result = run_cli("train", "--from-ratings", library, "--weights", tiny_weights_file, "-o", out, "--seed", "1",
                     "--holdout", "0.25")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out) and out.is_file()
    assert "pairwise accuracy" in result.stderr and "80 rated photos in 8 shoots" in result.stderr
    evaluated = run_cli("evaluate", "--ratings", library / "shoot1", "--ratings", library / "shoot2",
                        "--profile", out, "--weights", tiny_weights_file, "--format", "json")
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert {"base", "personal", "photos", "shoots"} <= set(report)
    assert report["photos"] == 20 and report["shoots"] == 2
    for side in ("base", "personal"):
        assert {"pairwise_accuracy", "srcc", "reject_auc"} <= set(report[side])
    without = json.loads(run_cli("evaluate", "--ratings", library / "shoot1", "--weights", tiny_weights_file,
                                 "--format", "json").stdout)
    assert without["personal"] is None and without["base"]["pairs"] == 40
