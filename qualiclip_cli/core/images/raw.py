"""Camera RAW files (CR3, NEF, ARW, RAF, DNG...): scored from their embedded preview, through LibRaw (rawpy).

Every culler works from the JPEG a camera embeds in its RAW: it is the picture the camera showed, and reading it
costs tens of milliseconds where developing the sensor data costs seconds. The rule, in order:

1. The file must be a regular file, not empty, start like a RAW format (a TIFF header, an ISO media file as CR3,
   Fujifilm's, Sigma's, Minolta's or Canon's CRW signature) and be as long as its own structure says (the extents
   its TIFF directories or top-level boxes declare fit in the file): a RAW cut short, as an interrupted card copy
   leaves it, is an error row even when its preview survived, so a broken original is never kept on the strength
   of its thumbnail.
2. LibRaw opens it (header only). Sensors above the decode limit (`policy.DECODE_PIXEL_LIMIT`) are refused.
3. The preview: the largest embedded image (`extract_thumb`). A JPEG preview is decoded by the very code that
   decodes JPEG files (`decode.decode_embedded`: same limits, DCT draft, memory budget, band-wise resize); a bitmap
   thumbnail is used like decoded pixels (`decode.decode_array`). It is used when its long side reaches the
   scoring size (``max_side``), or the long side of the half-size development below when that is smaller (as
   always at native resolution): a development that would not give more pixels is not made. Else step 4.
   Source: ``raw-preview``.
4. Otherwise (no preview, one too small such as a 160×120 thumbnail, or one that does not decode): LibRaw's
   half-size development (one RGB pixel per Bayer cell, no interpolation), camera white balance, sRGB, 8 bits,
   LibRaw's other defaults; then the same resize. Source: ``raw-demosaic``.

Orientation. LibRaw gives the preview the RAW's orientation (it writes it into a JPEG preview's EXIF, whatever
EXIF the preview had), and the development comes out upright. Most cameras store the preview in the sensor's
frame, so the RAW's orientation turns it upright; some store it upright already (a portrait preview of a RAW whose
orientation says 90°): when the RAW's orientation swaps the sides but the preview's stored shape is already the
upright shape (its aspect differs from the sensor's), it is not turned again.

Every failure is an `ImageError` with one line (LibRaw's own messages on stderr are caught and become the reason);
rawpy is imported on first use only, and a platform without it gets one line per RAW file, not a crash. The
rules above are named by `RAW_RULE`, which the results cache adds to a RAW file's scoring identity: a change of
rule never serves a score computed under the old one.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from qualiclip_cli.core.errors import ImageError, one_line
from qualiclip_cli.core.images.decode import (
    DecodedImage,
    MemoryBudget,
    _Held,
    check_regular_file,
    decode_array,
    decode_embedded,
)
from qualiclip_cli.core.images.policy import (
    DECODE_PIXEL_LIMIT,
    RAW_RULE,
    SWAPPING_ORIENTATIONS,
    check_cost,
    format_bytes,
)

__all__ = ["RAW_RULE", "SOURCE_DEMOSAIC", "SOURCE_FILE", "SOURCE_PREVIEW", "SOURCES", "decode_raw", "raw_support"]

SOURCE_FILE = "file"
SOURCE_PREVIEW = "raw-preview"
SOURCE_DEMOSAIC = "raw-demosaic"
#: The `source` of a scored record: where its pixels came from.
SOURCES = (SOURCE_FILE, SOURCE_PREVIEW, SOURCE_DEMOSAIC)

#: LibRaw's orientation code (`sizes.flip`) → the EXIF orientation it stands for.
_FLIP_TO_EXIF = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}

_HEAD_BYTES = 16
#: The TIFF directories read at most when checking a file's extents (a loop or a forged chain stops here).
_MAX_IFDS = 64
_MAX_ENTRIES = 4096

_SUPPORT: str | None = None
_SUPPORT_CHECKED = False


def raw_support() -> str | None:
    """None when RAW files can be read (rawpy is importable), else the one-line reason they cannot."""
    global _SUPPORT, _SUPPORT_CHECKED
    if not _SUPPORT_CHECKED:
        try:
            import rawpy  # noqa: F401
        except ImportError as exc:
            _SUPPORT = f"RAW files need rawpy, which is not installed here (pip install rawpy; {one_line(exc)})"
        _SUPPORT_CHECKED = True
    return _SUPPORT


def decode_raw(
    path: str | os.PathLike[str],
    max_side: int,
    *,
    draft: bool = False,
    max_pixels: int | None = None,
    budget: MemoryBudget | None = None,
) -> DecodedImage:
    """Decode a RAW file under the rule of the module docstring: its preview (``source="raw-preview"``) or its
    half-size development (``source="raw-demosaic"``), oriented, checked and resized like any decoded file.
    ``draft``, ``max_pixels`` and ``budget`` as in `decode.decode_image`. Raises `ImageError`."""
    if max_side < 0:
        raise ValueError(f"max_side must be >= 0, got {max_side}")
    path = Path(path)
    st = check_regular_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({one_line(exc.strerror or exc)})") from None
    try:
        _check_structure(path, fd, st.st_size)
        problem = raw_support()
        if problem is not None:
            raise ImageError(path, problem)
        return _decode_open_raw(path, fd, max_side, draft, max_pixels, budget)
    finally:
        os.close(fd)


# -- the file's structure ------------------------------------------------------------------------------


def _check_structure(path: Path, fd: int, size: int) -> None:
    head = os.pread(fd, _HEAD_BYTES, 0)
    kind = _kind(head)
    if kind is None:
        raise ImageError(path, f"not a RAW file (its first bytes are no RAW format's{_what_it_is(head)})",
                         damaged=True)
    try:
        end = _declared_end(kind, fd, size, head)
    except (struct.error, ValueError, OSError):
        raise ImageError(path, "damaged RAW file: its structure cannot be read", damaged=True) from None
    if end is not None and end > size:
        raise ImageError(path, f"truncated RAW file: it has {size:,} bytes, its own structure says at least {end:,}",
                         damaged=True)


def _kind(head: bytes) -> str | None:
    if head[:4] in (b"II*\0", b"MM\0*", b"IIRO", b"IIRS", b"IIU\0", b"MMOR"):
        return "tiff"
    if head[4:8] == b"ftyp":
        return "bmff"  # CR3 (and other ISO media files, which LibRaw refuses by name)
    if head[:8] == b"FUJIFILM":
        return "raf"
    if head[:4] == b"FOVb":
        return "x3f"
    if head[:4] == b"\0MRM":
        return "mrw"
    if head[6:14] == b"HEAPCCDR":
        return "crw"
    return None


def _what_it_is(head: bytes) -> str:
    if head[:3] == b"\xff\xd8\xff":
        return "; it is a JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "; it is a PNG"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "; it looks like text"
    return ""


def _declared_end(kind: str, fd: int, size: int, head: bytes) -> int | None:
    """The least file length the structure implies (None where it is not checked here)."""
    if kind == "tiff":
        return _tiff_end(fd, size, head)
    if kind == "bmff":
        return _bmff_end(fd, size)
    if kind == "raf" and size >= 108:
        # Fujifilm's header: (offset, length) of the JPEG, the CFA header and the CFA data, big-endian, from 84.
        values = struct.unpack(">6I", os.pread(fd, 24, 84))
        return max(values[i] + values[i + 1] for i in (0, 2, 4))
    return None


# TIFF tags holding (offsets, byte counts) of data, and those pointing at further directories.
_EXTENT_TAGS = ((273, 279), (324, 325), (513, 514))
_SUB_IFD_TAGS = (330, 34665)
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}


def _tiff_end(fd: int, size: int, head: bytes) -> int | None:
    order = "<" if head[:2] == b"II" else ">"
    first = struct.unpack(order + "I", head[4:8])[0]
    end = 8
    queue = [first]
    seen: set[int] = set()
    while queue and len(seen) < _MAX_IFDS:
        offset = queue.pop(0)
        if offset == 0 or offset in seen:
            continue
        seen.add(offset)
        if offset + 2 > size:
            return offset + 2
        count = struct.unpack(order + "H", os.pread(fd, 2, offset))[0]
        if count > _MAX_ENTRIES:
            raise ValueError("implausible directory")
        table_end = offset + 2 + 12 * count + 4
        end = max(end, table_end)
        if table_end > size:
            return table_end
        table = os.pread(fd, 12 * count + 4, offset + 2)
        values: dict[int, list[int]] = {}
        for i in range(count):
            tag, type_, n = struct.unpack(order + "HHI", table[12 * i:12 * i + 8])
            if tag not in values and (tag in _SUB_IFD_TAGS or any(tag in pair for pair in _EXTENT_TAGS)):
                values[tag] = _tiff_values(fd, order, type_, n, table[12 * i + 8:12 * i + 12], size)
        for offsets_tag, counts_tag in _EXTENT_TAGS:
            for start, length in zip(values.get(offsets_tag, ()), values.get(counts_tag, ())):
                if length:
                    end = max(end, start + length)
        for tag in _SUB_IFD_TAGS:
            queue.extend(values.get(tag, ()))
        queue.append(struct.unpack(order + "I", table[12 * count:12 * count + 4])[0])
    return end


def _tiff_values(fd: int, order: str, type_: int, n: int, field: bytes, size: int) -> list[int]:
    """The integer values of one directory entry (SHORT or LONG; others give none)."""
    code = {3: "H", 4: "I", 13: "I"}.get(type_)
    if code is None or n == 0 or n > 1 << 20:
        return []
    nbytes = _TYPE_SIZES[type_] * n
    if nbytes <= 4:
        data = field[:nbytes]
    else:
        where = struct.unpack(order + "I", field)[0]
        if where + nbytes > size:
            return [where + nbytes]  # values beyond the end: their own extent says the file is cut
        data = os.pread(fd, nbytes, where)
    return list(struct.unpack(order + code * n, data))


def _bmff_end(fd: int, size: int) -> int:
    """The end of the last top-level box of an ISO media file (CR3)."""
    offset = 0
    for _ in range(1 << 16):
        if offset >= size:
            break
        header = os.pread(fd, 16, offset)
        if len(header) < 8:
            return offset + 8
        length = struct.unpack(">I", header[:4])[0]
        if length == 1:
            if len(header) < 16:
                return offset + 16
            length = struct.unpack(">Q", header[8:16])[0]
        elif length == 0:
            return size  # the last box runs to the end of the file
        if length < 8:
            raise ValueError("implausible box")
        offset += length
    return offset


# -- LibRaw ------------------------------------------------------------------------------------------------


def _decode_open_raw(path: Path, fd: int, max_side: int, draft: bool, max_pixels: int | None,
                     budget: MemoryBudget | None) -> DecodedImage:
    import rawpy

    with _libraw_errors(path, rawpy) as said, _native_name(path, fd) as name:
        with rawpy.imread(name) as raw:
            sizes = raw.sizes
            sensor = (sizes.width, sizes.height)
            _check_sensor(path, sizes)
            orientation = _FLIP_TO_EXIF.get(sizes.flip, 1)
            half_long = math.ceil(max(sensor) / 2)
            needed = min(max_side, half_long) if max_side > 0 else half_long
            preview_problem = None
            try:
                with _stderr_caught(said):  # LibRaw decodes some previews itself, and libjpeg may warn
                    thumb = raw.extract_thumb()
            except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
                thumb = None
            except rawpy.LibRawError as exc:
                thumb, preview_problem = None, _libraw_text(exc, said)
            if thumb is not None:
                try:
                    decoded = _preview(path, rawpy, thumb, sensor, orientation, needed, max_side, draft,
                                       max_pixels, budget)
                except ImageError as exc:
                    decoded, preview_problem = None, exc.reason
                if decoded is not None:
                    return decoded
            return _develop(path, raw, sizes, max_side, max_pixels, budget, said, preview_problem)


def _check_sensor(path: Path, sizes) -> None:
    w, h = sizes.raw_width, sizes.raw_height
    if w * h > DECODE_PIXEL_LIMIT:
        raise ImageError(path, f"RAW sensor data is {w}×{h} px ({_mp(w * h)}), above the {_mp(DECODE_PIXEL_LIMIT)} "
                               "decode limit (decompression-bomb guard); not decoded")


def _mp(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}".removesuffix(".0") + " MP"


def _upright_rule(orientation: int, sensor: tuple[int, int]):
    """The orientation to give a preview stored as (width, height): the RAW's, unless that would turn a preview
    already stored upright (see the module docstring)."""
    def orientation_of(stored: tuple[int, int]) -> int:
        if orientation in SWAPPING_ORIENTATIONS and stored[0] != stored[1] and sensor[0] != sensor[1]:
            if (stored[0] > stored[1]) != (sensor[0] > sensor[1]):
                return 1
        return orientation
    return orientation_of


def _preview(path: Path, rawpy, thumb, sensor, orientation: int, needed: int, max_side: int, draft: bool,
             max_pixels: int | None, budget: MemoryBudget | None) -> DecodedImage | None:
    """The preview decoded, or None when it is smaller than the scoring size."""
    rule = _upright_rule(orientation, sensor)
    if thumb.format == rawpy.ThumbFormat.JPEG:
        stored = _jpeg_size(thumb.data)
        if stored is None:
            raise ImageError(path, "embedded preview: not a readable JPEG")
        if max(stored) < needed:
            return None
        return decode_embedded(thumb.data, path, max_side, orientation=rule, source=SOURCE_PREVIEW, draft=draft,
                               max_pixels=max_pixels, budget=budget)
    pixels = thumb.data
    stored = (pixels.shape[1], pixels.shape[0])
    if max(stored) < needed:
        return None
    return decode_array(pixels, path, max_side, orientation=rule(stored), source=SOURCE_PREVIEW,
                        max_pixels=max_pixels)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size if im.format == "JPEG" else None
    except Exception:
        return None


def _develop(path: Path, raw, sizes, max_side: int, max_pixels: int | None, budget: MemoryBudget | None,
             said: list[str], preview_problem: str | None) -> DecodedImage:
    """LibRaw's half-size development, resized under the policy."""
    import rawpy

    raw_pixels = sizes.raw_width * sizes.raw_height
    half = (math.ceil(sizes.width / 2), math.ceil(sizes.height / 2))
    # LibRaw's unpacked mosaic (16 bits a photosite), its 4-channel 16-bit half-size image, the 8-bit result, and
    # the resize's rows and result (`policy.decode_cost`'s terms for the resize).
    cost = raw_pixels * 2 + half[0] * half[1] * (8 + 3 + 3) + max(half) * max(half) * 3
    held = _Held(budget)  # as the decoder holds its share: given back after a trim once the large buffers are freed
    if held.total is not None:
        check_cost(path, (sizes.raw_width, sizes.raw_height), cost, held.total)
        held.take(cost)
    with held:
        try:
            with _stderr_caught(said):
                rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_color=rawpy.ColorSpace.sRGB,
                                      output_bps=8)
        except rawpy.LibRawError as exc:
            reason = _libraw_text(exc, said)
            if preview_problem:
                reason += f" (and its preview: {preview_problem})"
            raise ImageError(path, f"cannot develop the RAW data: {reason}", damaged=_is_damage(exc, rawpy)) from None
        except MemoryError:
            raise ImageError(path, f"not enough memory to develop the RAW data (~{format_bytes(cost)})") from None
        decoded = decode_array(rgb, path, max_side, orientation=1, source=SOURCE_DEMOSAIC, max_pixels=max_pixels)
        del rgb
        return decoded


