"""The preprocessing policy both decoders share: scored size, minimum side, pixel limits, orientation, identities.

The Pillow decoder (`decode`) and the nvjpeg decoder (`gpu_decode`) apply the same rules from here, and every
cached score carries the identity string of the rules that produced it (`scoring_identity`), so a change of
policy never serves a stale score.
"""

from __future__ import annotations

from pathlib import Path

from qualiclip_cli.core.errors import ImageError

#: Hard limit on the pixels decoded from one file (width × height actually decoded). 300 MP of RGB is
#: 900 MB before conversion copies; beyond that a file is more likely a decompression bomb than a photo.
DECODE_PIXEL_LIMIT = 300_000_000

#: Bytes that the decodes of one run may hold at once by default (`decode.MemoryBudget`), and so the most that one
#: file may cost: a 289 MP RGB PNG costs ~1.2 GB, two of them would not fit together.
DEFAULT_DECODE_MEMORY = 2_000_000_000

#: Rows of the decoded image are converted, oriented and resized in bands of about this many bytes of Pillow's
#: storage, so no full-size copy of the image is ever made besides Pillow's own.
BAND_BYTES = 4 * 1024 * 1024

#: QualiCLIP's trunk downsamples by 32: a scored image must be at least 32 px on each side.
MIN_SIDE = 32

#: EXIF orientations (5..8) that swap width and height.
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# Names the resampling in the policy identity. "bicubic" was Pillow's own resize (qualiclip before 0.2);
# the torch kernel differs from it by rounding (at most 1 grey level), so its scores are stored apart.
RESIZE_IDENTITY = "bicubic-aa"


#: A JPEG whose long side is reduced by at least this factor is decoded at a DCT scale (1/2, 1/4 or 1/8: libjpeg
#: computes fewer coefficients) that still leaves at least `DCT_LEFTOVER`× of the reduction to the antialiased
#: resize, instead of in full (an 80 MP panorama: 13 s → a fraction of a second). The score change it causes is
#: measured by bench/huge.py (README, "Huge images"). Named in the identity by `DCT_IDENTITY`.
DCT_MIN_REDUCTION = 4
DCT_LEFTOVER = 2
DCT_IDENTITY = "dct4x"

#: A HEIC/HEIF reduced by at least `DCT_MIN_REDUCTION`× is decoded from its embedded thumbnail when it carries one
#: that is a scaled copy of the image at least `DCT_LEFTOVER`× the scored size in both axes (libheif has no
#: reduced-size decode of HEVC: the thumbnail is the only cheap way down). Not from one merely at the scored size:
#: libheif writes its thumbnails by plain subsampling, and such an aliased thumbnail used as it is moves pixels by
#: ~8 grey levels on average where leaving 2× to the antialiased resize moves them by ~2.5 (tests/test_huge_images.py;
#: bench/huge.py --heic measures it on large files).
HEIF_THUMBNAIL_IDENTITY = "heifthumb"


def policy_identity(max_side: int, draft: bool = False) -> str:
    """A short stable string naming the preprocessing, stored with every score."""
    if max_side < 0:
        raise ValueError(f"max_side must be >= 0, got {max_side}")
    if max_side == 0:
        return "exif+native"
    return (f"exif+max_side={max_side}+{RESIZE_IDENTITY}" + ("+draft" if draft else f"+{DCT_IDENTITY}")
            + f"+{HEIF_THUMBNAIL_IDENTITY}")


def dct_request(original: tuple[int, int], target: tuple[int, int], draft: bool) -> tuple[int, int] | None:
    """The size (upright) to ask libjpeg's DCT scaling for, for an image of ``original`` size scored at
    ``target``: with ``draft`` the target itself (the smallest scale that covers it); else, for a reduction of
    at least `DCT_MIN_REDUCTION`×, `DCT_LEFTOVER`× the target; None: decode in full."""
    if target == original:
        return None
    if draft:
        return target
    if max(original) < DCT_MIN_REDUCTION * max(target):
        return None
    return target[0] * DCT_LEFTOVER, target[1] * DCT_LEFTOVER


def thumbnail_request(original: tuple[int, int], target: tuple[int, int]) -> tuple[int, int] | None:
    """The smallest embedded thumbnail (same frame as ``original``) a HEIF image of ``original`` size scored at
    ``target`` may be decoded from instead of the image: `DCT_LEFTOVER`× the target, for a reduction of at least
    `DCT_MIN_REDUCTION`×; None: decode the image. The same rule as a JPEG's DCT scaling without draft."""
    return dct_request(original, target, draft=False)


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The scored size of an (oriented) ``width``×``height`` image under ``max_side`` (0 = native).

    Never upscales. s = max_side / max(W, H); each side is round(side·s) (halves round up, computed in
    exact integer arithmetic so the long side is exactly ``max_side``), at least 1.
    """
    if max_side < 0:
        raise ValueError(f"max_side must be >= 0, got {max_side}")
    longest = max(width, height)
    if max_side == 0 or longest <= max_side:
        return width, height
    w = (2 * width * max_side + longest) // (2 * longest)
    h = (2 * height * max_side + longest) // (2 * longest)
    return max(1, w), max(1, h)


def gpu_policy_identity(max_side: int) -> str:
    """The nvjpeg decoder's preprocessing identity: the CPU policy without draft, tagged "+nvjpeg" (its IDCT and
    chroma upsampling differ from libjpeg's by rounding, so its scores are stored apart)."""
    return policy_identity(max_side, draft=False) + "+nvjpeg"


