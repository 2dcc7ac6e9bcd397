"""gpu_decode: batched JPEG decode + EXIF orientation + resize on a torch device, against the Pillow path.

Runs on device="cpu" (torchvision's libjpeg-turbo) everywhere, and on "cuda" (nvjpeg) too where a GPU is
present. nvjpeg's IDCT and chroma upsampling differ from libjpeg's, hence looser pixel bounds there (measured
on an H100 with 12 MP photos: native mean 0.30-0.45, max 9-25; at max_side 1024 mean 0.14-0.16, max 1-3).
"""

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from qualiclip_cli.core.errors import ImageError
from qualiclip_cli.core.images.decode import decode_image
from qualiclip_cli.core.images.gpu_decode import (
    Fallback,
    GpuDecodeError,
    JpegBytes,
    decode_resize_batch,
    orient,
    read_jpeg_bytes,
)
from qualiclip_cli.core.images.policy import MIN_SIDE, gpu_policy_identity, policy_identity, scaled_size

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# Pixel bounds (mean |diff| over all pixels and channels, max |diff|) against Pillow, per device.
NATIVE_BOUND = {"cpu": (1.0, 3), "cuda": (1.5, 40)}
RESIZED_BOUND = {"cpu": (0.5, 4), "cuda": (1.0, 24)}


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:96, 40:184])  # 144×96: not square, so orientation shows


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _save(path, array: np.ndarray, orientation: int = 1, **kw) -> str:
    im = Image.fromarray(array)
    kw.setdefault("quality", 92)
    if orientation != 1:
        kw["exif"] = _exif(orientation)
    im.save(path, "JPEG", **kw)
    return str(path)


def _pillow_oriented(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(ImageOps.exif_transpose(im).convert("RGB"))


def _hwc(t: torch.Tensor) -> np.ndarray:
    assert t.dtype == torch.uint8 and t.dim() == 3 and t.shape[0] == 3 and t.is_contiguous()
    return t.permute(1, 2, 0).cpu().numpy()


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    assert a.shape == b.shape
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(d.mean()), int(d.max())


def _one(path, max_side: int, device: str):
    jpeg = read_jpeg_bytes(path)
    assert isinstance(jpeg, JpegBytes), jpeg
    return decode_resize_batch([(path, jpeg)], max_side, device)[0]


# -- orientation and size ------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_all_orientations_match_pillow_at_native_size(tmp_path, photo, device):
    items, refs = [], []
    for o in range(1, 9):
        path = _save(tmp_path / f"o{o}.jpg", photo, o)
        jpeg = read_jpeg_bytes(path)
        assert isinstance(jpeg, JpegBytes) and jpeg.orientation == o and jpeg.size == (144, 96)
        items.append((path, jpeg))
        refs.append(_pillow_oriented(path))
    out = decode_resize_batch(items, 0, device)  # one batch, all eight orientations
    mean_bound, max_bound = NATIVE_BOUND[device]
    for o, (t, ref) in enumerate(zip(out, refs), start=1):
        assert isinstance(t, torch.Tensor) and t.device.type == device
        got = _hwc(t)
        assert got.shape == ref.shape == ((96, 144, 3) if o < 5 else (144, 96, 3)), o
        mean, worst = _diff(got, ref)
        assert mean < mean_bound and worst <= max_bound, (o, mean, worst)


def test_orient_is_exif_transpose():
    a = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5) * 3  # (C=2, H=3, W=5): every pixel distinct
    for o in range(1, 9):
        want = []
        for c in range(2):
            im = Image.fromarray(a[c])
            im.getexif()[0x0112] = o
            want.append(np.array(ImageOps.exif_transpose(im)))
        assert np.array_equal(orient(torch.from_numpy(a), o).numpy(), np.stack(want)), o