def _is_damage(exc: BaseException, rawpy) -> bool:
    return isinstance(exc, (rawpy.LibRawIOError, rawpy.LibRawDataError))


def _libraw_text(exc: BaseException, said: list[str]) -> str:
    text = exc.args[0] if exc.args else ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = one_line(text or type(exc).__name__)
    if said:
        text = f"{text}: {'; '.join(said)}"
    return text[0].lower() + text[1:] if text else text


@contextlib.contextmanager
def _libraw_errors(path: Path, rawpy) -> Iterator[list[str]]:
    """LibRaw's exceptions as one-line `ImageError`s; yields the list its stderr messages are gathered into."""
    said: list[str] = []
    try:
        yield said
    except ImageError:
        raise
    except rawpy.LibRawFileUnsupportedError:
        raise ImageError(path, "a RAW format or camera this LibRaw cannot read (unsupported, or not a RAW file)") from None
    except rawpy.LibRawTooBigError:
        raise ImageError(path, "RAW data too large for LibRaw's memory limit; not decoded") from None
    except (rawpy.LibRawUnsufficientMemoryError, MemoryError):
        raise ImageError(path, "not enough memory to read the RAW file") from None
    except (rawpy.LibRawIOError, rawpy.LibRawDataError) as exc:
        raise ImageError(path, f"truncated or damaged RAW file: {_libraw_text(exc, said)}", damaged=True) from None
    except rawpy.LibRawError as exc:
        raise ImageError(path, f"cannot read the RAW file: {_libraw_text(exc, said)}") from None
    except OSError as exc:
        raise ImageError(path, f"cannot read file ({one_line(exc.strerror or exc)})") from None


