"""When, with which camera and at which exposure bias a photo was taken: the EXIF signals grouping uses.

Read with exifread (JPEG, TIFF-based RAW, HEIC), Pillow when exifread finds nothing usable, the file's mtime
last (`time_source` "mtime"). `DateTimeOriginal` gives the second, `SubSecTimeOriginal` the fraction and
`OffsetTimeOriginal` the zone; a date that cannot be read (malformed, "0000:00:00 00:00:00", out of range)
counts as absent. A date in the future is kept: a camera whose clock is wrong is still consistent with itself,
and grouping only ever compares one camera's frames with each other. Nothing here raises for a file's
content: an unreadable file simply has no EXIF signals.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

_DATE = re.compile(r"\s*(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"\s*([+-])(\d{2}):?(\d{2})\s*$")
_SUBSEC = re.compile(r"\s*(\d+)")

# EXIF tag numbers for the Pillow fallback.
_EXIF_IFD = 0x8769
_MAKE, _MODEL = 0x010F, 0x0110
_DATE_ORIGINAL, _SUBSEC_ORIGINAL, _OFFSET_ORIGINAL = 0x9003, 0x9291, 0x9011
_BODY_SERIAL, _EXPOSURE_BIAS = 0xA431, 0x9204


@dataclass(frozen=True)
class Capture:
    """capture_time: seconds (sort key), capture_text: ISO 8601, time_source: "exif" or "mtime"."""

    capture_time: float
    capture_text: str
    time_source: str
    camera: str
    exposure_bias: float | None


@dataclass
class _Fields:
    date: str | None = None
    subsec: str | None = None
    offset: str | None = None
    make: str | None = None
    model: str | None = None
    serial: str | None = None
    bias: object = None


def read_capture(path: str | os.PathLike, mtime_ns: int | None = None) -> Capture:
    """The capture signals of one file; ``mtime_ns`` (default: stat's) is the fallback time."""
    fields = _exifread_fields(path)
    if fields is None or fields.date is None:
        fallback = _pillow_fields(path)
        if fallback is not None and (fields is None or fallback.date is not None):
            fields = fallback
    fields = fields or _Fields()
    when = exif_time(fields.date, fields.subsec, fields.offset)
    if when is None:
        if mtime_ns is None:
            try:
                mtime_ns = os.stat(path).st_mtime_ns
            except OSError:
                mtime_ns = 0
        seconds = mtime_ns / 1e9
        text = datetime.fromtimestamp(mtime_ns // 1_000_000_000, timezone.utc).replace(
            microsecond=(mtime_ns // 1000) % 1_000_000).isoformat()
        when = (seconds, text, "mtime")
    return Capture(when[0], when[1], when[2], camera_key(fields.serial, fields.make, fields.model),
                   _bias(fields.bias))


def exif_time(date: str | None, subsec: str | None = None, offset: str | None = None) -> tuple[float, str, str] | None:
    """(seconds, ISO text, "exif") of an EXIF date with its optional sub-second and offset fields, None when
    the date is absent or cannot be read. Without an offset the wall clock is read as if it were UTC (only
    frames of one camera are compared, so the zone cancels out) and the text carries no offset."""
    match = _DATE.match(date or "")
    if not match:
        return None
    try:
        moment = datetime(*(int(g) for g in match.groups()))
    except ValueError:  # month 13, day 0, "0000:00:00 00:00:00"
        return None
    sub = _SUBSEC.match(subsec or "")
    if sub:
        digits = sub.group(1)[:6]
        moment += timedelta(microseconds=int(digits.ljust(6, "0")))
    zone = _OFFSET.match(offset or "")
    tz = timezone.utc
    if zone:
        minutes = int(zone.group(2)) * 60 + int(zone.group(3))
        if minutes < 24 * 60:
            tz = timezone(timedelta(minutes=-minutes if zone.group(1) == "-" else minutes))
        else:
            zone = None
    aware = moment.replace(tzinfo=tz)
    text = aware.isoformat() if zone else moment.isoformat()
    return aware.timestamp(), text, "exif"


def camera_key(serial: str | None, make: str | None, model: str | None) -> str:
    """"serial:<body serial>" when the body has one; else "<make> <model>"; else "" (unknown camera)."""
    serial = _clean(serial)
    if serial and serial.strip("0"):
        return f"serial:{serial}"
    return " ".join(part for part in (_clean(make), _clean(model)) if part)


def _clean(value) -> str:
    return " ".join(str(value).replace("\x00", " ").split()) if value is not None else ""


def _bias(value) -> float | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    try:
        bias = float(value) if value is not None else None
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return bias if bias is not None and math.isfinite(bias) and abs(bias) <= 64 else None


def _exifread_fields(path: str | os.PathLike) -> _Fields | None:
    import logging

    import exifread

    logging.getLogger("exifread").setLevel(logging.CRITICAL)  # it logs what it cannot parse; we fall back
    try:
        with open(path, "rb") as fh:
            tags = exifread.process_file(fh, details=False, extract_thumbnail=False, builtin_types=True)
    except Exception:  # exifread raises many things on damaged files; the fallbacks take over
        return None
    if not tags:
        return None

    def text(name: str) -> str | None:
        value = tags.get(name)
        return None if value is None else str(value)

    return _Fields(date=text("EXIF DateTimeOriginal"), subsec=text("EXIF SubSecTimeOriginal"),
                   offset=text("EXIF OffsetTimeOriginal"), make=text("Image Make"), model=text("Image Model"),
                   serial=text("EXIF BodySerialNumber"), bias=tags.get("EXIF ExposureBiasValue"))


def _pillow_fields(path: str | os.PathLike) -> _Fields | None:
    from PIL import Image

    try:
        with Image.open(Path(path)) as image:
            if image.format == "PNG" and "exif" not in image.info:
                return None  # Pillow would decode the whole picture to look for an eXIf chunk after the pixels
            exif = image.getexif()
            sub = exif.get_ifd(_EXIF_IFD)
    except Exception:
        return None
    if not exif and not sub:
        return None

    def text(tags, tag: int) -> str | None:
        value = tags.get(tag)
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        return None if value is None else str(value)

    return _Fields(date=text(sub, _DATE_ORIGINAL), subsec=text(sub, _SUBSEC_ORIGINAL),
                   offset=text(sub, _OFFSET_ORIGINAL), make=text(exif, _MAKE), model=text(exif, _MODEL),
                   serial=text(sub, _BODY_SERIAL), bias=sub.get(_EXPOSURE_BIAS))
