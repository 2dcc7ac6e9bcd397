"""Helpers for the training tests: small random CLIP weights files and small natural photos (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# scikit-image's bundled photographs (no download needed), split into training and held-out sources.
TRAIN_SOURCES = ("astronaut", "coffee", "chelsea", "moon", "brick", "grass", "gravel", "immunohistochemistry",
                 "retina", "hubble_deep_field", "cell", "clock")
HELD_OUT_SOURCES = ("rocket", "camera", "coins")


def random_clip_weights(path: Path, width: int = 16, layers=(1, 1, 1, 1), embed: int = 32, seed: int = 0) -> Path:
    """A random CLIP (open_clip, OpenAI layout) with a tiny image encoder, saved in the QualiCLIP layout.

    Batch-norm statistics keep their initial values (never trained), as in any freshly initialised model.
    In a freshly initialised text tower the end-of-text token's own embedding (plus its position) dominates the
    pooled output, so all 14 prompts come out nearly parallel (pos/neg cosines up to 0.999) and the positive and
    negative losses partly pull against each other (training still works, with a loss about twice as high).
    Zeroing the start/end-of-text embeddings and the positional embedding makes the features depend on the prompt
    words (pair cosines 0.2-0.9, like CLIP's); the model is still random."""
    from tiny_weights import qualiclip_weights, save_weights, tiny_clip_state_dict

    clip_sd = tiny_clip_state_dict(seed, width=width, layers=layers, embed=embed)
    clip_sd["token_embedding.weight"][49406:] = 0  # <start_of_text>, <end_of_text>
    clip_sd["positional_embedding"].zero_()
    return save_weights(qualiclip_weights(clip_sd), path)


def _array(name: str) -> np.ndarray:
    from skimage import data

    array = getattr(data, name)()
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return array[..., :3].astype(np.uint8)


def photo_views(name: str, count: int, side: int = 96) -> list[Image.Image]:
    """`count` different views of one photo: regions of decreasing size, each resized to side×side·3/4."""
    array = _array(name)
    h, w = array.shape[:2]
    views = []
    for i in range(count):
        frac = 1.0 - 0.25 * i  # whole photo, then 75 % and 50 % regions at different corners
        ch, cw = int(h * frac), int(w * frac)
        top = 0 if i % 2 == 0 else h - ch
        left = 0 if i % 3 != 1 else w - cw
        region = Image.fromarray(array[top : top + ch, left : left + cw])
        views.append(region.resize((side, side * 3 // 4), Image.Resampling.BICUBIC))
    return views


def write_photos(root: Path, sources, views: int = 3, side: int = 96, fmt: str = "png") -> list[Path]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in sources:
        for i, image in enumerate(photo_views(name, views, side)):
            path = root / f"{name}_{i}.{fmt}"
            image.save(path)
            paths.append(path)
    return paths
