"""Huge JPEGs: DCT-scaled decoding where the reduction is at least 4×, leaving at least 2× to the resize; the
policy identity names it; smaller reductions decode in full."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from qualiclip_cli.core.images.decode import decode_image
from qualiclip_cli.core.images.policy import dct_request, gpu_policy_identity, policy_identity

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
    assert policy_identity(1024).endswith("+dct4x") and "+dct4x" in gpu_policy_identity(1024)
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
