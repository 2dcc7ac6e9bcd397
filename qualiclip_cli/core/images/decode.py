"""The Pillow decoder: one image file into the 8-bit RGB pixels that QualiCLIP scores, under `policy`.

Policy, in order:

1. Open the file (Pillow; HEIC/HEIF through pillow-heif, registered lazily on first use; AVIF through
   Pillow when it has AVIF support, else through pillow-heif's AVIF opener where that exists).
2. Refuse, before any pixel is decoded, images above the decode limit (`DECODE_PIXEL_LIMIT`, and
   ``max_pixels`` when given) and images whose scored size would have a side below `MIN_SIDE`.
   For a JPEG with ``max_side > 0`` and ``draft=True`` the number checked is the size after DCT
   scaling, so a huge JPEG that decodes small at 1/2, 1/4 or 1/8 scale is allowed.
3. JPEG speed-up (``draft=True``, ``max_side > 0``): ask libjpeg for the smallest DCT scale whose result is
   still at least the target size in both axes (computed in the stored frame, before orientation).
4. Decode, then apply the EXIF orientation with `ImageOps.exif_transpose`.
5. Convert to 8-bit RGB exactly like the reference's ``.convert("RGB")`` (alpha dropped, palette
   expanded, CMYK converted naively, ICC profiles ignored), except for wide grey modes, which Pillow would
   clip: 16-bit grey (``I;16*``) is scaled with rounding (v/257), ``I`` and ``F`` are scaled by the range
   their values occupy (see `_wide_to_u8`).
6. ``max_side == 0``: native resolution, exactly the reference. Otherwise downscale (never upscale) to
   ``scaled_size(W, H, max_side)`` of the oriented original size with antialiased bicubic resampling
   (`resize_bicubic`: Pillow's kernel, a = -0.5, widened when reducing, computed by torch's vectorised uint8
   kernel). The target does not depend on whether draft was used.

Every failure becomes ``ImageError(path, one_line_reason)``. Truncated files are errors (Pillow's
``LOAD_TRUNCATED_IMAGES`` is never set). Pillow's own decompression-bomb check is switched off
(``Image.MAX_IMAGE_PIXELS = None``, set on first use) because the limit above replaces it, and Pillow's and
pillow-heif's metadata warnings are filtered out so that none reaches the user.

torch is imported only by `resize_bicubic`, on the first resize (never at module import).
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from qualiclip_cli.core.errors import ImageError, one_line
from qualiclip_cli.core.images.policy import (
    SWAPPING_ORIENTATIONS,
    check_min_side,
    check_pixels,
    scaled_size,
)

__all__ = ["DecodedImage", "decode_image", "exif_orientation", "heif_support", "resize_bicubic", "setup_pillow"]

_ORIENTATION = ExifTags.Base.Orientation  # 0x0112
_WARNING_MODULES = r"(PIL|pillow_heif)(\.|$)"
_READ_ONLY_WARNING = r"The given NumPy array is not writable"
_THIS_MODULE = r"qualiclip_cli\.core\.images\.decode$"


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """The pixels to score. ``width``/``height`` are the scored size; ``original_*`` the size after EXIF
    orientation and before any resizing (or DCT scaling)."""

    pixels: np.ndarray  # uint8, shape (height, width, 3), C-contiguous, writable
    width: int
    height: int
    original_width: int
    original_height: int


def resize_bicubic(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Downscale H×W×3 uint8 pixels to ``size`` = (width, height) with antialiased bicubic resampling.

    The kernel is Pillow's ``Image.resize(..., BICUBIC)`` (a = -0.5, support widened by the reduction factor),
    computed by torch's vectorised uint8 implementation: it differs from Pillow by fixed-point rounding only
    (mean 0.002-0.1 grey level, at most 2 on a handful of pixels) and takes 16 ms instead of 110 ms for
    12 MP → 1024×768 on one core. The GPU decoder (`gpu_decode`) uses the same kernel on float.
    """
    import torch
    import torch.nn.functional as F

    if not pixels.flags.writeable:  # Pillow's buffer: torch would warn that it cannot be written; it is only read
        _ignore_warnings(message=_READ_ONLY_WARNING, module=_THIS_MODULE)
    width, height = size
    src = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)  # channels-last view, no copy, only read
    out = F.interpolate(src, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())


