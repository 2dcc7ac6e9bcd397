"""Which scoring failures are broken files (`damaged`): what `cull --unreadable` may quarantine, and nothing else."""

import io

import numpy as np
import pytest
from PIL import Image

from qualiclip_cli.core.errors import ImageError
from qualiclip_cli.core.images.decode import decode_image


def _encoded(fmt: str) -> bytes:
    pixels = (np.arange(96 * 72 * 3, dtype=np.uint32).reshape(72, 96, 3) * 7 % 251).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("name, content", [
    ("empty.jpg", b""),
    ("text.jpg", b"hello, this is not a picture\n" * 10),
    ("trunc.jpg", "jpeg-half"),
    ("trunc.png", "png-half"),
    ("garbage.png", "png-garbage"),
])
def test_broken_files_are_damaged(tmp_path, name, content):
    if content == "jpeg-half":
        content = _encoded("JPEG")[: len(_encoded("JPEG")) // 2]
    elif content == "png-half":
        content = _encoded("PNG")[: len(_encoded("PNG")) // 2]
    elif content == "png-garbage":
        content = _encoded("PNG")[:16] + bytes(range(256)) * 4
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError) as info:
        decode_image(path, 1024)
    assert info.value.damaged, info.value.reason


def test_files_that_are_not_broken_are_not_damaged(tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (8, 8)).save(tiny)
    big = tmp_path / "big.png"
    Image.new("RGB", (400, 400)).save(big)
    cases = [(tmp_path / "missing.jpg", {}), (tmp_path, {}), (tiny, {}), (big, {"max_pixels": 1000})]
    for path, kwargs in cases:
        with pytest.raises(ImageError) as info:
            decode_image(path, 0, **kwargs)
        assert not info.value.damaged, (path.name, info.value.reason)


def test_an_io_error_reading_the_file_is_not_damage(tmp_path, monkeypatch):
    import errno

    from qualiclip_cli.core.images import decode as decode_mod

    path = tmp_path / "a.png"
    path.write_bytes(_encoded("PNG"))

    def failing_open(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(decode_mod.Image, "open", failing_open)
    with pytest.raises(ImageError) as info:
        decode_image(path, 0)
    assert not info.value.damaged and "Input/output error" in info.value.reason


def test_the_scoring_stream_carries_damaged_into_the_record(tmp_path):
    from qualiclip_cli.core.pipeline.stream import ScoreStream

    class Decoder:
        """Decodes every file with the real decoder; never reached the model (every file here fails)."""

        workers = 0
        batch_size = 1
        decoder = "pillow"

        class options:
            rescore = False
            max_side = 1024

        def load(self, path):
            return decode_image(path, 1024)

        def load_with_capture(self, path, ident):
            return self.load(path), None

        def decode_cpu(self, path):
            return decode_image(path, 1024)

    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.jpg"

    class Found:
        def __init__(self, path):
            self.path, self.error = path, None

    stream = ScoreStream(Decoder(), None, None)
    records = list(stream.run([Found(empty), Found(missing)]))
    assert [r.ok for r in records] == [False, False]
    assert [r.damaged for r in records] == [True, False], [r.error for r in records]
