"""Synthetic image degradations for self-supervised QualiCLIP training (the paper's recipe).

The classic KADID-10k / ARNIQA degradation model: 24 distortion types in 7 groups, 5 intensity levels each
(values and their meaning in ``shared/DEGRADATIONS.md``). This is an independent implementation.

Every distortion is a pure function ``fn(image, level, generator) -> image`` where ``image`` is a float tensor
C×H×W (C = 3, H and W >= 32) with values in [0, 1] and ``level`` is an int in 1..5. Functions never modify their
input, return a new float32 tensor of the same shape in [0, 1] on the input's device, and draw randomness only
from ``generator`` (random numbers are drawn on the generator's device and then moved to the image's device).
Each level is strictly more severe than the one below, and level 1 is a real change of the pristine image
(checked in ``tests/test_degradations.py`` with a full-reference distance on natural photos).

Public API: ``Distortion`` (frozen dataclass with ``apply``), the registry ``DISTORTIONS`` (table order),
``GROUPS``, ``LEVEL_VALUES``, ``apply_distortion`` and ``compose``.

Deviations from the classic table (``CLASSIC_LEVEL_VALUES`` keeps the classic values of the changed types):

- gaublur, level 1: sigma 0.1 -> 0.3. A sigma of 0.1 makes the off-centre weights ~1e-22 (zeroed by the
  MATLAB-style ``< eps * max`` rule), so level 1 was the identity. Levels: 0.3, 0.5, 1, 2, 5.
- colorsat2, level 1: factor 1 -> 1.5. A factor of 1 only round-trips through Lab, i.e. a no-op.
  Levels: 1.5, 2, 3, 6, 9.
- meanshift: classic 0, 0.08, -0.08, 0.15, -0.15 (level 1 a no-op, alternating signs, levels 2 and 3 equally
  strong). Here the shift is ``sign * magnitude`` with the sign drawn from the generator once per call
  (+1 or -1 with equal probability) and magnitudes 0.04, 0.08, 0.12, 0.15, 0.20 (classic 0.08 and 0.15 kept
  at levels 2 and 4).
- lincontrchange: classic parameters a = 0, 0.15, -0.4, 0.3, -0.6 move the spline's control points at
  x = 0.3 / 0.7 to 0.25 - a/4 / 0.75 + a/4, i.e. offsets from the identity of 0.05, 0.0875, 0.05, 0.125, 0.1
  with alternating direction (not monotone; a = 0 is not the identity). Here the control points are
  (0.3, 0.3 - sign*d) and (0.7, 0.7 + sign*d) with the sign drawn from the generator once per call
  (+1: more contrast, -1: less contrast) and offsets d = 0.025, 0.05, 0.075, 0.1, 0.125 (the classic range).
  The curve is a natural cubic spline through (0,0), (0.3,.), (0.5,0.5), (0.7,.), (1,1).
- quantization: the classic code min-max rescales the bucket indices of the whole tensor, so the output's
  contrast depended on the image's extremes and the levels were not monotone (e.g. on chelsea at 96 px the MSE
  went 8.5e-3, 6.2e-3, 1.05e-2, 5.4e-3, 1.4e-2). Here bucket k (uniform edges int(255*k/levels)) maps to
  k / (levels - 1), which is what the min-max gives for an image that spans the full range. Levels unchanged.
- noneccpatch and colorblock: patch sizes (16 and 32 px), the patch offset (up to half a patch) and the border
  margin are in pixels of a 224-px training crop; on images whose short side is below 224 px they shrink in
  proportion (at least 4 px), so that the same number of patches covers the same share of the image (without
  this, 100 16-px patches on a 96-px image overwrite each other and the strongest levels stop getting worse).
  Both draw the positions for the strongest level's count and use the first n, so a stronger level applies the
  weaker level's patches plus more.
- jpeg2000: images with a side below 224 px are mirror-extended to 224 px before encoding and cropped back
  after decoding, because the codestream's fixed overhead (about 257 bytes at least for a 96-px image) would
  otherwise exceed the byte budget of the strongest ratios and make levels 4 and 5 identical.

Other implementation choices and fixes of quirks of the public code (parameter values unchanged):

- Colour conversions are correct (no R/B swap): sRGB (D65) <-> CIE Lab, RGB <-> HSV, RGB <-> full-range
  BT.601 YCbCr; Lab -> RGB results are clipped to [0, 1].
- Gaussian kernels follow MATLAB ``fspecial('gaussian')`` (size 2*ceil(2*sigma)+1, tiny weights zeroed,
  normalised) and are applied separably; all filters use replicate padding.
- lensblur's disk kernel weights each pixel by the area of it covered by the disk (estimated by supersampling).
- motionblur: the angle is an integer drawn uniformly from [0, 180] (inclusive) from the generator; the kernel is
  a line segment of the given length (end to end) through the centre, rasterised by bilinear splatting of points
  sampled densely along it. Unlike MATLAB's ``fspecial('motion')``, whose length-1 line is the identity, a
  length-1 segment already spreads into the neighbours, so level 1 is a (mild) blur.
- colordiff keeps the classic behaviour of multiplying the blurred a/b channels by the amount (so it also
  saturates colours); colordiff and colorsat2 truncate their output to multiples of 1/255 as the classic code.
- colorshift: the green channel moves by round(amount * a / |a|) px, a ~ U[0, 1)^2 from the generator; the
  edge map (Sobel gradient magnitude of the luma, Gaussian sigma 4) is clipped to its own 1st and 99th
  percentiles and min-max normalised (the public code's clipping indexes sort indices instead of sorted values).
  Shifts are in pixels of a 224-px crop and not rescaled: on much smaller images with periodic structure an
  8-12 px shift can match the pattern again (skimage's rocket at 96-160 px: MSE of levels 4-5 below level 3).
- impulsenoise: the intended salt and pepper: n = int(d * C * H * W) distinct (channel, y, x) positions from a
  random permutation, the first n // 2 set to 1, the rest to 0.
- jpeg and jpeg2000 encode byte(x * 255) (truncation, as the classic code).
- brighten/darken: the tone curve is the quadratic through (0,0), (0.5, 0.5 ± amount/2), (1,1), clipped to
  [0, 1]; brighten averages the curve on RGB (weight 2) and on Lab lightness (weight 1).
- highsharpen: unsharp mask of Lab lightness with a 13×13 Gaussian of sigma 6.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.io
from PIL import Image

NUM_LEVELS = 5

# Level values actually used, in the table order of DEGRADATIONS.md. For meanshift and lincontrchange these are
# magnitudes; the sign is drawn per call (see the module docstring).
LEVEL_VALUES: dict[str, tuple[float, ...]] = {
    "gaublur": (0.3, 0.5, 1, 2, 5),  # Gaussian sigma (classic L1 = 0.1, a no-op)
    "lensblur": (1, 2, 4, 6, 8),  # disk radius
    "motionblur": (1, 2, 4, 6, 10),  # line length
    "colordiff": (1, 3, 6, 8, 12),  # chroma blur amount (sigma = 1.5 * amount + 2) and chroma gain
    "colorshift": (1, 3, 6, 8, 12),  # green channel shift in px
    "colorsat1": (0.4, 0.2, 0.1, 0, -0.4),  # HSV saturation factor
    "colorsat2": (1.5, 2, 3, 6, 9),  # Lab chroma factor (classic L1 = 1, a no-op)
    "jpeg2000": (16, 32, 45, 120, 170),  # compression ratio
    "jpeg": (43, 36, 24, 7, 4),  # JPEG quality
    "whitenoise": (0.001, 0.002, 0.003, 0.005, 0.01),  # variance in RGB
    "whitenoiseCC": (0.0001, 0.0005, 0.001, 0.002, 0.003),  # variance in YCbCr
    "impulsenoise": (0.001, 0.005, 0.01, 0.02, 0.03),  # fraction of corrupted values
    "multnoise": (0.001, 0.005, 0.01, 0.02, 0.05),  # variance of the multiplicative noise
    "brighten": (0.1, 0.2, 0.4, 0.7, 1.1),  # tone curve amount
    "darken": (0.05, 0.1, 0.2, 0.4, 0.8),  # tone curve amount
    "meanshift": (0.04, 0.08, 0.12, 0.15, 0.2),  # |shift|, random sign (classic 0, .08, -.08, .15, -.15)
    "jitter": (0.05, 0.1, 0.2, 0.5, 1),  # displacement std in px
    "noneccpatch": (20, 40, 60, 80, 100),  # number of displaced patches
    "pixelate": (0.01, 0.05, 0.1, 0.2, 0.5),  # s, scale factor 0.95 - s ** 0.6
    "quantization": (20, 16, 13, 10, 7),  # number of grey levels per channel
    "colorblock": (2, 4, 6, 8, 10),  # number of uniform colour blocks
    "highsharpen": (1, 2, 3, 6, 12),  # unsharp-mask amount
    "lincontrchange": (0.025, 0.05, 0.075, 0.1, 0.125),  # |control-point offset|, random sign (classic a: see above)
    "nonlincontrchange": (0.4, 0.3, 0.2, 0.1, 0.05),  # half-width of the output range around 0.5
}

# Classic values of the types whose levels were changed (see the module docstring).
CLASSIC_LEVEL_VALUES: dict[str, tuple[float, ...]] = {
    "gaublur": (0.1, 0.5, 1, 2, 5),
    "colorsat2": (1, 2, 3, 6, 9),
    "meanshift": (0, 0.08, -0.08, 0.15, -0.15),
    "lincontrchange": (0, 0.15, -0.4, 0.3, -0.6),
}

MIN_IMAGE_SIDE = 32
# Patch sizes, shifts and counts of the classic model are in pixels of a 224-px training crop.
_REFERENCE_SIDE = 224
_JPEG2000_MIN_SIDE = _REFERENCE_SIDE


# --------------------------------------------------------------------------------------------------------------
# Argument checks and random draws


def _check_level(level: object) -> int:
    if isinstance(level, bool) or not isinstance(level, numbers.Integral) or not 1 <= level <= NUM_LEVELS:
        raise ValueError(f"level must be an int in 1..{NUM_LEVELS}, got {level!r}")
    return int(level)


def _check_image(image: object) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a 3×H×W tensor, got {shape}")
    if min(image.shape[1:]) < MIN_IMAGE_SIDE:
        raise ValueError(f"image must be at least {MIN_IMAGE_SIDE}×{MIN_IMAGE_SIDE}, got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image must be a float tensor in [0, 1], got {image.dtype}")
    # .to() returns the input itself when it already is float32, so never write into `image` below.
    return image.to(torch.float32)


def _level_value(key: str, level: object) -> float:
    return float(LEVEL_VALUES[key][_check_level(level) - 1])


def _uniform(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)


def _normal(shape: Sequence[int], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator, device=generator.device).to(device)


def _random_int(low: int, high_inclusive: int, generator: torch.Generator) -> int:
    return int(torch.randint(low, high_inclusive + 1, (1,), generator=generator, device=generator.device))


def _random_sign(generator: torch.Generator) -> float:
    return 1.0 if _random_int(0, 1, generator) == 1 else -1.0


# --------------------------------------------------------------------------------------------------------------
# Colour spaces

_SRGB_TO_XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
_XYZ_TO_SRGB = torch.linalg.inv(_SRGB_TO_XYZ)
_D65_WHITE = _SRGB_TO_XYZ.sum(dim=1)  # XYZ of RGB white, so that white maps to L=100, a=b=0 exactly

_RGB_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.299 / 1.772, -0.587 / 1.772, 0.5], [0.5, -0.587 / 1.402, -0.114 / 1.402]],
    dtype=torch.float64,
)
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)
_YCBCR_OFFSET = (0.0, 0.5, 0.5)


def _apply_matrix(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,jhw->ihw", matrix.to(device=image.device, dtype=image.dtype), image)


def _channel_column(values: Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(-1, 1, 1)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> CIE Lab (D65), L in [0, 100]."""
    linear = torch.where(rgb > 0.04045, ((rgb.clamp(min=0) + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = _apply_matrix(_SRGB_TO_XYZ, linear) / _channel_column(_D65_WHITE, rgb)
    epsilon, kappa = 216 / 24389, 24389 / 27
    f = torch.where(xyz > epsilon, xyz.clamp(min=epsilon) ** (1 / 3), (kappa * xyz + 16) / 116)
    lightness = 116 * f[1] - 16
    a = 500 * (f[0] - f[1])
    b = 200 * (f[1] - f[2])
    return torch.stack([lightness, a, b])


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) -> sRGB, clipped to [0, 1]."""
    fy = (lab[0] + 16) / 116
    f = torch.stack([fy + lab[1] / 500, fy, fy - lab[2] / 200])
    epsilon, kappa = 216 / 24389, 24389 / 27
    xyz = torch.where(f**3 > epsilon, f**3, (116 * f - 16) / kappa) * _channel_column(_D65_WHITE, lab)
    linear = _apply_matrix(_XYZ_TO_SRGB, xyz).clamp(0, 1)
    rgb = torch.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)
    return rgb.clamp(0, 1)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """RGB -> HSV, all three in [0, 1] (hue as a fraction of a turn)."""
    value, argmax = rgb.max(dim=0)
    chroma = value - rgb.min(dim=0).values
    safe_chroma = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    safe_value = torch.where(value > 0, value, torch.ones_like(value))
    r, g, b = rgb
    hue_sextant = torch.where(
        argmax == 0,
        ((g - b) / safe_chroma) % 6,
        torch.where(argmax == 1, (b - r) / safe_chroma + 2, (r - g) / safe_chroma + 4),
    )
    hue = torch.where(chroma > 0, hue_sextant / 6, torch.zeros_like(chroma))
    saturation = chroma / safe_value  # chroma is 0 where value is 0
    return torch.stack([hue, saturation, value])


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB (not clipped: a negative saturation gives values above V)."""
    hue, saturation, value = hsv
    channels = []
    for offset in (5.0, 3.0, 1.0):  # R, G, B
        k = (offset + hue * 6) % 6
        weight = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
        channels.append(value - value * saturation * weight)
    return torch.stack(channels)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """RGB -> full-range BT.601 YCbCr (JPEG convention), all in [0, 1]."""
    return _apply_matrix(_RGB_TO_YCBCR, rgb) + _channel_column(_YCBCR_OFFSET, rgb)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    return _apply_matrix(_YCBCR_TO_RGB, ycbcr - _channel_column(_YCBCR_OFFSET, ycbcr))


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    return _apply_matrix(_RGB_TO_YCBCR[:1], rgb)


def _truncate_to_8bit(image: torch.Tensor) -> torch.Tensor:
    return torch.floor(image.clamp(0, 1) * 255) / 255


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).to(torch.uint8)  # truncation, as in the classic model


# --------------------------------------------------------------------------------------------------------------
# Filters


def _gaussian_kernel_1d(sigma: float, size: int | None = None) -> torch.Tensor:
    size = size if size is not None else 2 * math.ceil(2 * sigma) + 1
    positions = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    weights = torch.exp(-(positions**2) / (2 * sigma**2))
    weights[weights < torch.finfo(torch.float64).eps * weights.max()] = 0
    return weights / weights.sum()


def _convolve(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Same-size 2-D correlation of every channel with `kernel` (kh×kw, odd sizes), replicate padding."""
    kernel_h, kernel_w = kernel.shape
    padded = F.pad(image.unsqueeze(0), (kernel_w // 2, kernel_w // 2, kernel_h // 2, kernel_h // 2), mode="replicate")
    channels = image.shape[0]
    weight = kernel.to(device=image.device, dtype=image.dtype).expand(channels, 1, kernel_h, kernel_w)
    return F.conv2d(padded, weight, groups=channels).squeeze(0)


def _gaussian_blur(image: torch.Tensor, sigma: float, size: int | None = None) -> torch.Tensor:
    kernel = _gaussian_kernel_1d(sigma, size)
    return _convolve(_convolve(image, kernel.reshape(1, -1)), kernel.reshape(-1, 1))


def _disk_kernel(radius: float, supersampling: int = 16) -> torch.Tensor:
    half = math.ceil(radius)
    fine = (torch.arange((2 * half + 1) * supersampling, dtype=torch.float64) + 0.5) / supersampling - half - 0.5
    inside = (fine.reshape(-1, 1) ** 2 + fine.reshape(1, -1) ** 2 <= radius**2).to(torch.float64)
    coverage = inside.reshape(2 * half + 1, supersampling, 2 * half + 1, supersampling).mean(dim=(1, 3))
    return coverage / coverage.sum()


def _motion_kernel(length: float, angle_degrees: float, samples_per_pixel: int = 32) -> torch.Tensor:
    half = math.ceil(length / 2)
    size = 2 * half + 1
    num_samples = max(2, int(length * samples_per_pixel))
    along = torch.linspace(-length / 2, length / 2, num_samples, dtype=torch.float64)
    angle = math.radians(angle_degrees)
    xs = half + along * math.cos(angle)
    ys = half - along * math.sin(angle)  # image rows grow downwards
    kernel = torch.zeros(size + 1, size + 1, dtype=torch.float64)
    x0, y0 = xs.floor().long(), ys.floor().long()
    fx, fy = xs - x0, ys - y0
    for dy, dx, weight in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        kernel.index_put_((y0 + dy, x0 + dx), weight, accumulate=True)
    kernel = kernel[:size, :size]
    return kernel / kernel.sum()


# --------------------------------------------------------------------------------------------------------------
# Tone curves


def _quadratic_curve(x: torch.Tensor, midpoint: float) -> torch.Tensor:
    """The quadratic through (0, 0), (0.5, midpoint), (1, 1), clipped to [0, 1]."""
    return (x + (4 * midpoint - 2) * x * (1 - x)).clamp(0, 1)


def _natural_cubic_spline(xs: Sequence[float], ys: Sequence[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    knots = torch.tensor(xs, dtype=torch.float64)
    values = torch.tensor(ys, dtype=torch.float64)
    n = len(xs)
    widths = knots[1:] - knots[:-1]
    slopes = (values[1:] - values[:-1]) / widths
    # Second derivatives M with M[0] = M[-1] = 0 (natural spline).
    system = torch.zeros(n, n, dtype=torch.float64)
    rhs = torch.zeros(n, dtype=torch.float64)
    system[0, 0] = system[-1, -1] = 1
    for i in range(1, n - 1):
        system[i, i - 1], system[i, i], system[i, i + 1] = widths[i - 1], 2 * (widths[i - 1] + widths[i]), widths[i]
        rhs[i] = 6 * (slopes[i] - slopes[i - 1])
    second = torch.linalg.solve(system, rhs)

    def evaluate(x: torch.Tensor) -> torch.Tensor:
        index = (torch.bucketize(x, knots.to(device=x.device, dtype=x.dtype)) - 1).clamp(0, n - 2)
        left, h = knots.to(x.device)[index], widths.to(x.device)[index]
        m_left, m_right = second.to(x.device)[index], second.to(x.device)[index + 1]
        y_left, y_right = values.to(x.device)[index], values.to(x.device)[index + 1]
        t = x.to(torch.float64) - left
        s = h - t
        cubic_part = (m_left * s**3 + m_right * t**3) / (6 * h)
        linear_part = (y_left / h - m_left * h / 6) * s + (y_right / h - m_right * h / 6) * t
        result = cubic_part + linear_part
        return result.to(x.dtype)

    return evaluate


# --------------------------------------------------------------------------------------------------------------
# Blur


def gaussian_blur(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    sigma = _level_value("gaublur", level)
    return _gaussian_blur(_check_image(image), sigma).clamp(0, 1)


def lens_blur(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    radius = _level_value("lensblur", level)
    return _convolve(_check_image(image), _disk_kernel(radius)).clamp(0, 1)


def motion_blur(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    length = _level_value("motionblur", level)
    image = _check_image(image)
    angle = _random_int(0, 180, generator)
    return _convolve(image, _motion_kernel(length, angle)).clamp(0, 1)


# --------------------------------------------------------------------------------------------------------------
# Colour


def color_diffusion(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    amount = _level_value("colordiff", level)
    lab = rgb_to_lab(_check_image(image))
    chroma = _gaussian_blur(lab[1:], sigma=1.5 * amount + 2) * amount
    return _truncate_to_8bit(lab_to_rgb(torch.cat([lab[:1], chroma])))


def _percentile(values: torch.Tensor, fraction: float) -> torch.Tensor:
    flat = values.flatten()
    rank = min(flat.numel(), max(1, round(fraction * (flat.numel() - 1)) + 1))
    return flat.kthvalue(rank).values


def _edge_map(image: torch.Tensor) -> torch.Tensor:
    """Blurred gradient magnitude of the luma, clipped to its 1st/99th percentiles, scaled to [0, 1]."""
    sobel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=torch.float64) / 8
    luma = _luma(image)
    magnitude = torch.sqrt(_convolve(luma, sobel_x) ** 2 + _convolve(luma, sobel_x.T) ** 2)
    edges = _gaussian_blur(magnitude, sigma=4).squeeze(0)
    low, high = _percentile(edges, 0.01), _percentile(edges, 0.99)
    span = high - low
    if span <= 0:
        return torch.zeros_like(edges)
    return ((edges - low) / span).clamp(0, 1)


def _shift_replicate(channel: torch.Tensor, shift_y: int, shift_x: int) -> torch.Tensor:
    """Moves content down/right by the shift, repeating the border row/column into the gap."""
    height, width = channel.shape
    rows = (torch.arange(height, device=channel.device) - shift_y).clamp(0, height - 1)
    cols = (torch.arange(width, device=channel.device) - shift_x).clamp(0, width - 1)
    return channel[rows][:, cols]


def color_shift(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    amount = _level_value("colorshift", level)
    image = _check_image(image)
    direction = torch.rand(2, generator=generator, device=generator.device, dtype=torch.float64).cpu()
    direction = direction / direction.norm().clamp(min=1e-12)
    shift_y, shift_x = (int(v) for v in torch.round(direction * amount))
    green = image[1]
    edges = _edge_map(image)
    shifted_green = _shift_replicate(green, shift_y, shift_x)
    blended_green = shifted_green * edges + green * (1 - edges)
    return torch.stack([image[0], blended_green, image[2]]).clamp(0, 1)


def desaturate(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    factor = _level_value("colorsat1", level)
    hsv = rgb_to_hsv(_check_image(image))
    return hsv_to_rgb(torch.stack([hsv[0], hsv[1] * factor, hsv[2]])).clamp(0, 1)


def oversaturate(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    factor = _level_value("colorsat2", level)
    lab = rgb_to_lab(_check_image(image))
    return _truncate_to_8bit(lab_to_rgb(torch.cat([lab[:1], lab[1:] * factor])))


# --------------------------------------------------------------------------------------------------------------
# Compression


def jpeg2000_compression(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    ratio = _level_value("jpeg2000", level)
    image = _check_image(image)
    _, height, width = image.shape
    pixels = _to_uint8(image).permute(1, 2, 0).cpu().numpy()
    # The codestream's fixed overhead would eat most of the byte budget of a small image (a 96-px image cannot
    # go below ~257 bytes, so the strongest levels collapsed into one): encode a mirrored extension instead.
    pad_y, pad_x = max(0, _JPEG2000_MIN_SIDE - height), max(0, _JPEG2000_MIN_SIDE - width)
    padded = np.pad(pixels, ((0, pad_y), (0, pad_x), (0, 0)), mode="symmetric")
    buffer = io.BytesIO()
    Image.fromarray(padded).save(
        buffer, format="JPEG2000", quality_mode="rates", quality_layers=[ratio], num_resolutions=8, prog_order="LRCP"
    )
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        decoded_pixels = np.asarray(decoded.convert("RGB"), dtype=np.float32)[:height, :width] / 255
    return torch.from_numpy(np.ascontiguousarray(decoded_pixels)).permute(2, 0, 1).contiguous().to(image.device)


def jpeg_compression(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    quality = int(_level_value("jpeg", level))
    image = _check_image(image)
    from qualiclip_cli.core.images.gpu_decode import quiet_torchvision_io

    quiet_torchvision_io()  # torchvision 0.29 deprecates its image I/O on every call; not news for users
    encoded = torchvision.io.encode_jpeg(_to_uint8(image).cpu(), quality=quality)
    decoded = torchvision.io.decode_jpeg(encoded, mode=torchvision.io.ImageReadMode.RGB)
    return (decoded.to(torch.float32) / 255).to(image.device)


# --------------------------------------------------------------------------------------------------------------
# Noise


def white_noise(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    variance = _level_value("whitenoise", level)
    image = _check_image(image)
    return (image + math.sqrt(variance) * _normal(image.shape, generator, image.device)).clamp(0, 1)


def white_noise_ycbcr(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    variance = _level_value("whitenoiseCC", level)
    image = _check_image(image)
    ycbcr = rgb_to_ycbcr(image)
    noisy = ycbcr + math.sqrt(variance) * _normal(image.shape, generator, image.device)
    return ycbcr_to_rgb(noisy).clamp(0, 1)


def impulse_noise(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    fraction = _level_value("impulsenoise", level)
    image = _check_image(image)
    count = int(fraction * image.numel())
    positions = torch.randperm(image.numel(), generator=generator, device=generator.device)[:count].to(image.device)
    noisy = image.flatten().clone()
    noisy[positions[: count // 2]] = 1.0
    noisy[positions[count // 2 :]] = 0.0
    return noisy.reshape(image.shape)


def multiplicative_noise(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    variance = _level_value("multnoise", level)
    image = _check_image(image)
    noise = math.sqrt(variance) * _normal(image.shape, generator, image.device)
    return (image + image * noise).clamp(0, 1)


# --------------------------------------------------------------------------------------------------------------
# Brightness


def brighten(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    amount = _level_value("brighten", level)
    image = _check_image(image)
    midpoint = 0.5 + amount / 2
    brightened_rgb = _quadratic_curve(image, midpoint)
    lab = rgb_to_lab(image)
    brightened_lightness = _quadratic_curve(lab[:1] / 100, midpoint) * 100
    brightened_lab = lab_to_rgb(torch.cat([brightened_lightness, lab[1:]]))
    return ((2 * brightened_rgb + brightened_lab) / 3).clamp(0, 1)


def darken(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    amount = _level_value("darken", level)
    return _quadratic_curve(_check_image(image), 0.5 - amount / 2)


def mean_shift(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    magnitude = _level_value("meanshift", level)
    image = _check_image(image)
    return (image + _random_sign(generator) * magnitude).clamp(0, 1)


# --------------------------------------------------------------------------------------------------------------
# Spatial


def jitter(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    std_pixels = _level_value("jitter", level)
    image = _check_image(image)
    iterations = 5
    _, height, width = image.shape
    displacements = _normal((iterations, height, width, 2), generator, image.device) * std_pixels
    # grid_sample coordinates (align_corners=True): -1 and 1 are the centres of the border pixels.
    pixel_to_grid = torch.tensor([2 / max(width - 1, 1), 2 / max(height - 1, 1)], device=image.device)
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, height, device=image.device),
        torch.linspace(-1, 1, width, device=image.device),
        indexing="ij",
    )
    identity_grid = torch.stack([xs, ys], dim=-1)
    jittered = image.unsqueeze(0)
    for displacement in displacements:
        grid = (identity_grid + displacement * pixel_to_grid).unsqueeze(0)
        jittered = F.grid_sample(jittered, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return jittered.squeeze(0).clamp(0, 1)


def _scaled_size(pixels_at_reference: int, image: torch.Tensor) -> int:
    """A patch size of the classic model, shrunk in proportion on images whose short side is below 224 px."""
    scale = min(1.0, min(image.shape[1:]) / _REFERENCE_SIDE)
    return max(4, round(pixels_at_reference * scale))


def non_eccentricity_patches(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    count = int(_level_value("noneccpatch", level))
    image = _check_image(image)
    _, height, width = image.shape
    patch = _scaled_size(16, image)
    max_offset = patch // 2
    margin_y = min(patch, (height - patch) // 2)
    margin_x = min(patch, (width - patch) // 2)
    draws = _uniform((int(max(LEVEL_VALUES["noneccpatch"])), 4), generator, torch.device("cpu"))[:count]
    result = image.clone()
    for u_y, u_x, u_dy, u_dx in draws.tolist():
        source_y = margin_y + int(u_y * (height - patch - 2 * margin_y + 1))
        source_x = margin_x + int(u_x * (width - patch - 2 * margin_x + 1))
        target_y = min(max(source_y + math.floor((u_dy - 0.5) * 2 * max_offset), 0), height - patch)
        target_x = min(max(source_x + math.floor((u_dx - 0.5) * 2 * max_offset), 0), width - patch)
        source = result[:, source_y : source_y + patch, source_x : source_x + patch].clone()
        result[:, target_y : target_y + patch, target_x : target_x + patch] = source
    return result


def pixelate(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    strength = _level_value("pixelate", level)
    image = _check_image(image)
    _, height, width = image.shape
    scale = 0.95 - strength**0.6
    small = F.interpolate(image.unsqueeze(0), size=(int(height * scale), int(width * scale)), mode="nearest")
    return F.interpolate(small, size=(height, width), mode="nearest").squeeze(0)


def quantize(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    num_levels = int(_level_value("quantization", level))
    image = _check_image(image)
    inner_edges = [int(255 * k / num_levels) for k in range(1, num_levels)]
    buckets = torch.bucketize(image * 255, torch.tensor(inner_edges, dtype=torch.float32, device=image.device))
    return buckets.to(torch.float32) / (num_levels - 1)


def color_blocks(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    count = int(_level_value("colorblock", level))
    image = _check_image(image)
    _, height, width = image.shape
    block = _scaled_size(32, image)
    draws = _uniform((int(max(LEVEL_VALUES["colorblock"])), 5), generator, torch.device("cpu"))[:count]
    result = image.clone()
    for u_y, u_x, red, green, blue in draws.tolist():
        top = int(u_y * (height - block + 1))
        left = int(u_x * (width - block + 1))
        result[:, top : top + block, left : left + block] = _channel_column([red, green, blue], result)
    return result


# --------------------------------------------------------------------------------------------------------------
# Sharpness and contrast


def over_sharpen(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    amount = _level_value("highsharpen", level)
    lab = rgb_to_lab(_check_image(image))
    lightness = lab[:1]
    blurred = _gaussian_blur(lightness, sigma=6, size=13)
    sharpened = (lightness + amount * (lightness - blurred)).clamp(0, 100)
    return lab_to_rgb(torch.cat([sharpened, lab[1:]]))


def linear_contrast_change(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    offset = _level_value("lincontrchange", level) * _random_sign(generator)
    image = _check_image(image)
    curve = _natural_cubic_spline([0, 0.3, 0.5, 0.7, 1], [0, 0.3 - offset, 0.5, 0.7 + offset, 1])
    return curve(image).clamp(0, 1)


def nonlinear_contrast_change(image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    half_width = _level_value("nonlincontrchange", level)
    image = _check_image(image)
    return (0.5 - half_width + 2 * half_width * image).clamp(0, 1)


# --------------------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class Distortion:
    key: str
    group: str
    levels: tuple[float, ...]
    fn: Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]

    def apply(self, image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
        _check_level(level)
        return self.fn(image, level, generator)


_TABLE: tuple[tuple[str, str, Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]], ...] = (
    ("gaublur", "blur", gaussian_blur),
    ("lensblur", "blur", lens_blur),
    ("motionblur", "blur", motion_blur),
    ("colordiff", "color_distortion", color_diffusion),
    ("colorshift", "color_distortion", color_shift),
    ("colorsat1", "color_distortion", desaturate),
    ("colorsat2", "color_distortion", oversaturate),
    ("jpeg2000", "jpeg", jpeg2000_compression),
    ("jpeg", "jpeg", jpeg_compression),
    ("whitenoise", "noise", white_noise),
    ("whitenoiseCC", "noise", white_noise_ycbcr),
    ("impulsenoise", "noise", impulse_noise),
    ("multnoise", "noise", multiplicative_noise),
    ("brighten", "brightness_change", brighten),
    ("darken", "brightness_change", darken),
    ("meanshift", "brightness_change", mean_shift),
    ("jitter", "spatial_distortion", jitter),
    ("noneccpatch", "spatial_distortion", non_eccentricity_patches),
    ("pixelate", "spatial_distortion", pixelate),
    ("quantization", "spatial_distortion", quantize),
    ("colorblock", "spatial_distortion", color_blocks),
    ("highsharpen", "sharpness_contrast", over_sharpen),
    ("lincontrchange", "sharpness_contrast", linear_contrast_change),
    ("nonlincontrchange", "sharpness_contrast", nonlinear_contrast_change),
)

DISTORTIONS: dict[str, Distortion] = {
    key: Distortion(key=key, group=group, levels=tuple(float(v) for v in LEVEL_VALUES[key]), fn=fn)
    for key, group, fn in _TABLE
}

GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(key for key, distortion in DISTORTIONS.items() if distortion.group == group)
    for group in dict.fromkeys(distortion.group for distortion in DISTORTIONS.values())
}


def check_known(keys) -> None:
    """UsageError naming every key of `keys` (e.g. --distortions) that is not a distortion type, and the known ones."""
    from qualiclip_cli.core.errors import UsageError

    unknown = [k for k in keys if k not in DISTORTIONS]
    if unknown:
        raise UsageError(f"unknown distortion(s) {', '.join(unknown)}; known: {', '.join(DISTORTIONS)}")


def _lookup(key: str) -> Distortion:
    try:
        return DISTORTIONS[key]
    except KeyError:
        raise ValueError(f"unknown distortion {key!r}; known: {', '.join(DISTORTIONS)}") from None


def apply_distortion(key: str, image: torch.Tensor, level: int, generator: torch.Generator) -> torch.Tensor:
    return _lookup(key).apply(image, level, generator)


def compose(image: torch.Tensor, keys: Sequence[str], level: int, generator: torch.Generator) -> torch.Tensor:
    """Applies the distortions `keys` in order, all at `level`, clipping to [0, 1] after each.

    The keys must come from distinct groups (as in the classic composition model).
    """
    _check_level(level)
    distortions = [_lookup(key) for key in keys]
    groups = [distortion.group for distortion in distortions]
    if len(set(groups)) != len(groups):
        raise ValueError(f"distortions must come from distinct groups, got {list(keys)} (groups {groups})")
    result = _check_image(image).clone()
    for distortion in distortions:
        result = distortion.apply(result, level, generator).clamp(0, 1)
    return result
