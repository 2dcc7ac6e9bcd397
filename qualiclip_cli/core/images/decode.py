"""The Pillow decoder: one image file into the 8-bit RGB pixels that QualiCLIP scores, under `policy`.

Policy, in order:

1. Open the file (Pillow; HEIC/HEIF through pillow-heif, registered lazily on first use; AVIF through
   Pillow when it has AVIF support, else through pillow-heif's AVIF opener where that exists).
2. Refuse, before any pixel is decoded, images above the decode limit (`DECODE_PIXEL_LIMIT`, and
   ``max_pixels`` when given) and images whose scored size would have a side below `MIN_SIDE`.
   For a JPEG decoded at a DCT scale (step 3) the number checked is the size after DCT scaling, so a huge
   JPEG that decodes small at 1/2, 1/4 or 1/8 scale is allowed.
3. JPEG DCT scaling (``max_side > 0``, `policy.dct_request`): a JPEG reduced by at least 4× is decoded at
   the smallest DCT scale (1/2, 1/4, 1/8) whose result is still at least twice the target size in both axes,
   so the antialiased resize still does at least 2× of the reduction; with ``draft=True`` any JPEG is
   decoded at the smallest scale whose result still covers the target (computed in the stored frame, before
   orientation). A HEIC/HEIF reduced by at least 4× is decoded from its embedded thumbnail when one is a
   scaled copy of the image at least twice the target size (`policy.thumbnail_request`; libheif cannot decode
   HEVC at a reduced size), then resized like the image would have been.
   With a `MemoryBudget`, also refuse an image whose estimated decode cost (`policy.decode_cost`) is above
   the whole budget, else wait until the budget has room for it; the cost is held until the scored pixels
   exist and Pillow's image is freed (and, for a large one, handed back to the system).
4. Decode, then apply the EXIF orientation as `ImageOps.exif_transpose` does.
5. Convert to 8-bit RGB exactly like the reference's ``.convert("RGB")`` (alpha dropped, palette
   expanded, CMYK converted naively, ICC profiles ignored), except for wide grey modes, which Pillow would
   clip: 16-bit grey (``I;16*``) is scaled with rounding (v/257), ``I`` and ``F`` are scaled by the range
   their values occupy (see `_wide_to_u8`).
6. ``max_side == 0``: native resolution, exactly the reference. Otherwise downscale (never upscale) to
   ``scaled_size(W, H, max_side)`` of the oriented original size with antialiased bicubic resampling
   (`resize_bicubic`: Pillow's kernel, a = -0.5, widened when reducing, computed by torch's vectorised uint8
   kernel). The target does not depend on whether draft was used.

Steps 4-6 run on bands of rows (`_upright_rgb`, about `BAND_BYTES` each): a band is cropped from Pillow's
image, transposed, converted and resized across on its own, then all rows are resized down, so that besides
Pillow's image only the result and the rows at the target width are full-size (a whole-image conversion made
two more copies, and the resize a third). The result is bit-identical to the whole-image computation.

Every failure becomes ``ImageError(path, one_line_reason)``. Truncated files are errors (Pillow's
``LOAD_TRUNCATED_IMAGES`` is never set). Pillow's own decompression-bomb check is switched off
(``Image.MAX_IMAGE_PIXELS = None``, set on first use) because the limit above replaces it, and Pillow's and
pillow-heif's metadata warnings are filtered out so that none reaches the user.

torch is imported only by the resize, on the first one (never at module import).
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, JpegImagePlugin, UnidentifiedImageError

from qualiclip_cli.core.errors import ImageError, one_line
from qualiclip_cli.core.images.policy import (
    BAND_BYTES,
    SWAPPING_ORIENTATIONS,
    check_cost,
    check_min_side,
    check_pixels,
    dct_request,
    decode_cost,
    scaled_size,
    thumbnail_request,
)

__all__ = ["DecodedImage", "MemoryBudget", "check_regular_file", "decode_array", "decode_embedded", "decode_image", "exif_orientation", "heif_support", "resize_bicubic", "setup_pillow"]

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
    #: where the pixels came from: "file" (the file's own picture), "raw-preview" (a RAW's embedded preview),
    #: "raw-demosaic" (LibRaw's half-size development of a RAW); see `images.raw`
    source: str = "file"


def resize_bicubic(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Downscale H×W×3 uint8 pixels to ``size`` = (width, height) with antialiased bicubic resampling.

    The kernel is Pillow's ``Image.resize(..., BICUBIC)`` (a = -0.5, support widened by the reduction factor),
    computed by torch's vectorised uint8 implementation: it differs from Pillow by fixed-point rounding only
    (mean 0.002-0.1 grey level, at most 2 on a handful of pixels) and takes 16 ms instead of 110 ms for
    12 MP → 1024×768 on one core. The GPU decoder (`gpu_decode`) uses the same kernel on float.

    torch resizes the width first, into 8-bit rows, then the height; `_resize_rows` and `_resize_columns` are
    those two passes, so the decoder can run the first one band by band (bit-identical to this function).
    """
    width, height = size
    return _resize_columns(_resize_rows(pixels, width), height)


