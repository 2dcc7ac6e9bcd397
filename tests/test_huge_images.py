"""Huge JPEGs: DCT-scaled decoding where the reduction is at least 4×, leaving at least 2× to the resize; huge
HEICs: the embedded thumbnail when it is a scaled copy at least the scored size; the policy identity names both;
smaller reductions decode in full."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from qualiclip_cli.core.images.decode import decode_image
from qualiclip_cli.core.images.policy import (
    dct_request,
    gpu_policy_identity,
    policy_identity,
    thumbnail_request,
)

from cli_support import natural_image


@pytest.fixture
def draft_calls(monkeypatch):
    calls = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real(self, mode, size)
        calls.append((size, self.size))  # what was asked, what libjpeg will decode
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return calls


def test_the_rule():
    assert dct_request((4000, 3000), (1024, 768), draft=False) is None  # 3.9×: decoded in full
    assert dct_request((4096, 3072), (1024, 768), draft=False) == (2048, 1536)  # 4×: half the reduction to DCT
    assert dct_request((10000, 7500), (1024, 768), draft=False) == (2048, 1536)
    assert dct_request((4000, 3000), (1024, 768), draft=True) == (1024, 768)  # draft: covers the target only
    assert dct_request((1024, 768), (1024, 768), draft=True) is None
    assert policy_identity(1024).endswith("+dct4x+heifthumb") and "+dct4x+heifthumb" in gpu_policy_identity(1024)
    assert policy_identity(1024, draft=True).endswith("+draft+heifthumb")
    assert policy_identity(0) == "exif+native"  # the reference's mode never scales


def test_a_large_reduction_decodes_at_a_dct_scale_close_to_the_full_path(tmp_path, draft_calls, monkeypatch):
    path = tmp_path / "pano.jpg"
    natural_image("astronaut", (2100, 1575)).save(path, quality=92)  # 2100 → 512: 4.1×
    scaled = decode_image(path, 512)
    assert draft_calls == [((1024, 768), (1050, 788))]  # 1/2 scale: still ≥ 2× the target
    assert (scaled.width, scaled.height, scaled.original_width, scaled.original_height) == (512, 384, 2100, 1575)
    monkeypatch.setattr("qualiclip_cli.core.images.decode.dct_request", lambda *a: None)  # the full path
    full = decode_image(path, 512).pixels.astype(np.int16)
    monkeypatch.undo()
    drafted = decode_image(path, 512, draft=True).pixels.astype(np.int16)  # --jpeg-draft: the whole way by DCT
    diff = np.abs(scaled.pixels.astype(np.int16) - full)
    # Measured on this picture: mean 1.02 grey levels (0.57-1.05 on three), --jpeg-draft 1.31; a wrong scale or
    # orientation would be tens of levels off.
    assert 0 < diff.mean() < 2.0, diff.mean()
    assert diff.mean() < np.abs(drafted - full).mean()  # leaving 2× to the resize is closer than --jpeg-draft
    assert abs(float((scaled.pixels - full).mean())) < 0.2  # no brightness shift


def test_small_reductions_and_other_formats_decode_in_full(tmp_path, draft_calls):
    natural_image("coffee", (2000, 1500)).save(tmp_path / "a.jpg", quality=90)  # 3.9×
    natural_image("coffee", (2100, 1575)).save(tmp_path / "a.png")
    assert decode_image(tmp_path / "a.jpg", 512).width == 512
    assert decode_image(tmp_path / "a.png", 512).width == 512
    assert draft_calls == []


def test_rotated_large_jpeg_asks_in_the_stored_frame(tmp_path, draft_calls):
    path = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    natural_image("chelsea", (2100, 1575)).save(path, quality=90, exif=exif.tobytes())
    decoded = decode_image(path, 512)
    assert (decoded.width, decoded.height) == (384, 512)
    assert draft_calls[0][0] == (1024, 768)


# -- HEIC: the embedded thumbnail ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def heics(tmp_path_factory):
    """Small HEICs (x265's fastest preset keeps the encoder around a second): 640×480 with a 320-px thumbnail,
    the same without one, and one whose only thumbnail covers a 128-px score but not twice over."""
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    folder = tmp_path_factory.mktemp("heic")
    picture = natural_image("astronaut", (640, 480))
    fast = {"quality": 92, "enc_params": {"preset": "ultrafast"}}
    picture.save(folder / "thumb.heic", thumbnails=[320], **fast)
    picture.save(folder / "none.heic", **fast)
    picture.save(folder / "small.heic", thumbnails=[160], **fast)
    return folder


@pytest.fixture
def heif_drafts(monkeypatch):
    from pillow_heif import as_plugin

    calls = []
    real = as_plugin.HeifImageFile.draft

    def spy(self, mode, size):
        result = real(self, mode, size)
        calls.append((size, None if result is None else result[1][2:]))  # asked, the thumbnail taken
        return result

    monkeypatch.setattr(as_plugin.HeifImageFile, "draft", spy)
    return calls


def _full_path(path, max_side, monkeypatch):
    with monkeypatch.context() as patch:  # undoes only this patch, not the spy
        patch.setattr("qualiclip_cli.core.images.decode.thumbnail_request", lambda *a: None)
        return decode_image(path, max_side)


def test_heic_thumbnail_rule():
    assert thumbnail_request((4000, 3000), (1024, 768)) is None  # 3.9×: the image itself
    assert thumbnail_request((16384, 12288), (1024, 768)) == (2048, 1536)  # 200 MP: a thumbnail ≥ 2× the target
    assert thumbnail_request((1024, 768), (1024, 768)) is None


def test_a_large_heic_reduction_decodes_the_thumbnail(heics, heif_drafts, monkeypatch):
    scaled = decode_image(heics / "thumb.heic", 128)  # 5×
    assert heif_drafts == [((256, 192), (320, 240))]  # the thumbnail was taken
    # Scored at the image's own size, and named by the image's size, not the thumbnail's.
    assert (scaled.width, scaled.height, scaled.original_width, scaled.original_height) == (128, 96, 640, 480)
    full = _full_path(heics / "thumb.heic", 128, monkeypatch).pixels.astype(np.int16)
    diff = np.abs(scaled.pixels.astype(np.int16) - full)
    # libheif subsamples its thumbnails (aliased): measured 2.45 grey levels on average here, 7.7 had the 160-px
    # one been used as it is; 0 would mean the thumbnail was not decoded at all.
    assert 0 < diff.mean() < 4.0, diff.mean()
    assert abs(float((scaled.pixels - full).mean())) < 1.0  # no brightness shift


def test_heic_without_a_large_enough_thumbnail_or_reduction_decodes_the_image(heics, heif_drafts, monkeypatch):
    for name in ("none.heic", "small.heic"):
        decoded = decode_image(heics / name, 128)
        assert np.array_equal(decoded.pixels, _full_path(heics / name, 128, monkeypatch).pixels), name
    assert [taken for _, taken in heif_drafts] == [None, None]  # asked, and nothing was a fit
    heif_drafts.clear()
    assert decode_image(heics / "thumb.heic", 200).width == 200  # 3.2×: not asked at all
    assert decode_image(heics / "thumb.heic", 0).width == 640  # the reference's native size
    assert heif_drafts == []
