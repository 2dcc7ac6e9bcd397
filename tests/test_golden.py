"""SPEC section 1: the scorer reproduces the official implementation's outputs on the golden tiny model."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from qualiclip_cli.core.model.layout import load_weights_dict, split_weights
from qualiclip_cli.core.model.prompts import CLIP_MEAN, CLIP_STD, PROMPTS
from qualiclip_cli.core.model.qualiclip import load_qualiclip


@pytest.fixture(scope="module")
def reference(golden):
    return json.loads((golden / "golden.json").read_text())


@pytest.fixture(scope="module")
def scorer(golden):
    return load_qualiclip(golden / "tiny_qualiclip.pth")


def test_golden_covers_all_images(golden, reference):
    on_disk = sorted(p.name for p in (golden / "images").iterdir())
    assert on_disk == sorted(reference["images"]) and len(on_disk) == 6


def test_prompts_and_normalisation_match_reference(reference):
    assert tuple(reference["prompts"]) == PROMPTS
    assert reference["mean"] == pytest.approx(CLIP_MEAN, abs=1e-12)
    assert reference["std"] == pytest.approx(CLIP_STD, abs=1e-12)


@pytest.mark.parametrize(
    "name",
    ["astronaut_1024.png", "astronaut_512.png", "camera_gray_300.png", "chelsea_97x61.png", "coffee_333x217.png", "rocket.jpg"],
)
def test_scores_match_golden(golden, reference, scorer, name):
    ref = reference["images"][name]
    image = Image.open(golden / "images" / name).convert("RGB")
    assert list(image.size) == ref["size"]
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
    with torch.inference_mode():
        out = scorer(pixels)
    assert abs(out.scores.item() - ref["score"]) <= 1e-5
    assert torch.allclose(out.pair_probs[0], torch.tensor(ref["pair_probs"]), atol=1e-4, rtol=0)
    assert torch.allclose(out.embeddings[0], torch.tensor(ref["embedding"]), atol=1e-4, rtol=0)


def test_tokenizer_and_text_tower_reproduce_prompt_features(golden, reference):
    from qualiclip_cli.core.model.text_tower import build_open_clip, prompt_features, tokenize_prompts

    weights = load_weights_dict(golden / "tiny_qualiclip.pth")
    clip_sd, stored = split_weights(weights)
    assert tokenize_prompts().tolist() == reference["tokens"]
    computed = prompt_features(build_open_clip(clip_sd))
    assert torch.allclose(computed, torch.tensor(reference["text_features"]), atol=1e-5, rtol=0)
    assert torch.allclose(stored, torch.tensor(reference["text_features"]), atol=1e-5, rtol=0)
