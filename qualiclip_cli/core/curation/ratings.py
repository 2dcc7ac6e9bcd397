"""The photographer's own ratings of photos: from XMP sidecars and from XMP embedded in JPEG, TIFF and DNG files.

Where a rating is looked for, in order (the first place that holds a rating or a reject flag decides):

1. the sidecars, both namings (`IMG_1.xmp`, then `IMG_1.jpg.xmp`, any letter case; `xmp.sidecars_of`);
2. the XMP packet inside the file: a JPEG's APP1 segment (the XMP namespace header), a TIFF's or DNG's
   XMLPacket tag (700) of the first IFD, where Lightroom writes it for those formats.

What counts (`xmp.user_rating`): `xmp:Rating` 1..5 stars, -1 or a reject flag (`xmpDM:pick` -1, digiKam's
`PickLabel` 1) a reject; 0 or none is unrated. A rating qualiclip wrote itself (`qualiclip:Rating` beside it
equal to it) is ours: reported as such and never learned from. Everything is read as untrusted input: sidecars
through `xmp.read_sidecar` (regular files only, size-limited), embedded packets only up to EMBEDDED_XMP_LIMIT.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from qualiclip_cli.core.curation import xmp
from qualiclip_cli.core.curation.siblings import DirectoryIndex
from qualiclip_cli.core.errors import CurationError
from qualiclip_cli.core.filetypes import JPEG_EXTENSIONS

#: The largest embedded XMP packet read (Lightroom's are a few KiB to a few hundred KiB).
EMBEDDED_XMP_LIMIT = 4 << 20
_JPEG_SUFFIXES = frozenset(f".{ext}" for ext in JPEG_EXTENSIONS)
_TIFF_SUFFIXES = frozenset({".tif", ".tiff", ".dng"})
_XMP_APP1_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_XMLPACKET_TAG = 700


@dataclass(frozen=True)
class PhotoRating:
    """One photo's rating as found: ``rating`` -1 (reject) or 1..5, None when unrated; ``source`` the file it
    was read from; ``ours``: written by qualiclip (excluded from learning)."""

    rating: int | None
    source: Path | None = None
    ours: bool = False


def read_rating(photo: str | os.PathLike, index: DirectoryIndex | None = None) -> PhotoRating:
    """The photographer's rating of ``photo`` (see the module). Raises CurationError naming the file that could
    not be read or is not valid XMP."""
    photo = Path(photo)
    for sidecar in xmp.sidecars_of(photo, "adobe", index):
        found = xmp.read_sidecar(sidecar)
        if found is None:
            continue
        judged = xmp.user_rating(found.data, str(sidecar))
        if judged.rating:  # set: stars or a reject
            return PhotoRating(judged.rating, sidecar, judged.ours)
    packet = embedded_xmp(photo)
    if packet is not None:
        judged = xmp.user_rating(packet, f"{photo} (embedded XMP)")
        if judged.rating:
            return PhotoRating(judged.rating, photo, judged.ours)
    return PhotoRating(None)


def embedded_xmp(photo: str | os.PathLike) -> bytes | None:
    """The XMP packet inside a JPEG, TIFF or DNG file (None for other types or when there is none)."""
    suffix = Path(photo).suffix.lower()
    if suffix not in _JPEG_SUFFIXES and suffix not in _TIFF_SUFFIXES:
        return None
    try:
        with open(photo, "rb") as f:
            head = f.read(4)
            if head[:2] == b"\xff\xd8":
                return _jpeg_xmp(f)
            if head in (b"II*\x00", b"MM\x00*"):
                return _tiff_xmp(f, "<" if head[:2] == b"II" else ">")
    except OSError as exc:
        raise CurationError(f"{photo}: cannot read its embedded XMP ({exc.strerror or type(exc).__name__})") from None
    return None


def _jpeg_xmp(f) -> bytes | None:
    """Walk the JPEG's header segments (after SOI) up to the start of the scan; the XMP APP1 segment's payload."""
    f.seek(2)
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind == 0xFF:  # fill byte
            f.seek(-1, os.SEEK_CUR)
            continue
        if kind in (0xD9, 0xDA):  # end of image, start of scan: no XMP in the header
            return None
        if 0xD0 <= kind <= 0xD7 or kind == 0x01:  # markers without a length
            continue
        raw = f.read(2)
        if len(raw) < 2:
            return None
        length = struct.unpack(">H", raw)[0] - 2
        if length < 0:
            return None
        if kind == 0xE1 and length >= len(_XMP_APP1_HEADER):
            payload = f.read(length)
            if payload.startswith(_XMP_APP1_HEADER):
                return payload[len(_XMP_APP1_HEADER):]
            continue
        f.seek(length, os.SEEK_CUR)


def _tiff_xmp(f, order: str) -> bytes | None:
    """The XMLPacket tag (700) of the first IFD of a TIFF (DNG is TIFF): BYTE or UNDEFINED data."""
    f.seek(4)
    offset = struct.unpack(order + "I", f.read(4))[0]
    f.seek(offset)
    raw = f.read(2)
    if len(raw) < 2:
        return None
    entries = struct.unpack(order + "H", raw)[0]
    table = f.read(12 * entries)
    for i in range(len(table) // 12):
        tag, kind, count, value = struct.unpack(order + "HHII", table[12 * i:12 * i + 12])
        if tag != _XMLPACKET_TAG or kind not in (1, 7):
            continue
        if count > EMBEDDED_XMP_LIMIT:
            raise CurationError(f"{f.name}: embedded XMP of {count} bytes, larger than the {EMBEDDED_XMP_LIMIT} read")
        if count <= 4:
            return table[12 * i + 8:12 * i + 8 + count]
        f.seek(value)
        return f.read(count)
    return None
