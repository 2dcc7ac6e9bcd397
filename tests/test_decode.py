"""decode_image: the preprocessing policy of SPEC §2 (orientation, modes, resizing, draft, limits, errors)."""

import io
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin, features

from qualiclip_cli.core.errors import ImageError
from qualiclip_cli.core.images import decode as decode_mod
from qualiclip_cli.core.images import policy as policy_mod
from qualiclip_cli.core.images.decode import DecodedImage, decode_image, resize_bicubic
from qualiclip_cli.core.images.policy import DECODE_PIXEL_LIMIT, MIN_SIDE, policy_identity, scaled_size


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # 512×512 RGB, natural content


def _reference(path) -> np.ndarray:
    """What the reference implementation feeds the model: Image.open(p).convert("RGB")."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _check_result(d: DecodedImage) -> None:
    assert isinstance(d.pixels, np.ndarray)
    assert d.pixels.dtype == np.uint8
    assert d.pixels.shape == (d.height, d.width, 3)
    assert d.pixels.flags["C_CONTIGUOUS"]
    assert d.pixels.flags["WRITEABLE"]  # the caller's own array, not a view of Pillow's buffer


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _assert_pillow_bicubic(resized: np.ndarray, source: np.ndarray) -> None:
    """``resized`` is Pillow's antialiased bicubic downscale of ``source`` up to fixed-point rounding (the
    policy's kernel is Pillow's, SPEC §2). Measured: at most 2 grey levels on a handful of pixels, mean
    0.002-0.10 (the larger the reduction, the smaller the difference)."""
    height, width = resized.shape[:2]
    pillow = np.asarray(Image.fromarray(source).resize((width, height), Image.Resampling.BICUBIC))
    diff = np.abs(resized.astype(np.int16) - pillow.astype(np.int16))
    assert diff.max() <= 2, diff.max()
    assert diff.mean() < 0.15, diff.mean()
    assert (diff == 2).sum() <= 0.001 * diff.size, (diff == 2).sum()


# -- policy --------------------------------------------------------------------------------------------


def test_policy_identity_is_short_and_stable():
    assert policy_identity(0, True) == "exif+native"
    assert policy_identity(0, False) == "exif+native"
    assert policy_identity(1024, True) == "exif+max_side=1024+bicubic-aa+draft+heifthumb"
    # DCT scaling of JPEGs and HEIC thumbnails from 4× down
    assert policy_identity(1024, False) == "exif+max_side=1024+bicubic-aa+dct4x+heifthumb"
    with pytest.raises(ValueError):
        policy_identity(-1)


def test_scaled_size():
    assert scaled_size(4000, 3000, 1024) == (1024, 768)
    assert scaled_size(3000, 4000, 1024) == (768, 1024)
    assert scaled_size(800, 600, 1024) == (800, 600)  # never upscale
    assert scaled_size(1024, 1024, 1024) == (1024, 1024)
    assert scaled_size(4000, 3000, 0) == (4000, 3000)  # native
    assert scaled_size(100000, 1, 1024) == (1024, 1)  # each side at least 1
    assert scaled_size(6000, 4000, 1024) == (1024, 683)  # 682.67 rounds to 683
    assert scaled_size(2049, 1025, 1024) == (1024, 512)  # 512.25 -> 512


# -- resolution policy ---------------------------------------------------------------------------------


def test_native_equals_reference_exactly(tmp_path, astronaut):
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("TIFF", "tif"), ("BMP", "bmp")):
        p = tmp_path / f"a.{ext}"
        Image.fromarray(astronaut).save(p, format=fmt)
        d = decode_image(p, 0)
        _check_result(d)
        assert np.array_equal(d.pixels, _reference(p)), fmt
        assert (d.width, d.height, d.original_width, d.original_height) == (512, 512, 512, 512)


def test_4000x3000_becomes_1024x768_and_draft_is_close(tmp_path, astronaut):
    p = tmp_path / "big.jpg"
    Image.fromarray(astronaut).resize((4000, 3000), Image.Resampling.BICUBIC).save(p, quality=90)
    full = decode_image(p, 1024, draft=False)
    fast = decode_image(p, 1024, draft=True)
    for d in (full, fast):
        _check_result(d)
        assert (d.width, d.height) == (1024, 768)
        assert (d.original_width, d.original_height) == (4000, 3000)
    # Full decode + bicubic resize of the reference pixels is what draft=False computes.
    assert np.array_equal(full.pixels, resize_bicubic(_reference(p), (1024, 768)))
    _assert_pillow_bicubic(full.pixels, _reference(p))
    assert _mad(full.pixels, fast.pixels) < 1.5


def test_never_upscale(tmp_path, astronaut):
    p = tmp_path / "small.png"
    Image.fromarray(astronaut).resize((300, 200)).save(p)
    d = decode_image(p, 1024)
    assert (d.width, d.height) == (300, 200)
    assert np.array_equal(d.pixels, _reference(p))


def test_resize_of_png_uses_bicubic(tmp_path, astronaut):
    p = tmp_path / "a.png"
    Image.fromarray(astronaut).save(p)
    d = decode_image(p, 200)
    assert (d.width, d.height) == (200, 200)
    assert np.array_equal(d.pixels, resize_bicubic(astronaut, (200, 200)))
    _assert_pillow_bicubic(d.pixels, astronaut)


@pytest.mark.parametrize(
    "source, target",
    [((4000, 3000), (1024, 768)), ((1600, 1200), (1024, 768)), ((513, 301), (200, 117)), ((300, 2000), (154, 1024))],
)
def test_resize_bicubic_is_pillows_kernel_up_to_rounding(astronaut, source, target):
    big = np.asarray(Image.fromarray(astronaut).resize(source, Image.Resampling.LANCZOS))
    out = resize_bicubic(big, target)
    assert out.shape == (target[1], target[0], 3) and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    _assert_pillow_bicubic(out, big)


def test_resize_bicubic_reads_pillows_read_only_buffer_silently(astronaut):
    source = np.asarray(Image.fromarray(astronaut))  # what decode_image hands it: not writable
    assert not source.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = resize_bicubic(source, (100, 100))
    assert out.shape == (100, 100, 3)
    assert np.array_equal(np.asarray(Image.fromarray(astronaut)), source)  # the source was only read


# -- EXIF orientation ----------------------------------------------------------------------------------


def test_png_orientation_6_is_rotated_clockwise(tmp_path, astronaut):
    a = astronaut[:, :400]  # 512 high, 400 wide: the rotation must swap the axes
    p = tmp_path / "o6.png"
    Image.fromarray(a).save(p, exif=_exif(6))
    d = decode_image(p, 0)
    assert np.array_equal(d.pixels, np.rot90(a, k=-1))  # orientation 6: rotate 90° clockwise to display
    assert (d.width, d.height, d.original_width, d.original_height) == (512, 400, 512, 400)


@pytest.mark.parametrize(
    "orientation,expected",
    [
        (1, lambda a: a),
        (2, lambda a: a[:, ::-1]),
        (3, lambda a: a[::-1, ::-1]),
        (4, lambda a: a[::-1]),
        (5, lambda a: np.transpose(a, (1, 0, 2))),
        (6, lambda a: np.rot90(a, k=-1)),
        (7, lambda a: np.transpose(a[::-1, ::-1], (1, 0, 2))),  # transverse
        (8, lambda a: np.rot90(a, k=1)),
    ],
)
def test_every_orientation(tmp_path, orientation, expected):
    rng = np.random.default_rng(orientation)
    a = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    p = tmp_path / "o.png"
    Image.fromarray(a).save(p, exif=_exif(orientation))
    assert np.array_equal(decode_image(p, 0).pixels, expected(a))


def test_jpeg_orientation_6(tmp_path, astronaut):
    a = astronaut[:, :400]
    p = tmp_path / "o6.jpg"
    Image.fromarray(a).save(p, quality=100, exif=_exif(6))
    d = decode_image(p, 0)
    # Exactly the reference's decoded data, rotated; and close to the original pixels.
    assert np.array_equal(d.pixels, np.rot90(_reference(p), k=-1))
    assert _mad(d.pixels, np.rot90(a, k=-1)) < 2.0


def test_jpeg_3000x4000_by_orientation_6_with_draft(tmp_path, astronaut, monkeypatch):
    p = tmp_path / "portrait.jpg"
    # Stored landscape 4000×3000, displayed portrait 3000×4000.
    Image.fromarray(astronaut).resize((4000, 3000), Image.Resampling.BICUBIC).save(p, quality=90, exif=_exif(6))
    requests = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real_draft(self, mode, size)
        requests.append((size, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    fast = decode_image(p, 1024, draft=True)
    assert requests and requests[0][0] == (1024, 768)  # requested in the stored (pre-orientation) frame
    drafted = requests[0][1]
    assert drafted[0] >= 1024 and drafted[1] >= 768 and drafted[0] < 4000  # DCT-scaled, still ≥ target
    requests.clear()
    full = decode_image(p, 1024, draft=False)
    assert not requests
    for d in (fast, full):
        assert (d.width, d.height) == (768, 1024)
        assert (d.original_width, d.original_height) == (3000, 4000)
    assert _mad(fast.pixels, full.pixels) < 1.5
    # The content is the rotated image (top-left of the displayed image = bottom-left of the stored one).
    oriented = np.ascontiguousarray(np.rot90(_reference(p), k=-1))
    assert np.array_equal(full.pixels, resize_bicubic(oriented, (768, 1024)))
    _assert_pillow_bicubic(full.pixels, oriented)


def test_native_jpeg_is_never_drafted(tmp_path, astronaut, monkeypatch):
    p = tmp_path / "a.jpg"
    Image.fromarray(astronaut).save(p)
    calls = []
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", lambda self, *a: calls.append(a))
    decode_image(p, 0, draft=True)
    decode_image(p, 1024, draft=True)  # 512 px already fits: nothing to reduce
    assert calls == []


# -- pixel modes ---------------------------------------------------------------------------------------


def _palette_image(size=(64, 48)) -> Image.Image:
    p = Image.new("P", size)
    p.putpalette([(i * 37) % 256 for i in range(768)])
    p.putdata([(x * 5 + y) % 16 for y in range(size[1]) for x in range(size[0])])
    return p


@pytest.mark.parametrize(
    "name",
    ["rgba", "la", "l", "one_bit", "palette", "palette_trns_bytes", "palette_trns_index", "cmyk_jpeg", "cmyk_tiff",
     "l_trns"],
)
def test_modes_match_reference_convert(tmp_path, astronaut, name):
    a = astronaut[:48, :64]
    if name == "rgba":
        im, fmt = Image.fromarray(np.dstack([a, np.arange(64 * 48, dtype=np.uint8).reshape(48, 64)])), "PNG"
    elif name == "la":
        im, fmt = Image.fromarray(a).convert("LA"), "PNG"
    elif name == "l":
        im, fmt = Image.fromarray(a).convert("L"), "PNG"
    elif name == "l_trns":
        im, fmt = Image.fromarray(a).convert("L"), "PNG"
        im.info["transparency"] = 0
    elif name == "one_bit":
        im, fmt = Image.fromarray(a).convert("1"), "PNG"
    elif name == "palette":
        im, fmt = _palette_image(), "PNG"
    elif name == "palette_trns_bytes":
        im, fmt = _palette_image(), "PNG"
        im.info["transparency"] = bytes([0, 128, 255, 7])
    elif name == "palette_trns_index":
        im, fmt = _palette_image(), "GIF"
        im.info["transparency"] = 3
    elif name == "cmyk_jpeg":
        im, fmt = Image.fromarray(a).convert("CMYK"), "JPEG"
    else:
        im, fmt = Image.fromarray(a).convert("CMYK"), "TIFF"
    p = tmp_path / f"img.{fmt.lower()}"
    kwargs = {"transparency": im.info["transparency"]} if "transparency" in im.info else {}
    im.save(p, format=fmt, **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = decode_image(p, 0)
    assert not [w for w in caught if "PIL" in w.filename or "Palette" in str(w.message)], caught
    _check_result(d)
    assert np.array_equal(d.pixels, _reference(p))


def test_16bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([0, 128, 129, 257, 32768, 40000, 65278, 65535], dtype=np.uint16)
    expected = np.array([0, 0, 1, 1, 128, 156, 254, 255], dtype=np.uint8)  # round(v / 257)
    a = np.tile(values, (32, 4))  # 32×32
    for mode, fmt in (("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF")):
        raw = a.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
        im = Image.frombytes(mode, (a.shape[1], a.shape[0]), raw)
        p = tmp_path / f"g16_{mode.replace(';', '')}.{fmt.lower()}"
        im.save(p, format=fmt)
        with Image.open(p) as check:
            assert check.mode.startswith("I;16")
        d = decode_image(p, 0)
        assert d.pixels.shape == (32, 32, 3)
        assert np.array_equal(d.pixels[0, :8, 0], expected), (mode, fmt)
        assert np.array_equal(d.pixels[..., 0], d.pixels[..., 2])
    # Pillow's own convert would clip: everything above 255 turns white.
    assert np.asarray(Image.fromarray(a).convert("RGB"))[0, 3, 0] == 255


def test_32bit_int_and_float_modes(tmp_path):
    ramp16 = (np.arange(40 * 40).reshape(40, 40) * 40).astype(np.int64)  # 0..63960: a 16-bit range
    p = tmp_path / "i32.tif"
    Image.fromarray(ramp16.astype(np.int32)).save(p)
    with Image.open(p) as check:
        assert check.mode == "I"
    d = decode_image(p, 0)
    assert np.array_equal(d.pixels[..., 0], ((ramp16 + 128) // 257).astype(np.uint8))

    frac = np.linspace(0, 1, 40 * 40, dtype=np.float32).reshape(40, 40)
    p = tmp_path / "f.tif"
    Image.fromarray(frac).save(p)
    with Image.open(p) as check:
        assert check.mode == "F"
    d = decode_image(p, 0)
    assert d.pixels[0, 0, 0] == 0 and d.pixels[-1, -1, 0] == 255
    assert np.array_equal(d.pixels[..., 0], np.rint(frac * 255).astype(np.uint8))

    signed = np.linspace(-5, 5, 40 * 40, dtype=np.float32).reshape(40, 40)  # no known range: stretched
    p = tmp_path / "s.tif"
    Image.fromarray(signed).save(p)
    d = decode_image(p, 0)
    assert d.pixels.min() == 0 and d.pixels.max() == 255


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    d = decode_image(p, 0)
    assert tuple(d.pixels[20, 20]) == (255, 0, 0)
    assert np.array_equal(d.pixels, _reference(p))


def test_animated_webp_first_frame(tmp_path):
    frames = [Image.new("RGB", (40, 40), c) for c in ((250, 0, 0), (0, 250, 0))]
    p = tmp_path / "anim.webp"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, lossless=True)
    d = decode_image(p, 0)
    assert tuple(d.pixels[20, 20]) == (250, 0, 0)


# -- HEIF / AVIF ---------------------------------------------------------------------------------------


def test_heic_round_trip(tmp_path, astronaut):
    import pillow_heif
    pillow_heif.register_heif_opener()
    a = astronaut[::2, ::2]  # 256×256 keeps the HEVC encoder quick
    p = tmp_path / "a.heic"
    Image.fromarray(a).save(p, format="HEIF", quality=95)
    assert decode_mod.heif_support() is None
    d = decode_image(p, 0)
    _check_result(d)
    assert (d.width, d.height) == (256, 256)
    assert _mad(d.pixels, a) < 4.0
    d = decode_image(p, 128)
    assert (d.width, d.height) == (128, 128)


def test_heic_orientation_is_not_applied_twice(tmp_path, astronaut):
    import pillow_heif
    pillow_heif.register_heif_opener()
    a = astronaut[::4, :400:4]  # 128 high, 100 wide
    p = tmp_path / "o6.heif"
    Image.fromarray(a).save(p, format="HEIF", quality=95, exif=_exif(6))
    d = decode_image(p, 0)
    assert (d.width, d.height) == (128, 100)
    assert _mad(d.pixels, np.rot90(a, k=-1)) < 4.0


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
def test_avif_round_trip(tmp_path, astronaut):
    a = astronaut[::2, ::2]
    p = tmp_path / "a.avif"
    Image.fromarray(a).save(p, format="AVIF", quality=90)
    d = decode_image(p, 0)
    assert (d.width, d.height) == (256, 256)
    assert _mad(d.pixels, a) < 4.0


# -- limits --------------------------------------------------------------------------------------------


def _write_bilevel_png(path, width: int, height: int) -> None:
    """A valid, all-black 1-bit PNG of any size, written without allocating it (compresses to ~KB)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    block = row * 256
    parts = [comp.compress(block) for _ in range(height // 256)]
    parts.append(comp.compress(row * (height % 256)))
    parts.append(comp.flush())
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", b"".join(parts)))
        f.write(chunk(b"IEND", b""))


def test_decompression_bomb_refused(tmp_path):
    p = tmp_path / "bomb.png"
    _write_bilevel_png(p, 20000, 20000)
    assert p.stat().st_size < 200_000
    assert 20000 * 20000 > DECODE_PIXEL_LIMIT
    for max_side in (0, 1024):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(ImageError) as info:
                decode_image(p, max_side)
        assert not caught
        reason = info.value.reason
        assert "20000×20000 px (400 MP)" in reason and "300 MP decode limit" in reason, reason
        assert "\n" not in reason


def test_max_pixels_and_jpeg_draft_allowance(tmp_path, astronaut, monkeypatch):
    p = tmp_path / "b.jpg"
    Image.fromarray(astronaut).resize((2000, 1500)).save(p)
    with pytest.raises(ImageError, match=r"2000×1500 px \(3 MP\), above the 1 MP limit set for this run"):
        decode_image(p, 0, max_pixels=1_000_000)
    with pytest.raises(ImageError, match="1 MP limit"):
        decode_image(p, 512, draft=False, max_pixels=1_000_000)
    d = decode_image(p, 512, draft=True, max_pixels=1_000_000)  # decoded at 1/2 scale: 1000×750
    assert (d.width, d.height) == (512, 384)
    # The hard limit follows the same rule: a JPEG is judged by its DCT-scaled size.
    monkeypatch.setattr(policy_mod, "DECODE_PIXEL_LIMIT", 500_000)
    assert decode_image(p, 256, draft=True).width == 256  # 1/4 scale: 500×375
    with pytest.raises(ImageError, match=r"1000×750 px \(0.8 MP\) even at 1/2 JPEG scale, above the 0.5 MP decode"):
        decode_image(p, 1000, draft=True)
    with pytest.raises(ImageError, match="decode limit"):
        decode_image(p, 256)  # without draft a 7.8× reduction keeps 2× for the resize: 1/2 scale, still above
    with pytest.raises(ImageError, match="decode limit"):
        decode_image(p, 0)


def test_tiny_image_refused(tmp_path):
    p = tmp_path / "tiny.png"
    Image.new("RGB", (20, 10), (10, 20, 30)).save(p)
    with pytest.raises(ImageError) as info:
        decode_image(p, 0)
    assert info.value.reason == f"image is 20×10 px; QualiCLIP needs at least {MIN_SIDE}×{MIN_SIDE}"
    p = tmp_path / "ten.jpg"
    Image.new("RGB", (10, 10)).save(p)
    with pytest.raises(ImageError, match="10×10 px"):
        decode_image(p, 1024)
    ok = tmp_path / "ok.png"
    Image.new("RGB", (32, 32)).save(ok)
    assert decode_image(ok, 0).width == 32


def test_downscaled_below_min_side_refused(tmp_path):
    p = tmp_path / "pano.png"
    Image.new("RGB", (4000, 60)).save(p)
    with pytest.raises(ImageError, match=r"1024×15 px after downscaling to a 1024 px long side \(original 4000×60\)"):
        decode_image(p, 1024)
    assert decode_image(p, 0).width == 4000


# -- failures ------------------------------------------------------------------------------------------


def test_failures_are_one_line_image_errors(tmp_path, astronaut):
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, format="PNG")
    png = buf.getvalue()

    cases = {
        "missing.jpg": (None, "no such file"),
        "empty.jpg": (b"", "empty file"),
        "text.jpg": (b"hello, this is not a picture\n" * 10, "not an image"),
        "trunc.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "trunc.png": (png[: len(png) // 2], "truncated"),
        "header_only.png": (png[:60], ""),
        "garbage.png": (png[:16] + bytes(range(256)) * 4, ""),
        "svg.svg": (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image"),
    }
    for name, (content, expected) in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        with pytest.raises(ImageError) as info:
            decode_image(p, 1024)
        err = info.value
        assert err.path == str(p)
        assert expected in err.reason, (name, err.reason)
        assert "\n" not in err.reason and err.reason
    with pytest.raises(ImageError, match="directory"):
        decode_image(tmp_path, 0)


def test_corrupt_exif_never_escapes_as_another_exception(tmp_path, astronaut):
    good = tmp_path / "good.jpg"
    Image.fromarray(astronaut).save(good)
    data = good.read_bytes()
    bad_payloads = [
        b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06",  # cut off
        b"Exif\x00\x00II\x2a\x00\xff\xff\xff\x7f" + bytes(40),  # IFD offset far outside
        b"Exif\x00\x00" + bytes(range(200)),  # not TIFF at all
    ]
    for i, payload in enumerate(bad_payloads):
        app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
        p = tmp_path / f"bad{i}.jpg"
        p.write_bytes(data[:2] + app1 + data[2:])
        try:
            d = decode_image(p, 256)
        except ImageError as exc:
            assert "\n" not in exc.reason
        else:
            _check_result(d)


def test_negative_max_side_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError):
        decode_image(tmp_path / "x.jpg", -1)


def test_module_does_not_import_torch():
    code = (
        "import sys; import qualiclip_cli.core.images.decode, qualiclip_cli.core.images.discovery; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