@pytest.mark.parametrize("device", DEVICES)
def test_resize_targets_are_scaled_size(tmp_path, device):
    rng = np.random.default_rng(0)
    cases = [((300, 200), 1, 128), ((300, 200), 6, 128), ((200, 300), 8, 100), ((301, 199), 5, 97),
             ((120, 80), 1, 1024), ((120, 80), 6, 1024), ((120, 80), 7, 0), ((257, 64), 3, 200)]
    items, want = [], []
    for i, ((w, h), o, max_side) in enumerate(cases):
        path = _save(tmp_path / f"s{i}.jpg", rng.integers(0, 256, (h, w, 3), dtype=np.uint8), o)
        oriented = (h, w) if o >= 5 else (w, h)
        items.append(((path, read_jpeg_bytes(path)), max_side))
        want.append(scaled_size(*oriented, max_side))
    for ((path, jpeg), max_side), (tw, th) in zip(items, want):
        t = decode_resize_batch([(path, jpeg)], max_side, device)[0]
        assert isinstance(t, torch.Tensor) and tuple(t.shape) == (3, th, tw), (path, max_side)
    # A mixed batch (one max_side, many sizes) gives each image its own target.
    out = decode_resize_batch([it[0] for it in items], 128, device)
    for ((_path, jpeg), _), t in zip(items, out):
        w, h = jpeg.size
        tw, th = scaled_size(*((h, w) if jpeg.orientation >= 5 else (w, h)), 128)
        assert tuple(t.shape) == (3, th, tw)


@pytest.mark.parametrize("device", DEVICES)
def test_resize_then_orient_equals_orient_then_resize(tmp_path, device):
    """The decoder resizes in the stored frame (cheaper) and orients the small result: same pixels."""
    from skimage import data

    big = np.array(Image.fromarray(data.coffee()).resize((900, 600), Image.Resampling.BICUBIC))
    path0 = _save(tmp_path / "c1.jpg", big, 1)
    upright = _one(path0, 0, device)
    for o in (6, 7):
        path = _save(tmp_path / f"c{o}.jpg", big, o)
        got = _one(path, 256, device)
        oriented = orient(upright, o).unsqueeze(0).float()
        th, tw = got.shape[1:]
        ref = torch.nn.functional.interpolate(oriented, size=(th, tw), mode="bicubic", antialias=True)
        ref = ref.round().clamp(0, 255).to(torch.uint8)[0]
        mean, worst = _diff(_hwc(got), _hwc(ref.contiguous()))
        assert worst <= 1 and mean < 0.01, (o, mean, worst)


@pytest.mark.parametrize("device", DEVICES)
def test_resized_result_is_close_to_pillow_decode(tmp_path, device):
    """Against decode_image(p, 1024, draft=False) (Pillow decode + Pillow bicubic). Measured on CPU: mean
    0.14-0.15, max 2 levels (astronaut, coffee, chelsea at 1600 px, q=90)."""
    from skimage import data

    base = Image.fromarray(data.astronaut())
    path = str(tmp_path / "a.jpg")
    base.resize((1600, 1600), Image.Resampling.BICUBIC).rotate(0).crop((0, 0, 1600, 1200)).save(path, quality=90)
    got = _hwc(_one(path, 1024, device))
    ref = decode_image(path, 1024, draft=False).pixels
    mean, worst = _diff(got, ref)
    mean_bound, max_bound = RESIZED_BOUND[device]
    assert got.shape == (768, 1024, 3)
    assert mean < mean_bound and worst <= max_bound, (mean, worst)


@pytest.mark.parametrize("device", DEVICES)
def test_grayscale_jpeg_becomes_grey_rgb(tmp_path, photo, device):
    path = _save(tmp_path / "g.jpg", np.asarray(Image.fromarray(photo).convert("L")))
    got = _hwc(_one(path, 0, device))
    assert got.shape == (96, 144, 3)
    assert np.array_equal(got[..., 0], got[..., 1]) and np.array_equal(got[..., 0], got[..., 2])
    mean, worst = _diff(got, _pillow_oriented(path))
    assert mean < 1.0 and worst <= 3, (mean, worst)


# -- errors and fallbacks ------------------------------------------------------------------------------


