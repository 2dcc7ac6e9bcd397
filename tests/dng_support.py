"""Writing small DNG files for the RAW tests (no real camera file can be had here).

A DNG is a TIFF: IFD 0 describes the file (DNG version, camera, orientation, colour matrix) and holds a small RGB
thumbnail or nothing; its SubIFDs hold the CFA mosaic (an RGGB Bayer pattern, 16-bit, uncompressed) and, when
asked, a JPEG preview (a reduced-resolution YCbCr IFD, as cameras and Adobe's converter write them). LibRaw reads
these like any camera's DNG: the preview through `extract_thumb`, the mosaic through its demosaic.

The mosaic is made from an sRGB photo: each pixel linearised, then the one colour its Bayer site sees, scaled to
12 bits. The colour matrix maps XYZ to linear sRGB, so a demosaic with the camera's white balance gives back
roughly the photo (colour science is not what the tests look at).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# TIFF field types
_SHORT, _LONG, _RATIONAL, _SRATIONAL, _BYTE, _ASCII = 3, 4, 5, 10, 1, 2

#: XYZ (D50) → linear sRGB, the inverse of sRGB's primaries matrix (rounded to 4 decimals).
_XYZ_TO_SRGB = ((3.1339, -1.6169, -0.4906), (-0.9788, 1.9161, 0.0335), (0.0719, -0.2290, 1.4052))

WHITE_LEVEL = 4095


@dataclass
class _Entry:
    tag: int
    type: int
    values: tuple | bytes


def _pack_values(type_: int, values) -> bytes:
    if type_ == _ASCII:
        return values + b"\0"
    if type_ == _BYTE:
        return bytes(values)
    if type_ == _SHORT:
        return struct.pack(f"<{len(values)}H", *values)
    if type_ == _LONG:
        return struct.pack(f"<{len(values)}I", *values)
    if type_ in (_RATIONAL, _SRATIONAL):
        fmt = "<ii" if type_ == _SRATIONAL else "<II"
        out = b""
        for v in values:
            out += struct.pack(fmt, round(v * 10000), 10000)
        return out
    raise ValueError(type_)


def _count(type_: int, values) -> int:
    if type_ == _ASCII:
        return len(values) + 1
    return len(values)


class _TiffWriter:
    """Lays out IFDs and their data blobs in one little-endian TIFF; offsets are patched once all are placed."""

    def __init__(self) -> None:
        self.buf = bytearray(b"II*\0\0\0\0\0")

    def blob(self, data: bytes) -> int:
        if len(self.buf) % 2:
            self.buf += b"\0"
        offset = len(self.buf)
        self.buf += data
        return offset

    def ifd(self, entries: list[_Entry], next_ifd: int = 0) -> int:
        """Write one IFD (entries sorted by tag); values longer than 4 bytes go after it. Returns its offset."""
        entries = sorted(entries, key=lambda e: e.tag)
        if len(self.buf) % 2:
            self.buf += b"\0"
        start = len(self.buf)
        size = 2 + 12 * len(entries) + 4
        data_at = start + size
        head = struct.pack("<H", len(entries))
        tail = b""
        for e in entries:
            packed = _pack_values(e.type, e.values)
            count = _count(e.type, e.values)
            if len(packed) <= 4:
                head += struct.pack("<HHI", e.tag, e.type, count) + packed.ljust(4, b"\0")
            else:
                if (data_at + len(tail)) % 2:
                    tail += b"\0"
                head += struct.pack("<HHII", e.tag, e.type, count, data_at + len(tail))
                tail += packed
        head += struct.pack("<I", next_ifd)
        self.buf += head + tail
        return start

    def set_first_ifd(self, offset: int) -> None:
        self.buf[4:8] = struct.pack("<I", offset)


def _mosaic(rgb: np.ndarray) -> np.ndarray:
    """The RGGB Bayer mosaic (uint16, 12-bit) a camera would record of an sRGB picture."""
    s = rgb.astype(np.float64) / 255.0
    linear = np.where(s <= 0.04045, s / 12.92, ((s + 0.055) / 1.055) ** 2.4)
    h, w = rgb.shape[:2]
    out = np.empty((h, w), np.float64)
    out[0::2, 0::2] = linear[0::2, 0::2, 0]  # R
    out[0::2, 1::2] = linear[0::2, 1::2, 1]  # G
    out[1::2, 0::2] = linear[1::2, 0::2, 1]  # G
    out[1::2, 1::2] = linear[1::2, 1::2, 2]  # B
    return np.clip(np.rint(out * WHITE_LEVEL), 0, WHITE_LEVEL).astype(np.uint16)


def _jpeg(rgb: np.ndarray, quality: int = 92, orientation: int | None = None) -> bytes:
    out = io.BytesIO()
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    Image.fromarray(rgb).save(out, "JPEG", quality=quality, **kwargs)
    return out.getvalue()


def write_dng(
    path: str | Path,
    sensor: np.ndarray,
    *,
    orientation: int = 1,
    preview: np.ndarray | None = None,
    preview_orientation: int | None = None,
    thumbnail: np.ndarray | None = None,
    make: str = "Testcam",
    model: str = "Model 1",
) -> Path:
    """Write a DNG of the sRGB picture ``sensor`` (H×W×3 uint8, as the sensor saw it, even sides).

    ``orientation``: the RAW's EXIF orientation (how to turn the sensor's picture upright). ``preview``: pixels of
    a JPEG preview written as its own SubIFD (stored as given: pass the sensor's frame, or an upright one), with an
    EXIF orientation of its own when ``preview_orientation`` is given. ``thumbnail``: a small uncompressed RGB
    image in IFD 0 (else IFD 0 holds the mosaic itself and there is no thumbnail at all).
    """
    h, w = sensor.shape[:2]
    if h % 2 or w % 2:
        raise ValueError("the sensor picture needs even sides (whole Bayer cells)")
    mosaic = _mosaic(sensor).astype("<u2").tobytes()
    # The mosaic goes last, as in a camera's file (a cut file then keeps its IFDs and loses pixels): lay the rest
    # out once to learn where it ends, then again with that offset (the layout does not depend on the values).
    end = len(_layout(0, len(mosaic), sensor.shape, orientation, preview, preview_orientation, thumbnail, make,
                      model).buf)
    raw_at = end + end % 2
    t = _layout(raw_at, len(mosaic), sensor.shape, orientation, preview, preview_orientation, thumbnail, make, model)
    t.buf += b"\0" * (raw_at - len(t.buf)) + mosaic
    return _save(path, t)


def _layout(raw_at, raw_bytes, shape, orientation, preview, preview_orientation, thumbnail, make, model) -> _TiffWriter:
    h, w = shape[:2]
    t = _TiffWriter()
    raw_entries = [
        _Entry(254, _LONG, (0,)),
        _Entry(256, _LONG, (w,)),
        _Entry(257, _LONG, (h,)),
        _Entry(258, _SHORT, (16,)),
        _Entry(259, _SHORT, (1,)),
        _Entry(262, _SHORT, (32803,)),
        _Entry(273, _LONG, (raw_at,)),
        _Entry(277, _SHORT, (1,)),
        _Entry(278, _LONG, (h,)),
        _Entry(279, _LONG, (raw_bytes,)),
        _Entry(284, _SHORT, (1,)),
        _Entry(33421, _SHORT, (2, 2)),  # CFARepeatPatternDim
        _Entry(33422, _BYTE, (0, 1, 1, 2)),  # CFAPattern: RGGB
        _Entry(50714, _LONG, (0,)),  # BlackLevel
        _Entry(50717, _LONG, (WHITE_LEVEL,)),  # WhiteLevel
    ]
    camera = [
        _Entry(271, _ASCII, make.encode()),
        _Entry(272, _ASCII, model.encode()),
        _Entry(274, _SHORT, (orientation,)),
        _Entry(50706, _BYTE, (1, 4, 0, 0)),  # DNGVersion
        _Entry(50707, _BYTE, (1, 1, 0, 0)),  # DNGBackwardVersion
        _Entry(50708, _ASCII, f"{make} {model}".encode()),  # UniqueCameraModel
        _Entry(50721, _SRATIONAL, tuple(v for row in _XYZ_TO_SRGB for v in row)),  # ColorMatrix1
        _Entry(50728, _RATIONAL, (1.0, 1.0, 1.0)),  # AsShotNeutral
        _Entry(50778, _SHORT, (21,)),  # CalibrationIlluminant1: D65
    ]
    if thumbnail is None and preview is None:
        t.set_first_ifd(t.ifd(raw_entries + camera))
        return t
    sub_ifds: list[int] = [t.ifd(raw_entries)]
    if preview is not None:
        jpeg = _jpeg(preview, orientation=preview_orientation)
        jpeg_at = t.blob(jpeg)
        ph, pw = preview.shape[:2]
        sub_ifds.append(t.ifd([
            _Entry(254, _LONG, (1,)),
            _Entry(256, _LONG, (pw,)),
            _Entry(257, _LONG, (ph,)),
            _Entry(258, _SHORT, (8, 8, 8)),
            _Entry(259, _SHORT, (7,)),
            _Entry(262, _SHORT, (6,)),
            _Entry(273, _LONG, (jpeg_at,)),
            _Entry(277, _SHORT, (3,)),
            _Entry(278, _LONG, (ph,)),
            _Entry(279, _LONG, (len(jpeg),)),
            _Entry(284, _SHORT, (1,)),
        ]))
    ifd0 = [*camera, _Entry(330, _LONG, tuple(sub_ifds))]
    if thumbnail is not None:
        th, tw = thumbnail.shape[:2]
        thumb_at = t.blob(np.ascontiguousarray(thumbnail, np.uint8).tobytes())
        ifd0 += [
            _Entry(254, _LONG, (1,)),
            _Entry(256, _LONG, (tw,)),
            _Entry(257, _LONG, (th,)),
            _Entry(258, _SHORT, (8, 8, 8)),
            _Entry(259, _SHORT, (1,)),
            _Entry(262, _SHORT, (2,)),
            _Entry(273, _LONG, (thumb_at,)),
            _Entry(277, _SHORT, (3,)),
            _Entry(278, _LONG, (th,)),
            _Entry(279, _LONG, (thumbnail.size,)),
            _Entry(284, _SHORT, (1,)),
        ]
    else:
        ifd0 += [_Entry(254, _LONG, (1,))]
    t.set_first_ifd(t.ifd(ifd0))
    return t


def _save(path: str | Path, t: _TiffWriter) -> Path:
    path = Path(path)
    path.write_bytes(bytes(t.buf))
    return path


def upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """``pixels`` as a viewer shows them under an EXIF ``orientation`` (6: turned 90° clockwise, 8: anticlockwise)."""
    return {
        1: lambda a: a,
        3: lambda a: a[::-1, ::-1],
        6: lambda a: np.rot90(a, k=-1),
        8: lambda a: np.rot90(a, k=1),
    }[orientation](pixels)