# -- one-time setup ------------------------------------------------------------------------------------

_setup_lock = threading.Lock()
_setup_done = False
_heif_problem: str | None = None  # why HEIC/HEIF cannot be opened, if it cannot


def setup_pillow() -> None:
    global _setup_done, _heif_problem
    if not _setup_done:
        with _setup_lock:
            if not _setup_done:
                # Our own limit (checked from the header, before decoding) replaces Pillow's, which would
                # warn above 89 MP and refuse above 179 MP regardless of JPEG draft scaling.
                Image.MAX_IMAGE_PIXELS = None
                try:
                    import pillow_heif

                    pillow_heif.register_heif_opener()
                    from PIL import features

                    if not features.check("avif") and hasattr(pillow_heif, "register_avif_opener"):
                        pillow_heif.register_avif_opener()
                except Exception as exc:  # missing or broken pillow-heif: other formats still work
                    _heif_problem = f"HEIC/HEIF support is unavailable (pillow-heif: {exc})"
                _setup_done = True
    # Keep Pillow's and pillow-heif's metadata warnings ("Corrupt EXIF data", ...) away from the user.
    # Re-checked on every call because test runners and callers may reset the filter list.
    _ignore_warnings(module=_WARNING_MODULES)


def _ignore_warnings(**spec: str) -> None:
    """Put an "ignore" filter with this spec first, unless an identical one is already in the list."""
    for f in warnings.filters:
        if f[0] == "ignore" and all(getattr(f[i], "pattern", None) == spec.get(key) for i, key in ((1, "message"), (3, "module"))):
            return
    warnings.filterwarnings("ignore", **spec)


def heif_support() -> str | None:
    """None when HEIC/HEIF files can be opened, else the reason they cannot."""
    setup_pillow()
    return _heif_problem


# -- helpers -------------------------------------------------------------------------------------------


def exif_orientation(im: Image.Image) -> int:
    value = im.getexif().get(_ORIENTATION, 1)
    return value if isinstance(value, int) else 1


def _round_u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _u16_to_u8(a: np.ndarray) -> np.ndarray:
    """round(v / 257) for 0..65535 without leaving 16-bit integers: v = 257q + r → q + (r ≥ 129)."""
    a = a.astype(np.uint16, copy=False)
    q = a // 257
    r = a - q * 257
    return (q + (r >= 129)).astype(np.uint8)


def _wide_to_u8(a: np.ndarray) -> np.ndarray:
    """Map single-band integer/float data whose range is not declared (modes I and F) to 0..255.

    Values within 0..1 (floats only) are fractions of white; within 0..255, 8-bit; within 0..65535,
    16-bit (v/257); anything else (negative, larger) is stretched from its min..max to 0..255.
    """
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    if a.size == 0:
        return np.zeros(a.shape, np.uint8)
    lo, hi = a.min(), a.max()
    if a.dtype.kind == "f" and lo >= 0 and hi <= 1:
        return _round_u8(a * 255.0)
    if lo >= 0 and hi <= 255:
        return _round_u8(a) if a.dtype.kind == "f" else a.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return _round_u8(a / 257.0) if a.dtype.kind == "f" else _u16_to_u8(a)
    if hi == lo:
        return np.zeros(a.shape, np.uint8)
    return _round_u8((a.astype(np.float64) - lo) * (255.0 / (float(hi) - float(lo))))


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16"):
        grey = Image.fromarray(_u16_to_u8(np.asarray(im)), "L")
        return grey.convert("RGB")
    if mode in ("I", "F"):
        grey = Image.fromarray(_wide_to_u8(np.asarray(im)), "L")
        return grey.convert("RGB")
    if mode in ("P", "PA", "L") and "transparency" in im.info:
        # Same RGB values as .convert("RGB"), without Pillow's "Transparency expressed in bytes" warning.
        return im.convert("RGBA").convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError:
        return im.convert("RGBA").convert("RGB")  # e.g. premultiplied "La", which has no direct path


# -- decoding ------------------------------------------------------------------------------------------