def _interpolate(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    if not pixels.flags.writeable:  # Pillow's buffer: torch would warn that it cannot be written; it is only read
        _ignore_warnings(message=_READ_ONLY_WARNING, module=_THIS_MODULE)
    src = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)  # channels-last view, no copy, only read
    out = F.interpolate(src, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())


def _resize_rows(pixels: np.ndarray, width: int) -> np.ndarray:
    """The horizontal pass: each row of H×W×3 pixels resampled to ``width`` (rows are independent)."""
    return pixels if pixels.shape[1] == width else _interpolate(pixels, width, pixels.shape[0])


def _resize_columns(pixels: np.ndarray, height: int) -> np.ndarray:
    """The vertical pass: each column resampled to ``height``."""
    return pixels if pixels.shape[0] == height else _interpolate(pixels, pixels.shape[1], height)


# -- the decode-memory budget --------------------------------------------------------------------------


class MemoryBudget:
    """Bytes that concurrent decodes may hold at once, shared by the decode threads of one run.

    A decode asks for its estimated cost (`policy.decode_cost`) once its header is read and before any pixel is
    decoded, and gives it back once the scored pixels exist. Requests are served in arrival order, so a large one
    is not overtaken for ever by small ones; a request waits only while others hold bytes, so one alone never
    waits. A request above ``total`` is refused by the decoder before it asks (`policy.check_cost`).
    """

    def __init__(self, total: int):
        if total <= 0:
            raise ValueError(f"a memory budget must be positive, got {total}")
        self.total = total
        self.in_flight = 0
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)

    def acquire(self, nbytes: int) -> None:
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                self._cond.wait_for(lambda: self._queue[0] is ticket
                                    and (self.in_flight == 0 or self.in_flight + nbytes <= self.total))
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()
            self.in_flight += nbytes

    def release(self, nbytes: int) -> None:
        with self._cond:
            self.in_flight -= nbytes
            self._cond.notify_all()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        self.acquire(nbytes)
        try:
            yield
        finally:
            self.release(nbytes)


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


def _wide_range(a: np.ndarray) -> tuple[float, float] | None:
    """(min, max) of single-band integer/float data (non-finite floats count as 0), None when empty."""
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    if a.size == 0:
        return None
    return a.min().item(), a.max().item()


