"""RAW files: the embedded preview first (same JPEG path, orientation), the half-size development as a fallback,
and every kind of bad RAW as a one-line error. The DNGs are written by the tests (tests/dng_support.py)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from skimage import data

from qualiclip_cli.core.errors import ImageError
from qualiclip_cli.core.images import raw as raw_module
from qualiclip_cli.core.images.decode import decode_image
from qualiclip_cli.core.images.raw import decode_raw

from dng_support import upright, write_dng

#: The sensor's picture: a real photo, landscape (512×384), so every turn shows in the shape and the content.
SENSOR = np.ascontiguousarray(data.astronaut()[:384, :512])


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _half(pixels: np.ndarray) -> np.ndarray:
    """The picture at the half-size development's resolution (one pixel per 2×2 Bayer cell)."""
    h, w = pixels.shape[:2]
    return pixels.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_preview_is_scored_upright(tmp_path, orientation):
    path = write_dng(tmp_path / "IMG_1.dng", SENSOR, preview=SENSOR, orientation=orientation)
    decoded = decode_raw(path, 1024)
    assert decoded.source == "raw-preview"
    want = upright(SENSOR, orientation)
    assert decoded.pixels.shape == want.shape  # 6 and 8 turn the landscape sensor frame into a portrait
    assert _mad(decoded.pixels, want) < 3  # only the preview's JPEG compression differs
    for wrong in {1, 3, 6, 8} - {orientation}:  # the control: any other turn is far off
        other = upright(SENSOR, wrong)
        assert other.shape != want.shape or _mad(decoded.pixels, other) > 20


def test_preview_goes_through_the_jpeg_path(tmp_path):
    """The preview decodes exactly as the same JPEG written as a file does (same resize, same draft, same limits)."""
    import rawpy

    path = write_dng(tmp_path / "IMG_1.dng", SENSOR, preview=SENSOR, orientation=6)
    with rawpy.imread(str(path)) as raw:
        jpeg = raw.extract_thumb().data
    (tmp_path / "preview.jpg").write_bytes(jpeg)
    for max_side, draft in ((200, False), (200, True), (0, False)):
        got = decode_raw(path, max_side, draft=draft)
        want = decode_image(tmp_path / "preview.jpg", max_side, draft=draft)
        assert (got.width, got.height, got.original_width, got.original_height) == (
            want.width, want.height, want.original_width, want.original_height)
        assert np.array_equal(got.pixels, want.pixels)
    assert (got.width, got.height) == (384, 512)  # native: the preview's own size, upright


def test_a_preview_stored_upright_is_not_turned_twice(tmp_path):
    stored_upright = np.ascontiguousarray(upright(SENSOR, 6))  # portrait preview of a RAW whose orientation is 6
    path = write_dng(tmp_path / "IMG_1.dng", SENSOR, preview=stored_upright, orientation=6)
    decoded = decode_raw(path, 1024)
    assert decoded.source == "raw-preview"
    assert decoded.pixels.shape == stored_upright.shape
    assert _mad(decoded.pixels, stored_upright) < 3


@pytest.mark.parametrize("orientation", [1, 6])
def test_tiny_thumbnail_falls_back_to_the_half_size_development(tmp_path, orientation):
    thumbnail = np.ascontiguousarray(SENSOR[::8, ::8])  # 64×48
    path = write_dng(tmp_path / "IMG_1.dng", SENSOR, thumbnail=thumbnail, orientation=orientation)
    decoded = decode_raw(path, 1024)
    assert decoded.source == "raw-demosaic"
    want = upright(_half(SENSOR), orientation)
    assert decoded.pixels.shape == want.shape  # 256×192 turned: the development comes out upright
    assert np.corrcoef(decoded.pixels.ravel(), want.ravel())[0, 1] > 0.95  # the photo, not another turn or noise