def decode_image(
    path: str | os.PathLike[str],
    max_side: int,
    *,
    draft: bool = False,
    max_pixels: int | None = None,
) -> DecodedImage:
    """Decode ``path`` under the product's preprocessing policy (module docstring).

    ``max_side``: 0 = native resolution (reference behaviour), else the longest scored side (downscale
    only). ``draft``: allow JPEG DCT-scaled decoding when downscaling. ``max_pixels``: an extra limit on
    decoded pixels (the caller's native-resolution guard), on top of `DECODE_PIXEL_LIMIT`.
    Raises `ImageError` for any problem with the file; ValueError for a negative ``max_side``.
    """
    if max_side < 0:
        raise ValueError(f"max_side must be >= 0, got {max_side}")
    path = Path(path)
    setup_pillow()
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(path, "no such file or directory") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except (OSError, ValueError) as exc:
        raise ImageError(path, f"cannot read file ({one_line(exc)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(path, "is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(path, "not a regular file")
    if st.st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")

    try:
        with Image.open(path) as im:
            return _decode_opened(im, path, max_side, draft, max_pixels)
    except ImageError:
        raise
    except UnidentifiedImageError:
        reason = "not an image, or an image format that cannot be read"
        if path.suffix.lower() in (".heic", ".heif", ".avif") and _heif_problem:
            reason += f" ({_heif_problem})"
        raise ImageError(path, reason) from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except MemoryError:
        raise ImageError(path, "not enough memory to decode it") from None
    except Image.DecompressionBombError as exc:  # only if someone restored Pillow's limit
        raise ImageError(path, f"refused by Pillow's decompression-bomb guard ({one_line(exc)})") from None
    except OSError as exc:
        text = one_line(exc)
        if "truncated" in text.lower():
            raise ImageError(path, f"truncated or damaged file: {text}") from None
        raise ImageError(path, f"cannot decode image data: {text}") from None
    except Exception as exc:  # SyntaxError, ValueError, struct.error, EOFError ... from format plugins
        raise ImageError(path, f"cannot decode image: {type(exc).__name__}: {one_line(exc)}") from None


def _decode_opened(
    im: Image.Image, path: Path, max_side: int, draft: bool, max_pixels: int | None
) -> DecodedImage:
    header = im.size  # stored frame, before orientation
    scale = 1
    is_jpeg = isinstance(im, JpegImagePlugin.JpegImageFile)
    if is_jpeg:
        # JPEG EXIF is parsed from APP1 at open time: the orientation is known before decoding, so the
        # target and the DCT scale are computed up front.
        try:
            orientation = exif_orientation(im)
        except Exception as exc:
            raise ImageError(path, f"corrupt EXIF metadata ({one_line(exc)})") from None
        swap = orientation in SWAPPING_ORIENTATIONS
        original = (header[1], header[0]) if swap else header
        target = scaled_size(*original, max_side)
        check_min_side(path, target, original, max_side)
        if draft and max_side > 0 and target != original:
            requested = (target[1], target[0]) if swap else target
            if im.draft("RGB", requested) is not None:
                scale = max(1, round(header[0] / im.size[0]))  # the DCT scale libjpeg will use
    else:
        # Min side is checked on the unordered pair {w, h}: orientation cannot change the verdict.
        target = scaled_size(*header, max_side)
        check_min_side(path, target, header, max_side)
    check_pixels(path, header, im.size, scale, max_pixels)

    im.load()
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except MemoryError:
        raise
    except Exception as exc:
        raise ImageError(path, f"corrupt EXIF metadata ({one_line(exc)})") from None

    if not is_jpeg:
        original = im.size  # oriented
        target = scaled_size(*original, max_side)

    rgb = _to_rgb(im)
    if rgb.size != target:
        pixels = np.asarray(rgb, dtype=np.uint8)  # Pillow's buffer, read-only: only the resize reads it
        if pixels.ndim == 3 and pixels.shape[2] == 3:
            pixels = resize_bicubic(pixels, target)
    else:
        pixels = np.array(rgb, dtype=np.uint8)  # the caller's own, writable copy
    if pixels.ndim != 3 or pixels.shape[2] != 3:  # defensive: never hand odd shapes to the model
        raise ImageError(path, f"unexpected decoded shape {pixels.shape}")
    return DecodedImage(
        pixels=pixels,
        width=target[0],
        height=target[1],
        original_width=original[0],
        original_height=original[1],
    )
