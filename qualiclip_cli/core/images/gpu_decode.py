"""JPEG decoding on the GPU (batched nvjpeg through torchvision), with the CPU decoder's policy (`policy`).

Two steps, so that file reading runs in threads and decoding in batches:

1. `read_jpeg_bytes(path)` (any thread): read the file into a CPU uint8 tensor and inspect its header
   without decoding pixels (Pillow's lazy open: size, EXIF orientation exactly as `decode.decode_image`
   reads it, plus a scan of the JPEG markers). Files this decoder does not take (not a JPEG, CMYK,
   progressive, arithmetic-coded, 12-bit, unusual chroma sampling, stored RGB, no end-of-image marker,
   above the pixel limits, unreadable) give a `Fallback`: the caller decodes them with
   `decode.decode_image`, which also words any error exactly like the CPU path.
2. `decode_resize_batch(items, max_side, device)` (one thread per device): decode the batch with one
   ``torchvision.io.decode_jpeg(list, device=...)`` call, apply the EXIF orientation on the tensor, and
   downscale (never upscale) to ``decode.scaled_size`` of the oriented size with antialiased bicubic
   (``F.interpolate(..., mode="bicubic", antialias=True)``, Pillow's kernel, a = -0.5) on float, then round
   to uint8. Returns (3, h, w) uint8 tensors on ``device``, or an `ImageError` per image that failed;
   one corrupt file does not fail the others.

The pixels differ slightly from the Pillow path (another IDCT / chroma upsampling; no DCT-scaled "draft"
decode; resize rounding), so scores are cached under `gpu_policy_identity`, not `decode.policy_identity`.
Works with ``device="cpu"`` too (torchvision's libjpeg-turbo), which is how the tests run without a GPU.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Union

import torch
import torch.nn.functional as F

from qualiclip_cli.core.errors import ImageError, one_line
from qualiclip_cli.core.images.decode import exif_orientation, setup_pillow
from qualiclip_cli.core.images.policy import (
    DECODE_PIXEL_LIMIT,
    SWAPPING_ORIENTATIONS,
    check_min_side,
    gpu_policy_identity,
    scaled_size,
)

__all__ = [
    "Fallback",
    "GpuDecodeError",
    "JpegBytes",
    "decode_resize_batch",
    "gpu_policy_identity",
    "orient",
    "read_jpeg_bytes",
]

# Luma sampling factors (h, v) nvjpeg decodes (4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1, 4:1:0) with chroma at 1×1.
_LUMA_SAMPLING = frozenset({(1, 1), (2, 1), (2, 2), (1, 2), (4, 1), (4, 2)})
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG and DAC are not frames
_TAIL = 4096  # the end-of-image marker must be within this many bytes of the end of the file
_DEPRECATION = r"The image decoding and encoding capabilities of TorchVision"
_CPP_PREFIX = re.compile(r"^\s*\w+, \S+\.(?:cpp|cu|cuh|h|hpp):\d+, ")


class JpegBytes(NamedTuple):
    """A JPEG this decoder takes: its bytes, EXIF orientation (1..8) and stored (pre-orientation) size."""

    data: torch.Tensor  # uint8, 1-D, CPU
    orientation: int
    size: tuple[int, int]  # (width, height) as stored, before orientation


@dataclass(frozen=True)
class Fallback:
    """Not for this decoder: decode the file with `decode.decode_image` instead. ``reason`` is for logs."""

    reason: str


class GpuDecodeError(ImageError):
    """This decoder rejected the JPEG data. nvjpeg is stricter than libjpeg on some files (it reports valid
    but unusual ones as "not supported"): decode the file with `decode.decode_image` before reporting it."""


# -- reading (threads) ---------------------------------------------------------------------------------


def _header_end(buf: bytes | bytearray | memoryview) -> int | str:
    """Scan the markers up to the first SOS. Returns the end of the header when nvjpeg's baseline path takes
    the frame, else why not."""
    n = len(buf)
    if n < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return "no JPEG start-of-image marker"
    pos = 2
    frame = None
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return "malformed JPEG marker sequence"
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers
            pos += 2
            continue
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if length < 2 or pos + 2 + length > n:
            return "malformed JPEG segment length"
        seg = buf[pos + 4 : pos + 2 + length]
        if marker in _SOF_MARKERS:
            if frame is not None:
                return "more than one JPEG frame header"
            if marker not in (0xC0, 0xC1):
                kind = {0xC2: "progressive", 0xC3: "lossless"}.get(marker, f"SOF{marker - 0xC0}")
                return f"{kind} JPEG"
            if len(seg) < 6:
                return "malformed JPEG frame header"
            precision, ncomp = seg[0], seg[5]
            if precision != 8:
                return f"{precision}-bit JPEG"
            if ncomp not in (1, 3) or len(seg) < 6 + 3 * ncomp:
                return f"{ncomp}-component JPEG"
            sampling = [((seg[7 + 3 * i] >> 4), (seg[7 + 3 * i] & 15)) for i in range(ncomp)]
            if ncomp == 3 and (sampling[0] not in _LUMA_SAMPLING or sampling[1] != (1, 1) or sampling[2] != (1, 1)):
                return f"chroma sampling {sampling} not handled by nvjpeg"
            frame = marker
        elif marker == 0xEE and bytes(seg[:5]) == b"Adobe" and len(seg) >= 12 and seg[11] == 0:
            return "Adobe JPEG without YCbCr transform (stored RGB/CMYK)"
        elif marker == 0xDA:  # start of scan: the header is over
            return pos + 2 + length if frame is not None else "no JPEG frame header before the scan"
        pos += 2 + length
    return "truncated JPEG header"


def read_jpeg_bytes(path: str | os.PathLike[str], max_pixels: int | None = None) -> JpegBytes | Fallback:
    """Read ``path`` for `decode_resize_batch`, or say why the CPU decoder should take it.

    Never raises for a problem with the file (missing, unreadable, not a JPEG, damaged header): those are a
    `Fallback`, and `decode.decode_image` then gives the canonical error. ``max_pixels`` (the caller's native
    limit) and `decode.DECODE_PIXEL_LIMIT` also send a file to the CPU decoder, which may still decode it
    at a DCT scale or refuse it with its own message.
    """
    setup_pillow()
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            # Uninitialised (no zero-fill) with one spare byte: a file that grew is noticed, not cut short.
            data = torch.empty(size + 1, dtype=torch.uint8)
            buf = data.numpy()
            got = f.readinto(buf)
    except (OSError, ValueError) as exc:
        return Fallback(f"cannot read: {one_line(exc)}")
    if got != size:
        return Fallback("file size changed while it was read")
    if size == 0:
        return Fallback("empty file")
    view = memoryview(buf)[:size]  # type: ignore[arg-type]
    header_end = _header_end(view)
    if isinstance(header_end, str):
        return Fallback(header_end)
    if b"\xff\xd9" not in view[-_TAIL:].tobytes():
        return Fallback("no end-of-image marker at the end of the file (truncated?)")
    try:
        from PIL import Image, JpegImagePlugin

        # Lazy open of the header alone (no copy of the scan data): size and EXIF, no pixels.
        with Image.open(io.BytesIO(view[:header_end])) as im:
            if not isinstance(im, JpegImagePlugin.JpegImageFile):  # JPEG or MPO (camera JPEG with previews)
                return Fallback(f"not a JPEG ({im.format})")
            if im.mode not in ("RGB", "L"):
                return Fallback(f"JPEG in mode {im.mode}")
            width, height = im.size
            orientation = exif_orientation(im)
    except Exception as exc:  # anything odd in the header: let the CPU decoder judge the file
        return Fallback(f"header: {type(exc).__name__}: {one_line(exc)}")
    if orientation not in range(1, 9):
        orientation = 1  # exif_transpose ignores values outside 1..8 as well
    pixels = width * height
    if pixels > DECODE_PIXEL_LIMIT or (max_pixels is not None and pixels > max_pixels):
        return Fallback(f"{width}×{height} px is above the decode limit")
    return JpegBytes(data[:size], orientation, (width, height))


# -- decoding (one thread per device) ------------------------------------------------------------------


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to a (..., H, W) tensor, as `PIL.ImageOps.exif_transpose` does. May be a view."""
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return image.rot90(-1, (-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return image.rot90(1, (-2, -1))
    return image


def quiet_torchvision_io() -> None:
    """torchvision ≥ 0.29 warns on every decode_jpeg call that its image I/O is deprecated; not for users.

    Called before every batch: `filterwarnings` moves an existing identical filter to the front, so ours
    wins even over a catch-all filter installed after the first call (a caller's `simplefilter`)."""
    warnings.filterwarnings("ignore", message=_DEPRECATION, category=UserWarning)
    warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)


_NVJPEG_STATUS = {
    1: "not initialized", 2: "invalid parameter", 3: "bad JPEG", 4: "JPEG not supported",
    5: "allocator failure", 6: "execution failed", 7: "architecture mismatch", 8: "internal error",
    9: "implementation not supported",
}


def _error_text(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    text = _CPP_PREFIX.sub("", lines[0]) if lines else type(exc).__name__
    text = text.removeprefix("Error while decoding JPEG images: ")
    status = re.fullmatch(r"(Failed to .*): (\d+)", text.strip())
    if status and int(status[2]) in _NVJPEG_STATUS:  # torchvision's CUDA errors end in a bare nvjpeg status
        text = f"nvjpeg: {status[1]} ({_NVJPEG_STATUS[int(status[2])]})"
    return one_line(text)


def _decode(datas: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    if device.type == "cuda":  # page-locked copies of the (compressed, small) data: the upload to nvjpeg is a DMA
        datas = [d if d.is_pinned() else d.pin_memory() for d in datas]
    out = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, H, W) uint8 → (3, h, w) uint8, antialiased bicubic on float, rounded."""
    x = image.unsqueeze(0).float()
    y = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).squeeze(0)


def decode_resize_batch(
    items: Sequence[tuple[Union[str, os.PathLike[str]], JpegBytes]],
    max_side: int,
    device: Union[str, torch.device] = "cuda",
) -> list[Union[torch.Tensor, ImageError]]:
    """Decode ``(path, JpegBytes)`` items on ``device`` and bring each to its scored size.

    One result per item, in order: a contiguous (3, h, w) uint8 tensor on ``device`` with
    (w, h) == ``scaled_size(*oriented_size, max_side)`` (``max_side == 0``: native size), or an
    `ImageError(path, one_line_reason)`: scored side below `MIN_SIDE` (checked before decoding, same
    message as the CPU decoder: final), or a `GpuDecodeError` (an ImageError) for JPEG data the decoder
    rejects (retry those with `decode.decode_image`, which decodes what libjpeg takes and words the error
    otherwise). If the batched call fails, the images are decoded one by one so that only the bad ones fail.
    """
    if max_side < 0:
        raise ValueError(f"max_side must be >= 0, got {max_side}")
    device = torch.device(device)
    quiet_torchvision_io()
    results: list[Union[torch.Tensor, ImageError, None]] = [None] * len(items)
    todo: list[int] = []
    targets: dict[int, tuple[int, int]] = {}  # index → (h, w) in the stored frame
    for i, (path, jpeg) in enumerate(items):
        w, h = jpeg.size
        swap = jpeg.orientation in SWAPPING_ORIENTATIONS
        original = (h, w) if swap else (w, h)
        target = scaled_size(*original, max_side)
        try:
            check_min_side(Path(path), target, original, max_side)
        except ImageError as exc:
            results[i] = exc
            continue
        tw, th = target
        targets[i] = (tw, th) if swap else (th, tw)
        todo.append(i)

    decoded: dict[int, Union[torch.Tensor, ImageError]] = {}
    if todo:
        try:
            for i, image in zip(todo, _decode([items[i][1].data for i in todo], device)):
                decoded[i] = image
        except Exception:  # one bad file fails the whole call: find it (them) one by one
            for i in todo:
                try:
                    decoded[i] = _decode([items[i][1].data], device)[0]
                except Exception as exc:
                    decoded[i] = GpuDecodeError(items[i][0], f"cannot decode image data: {_error_text(exc)}")

    for i in todo:
        image = decoded.pop(i)  # drop our reference early: full-size frames are large
        if isinstance(image, ImageError):
            results[i] = image
            continue
        path, jpeg = items[i]
        try:
            if image.dim() != 3 or image.shape[0] != 3 or (image.shape[2], image.shape[1]) != jpeg.size:
                raise ImageError(path, f"unexpected decoded shape {tuple(image.shape)} for {jpeg.size[0]}×{jpeg.size[1]} px")
            if tuple(image.shape[1:]) != targets[i]:
                image = _resize(image, targets[i])
            results[i] = orient(image, jpeg.orientation).contiguous()
        except ImageError as exc:
            results[i] = exc
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            results[i] = ImageError(path, f"cannot resize decoded image: {_error_text(exc)}")
        del image
    return results  # type: ignore[return-value]