@contextlib.contextmanager
def _native_name(path: Path, fd: int) -> Iterator[str]:
    """A name LibRaw (which takes UTF-8 text) opens the very file open as ``fd`` by: its /proc/self/fd entry where
    there is one, else the path itself."""
    proc = f"/proc/self/fd/{fd}"
    if os.path.exists(proc):
        yield proc
        return
    name = os.fspath(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ImageError(path, "this system cannot hand a name that is not UTF-8 to LibRaw") from None
    yield name


_stderr_lock = threading.Lock()


@contextlib.contextmanager
def _stderr_caught(said: list[str]) -> Iterator[None]:
    """Run LibRaw with the process's stderr (fd 2) caught: LibRaw prints its data errors there itself ("<file>:
    Unexpected end of file"); they are gathered into ``said`` for the error row, and anything else written to
    stderr meanwhile (another thread's progress) is passed on afterwards, unchanged."""
    with _stderr_lock:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all: nothing to catch
            yield
            return
        with tempfile.TemporaryFile() as caught:
            os.dup2(caught.fileno(), 2)
            try:
                yield
            finally:
                try:
                    sys.stderr.flush()
                except (AttributeError, OSError, ValueError):
                    pass
                os.dup2(saved, 2)
                os.close(saved)
                caught.seek(0)
                _sort_out(caught.read(), said)


#: How the lines LibRaw (and the libjpeg inside it, decoding a preview) print begin, or what they contain.
_LIBRAW_LINE_STARTS = (b"/proc/self/fd/", b"Corrupt JPEG data", b"Premature end of JPEG", b"Invalid JPEG", b"Bogus ",
                       b"Unsupported JPEG", b"Improper call to JPEG")
_LIBRAW_LINE_PARTS = (b": Unexpected end of file", b": Corrupt data")


def _sort_out(text: bytes, said: list[str]) -> None:
    """LibRaw's lines into ``said``; the rest back to stderr."""
    passed_on = []
    for line in text.splitlines(keepends=True):
        if line.startswith(_LIBRAW_LINE_STARTS) or any(part in line for part in _LIBRAW_LINE_PARTS):
            message = line.decode("utf-8", "replace").strip()
            said.append(message.split(": ", 1)[-1] if ": " in message else message)
        else:
            passed_on.append(line)
    if passed_on:
        with contextlib.suppress(OSError):
            os.write(2, b"".join(passed_on))
