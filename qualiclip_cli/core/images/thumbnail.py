"""Thumbnails for the review page: a small upright JPEG of a photo and its capture time, read with Pillow.

Not the scoring decoder: a thumbnail only has to look right, so a JPEG is decoded at the smallest DCT scale that
still covers the thumbnail (fast), and the decode limit of `policy` is kept (a decompression bomb is refused,
not decoded). EXIF orientation is applied, as for scoring.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from qualiclip_cli.core.errors import ImageError, first_line
from qualiclip_cli.core.filetypes import is_raw_name
from qualiclip_cli.core.images.policy import DECODE_PIXEL_LIMIT

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 0x9003
_DATETIME = 0x0132


@dataclass(frozen=True)
class Thumbnail:
    jpeg: bytes
    width: int
    height: int
    taken: str | None  # capture time as ISO 8601 ("2024-05-01T14:03:22"), from EXIF, when the photo says


def capture_time(exif) -> str | None:
    """EXIF DateTimeOriginal (else DateTime) as ISO 8601, or None when absent or malformed."""
    value = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
    if not isinstance(value, str):
        return None
    text = value.strip().rstrip("\x00")
    if len(text) < 19 or text[4] != ":" or text[7] != ":" or not text[:4].isdigit():
        return None
    return f"{text[:4]}-{text[5:7]}-{text[8:10]}T{text[11:19]}"


def make_thumbnail(path: str | Path, longest: int = 320, quality: int = 82) -> Thumbnail:
    """The photo at ``path`` upright, its longer side at most ``longest`` px, as JPEG bytes. `ImageError` when
    it cannot be read."""
    from PIL import Image, ImageOps

    from qualiclip_cli.core.images.decode import setup_pillow

    if is_raw_name(Path(path).name):
        return _raw_thumbnail(Path(path), longest, quality)
    setup_pillow()
    try:
        with Image.open(path) as im:
            if im.width * im.height > DECODE_PIXEL_LIMIT:
                raise ImageError(path, f"image is {im.width}×{im.height} px, above the decode limit; no thumbnail")
            try:
                taken = capture_time(im.getexif())
            except Exception:  # a malformed EXIF block costs the capture time, not the thumbnail
                taken = None
            if im.format == "JPEG":
                im.draft("RGB", (longest, longest))
            im.load()
            upright = ImageOps.exif_transpose(im)
            rgb = upright.convert("RGB")
            rgb.thumbnail((longest, longest), Image.BICUBIC)
            out = io.BytesIO()
            rgb.save(out, format="JPEG", quality=quality)
            return Thumbnail(out.getvalue(), rgb.width, rgb.height, taken)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(path, f"no thumbnail: {first_line(exc)}") from None


def _raw_thumbnail(path: Path, longest: int, quality: int) -> Thumbnail:
    """A RAW's thumbnail: from its embedded preview (or its development) as scoring reads it (`raw.decode_raw`)."""
    from PIL import Image

    from qualiclip_cli.core.images.raw import decode_raw

    decoded = decode_raw(path, longest, draft=True)
    out = io.BytesIO()
    Image.fromarray(decoded.pixels).save(out, format="JPEG", quality=quality)
    return Thumbnail(out.getvalue(), decoded.width, decoded.height, None)