def _corrupt_files(tmp_path, photo) -> list[str]:
    """Two JPEGs whose headers pass `read_jpeg_bytes` but whose data libjpeg (and Pillow) refuse."""
    data = open(_save(tmp_path / "src.jpg", photo), "rb").read()
    sof = data.index(b"\xff\xc0")
    bad_table = bytearray(data)
    bad_table[sof + 12] = 3  # first component's quantization table: 3, never defined
    half = len(data) // 2
    bad_marker = data[:half] + b"\xff\x24" + bytes(200) + data[-2:]  # scan cut, unknown marker, EOI kept
    paths = [str(tmp_path / "bad_table.jpg"), str(tmp_path / "bad_marker.jpg")]
    for path, content in zip(paths, (bad_table, bad_marker)):
        with open(path, "wb") as f:
            f.write(content)
    return paths


@pytest.mark.parametrize("device", DEVICES)
def test_corrupt_jpeg_in_batch_fails_alone(tmp_path, photo, device):
    good = [(p, read_jpeg_bytes(p)) for p in (_save(tmp_path / f"ok{o}.jpg", photo, o) for o in (1, 6, 3))]
    bad = [(p, read_jpeg_bytes(p)) for p in _corrupt_files(tmp_path, photo)]
    assert all(isinstance(jpeg, JpegBytes) for _, jpeg in bad)
    for path, _ in bad:
        with pytest.raises(ImageError):
            decode_image(path, 0)
    alone = [decode_resize_batch([item], 100, device)[0] for item in good]
    out = decode_resize_batch([good[0], bad[0], good[1], bad[1], good[2]], 100, device)
    # libjpeg-turbo refuses both. nvjpeg (H100) refuses the undefined table ("JPEG not supported") but decodes
    # the damaged scan into garbage of the right size, as libjpeg does for milder damage (with warnings).
    for (path, _), result, must_fail in zip(bad, (out[1], out[3]), (True, device == "cpu")):
        if must_fail or isinstance(result, ImageError):
            assert isinstance(result, GpuDecodeError), path
            assert result.path == path and "\n" not in result.reason
            assert result.reason.startswith("cannot decode image data: "), result.reason
            assert ".cpp" not in result.reason, result.reason
        else:
            assert isinstance(result, torch.Tensor) and tuple(result.shape) == (3, 67, 100)
    for t, ref in zip([out[0], out[2], out[4]], alone):
        assert isinstance(t, torch.Tensor) and torch.equal(t, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_too_small_after_downscaling_is_the_cpu_decoders_error(tmp_path, device):
    rng = np.random.default_rng(1)
    path = _save(tmp_path / "strip.jpg", rng.integers(0, 256, (40, 800, 3), dtype=np.uint8), 6)
    out = decode_resize_batch([(path, read_jpeg_bytes(path))], 512, device)[0]
    assert isinstance(out, ImageError)
    with pytest.raises(ImageError) as cpu:
        decode_image(path, 512)
    assert out.reason == cpu.value.reason and str(MIN_SIDE) in out.reason


def test_fallback_for_what_nvjpeg_should_not_take(tmp_path, photo):
    cases = {}
    cases["png"] = tmp_path / "a.png"
    Image.fromarray(photo).save(cases["png"])
    cases["cmyk"] = tmp_path / "cmyk.jpg"
    Image.fromarray(photo).convert("CMYK").save(cases["cmyk"], "JPEG")
    cases["progressive"] = tmp_path / "prog.jpg"
    Image.fromarray(photo).save(cases["progressive"], "JPEG", progressive=True)
    full = (tmp_path / "full.jpg")
    _save(full, photo)
    cases["truncated"] = tmp_path / "trunc.jpg"
    cases["truncated"].write_bytes(full.read_bytes()[:-500])
    cases["empty"] = tmp_path / "empty.jpg"
    cases["empty"].write_bytes(b"")
    cases["missing"] = tmp_path / "missing.jpg"
    cases["directory"] = tmp_path
    cases["not an image"] = tmp_path / "text.jpg"
    cases["not an image"].write_text("hello")
    for name, path in cases.items():
        got = read_jpeg_bytes(path)
        assert isinstance(got, Fallback), name
        assert got.reason and "\n" not in got.reason, name
    assert "progressive" in read_jpeg_bytes(cases["progressive"]).reason
    # The CPU decoder takes the fallbacks: it decodes the good ones and words the errors.
    assert decode_image(cases["cmyk"], 0).pixels.shape == (96, 144, 3)
    assert decode_image(cases["progressive"], 0).pixels.shape == (96, 144, 3)
    with pytest.raises(ImageError, match="truncated"):
        decode_image(cases["truncated"], 0)
    # Pixel limits go to the CPU decoder too (it may still decode at a DCT scale, or refuse).
    assert isinstance(read_jpeg_bytes(full, max_pixels=144 * 96 - 1), Fallback)
    assert isinstance(read_jpeg_bytes(full, max_pixels=144 * 96), JpegBytes)


def test_multi_picture_jpeg_is_taken(tmp_path, photo):
    """Camera JPEGs often carry MPF previews (Pillow reports format MPO): the primary image is decoded."""
    path = tmp_path / "mpo.jpg"
    first, second = Image.fromarray(photo), Image.fromarray(photo[::-1].copy())
    first.save(path, "MPO", save_all=True, append_images=[second], quality=92)
    jpeg = read_jpeg_bytes(path)
    assert isinstance(jpeg, JpegBytes)
    got = _hwc(decode_resize_batch([(str(path), jpeg)], 0, "cpu")[0])
    mean, worst = _diff(got, decode_image(path, 0).pixels)
    assert mean < 1.0 and worst <= 3


def test_read_jpeg_bytes_is_lazy_and_exact(tmp_path, photo):
    path = _save(tmp_path / "a.jpg", photo, 8)
    jpeg = read_jpeg_bytes(path)
    data, orientation, size = jpeg
    assert data.dtype == torch.uint8 and data.dim() == 1 and data.device.type == "cpu"
    assert bytes(data.numpy()) == open(path, "rb").read()
    assert (orientation, size) == (8, (144, 96))


def test_no_deprecation_warning_reaches_the_user(tmp_path, photo):
    path = _save(tmp_path / "a.jpg", photo)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        decode_resize_batch([(path, read_jpeg_bytes(path))], 0, "cpu")
    assert not [w for w in caught if "torchvision" in str(w.message).lower()]


def test_gpu_policy_identity():
    assert gpu_policy_identity(1024) == policy_identity(1024, draft=False) + "+nvjpeg"
    assert gpu_policy_identity(1024) != policy_identity(1024, draft=True)
    assert gpu_policy_identity(0) == "exif+native+nvjpeg"
    with pytest.raises(ValueError):
        gpu_policy_identity(-1)
    with pytest.raises(ValueError):
        decode_resize_batch([], -1, "cpu")
    assert decode_resize_batch([], 1024, "cpu") == []


# -- scores --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_scores_match_the_pillow_path(tmp_path, tiny_weights_file, device):
    """Scoring this decoder's output and the Pillow decoder's for natural photos gives the same scores within
    0.01, against both the same policy without draft and the product's default (draft: DCT-scaled decode).

    The tiny random model is nearly blind (its scores spread over ~3e-4 across photos), so the embeddings
    are compared too: against the no-draft Pillow decode, this decoder must move them far less than a 3×3
    box blur does. Measured on CPU (libjpeg-turbo): score |diff| <= 1.2e-7 (no draft), <= 2.4e-6 (draft);
    embedding distance 0.2-0.9 % of the blur's (no draft; 9-19 % against the draft decode). On an H100
    (nvjpeg): score |diff| <= 6e-7 (no draft), <= 2.6e-6 (draft); embedding distance 0.5-0.9 %.
    """
    from skimage import data

    from qualiclip_cli.core.model.qualiclip import load_qualiclip

    max_side = 768  # below the default 1024 to keep the CPU forwards short; 1600 px photos still downscale
    items, no_draft, draft = [], [], []
    for name in ("astronaut", "coffee", "chelsea"):
        im = Image.fromarray(getattr(data, name)())
        w, h = im.size
        s = 1600 / max(w, h)
        path = str(tmp_path / f"{name}.jpg")
        im.resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC).save(path, quality=90)
        items.append((path, read_jpeg_bytes(path)))
        no_draft.append(decode_image(path, max_side, draft=False).pixels)
        draft.append(decode_image(path, max_side).pixels)
    gpu = decode_resize_batch(items, max_side, device)
    model = load_qualiclip(tiny_weights_file).to(device)

    def run(pixels):
        if isinstance(pixels, np.ndarray):
            pixels = torch.from_numpy(pixels).permute(2, 0, 1)
        return model(pixels.unsqueeze(0).to(device))

    score_diffs, draft_diffs, ratios = [], [], []
    with torch.inference_mode():
        for t, ref, ref_draft in zip(gpu, no_draft, draft):
            a, b, d = run(t), run(ref), run(ref_draft)
            blurred = torch.nn.functional.avg_pool2d(torch.from_numpy(ref).permute(2, 0, 1).float(), 3, 1, 1)
            c = run(blurred.round().to(torch.uint8))
            score_diffs.append(abs(a.scores.item() - b.scores.item()))
            draft_diffs.append(abs(a.scores.item() - d.scores.item()))
            ratios.append(((a.embeddings - b.embeddings).norm() / (c.embeddings - b.embeddings).norm()).item())
    if os.environ.get("QUALICLIP_PRINT_MEASURES"):
        print(f"\n{device}: score |diff| {score_diffs}, vs draft {draft_diffs}; embedding distance / blur's {ratios}")
    assert max(score_diffs) < 0.01 and max(draft_diffs) < 0.01, (score_diffs, draft_diffs)
    assert max(ratios) < 0.1, ratios


