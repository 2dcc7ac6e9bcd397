"""Tests for training/degradations.py: the 24-type synthetic degradation model (SPEC section 3).

Severity is checked with the mean squared error on RGB against the pristine image, for every type (it is a
genuine deviation measure for all of them, colour-only and contrast types included, and it was strictly
monotone on all four photos, so no per-type distance was needed). Random types average the MSE over
three generator seeds (the same seeds at every level). The pristine image counts as level 0, so level 1 must
already change the image. Photos are scikit-image samples downscaled to a 96-px short side; colorshift, whose
shifts are in pixels of a 224-px crop, uses a 224-px short side (at 96-160 px the rocket's periodic launch
tower matches an 8-12 px shift again and the MSE dips; see the module docstring).
"""

import dataclasses
import functools
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import color, data

from training import degradations as D

# torchvision 0.29 deprecates its JPEG codec (still the one the degradation model specifies).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

# Table of DEGRADATIONS.md: key, group and the classic level values, in order.
CLASSIC_TABLE = [
    ("gaublur", "blur", (0.1, 0.5, 1, 2, 5)),
    ("lensblur", "blur", (1, 2, 4, 6, 8)),
    ("motionblur", "blur", (1, 2, 4, 6, 10)),
    ("colordiff", "color_distortion", (1, 3, 6, 8, 12)),
    ("colorshift", "color_distortion", (1, 3, 6, 8, 12)),
    ("colorsat1", "color_distortion", (0.4, 0.2, 0.1, 0, -0.4)),
    ("colorsat2", "color_distortion", (1, 2, 3, 6, 9)),
    ("jpeg2000", "jpeg", (16, 32, 45, 120, 170)),
    ("jpeg", "jpeg", (43, 36, 24, 7, 4)),
    ("whitenoise", "noise", (0.001, 0.002, 0.003, 0.005, 0.01)),
    ("whitenoiseCC", "noise", (0.0001, 0.0005, 0.001, 0.002, 0.003)),
    ("impulsenoise", "noise", (0.001, 0.005, 0.01, 0.02, 0.03)),
    ("multnoise", "noise", (0.001, 0.005, 0.01, 0.02, 0.05)),
    ("brighten", "brightness_change", (0.1, 0.2, 0.4, 0.7, 1.1)),
    ("darken", "brightness_change", (0.05, 0.1, 0.2, 0.4, 0.8)),
    ("meanshift", "brightness_change", (0, 0.08, -0.08, 0.15, -0.15)),
    ("jitter", "spatial_distortion", (0.05, 0.1, 0.2, 0.5, 1)),
    ("noneccpatch", "spatial_distortion", (20, 40, 60, 80, 100)),
    ("pixelate", "spatial_distortion", (0.01, 0.05, 0.1, 0.2, 0.5)),
    ("quantization", "spatial_distortion", (20, 16, 13, 10, 7)),
    ("colorblock", "spatial_distortion", (2, 4, 6, 8, 10)),
    ("highsharpen", "sharpness_contrast", (1, 2, 3, 6, 12)),
    ("lincontrchange", "sharpness_contrast", (0, 0.15, -0.4, 0.3, -0.6)),
    ("nonlincontrchange", "sharpness_contrast", (0.4, 0.3, 0.2, 0.1, 0.05)),
]
KEYS = [key for key, _, _ in CLASSIC_TABLE]
CHANGED_KEYS = {"gaublur", "colorsat2", "meanshift", "lincontrchange"}

RANDOM_KEYS = {
    "motionblur", "colorshift", "whitenoise", "whitenoiseCC", "impulsenoise", "multnoise",
    "meanshift", "jitter", "noneccpatch", "colorblock", "lincontrchange",
}  # fmt: skip
# Random types whose randomness has few outcomes (a sign, an integer angle, a rounded shift).
DISCRETE_RANDOM_KEYS = {"motionblur", "colorshift", "meanshift", "lincontrchange"}

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
SHORT_SIDE = 96
SHORT_SIDE_FOR = {"colorshift": 224}
SEVERITY_SEEDS = 3


@functools.cache
def photo(name: str, short_side: int) -> torch.Tensor:
    """A scikit-image photo as 3×H×W float32 in [0, 1], downscaled and quantised to 8 bits like a real file."""
    pixels = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).to(torch.float32) / 255
    height, width = pixels.shape[1:]
    scale = short_side / min(height, width)
    resized = F.interpolate(
        pixels.unsqueeze(0), size=(round(height * scale), round(width * scale)), mode="bilinear", antialias=True
    ).squeeze(0)
    return torch.round(resized.clamp(0, 1) * 255) / 255


