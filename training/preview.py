"""A labelled grid of one photo under every distortion type (rows) and level (columns), to eyeball the
degradation table before training (`qualiclip train preview`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw, ImageFont

LABEL_WIDTH = 190
HEADER_HEIGHT = 28
PAD = 2


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def preview_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The centre size×size crop (upscaled first if the photo is smaller), as training crops are taken."""
    from training.crops import ensure_min_side

    image = ensure_min_side(image, size)
    _, h, w = image.shape
    top, left = (h - size) // 2, (w - size) // 2
    return image[:, top : top + size, left : left + size].contiguous()


def render_grid(
    crop: torch.Tensor, keys: Sequence[str] | None = None, levels: int = 5, seed: int = 0, tile: int | None = None
) -> Image.Image:
    """Rows: distortion types (table order); columns: the pristine crop, then levels 1..L."""
    from training.dataset import degraded_levels, derived_seed, to_uint8
    from training.degradations import DISTORTIONS

    keys = list(keys) if keys else list(DISTORTIONS)
    size = crop.shape[-1]
    tile = tile or size
    cols = levels + 1
    width = LABEL_WIDTH + cols * (tile + PAD)
    height = HEADER_HEIGHT + len(keys) * (tile + PAD)
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font, small = _font(16), _font(12)
    for c, title in enumerate(["pristine"] + [f"level {lv}" for lv in range(1, levels + 1)]):
        draw.text((LABEL_WIDTH + c * (tile + PAD) + 4, 6), title, fill=(0, 0, 0), font=font)

    def to_pil(x: torch.Tensor) -> Image.Image:
        im = Image.fromarray(to_uint8(x).permute(1, 2, 0).numpy())
        return im if tile == size else im.resize((tile, tile), Image.Resampling.LANCZOS)

    pristine = to_pil(crop)
    for r, key in enumerate(keys):
        y = HEADER_HEIGHT + r * (tile + PAD)
        draw.text((6, y + tile // 2 - 18), key, fill=(0, 0, 0), font=font)
        draw.text((6, y + tile // 2 + 2), DISTORTIONS[key].group.replace("_", " "), fill=(90, 90, 90), font=small)
        grid.paste(pristine, (LABEL_WIDTH, y))
        for lv, image in enumerate(degraded_levels(crop, [key], levels, derived_seed(seed, 21, r)), start=1):
            grid.paste(to_pil(image), (LABEL_WIDTH + lv * (tile + PAD), y))
    return grid
