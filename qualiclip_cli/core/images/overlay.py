"""Heat-map pictures: a map over the trunk's grid drawn over the image it was computed on, and a sheet of several.

Colours: red where a region pulls the logit down (towards the negative prompt: "blurry", "noisy"...), blue where
it pushes it up; the stronger, the more opaque. A region near zero is left as it is, which also happens where the
model did not look: not looked at is not good. The map is drawn at the trunk's stride (each grid cell covers
`STRIDE`×`STRIDE` scored pixels from the top-left corner; the last < 32 rows and columns, which the trunk's
poolings drop, are left uncoloured).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

#: Scored pixels per grid cell (the trunk's total downsampling).
STRIDE = 32
#: Opacity of the strongest cell.
MAX_ALPHA = 0.65
_RED = np.array([220.0, 30.0, 30.0])
_BLUE = np.array([30.0, 90.0, 230.0])


def map_scale(values: np.ndarray) -> float:
    """The value drawn at full strength: the largest magnitude in the map (1 when the map is all zero)."""
    top = float(np.abs(values).max()) if values.size else 0.0
    return top if top > 0 and np.isfinite(top) else 1.0


def overlay(pixels: np.ndarray, values: np.ndarray, scale: float | None = None) -> np.ndarray:
    """(H, W, 3) uint8 ``pixels`` with the (rows, cols) ``values`` drawn over them (see the module docstring)."""
    rows, cols = values.shape
    height, width = pixels.shape[:2]
    scale = map_scale(values) if scale is None else scale
    norm = np.clip(np.asarray(values, np.float64) / scale, -1.0, 1.0).astype(np.float32)
    up_w, up_h = min(width, cols * STRIDE), min(height, rows * STRIDE)
    smooth = np.asarray(Image.fromarray(norm, mode="F").resize((cols * STRIDE, rows * STRIDE), Image.BILINEAR))
    smooth = smooth[:up_h, :up_w, None].astype(np.float64)
    colour = np.where(smooth < 0, _RED, _BLUE)
    alpha = np.abs(smooth) * MAX_ALPHA
    out = pixels.astype(np.float64, copy=True)
    out[:up_h, :up_w] = out[:up_h, :up_w] * (1 - alpha) + colour * alpha
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def fit(pixels: np.ndarray, longest: int) -> Image.Image:
    """The pixels as a Pillow image whose longer side is at most ``longest``."""
    image = Image.fromarray(pixels)
    if max(image.size) > longest:
        s = longest / max(image.size)
        image = image.resize((max(1, round(image.width * s)), max(1, round(image.height * s))), Image.BICUBIC)
    return image


def sheet(pixels: np.ndarray, panels: list[tuple[str, np.ndarray]], columns: int = 4, longest: int = 480) -> Image.Image:
    """A sheet of labelled overlays: one panel per (label, values), all drawn on one common scale (the largest
    magnitude over all panels, so that panels compare), ``columns`` to a row, each at most ``longest`` px."""
    scale = max(map_scale(values) for _, values in panels)
    tiles = [(label, fit(overlay(pixels, values, scale), longest)) for label, values in panels]
    tw = max(t.width for _, t in tiles)
    th = max(t.height for _, t in tiles)
    label_h = 16
    rows = -(-len(tiles) // columns)
    page = Image.new("RGB", (columns * tw, rows * (th + label_h)), "white")
    draw = ImageDraw.Draw(page)
    for i, (label, tile) in enumerate(tiles):
        x, y = (i % columns) * tw, (i // columns) * (th + label_h)
        draw.text((x + 4, y + 2), label, fill="black")
        page.paste(tile, (x, y + label_h))
    return page


def save_new_png(image: Image.Image, directory, stem: str, suffix: str = ".explain.png") -> str:
    """Write ``image`` as a PNG named ``stem + suffix`` in ``directory`` (created), or ``stem-2 + suffix``, -3...
    when that name is taken: an existing file is never replaced. Returns the path written."""
    import io
    import os

    os.makedirs(directory, exist_ok=True)
    stem = os.fsdecode(os.fsencode(stem)[:200])  # room for the suffix within a 255-byte name
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    for n in range(1, 10_000):
        path = os.path.join(directory, f"{stem}{'' if n == 1 else f'-{n}'}{suffix}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getvalue())
        return path
    raise FileExistsError(f"{directory}: no free name for {stem}{suffix}")