def small_image(height: int, width: int) -> torch.Tensor:
    return photo("chelsea", max(height, width) * 2)[:, :height, :width].contiguous()


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).mean())


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """The images are tiny: threads only add overhead, and much more of it when the CPUs are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_global_rngs():
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    yield
    torch.set_rng_state(torch_state)
    random.setstate(python_state)
    np.random.set_state(numpy_state)


# --------------------------------------------------------------------------------------------------------------
# Registry


def test_registry_has_the_24_types_of_the_table_in_order():
    assert list(D.DISTORTIONS) == KEYS
    assert len(D.DISTORTIONS) == 24
    for key, group, _ in CLASSIC_TABLE:
        distortion = D.DISTORTIONS[key]
        assert (distortion.key, distortion.group) == (key, group)
        assert len(distortion.levels) == 5
        assert distortion.levels == tuple(float(v) for v in D.LEVEL_VALUES[key])


def test_groups_match_the_table():
    expected: dict[str, tuple[str, ...]] = {}
    for key, group, _ in CLASSIC_TABLE:
        expected[group] = expected.get(group, ()) + (key,)
    assert D.GROUPS == expected
    assert len(D.GROUPS) == 7


def test_level_values_are_the_classic_ones_except_the_documented_changes():
    for key, _, classic_values in CLASSIC_TABLE:
        if key in CHANGED_KEYS:
            assert D.CLASSIC_LEVEL_VALUES[key] == classic_values
            assert D.LEVEL_VALUES[key] != classic_values
            assert key in D.__doc__
        else:
            assert D.LEVEL_VALUES[key] == classic_values
    assert set(D.CLASSIC_LEVEL_VALUES) == CHANGED_KEYS


def test_monotone_variants_have_strictly_increasing_magnitudes():
    for key in ("meanshift", "lincontrchange"):
        magnitudes = D.LEVEL_VALUES[key]
        assert all(0 < low < high for low, high in zip(magnitudes, magnitudes[1:]))


def test_distortion_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        D.DISTORTIONS["jpeg"].key = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------------------------
# Severity


@pytest.mark.parametrize("key", KEYS)
def test_each_level_is_strictly_more_severe_than_the_one_below(key):
    seeds = range(SEVERITY_SEEDS) if key in RANDOM_KEYS else range(1)
    for name in PHOTOS:
        pristine = photo(name, SHORT_SIDE_FOR.get(key, SHORT_SIDE))
        distances = [0.0]  # level 0: the pristine image itself
        for level in range(1, 6):
            outputs = [D.apply_distortion(key, pristine, level, seeded(seed)) for seed in seeds]
            distances.append(sum(mse(output, pristine) for output in outputs) / len(outputs))
        assert all(low < high for low, high in zip(distances, distances[1:])), (name, distances)


def test_meanshift_draws_both_signs():
    image = photo("coffee", SHORT_SIDE)
    signs = set()
    for seed in range(16):
        shifted = D.apply_distortion("meanshift", image, 1, seeded(seed))
        signs.add(float(torch.sign((shifted - image).mean())))
    assert signs == {-1.0, 1.0}


def test_lincontrchange_raises_and_lowers_contrast():
    image = photo("astronaut", SHORT_SIDE)
    spreads = {float(D.apply_distortion("lincontrchange", image, 5, seeded(seed)).std()) for seed in range(16)}
    assert min(spreads) < float(image.std()) < max(spreads)


# --------------------------------------------------------------------------------------------------------------
# Output contract, purity and randomness


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (40, 72)])
def test_output_contract_and_input_untouched(key, size):
    image = small_image(*size)
    original = image.clone()
    for level in range(1, 6):
        output = D.apply_distortion(key, image, level, seeded(level))
        assert output.shape == image.shape
        assert output.dtype == torch.float32
        assert float(output.min()) >= 0 and float(output.max()) <= 1
        assert output.data_ptr() != image.data_ptr()
        assert torch.equal(image, original)


@pytest.mark.parametrize("key", KEYS)
def test_float64_input_gives_float32_output_and_stays_untouched(key):
    image = small_image(48, 48).double()
    original = image.clone()
    output = D.apply_distortion(key, image, 3, seeded(0))
    assert output.dtype == torch.float32
    assert torch.equal(image, original)


@pytest.mark.parametrize("key", KEYS)
def test_same_seed_gives_the_same_output(key):
    image = photo("chelsea", 64)
    first = D.apply_distortion(key, image, 3, seeded(7))
    second = D.apply_distortion(key, image, 3, seeded(7))
    assert torch.equal(first, second)


@pytest.mark.parametrize("key", sorted(RANDOM_KEYS))
def test_different_seeds_give_different_outputs(key):
    image = photo("chelsea", 64)
    outputs = [D.apply_distortion(key, image, 3, seeded(seed)) for seed in range(8)]
    if key in DISCRETE_RANDOM_KEYS:
        assert any(not torch.equal(outputs[0], other) for other in outputs[1:])
    else:
        assert all(not torch.equal(a, b) for i, a in enumerate(outputs) for b in outputs[i + 1 :])


@pytest.mark.parametrize("key", sorted(set(KEYS) - RANDOM_KEYS))
def test_deterministic_types_ignore_the_seed(key):
    image = photo("chelsea", 64)
    assert torch.equal(D.apply_distortion(key, image, 3, seeded(0)), D.apply_distortion(key, image, 3, seeded(1)))


@pytest.mark.parametrize("key", KEYS)
def test_randomness_comes_only_from_the_generator(key, restore_global_rngs):
    image = photo("chelsea", 64)
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    first = D.apply_distortion(key, image, 4, seeded(3))
    assert torch.equal(torch.get_rng_state(), states[0])
    assert random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])
    torch.manual_seed(2), random.seed(2), np.random.seed(2)
    assert torch.equal(D.apply_distortion(key, image, 4, seeded(3)), first)


# --------------------------------------------------------------------------------------------------------------
# Invalid arguments

BAD_LEVELS = [0, 6, -1, 1.5, 3.0, True, "1", None]


@pytest.mark.parametrize("key", KEYS)
def test_invalid_level_raises(key):
    image = small_image(32, 32)
    for level in BAD_LEVELS:
        with pytest.raises(ValueError):
            D.apply_distortion(key, image, level, seeded(0))
        with pytest.raises(ValueError):
            D.DISTORTIONS[key].fn(image, level, seeded(0))


def test_numpy_integer_level_is_accepted():
    image = small_image(32, 32)
    with_numpy_level = D.apply_distortion("jpeg", image, np.int64(2), seeded(0))
    assert torch.equal(with_numpy_level, D.apply_distortion("jpeg", image, 2, seeded(0)))


def test_unknown_key_and_bad_images_raise():
    with pytest.raises(ValueError):
        D.apply_distortion("nosuchthing", small_image(32, 32), 1, seeded(0))
    bad_images = [
        torch.zeros(32, 32),
        torch.zeros(1, 32, 32),
        torch.zeros(3, 16, 64),
        torch.zeros(3, 32, 32, dtype=torch.uint8),
    ]
    for bad_image in bad_images:
        with pytest.raises(ValueError):
            D.apply_distortion("gaublur", bad_image, 1, seeded(0))


# --------------------------------------------------------------------------------------------------------------
# Composition


def test_compose_applies_in_order_with_clipping():
    image = photo("coffee", 64)
    original = image.clone()
    keys = ["brighten", "whitenoise", "gaublur", "jpeg"]
    composed = D.compose(image, keys, 4, seeded(5))
    generator = seeded(5)
    expected = image
    for key in keys:
        expected = D.apply_distortion(key, expected, 4, generator).clamp(0, 1)
    assert torch.equal(composed, expected)
    assert torch.equal(image, original)
    assert composed.dtype == torch.float32 and composed.shape == image.shape
    assert float(composed.min()) >= 0 and float(composed.max()) <= 1
    assert torch.equal(D.compose(image, keys, 4, seeded(5)), composed)


def test_compose_one_from_every_group():
    image = photo("astronaut", 64)
    keys = [members[0] for members in D.GROUPS.values()]
    composed = D.compose(image, keys, 2, seeded(0))
    assert composed.shape == image.shape and mse(composed, image) > 0


def test_compose_of_nothing_is_a_copy():
    image = photo("astronaut", 64)
    composed = D.compose(image, [], 3, seeded(0))
    assert torch.equal(composed, image) and composed.data_ptr() != image.data_ptr()


def test_compose_rejects_two_types_of_one_group_and_bad_levels():
    image = small_image(32, 32)
    with pytest.raises(ValueError):
        D.compose(image, ["gaublur", "lensblur"], 1, seeded(0))
    with pytest.raises(ValueError):
        D.compose(image, ["gaublur", "nosuchthing"], 1, seeded(0))
    for level in BAD_LEVELS:
        with pytest.raises(ValueError):
            D.compose(image, ["gaublur"], level, seeded(0))


# --------------------------------------------------------------------------------------------------------------
# Colour conversions


def test_colour_conversions_match_scikit_image_and_round_trip():
    image = photo("coffee", 64)
    pixels = image.permute(1, 2, 0).double().numpy()
    lab = D.rgb_to_lab(image)
    assert np.allclose(lab.permute(1, 2, 0).numpy(), color.rgb2lab(pixels), atol=0.05)
    hsv = D.rgb_to_hsv(image)
    assert np.allclose(hsv.permute(1, 2, 0).numpy(), color.rgb2hsv(pixels), atol=1e-4)
    assert torch.allclose(D.lab_to_rgb(lab), image, atol=1e-4)
    assert torch.allclose(D.hsv_to_rgb(hsv), image, atol=1e-5)
    assert torch.allclose(D.ycbcr_to_rgb(D.rgb_to_ycbcr(image)), image, atol=1e-5)


def test_colour_conversions_keep_red_and_blue_apart():
    red_and_blue = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]).reshape(3, 1, 2)
    lightness, a, b = D.rgb_to_lab(red_and_blue)
    assert a[0, 0] > 70 and b[0, 0] > 60  # red: L 53, a 80, b 67
    assert b[0, 1] < -100  # blue: L 32, a 79, b -108
    _, cb, cr = D.rgb_to_ycbcr(red_and_blue)
    assert cr[0, 0] == pytest.approx(1.0, abs=1e-6) and cb[0, 1] == pytest.approx(1.0, abs=1e-6)
    hue = D.rgb_to_hsv(red_and_blue)[0]
    assert hue[0, 0] == pytest.approx(0.0) and hue[0, 1] == pytest.approx(2 / 3)