def test_a_bitmap_thumbnail_large_enough_is_used_like_decoded_pixels(tmp_path):
    thumbnail = np.ascontiguousarray(SENSOR[::4, ::4])  # 128×96, uncompressed RGB
    path = write_dng(tmp_path / "IMG_1.dng", SENSOR, thumbnail=thumbnail, orientation=8)
    decoded = decode_raw(path, 128)
    assert decoded.source == "raw-preview"
    assert np.array_equal(decoded.pixels, upright(thumbnail, 8))  # exact: no JPEG, no resize at this size
    assert decode_raw(path, 64).pixels.shape == (64, 48, 3)


def test_no_preview_at_all_is_developed(tmp_path):
    path = write_dng(tmp_path / "IMG_1.dng", SENSOR, orientation=8)
    decoded = decode_raw(path, 1024)
    assert decoded.source == "raw-demosaic" and decoded.pixels.shape == (256, 192, 3)
    assert np.corrcoef(decoded.pixels.ravel(), upright(_half(SENSOR), 8).ravel())[0, 1] > 0.95


def test_a_preview_smaller_than_the_scoring_size_is_developed_when_that_gives_more(tmp_path):
    big = np.ascontiguousarray(np.tile(SENSOR, (2, 2, 1)))  # 1024×768 sensor: development 512×384
    path = write_dng(tmp_path / "IMG_1.dng", big, preview=np.ascontiguousarray(big[::4, ::4]))  # 256×192 preview
    assert decode_raw(path, 256).source == "raw-preview"  # the preview covers the scoring size
    developed = decode_raw(path, 1024)
    assert developed.source == "raw-demosaic" and (developed.width, developed.height) == (512, 384)
    assert decode_raw(path, 0).source == "raw-demosaic"  # native: the development's size is what counts


def test_non_utf8_raw_name(tmp_path):
    name = os.fsdecode(b"caf\xe9.dng")
    path = write_dng(tmp_path / name, SENSOR, preview=SENSOR)
    assert decode_raw(path, 256).source == "raw-preview"


# -- bad input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.999, 0.5, 0.05, 0.001])
def test_truncated_raw_is_a_damaged_file_even_when_its_preview_survives(tmp_path, keep):
    whole = write_dng(tmp_path / "whole.dng", SENSOR, preview=SENSOR).read_bytes()
    cut = tmp_path / "cut.dng"
    cut.write_bytes(whole[:int(len(whole) * keep)])
    with pytest.raises(ImageError, match=r"truncated RAW file: it has [\d,]+ bytes, its own structure says") as err:
        decode_raw(cut, 256)
    assert err.value.damaged and "\n" not in err.value.reason


def test_a_text_file_named_nef_and_a_jpeg_named_cr2(tmp_path):
    text = tmp_path / "DSC_1.NEF"
    text.write_text("not a raw file\n" * 4)
    with pytest.raises(ImageError, match=r"not a RAW file \(.*it looks like text\)") as err:
        decode_raw(text, 256)
    assert err.value.damaged
    from PIL import Image

    Image.fromarray(SENSOR).save(tmp_path / "IMG_1.cr2", "JPEG")
    with pytest.raises(ImageError, match=r"not a RAW file \(.*it is a JPEG\)"):
        decode_raw(tmp_path / "IMG_1.cr2", 256)
    (tmp_path / "empty.arw").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        decode_raw(tmp_path / "empty.arw", 256)