def test_the_decode_thread_gives_the_sequential_records(tmp_path, photo, tiny_weights_file, monkeypatch):
    """nvjpeg batches decoded ahead in their own thread (on CUDA, on their own stream) while the model runs give
    exactly the records of the sequential path: same scores, same order, same error rows, same CPU fallbacks.
    On the CPU the batched decoder is torchvision's libjpeg-turbo."""
    import threading

    from qualiclip_cli.core.images import gpu_decode
    from qualiclip_cli.core.images.discovery import find_images
    from qualiclip_cli.core.model.weights import resolve_weights
    from qualiclip_cli.core.pipeline import stream
    from qualiclip_cli.core.pipeline.options import ScoreOptions
    from qualiclip_cli.core.pipeline.scorer import Scorer

    folder = tmp_path / "shoot"
    folder.mkdir()
    for i in range(9):
        _save(folder / f"IMG_{i}.jpg", np.ascontiguousarray(np.roll(photo, 13 * i, axis=1)), orientation=(1, 6)[i % 2])
    Image.fromarray(photo).save(folder / "IMG_4b.png")  # the CPU decoder's file, between the JPEGs
    for path in _corrupt_files(folder, photo):  # nvjpeg-refused data (Pillow's fallback) and broken files
        os.rename(path, folder / ("IMG_5" + os.path.basename(path)))
    monkeypatch.setattr(stream, "GPU_DECODE_BATCH", 3)  # several batches in flight over a few files
    threads = []
    decode = gpu_decode.decode_resize_batch

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return decode(*args, **kwargs)

    monkeypatch.setattr(gpu_decode, "decode_resize_batch", spy)
    scorer = Scorer(resolve_weights(tiny_weights_file), ScoreOptions(device="cpu", decoder="nvjpeg", max_side=96,
                                                                     use_cache=False, workers=2))

    def records(ahead: int):
        monkeypatch.setattr(stream, "GPU_DECODE_AHEAD", ahead)
        threads.clear()
        out = [(r.path, r.status, r.error, r.score, r.width, r.height) for r in scorer.score_files(find_images(folder))]
        return out, set(threads)

    sequential, where = records(0)
    assert where == {threading.current_thread().name}
    ahead, where = records(1)
    assert where and all(name.startswith("nvjpeg") for name in where)  # decoded in the decode thread
    assert ahead == sequential
    assert {status for _, status, *_ in sequential} == {"ok", "error"} and len(sequential) >= 12