def scoring_identity(max_side: int, draft: bool, decoder: str, precision: str) -> str:
    """The scoring identity stored with every cached score: the decoder's preprocessing plus numeric precision."""
    if decoder == "nvjpeg":
        return f"{gpu_policy_identity(max_side)}+{precision}"
    return f"{policy_identity(max_side, draft)}+{precision}"


#: Names the rule that picks a RAW's pixels (its embedded preview, or LibRaw's half-size development when the
#: preview is missing or smaller than the scoring size; see `raw`). Bump it whenever that rule changes.
RAW_RULE = "raw-preview-v1"


def raw_scoring_identity(identity: str) -> str:
    """The scoring identity of a RAW file's score: the run's identity plus the RAW rule, so that a score computed
    under another rule (or before RAW support, when a RAW named on the command line was read by Pillow) is never
    served for it."""
    return f"{identity}+{RAW_RULE}"


def _mp(pixels: int) -> str:
    if pixels >= 100_000:
        return f"{pixels / 1e6:.1f}".removesuffix(".0") + " MP"
    return f"{pixels} px"


def check_min_side(path: Path, size: tuple[int, int], original: tuple[int, int], max_side: int) -> None:
    w, h = size
    if w >= MIN_SIDE and h >= MIN_SIDE:
        return
    if size == original:
        raise ImageError(path, f"image is {w}×{h} px; QualiCLIP needs at least {MIN_SIDE}×{MIN_SIDE}")
    ow, oh = original
    raise ImageError(
        path,
        f"image is {w}×{h} px after downscaling to a {max_side} px long side (original {ow}×{oh}); "
        f"QualiCLIP needs at least {MIN_SIDE}×{MIN_SIDE}",
    )


def storage_bytes(mode: str) -> int:
    """Bytes per pixel of Pillow's in-memory image in ``mode`` (it keeps 2- and 3-band images in 4 bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


#: Formats whose codec decodes into a buffer of its own that Pillow then copies (4 bytes a pixel at most).
_COPYING_CODECS = frozenset({"WEBP", "HEIF", "AVIF"})


def decode_cost(mode: str, decoded: tuple[int, int], target: tuple[int, int], fmt: str | None = None) -> int:
    """Estimated peak bytes of decoding one image in ``mode`` stored as ``decoded`` (width, height, after any DCT
    scaling) and scored at ``target``: Pillow's image, the codec's own buffer where it has one, the resize's
    intermediate (all rows at the target width), the result, and the working bands."""
    w, h = decoded
    tw, th = target
    cost = w * h * storage_bytes(mode)
    if fmt in _COPYING_CODECS:
        cost += w * h * 4
    if (tw, th) not in ((w, h), (h, w)):
        cost += max(w, h) * max(tw, th) * 3  # rows at the target width (either orientation)
    cost += tw * th * 3
    if mode in ("I", "F"):  # their bands also pass through float64
        cost += BAND_BYTES * 4
    return cost + BAND_BYTES * 6  # a band: Pillow's crop, its bytes, the RGB array, the resized rows


def format_bytes(n: int) -> str:
    """1.2 GB, 850 MB, 64 kB (decimal units, as the budget is written)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} B"


def check_cost(path: Path, header: tuple[int, int], cost: int, budget: int) -> None:
    """Refuse, before decoding, an image whose estimated cost is over the whole decode-memory budget."""
    if cost <= budget:
        return
    w, h = header
    raise ImageError(
        path,
        f"image is {w}×{h} px ({_mp(w * h)}) and needs ~{format_bytes(cost)} to decode, over the "
        f"{format_bytes(budget)} decode-memory budget; not decoded",
    )


def check_pixels(
    path: Path,
    header: tuple[int, int],
    decoded: tuple[int, int],
    scale: int,
    max_pixels: int | None,
) -> None:
    pixels = decoded[0] * decoded[1]
    hard = pixels > DECODE_PIXEL_LIMIT
    soft = max_pixels is not None and pixels > max_pixels
    if not (hard or soft):
        return
    w, h = header
    what = f"image is {w}×{h} px ({_mp(w * h)})"
    if scale > 1:
        what += f", {decoded[0]}×{decoded[1]} px ({_mp(pixels)}) even at 1/{scale} JPEG scale"
    if soft and (not hard or max_pixels < DECODE_PIXEL_LIMIT):
        limit = f"above the {_mp(max_pixels)} limit set for this run"
    else:
        limit = f"above the {_mp(DECODE_PIXEL_LIMIT)} decode limit (decompression-bomb guard)"
    raise ImageError(path, f"{what}, {limit}; not decoded")