def _wide_to_u8(a: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Map single-band integer/float data whose range is not declared (modes I and F) to 0..255.

    Values within 0..1 (floats only) are fractions of white; within 0..255, 8-bit; within 0..65535,
    16-bit (v/257); anything else (negative, larger) is stretched from its min..max to 0..255. The range is
    that of the whole image: ``value_range`` when ``a`` is one band of it, else ``a``'s own.
    """
    if a.dtype.kind == "f":
        a = np.nan_to_num(a.astype(np.float64, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    if value_range is None:
        value_range = _wide_range(a)
    if a.size == 0 or value_range is None:
        return np.zeros(a.shape, np.uint8)
    lo, hi = value_range
    if a.dtype.kind == "f" and lo >= 0 and hi <= 1:
        return _round_u8(a * 255.0)
    if lo >= 0 and hi <= 255:
        return _round_u8(a) if a.dtype.kind == "f" else a.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return _round_u8(a / 257.0) if a.dtype.kind == "f" else _u16_to_u8(a)
    if hi == lo:
        return np.zeros(a.shape, np.uint8)
    return _round_u8((a.astype(np.float64) - lo) * (255.0 / (float(hi) - float(lo))))


def _to_rgb(im: Image.Image, value_range: tuple[float, float] | None = None) -> Image.Image:
    """``im`` (the image, or one band of its rows) as 8-bit RGB; ``value_range``: the whole image's, for I and F."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16"):
        grey = Image.fromarray(_u16_to_u8(np.asarray(im)), "L")
        return grey.convert("RGB")
    if mode in ("I", "F"):
        grey = Image.fromarray(_wide_to_u8(np.asarray(im), value_range), "L")
        return grey.convert("RGB")
    if mode in ("P", "PA", "L") and "transparency" in im.info:
        # Same RGB values as .convert("RGB"), without Pillow's "Transparency expressed in bytes" warning.
        return im.convert("RGBA").convert("RGB")
    try:
        return im.convert("RGB")
    except ValueError:
        return im.convert("RGBA").convert("RGB")  # e.g. premultiplied "La", which has no direct path


# EXIF orientation → the transposition that shows the image upright (as `ImageOps.exif_transpose` applies it).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _band_box(orientation: int, stored: tuple[int, int], y0: int, y1: int) -> tuple[int, int, int, int]:
    """The box of the stored image that becomes rows ``y0:y1`` of the upright one once transposed."""
    w, h = stored
    if orientation in (1, 2):  # rows stay rows, top stays top
        return 0, y0, w, y1
    if orientation in (3, 4):  # rows stay rows, bottom becomes top
        return 0, h - y1, w, h - y0
    if orientation in (5, 6):  # columns become rows, left column on top
        return y0, 0, y1, h
    return w - y1, 0, w - y0, h  # 7, 8: columns become rows, right column on top


def _upright_rgb(im: Image.Image, path: Path, orientation: int, width: int) -> np.ndarray:
    """The loaded ``im`` upright (EXIF ``orientation``) as 8-bit RGB, each row resampled to ``width``.

    Band by band: a band of rows is cropped from Pillow's image (transposed if the orientation says so),
    converted and resampled on its own, so the only full-size buffer is Pillow's; the result is the H×width×3
    array `resize_bicubic`'s first pass would give for the whole upright image (rows are independent).
    """
    orientation = orientation if orientation in _TRANSPOSE else 1
    method = _TRANSPOSE.get(orientation)
    stored = im.size
    up_w, up_h = (stored[1], stored[0]) if orientation in SWAPPING_ORIENTATIONS else stored
    value_range = None
    rows = max(1, BAND_BYTES // (up_w * 4))
    if im.mode in ("I", "F"):  # their mapping to 8 bits depends on the range of the whole image
        stored_rows = max(1, BAND_BYTES // (stored[0] * 4))
        ranges = [_wide_range(np.asarray(im.crop((0, y, stored[0], min(stored[1], y + stored_rows)))))
                  for y in range(0, stored[1], stored_rows)]
        ranges = [r for r in ranges if r is not None]
        if ranges:
            value_range = (min(r[0] for r in ranges), max(r[1] for r in ranges))
    out = np.empty((up_h, width, 3), np.uint8)
    for y0 in range(0, up_h, rows):
        y1 = min(up_h, y0 + rows)
        box = _band_box(orientation, stored, y0, y1)
        band = im if box == (0, 0, *stored) else im.crop(box)
        if method is not None:
            band = band.transpose(method)
        pixels = np.asarray(_to_rgb(band, value_range), dtype=np.uint8)
        if pixels.ndim != 3 or pixels.shape[2] != 3:  # defensive: never hand odd shapes to the model
            raise ImageError(path, f"unexpected decoded shape {pixels.shape}")
        out[y0:y1] = _resize_rows(pixels, width)
    return out


# -- decoding ------------------------------------------------------------------------------------------


def decode_image(
    path: str | os.PathLike[str],
    max_side: int,
    *,
    draft: bool = False,
    max_pixels: int | None = None,
    budget: MemoryBudget | None = None,
) -> DecodedImage:
    """Decode ``path`` under the product's preprocessing policy (module docstring).

    ``max_side``: 0 = native resolution (reference behaviour), else the longest scored side (downscale
    only). ``draft``: JPEG DCT-scaled decoding for any reduction (without it, for reductions of 4× and more:
    module docstring, step 3). ``max_pixels``: an extra limit on
    decoded pixels (the caller's native-resolution guard), on top of `DECODE_PIXEL_LIMIT`. ``budget``: the
    decode memory shared with other threads; the file's estimated cost is held from before its pixels are
    decoded until its scored pixels exist, and a file that costs more than the whole budget is refused.
    Raises `ImageError` for any problem with the file; ValueError for a negative ``max_side``.
    """
    if max_side < 0:
        raise ValueError(f"max_side must be >= 0, got {max_side}")
    path = Path(path)
    setup_pillow()
    check_regular_file(path)
    return _decode_with_pillow(lambda: Image.open(path), path, max_side, draft, max_pixels, budget)


def check_regular_file(path: Path) -> os.stat_result:
    """The file's stat, or the `ImageError` that says why it cannot be an image (missing, a folder, empty...)."""
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
        raise ImageError(path, "empty file (0 bytes)", damaged=True)
    return st


def decode_embedded(
    data: bytes,
    path: Path,
    max_side: int,
    *,
    orientation: Callable[[tuple[int, int]], int] | None,
    source: str,
    what: str | None = "embedded preview",
    draft: bool = False,
    max_pixels: int | None = None,
    budget: MemoryBudget | None = None,
) -> DecodedImage:
    """Decode an image held in memory (a RAW's embedded JPEG preview, a dataset sample's bytes) exactly as
    `decode_image` decodes a file, except that its orientation is ``orientation(stored_size)`` instead of its own
    EXIF's (None: its own EXIF's, as for a file). Errors name ``path`` and say it was the ``what`` (None: as a
    file's errors read)."""
    import io

    setup_pillow()
    try:
        decoded = _decode_with_pillow(lambda: Image.open(io.BytesIO(data)), path, max_side, draft, max_pixels,
                                      budget, orientation)
    except ImageError as exc:
        if what is None:
            raise
        raise ImageError(path, f"{what}: {exc.reason}", damaged=exc.damaged) from None
    return DecodedImage(decoded.pixels, decoded.width, decoded.height, decoded.original_width,
                        decoded.original_height, source)


def decode_array(
    pixels: np.ndarray,
    path: Path,
    max_side: int,
    *,
    orientation: int,
    source: str,
    max_pixels: int | None = None,
) -> DecodedImage:
    """Pixels already decoded (H×W×3, 8 or 16 bits: a RAW's bitmap thumbnail, LibRaw's development) put under
    the same policy as a decoded file: EXIF ``orientation`` applied, the size limits checked, then the resize."""
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ImageError(path, f"unexpected decoded shape {pixels.shape}")
    pixels = pixels[:, :, :3]
    if pixels.dtype == np.uint16:
        pixels = _u16_to_u8(pixels)
    elif pixels.dtype != np.uint8:
        raise ImageError(path, f"unexpected decoded pixel type {pixels.dtype}")
    stored = (pixels.shape[1], pixels.shape[0])
    check_pixels(path, stored, stored, 1, max_pixels)
    method = _TRANSPOSE.get(orientation)
    up = pixels if method is None else np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).transpose(method))
    original = (up.shape[1], up.shape[0])
    target = scaled_size(*original, max_side)
    check_min_side(path, target, original, max_side)
    out = resize_bicubic(np.ascontiguousarray(up), target) if target != original else np.array(up, order="C")
    return DecodedImage(out, target[0], target[1], original[0], original[1], source)


def _decode_with_pillow(
    open_image: Callable[[], Image.Image],
    path: Path,
    max_side: int,
    draft: bool,
    max_pixels: int | None,
    budget: MemoryBudget | None,
    orientation: Callable[[tuple[int, int]], int] | None = None,
) -> DecodedImage:
    held = _Held(budget)
    try:
        with held, open_image() as im:
            try:
                return _decode_opened(im, path, max_side, draft, max_pixels, held, orientation)
            finally:
                im.close()  # frees Pillow's pixels (leaving the with block does not) before the budget is released
    except ImageError:
        raise
    except UnidentifiedImageError:
        reason = "not an image, or an image format that cannot be read"
        missing_plugin = path.suffix.lower() in (".heic", ".heif", ".avif") and bool(_heif_problem)
        if missing_plugin:  # maybe a good photo that this installation cannot read: not damaged
            reason += f" ({_heif_problem})"
        raise ImageError(path, reason, damaged=not missing_plugin) from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except MemoryError:
        raise ImageError(path, "not enough memory to decode it") from None
    except Image.DecompressionBombError as exc:  # only if someone restored Pillow's limit
        raise ImageError(path, f"refused by Pillow's decompression-bomb guard ({one_line(exc)})") from None
    except OSError as exc:
        text = one_line(exc)
        damaged = exc.errno is None  # Pillow's decoder errors; an errno is the disk's or the system's failure
        if "truncated" in text.lower():
            raise ImageError(path, f"truncated or damaged file: {text}", damaged=damaged) from None
        raise ImageError(path, f"cannot decode image data: {text}", damaged=damaged) from None
    except Exception as exc:  # SyntaxError, ValueError, struct.error, EOFError ... from format plugins
        raise ImageError(path, f"cannot decode image: {type(exc).__name__}: {one_line(exc)}", damaged=True) from None


class _Held:
    """One decode's share of a `MemoryBudget` (none without a budget): taken by `take` once the cost is known,
    given back on exit, after the big buffers are freed and, for a large decode, handed back to the system."""

    def __init__(self, budget: MemoryBudget | None):
        self.budget = budget
        self.nbytes = 0

    @property
    def total(self) -> int | None:
        return None if self.budget is None else self.budget.total

    def take(self, nbytes: int) -> None:
        if self.budget is not None:
            self.budget.acquire(nbytes)
            self.nbytes = nbytes

    def __enter__(self) -> _Held:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.nbytes:
            try:
                if self.nbytes >= RETURN_MEMORY_ABOVE:
                    return_freed_memory()
            finally:
                self.budget.release(self.nbytes)  # type: ignore[union-attr]
                self.nbytes = 0


#: After a decode estimated at this many bytes or more (images of ~40 MP and up), freed memory is handed back to
#: the system (`malloc_trim`). Not after every decode: that would also hand back the memory the forward pass
#: reuses (`runtime.reuse_freed_memory`), and a 24 MP photo's ~140 MB kept per decode thread is reused by it.
RETURN_MEMORY_ABOVE = 200_000_000

_libc: object = None  # ctypes handle once looked up; False where there is no glibc


def return_freed_memory() -> bool:
    """Ask glibc to give the free pages of every malloc arena back to the system (Linux only).

    A decode thread's freed image stays in that thread's arena, where no other thread reuses it, and the CPU
    scorer tells glibc never to trim its heaps (`runtime.reuse_freed_memory`): without this, each decode thread
    would keep the memory of the largest image it decoded. Returns whether it ran.
    """
    global _libc
    if _libc is None:
        _libc = False
        import sys

        if sys.platform.startswith("linux"):
            import ctypes
            import ctypes.util

            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
                _libc = libc
            except (OSError, AttributeError):  # not glibc (e.g. musl)
                pass
    if not _libc:
        return False
    _libc.malloc_trim(0)  # type: ignore[attr-defined]
    return True


def _decode_opened(
    im: Image.Image, path: Path, max_side: int, draft: bool, max_pixels: int | None, held: _Held,
    orientation_of: Callable[[tuple[int, int]], int] | None = None,
) -> DecodedImage:
    header = im.size  # stored frame, before orientation
    scale = 1
    thumbnail = False  # a HEIF decoded from its embedded thumbnail (step 3)
    orientation = 1
    is_jpeg = isinstance(im, JpegImagePlugin.JpegImageFile)
    if is_jpeg:
        # JPEG EXIF is parsed from APP1 at open time: the orientation is known before decoding, so the
        # target and the DCT scale are computed up front.
        orientation = orientation_of(header) if orientation_of else _orientation(im, path)
        swap = orientation in SWAPPING_ORIENTATIONS
        original = (header[1], header[0]) if swap else header
        target = scaled_size(*original, max_side)
        check_min_side(path, target, original, max_side)
        upright = dct_request(original, target, draft) if max_side > 0 else None
        if upright is not None:
            requested = (upright[1], upright[0]) if swap else upright
            if im.draft("RGB", requested) is not None:
                scale = max(1, round(header[0] / im.size[0]))  # the DCT scale libjpeg will use
    else:
        # Min side is checked on the unordered pair {w, h}: orientation cannot change the verdict.
        target = scaled_size(*header, max_side)
        check_min_side(path, target, header, max_side)
        wanted = thumbnail_request(header, target) if max_side > 0 and im.format == "HEIF" else None
        # pillow-heif's draft picks the smallest embedded thumbnail that is a scaled copy of the image (same
        # aspect, crop, rotation, colour profile) at least this size, and answers None when there is none.
        if wanted is not None and im.draft(im.mode, wanted) is not None and im.size != header:
            thumbnail = True
    check_pixels(path, header, im.size, scale, max_pixels)
    if held.total is not None:
        cost = decode_cost(im.mode, im.size, target, im.format)
        check_cost(path, header, cost, held.total)
        held.take(cost)  # may wait for other decodes to finish; held until the caller has closed the image

    im.load()
    if not is_jpeg:  # other formats may carry their EXIF after the pixels: read it once they are loaded
        orientation = orientation_of(im.size) if orientation_of else _orientation(im, path)
        loaded = header if thumbnail else im.size  # a thumbnail is scored at the image's own scored size
        original = (loaded[1], loaded[0]) if orientation in SWAPPING_ORIENTATIONS else loaded
        target = scaled_size(*original, max_side)
    rows = _upright_rgb(im, path, orientation, target[0])
    pixels = _resize_columns(rows, target[1])  # the caller's own, writable array
    del rows
    return DecodedImage(
        pixels=pixels,
        width=target[0],
        height=target[1],
        original_width=original[0],
        original_height=original[1],
    )


def _orientation(im: Image.Image, path: Path) -> int:
    """The EXIF orientation `ImageOps.exif_transpose` would apply (1 when none), or the file's error."""
    try:
        return exif_orientation(im)
    except MemoryError:
        raise
    except Exception as exc:
        raise ImageError(path, f"corrupt EXIF metadata ({one_line(exc)})") from None
