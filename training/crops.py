"""Pairs of overlapping random crops, as the QualiCLIP recipe takes them.

From one pristine image: crop A at a uniformly random position, crop B offset from A by at most
`max_offset · size` pixels in each axis (so they always overlap by at least (1 − max_offset)² of a crop),
clamped to the image. Images whose short side is below the crop size are upscaled first (bicubic).
All randomness comes from the generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Box:
    top: int
    left: int
    size: int

    def cut(self, image: torch.Tensor) -> torch.Tensor:
        return image[..., self.top : self.top + self.size, self.left : self.left + self.size]

    def overlap(self, other: Box) -> int:
        """Overlapping area in pixels."""
        dy = max(0, min(self.top, other.top) + self.size - max(self.top, other.top))
        dx = max(0, min(self.left, other.left) + self.size - max(self.left, other.left))
        return dy * dx


def ensure_min_side(image: torch.Tensor, size: int) -> torch.Tensor:
    """Upscale (bicubic, aspect kept) a C×H×W float image so that its short side is at least `size`."""
    _, height, width = image.shape
    short = min(height, width)
    if short >= size:
        return image
    scale = size / short
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    out = F.interpolate(image[None], size=(new_h, new_w), mode="bicubic", align_corners=False)[0]
    return out.clamp(0.0, 1.0)


def _randint(low: int, high_inclusive: int, generator: torch.Generator) -> int:
    if high_inclusive <= low:
        return low
    return int(torch.randint(low, high_inclusive + 1, (1,), generator=generator).item())


def overlapping_boxes(
    height: int, width: int, size: int, max_offset: float, generator: torch.Generator
) -> tuple[Box, Box]:
    """Two size×size boxes inside height×width; B's offset from A is at most max_offset·size per axis."""
    if height < size or width < size:
        raise ValueError(f"image of {width}x{height} px is smaller than the {size}-px crop (upscale it first)")
    top = _randint(0, height - size, generator)
    left = _randint(0, width - size, generator)
    reach = int(max_offset * size)
    dy = _randint(-reach, reach, generator)
    dx = _randint(-reach, reach, generator)
    # Clamping moves B towards A (A is inside the valid range), so the offset only shrinks.
    top_b = min(max(top + dy, 0), height - size)
    left_b = min(max(left + dx, 0), width - size)
    return Box(top, left, size), Box(top_b, left_b, size)


def crop_pair(
    image: torch.Tensor, size: int, max_offset: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, tuple[Box, Box]]:
    """(crop A, crop B, their boxes) from a C×H×W image; upscales small images first."""
    image = ensure_min_side(image, size)
    box_a, box_b = overlapping_boxes(image.shape[-2], image.shape[-1], size, max_offset, generator)
    return box_a.cut(image).contiguous(), box_b.cut(image).contiguous(), (box_a, box_b)
