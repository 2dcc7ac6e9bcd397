"""Overlapping crop pairs and the training dataset: shapes, overlap, determinism, balance, unreadable files."""

import pytest
import torch

from training.crops import crop_pair, ensure_min_side, overlapping_boxes
from training.dataset import (
    DistortionPlan,
    PristinePairs,
    StepBatchSampler,
    find_pristine,
    make_loader,
)

from training_support import write_photos

KEYS = ["gaublur", "whitenoise", "jpeg", "pixelate", "nonlincontrchange"]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_photos(root, ("astronaut", "coffee", "chelsea"), views=2, side=96)
    return root


def dataset(files, **kw):
    args = dict(seed=3, crop_size=48, levels=5, plan=DistortionPlan.from_keys(KEYS), max_side=0)
    args.update(kw)
    return PristinePairs(files, **args)


# ------------------------------------------------------------------------------------------- crops

@pytest.mark.parametrize("max_offset", [0.0, 0.25, 0.5])
def test_crop_boxes_stay_inside_and_overlap(max_offset):
    size = 64
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        a, b = overlapping_boxes(150, 97, size, max_offset, g)
        for box in (a, b):
            assert 0 <= box.top <= 150 - size and 0 <= box.left <= 97 - size
        assert abs(a.top - b.top) <= max_offset * size and abs(a.left - b.left) <= max_offset * size
        assert a.overlap(b) >= ((1 - max_offset) * size) ** 2


def test_crop_pair_is_deterministic_and_upscales_small_images():
    image = torch.rand(3, 40, 70)
    up = ensure_min_side(image, 64)
    assert min(up.shape[-2:]) == 64 and up.shape[-1] == round(70 * 64 / 40)
    assert 0.0 <= up.min() and up.max() <= 1.0
    a1, b1, boxes1 = crop_pair(image, 64, 0.5, torch.Generator().manual_seed(1))
    a2, b2, boxes2 = crop_pair(image, 64, 0.5, torch.Generator().manual_seed(1))
    assert a1.shape == b1.shape == (3, 64, 64)
    assert boxes1 == boxes2 and torch.equal(a1, a2) and torch.equal(b1, b2)


# ------------------------------------------------------------------------------------------- dataset

def test_item_shape_and_levels(photo_dir):
    files = find_pristine([photo_dir])
    assert len(files) == 6
    ds = dataset(files)
    item = ds[0]
    images = item["images"]
    assert images.shape == (2, 5, 3, 48, 48) and images.dtype == torch.uint8
    assert item["distortion"] in KEYS
    # Each level differs from the one below, for both crops.
    for crop in range(2):
        for level in range(1, 5):
            assert not torch.equal(images[crop, level], images[crop, level - 1])


def test_items_are_a_pure_function_of_seed_and_index(photo_dir):
    files = find_pristine([photo_dir])
    first, again = dataset(files), dataset(files)
    for g in (0, 7, 31):
        a, b = first[g], again[g]
        assert torch.equal(a["images"], b["images"]) and a["distortion"] == b["distortion"]
    assert not torch.equal(first[0]["images"], first[1]["images"])
    other_seed = dataset(files, seed=4)
    assert not torch.equal(other_seed[0]["images"], first[0]["images"])


def test_balanced_rounds_cover_every_type_and_epochs_every_photo(photo_dir):
    files = find_pristine([photo_dir])
    ds = dataset(files)
    for start in (0, 5, 10):
        assert sorted(ds[g]["distortion"] for g in range(start, start + 5)) == sorted(KEYS)
    for epoch in range(3):
        assert sorted(ds.image_index(g) for g in range(6 * epoch, 6 * epoch + 6)) == list(range(6))


def test_composition_draws_distinct_groups(photo_dir):
    from training.degradations import DISTORTIONS

    ds = dataset(find_pristine([photo_dir]), plan=DistortionPlan.from_keys(None, compose=3))
    sizes = set()
    for g in range(12):
        keys = ds[g]["distortion"].split("+")
        groups = [DISTORTIONS[k].group for k in keys]
        assert len(set(groups)) == len(groups) and 1 <= len(keys) <= 3
        sizes.add(len(keys))
    assert len(sizes) > 1


def test_unreadable_files_are_skipped_with_a_warning(photo_dir, tmp_path):
    import shutil

    for p in find_pristine([photo_dir])[:2]:
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    files = find_pristine([tmp_path])
    assert len(files) == 4
    warnings = []
    ds = dataset(files, warn=warnings.append)
    used = {ds[g]["image"] for g in range(16)}
    assert used <= {i for i, f in enumerate(files) if f.name not in ("broken.jpg", "empty.png")}
    assert len(used) == 2
    assert len(warnings) == 2 and any("broken.jpg" in w for w in warnings) and all("skipped" in w for w in warnings)


def test_missing_path_is_warned_about(tmp_path):
    messages = []
    assert find_pristine([tmp_path / "nope"], warn=messages.append) == []
    assert messages and "nope" in messages[0]


def test_sampler_splits_the_global_batch_and_resumes():
    full = list(StepBatchSampler(0, 4, 6))
    assert full[1] == [6, 7, 8, 9, 10, 11]
    r0, r1 = list(StepBatchSampler(0, 4, 6, rank=0, world_size=2)), list(StepBatchSampler(0, 4, 6, rank=1, world_size=2))
    assert [a + b for a, b in zip(r0, r1)] == full
    assert list(StepBatchSampler(2, 4, 6)) == full[2:]
    from qualiclip_cli.core.errors import UsageError

    with pytest.raises(UsageError, match="multiple"):
        StepBatchSampler(0, 4, 5, world_size=2)


def test_batches_do_not_depend_on_the_number_of_workers(photo_dir):
    files = find_pristine([photo_dir])
    ds = dataset(files)

    def batches(workers):
        return [b["images"] for b in make_loader(ds, StepBatchSampler(0, 3, 4), workers)]

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 3 and serial[0].shape == (4, 2, 5, 3, 48, 48)
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel))