def test_a_raw_format_libraw_does_not_read(tmp_path):
    """A TIFF header with nothing LibRaw recognises: unsupported (maybe a camera newer than LibRaw), not damaged."""
    path = tmp_path / "IMG_1.srw"
    path.write_bytes(b"II*\x00\x08\x00\x00\x00" + b"\x00\x00" + b"\x00\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(ImageError, match="a RAW format or camera this LibRaw cannot read") as err:
        decode_raw(path, 256)
    assert not err.value.damaged


def test_a_raw_over_the_pixel_limit(tmp_path, monkeypatch):
    path = write_dng(tmp_path / "IMG_1.dng", SENSOR, preview=SENSOR)
    monkeypatch.setattr(raw_module, "DECODE_PIXEL_LIMIT", 100_000)  # the sensor is 196,608 px
    with pytest.raises(ImageError) as err:
        decode_raw(path, 256)
    assert err.value.reason == ("RAW sensor data is 512×384 px (0.2 MP), above the 0.1 MP decode limit "
                                "(decompression-bomb guard); not decoded")
    assert not err.value.damaged


def test_libraw_messages_become_the_reason_and_never_reach_stderr(tmp_path, monkeypatch, capfd):
    """With the structure check out of the way, LibRaw meets the cut itself and prints "Unexpected end of file" to
    the process's stderr: that line is caught and becomes the reason; nothing reaches stderr."""
    whole = write_dng(tmp_path / "whole.dng", SENSOR).read_bytes()  # no preview: the development reads the cut
    cut = tmp_path / "cut.dng"
    cut.write_bytes(whole[:len(whole) - 50_000])
    monkeypatch.setattr(raw_module, "_check_structure", lambda *a: None)
    with pytest.raises(ImageError) as err:
        decode_raw(cut, 256)
    assert "unexpected end of file" in err.value.reason.lower() and err.value.damaged
    out, errs = capfd.readouterr()
    assert errs == "" and out == ""


def test_without_rawpy_each_raw_is_one_clear_line(tmp_path, monkeypatch):
    path = write_dng(tmp_path / "IMG_1.dng", SENSOR, preview=SENSOR)
    monkeypatch.setitem(sys.modules, "rawpy", None)  # import rawpy now raises ImportError
    monkeypatch.setattr(raw_module, "_SUPPORT_CHECKED", False)  # both restored after the test: the next one
    monkeypatch.setattr(raw_module, "_SUPPORT", None)  # finds rawpy again
    with pytest.raises(ImageError, match=r"RAW files need rawpy, which is not installed here \(pip install rawpy") as err:
        decode_raw(path, 256)
    assert not err.value.damaged  # a good photo this installation cannot read


def _with_preview_bytes(path, change) -> None:
    """Rewrite the JPEG preview inside a DNG in place (same length): ``change(bytearray)`` edits it."""
    data = bytearray(path.read_bytes())
    start = data.find(b"\xff\xd8\xff")
    end = data.find(b"\xff\xd9", start) + 2
    jpeg = bytearray(data[start:end])
    change(jpeg)
    data[start:end] = jpeg
    path.write_bytes(bytes(data))


def test_an_unreadable_preview_falls_back_to_the_development(tmp_path, capfd):
    path = write_dng(tmp_path / "IMG_1.dng", SENSOR, preview=SENSOR)
    _with_preview_bytes(path, lambda jpeg: jpeg.__setitem__(slice(2, len(jpeg)), bytes(len(jpeg) - 2)))
    decoded = decode_raw(path, 256)
    assert decoded.source == "raw-demosaic" and decoded.pixels.shape == (192, 256, 3)
    assert capfd.readouterr().err == ""


def test_libjpeg_warnings_inside_libraw_never_reach_stderr(tmp_path, capfd):
    """A preview with a damaged marker: the libjpeg inside LibRaw warns on stderr; the warning is caught."""
    path = write_dng(tmp_path / "IMG_1.dng", SENSOR, preview=SENSOR)
    _with_preview_bytes(path, lambda jpeg: jpeg.__setitem__(slice(0, 3), b"\0\0\0"))
    decode_raw(path, 256)
    assert capfd.readouterr().err == ""
    # the control: the same file read by LibRaw without the catching prints the warning
    import subprocess

    probe = "import rawpy, sys; rawpy.imread(sys.argv[1]).extract_thumb()"
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60)
    assert "Corrupt JPEG data" in out.stderr
