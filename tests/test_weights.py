"""Weights resolution, download (against 127.0.0.1), hash pinning, and refusal of bad files."""

import dataclasses
import os

import pytest
import torch

from qualiclip_cli.core.errors import OfflineError, WeightsError
from qualiclip_cli.core.model import layout
from qualiclip_cli.core.model import weights as W

from http_server import FileServer


@pytest.fixture(scope="module")
def tiny_bytes(tiny_weights_file) -> bytes:
    return tiny_weights_file.read_bytes()


@pytest.fixture(scope="module")
def tiny_spec(tiny_weights_file) -> W.WeightsSpec:
    """The official record with its shape pins replaced by the tiny model's (same code path, small file)."""
    loaded = layout.load_weights_dict(tiny_weights_file)
    pins = {k: tuple(loaded[k].shape) for k in ("clip_model.visual.conv1.weight", "prompts_features")}
    return dataclasses.replace(W.QUALICLIP, url="http://127.0.0.1:9/unused", expected_shapes=pins)


def _serve(server, tiny_bytes, monkeypatch, path="/qualiclip.pth"):
    server.files[path] = tiny_bytes
    monkeypatch.setenv("QUALICLIP_WEIGHTS_URL", server.url(path))
    monkeypatch.delenv("QUALICLIP_OFFLINE")


def test_resolution_order(tmp_path, tiny_weights_file, isolated_home, monkeypatch):
    other = tmp_path / "other.pth"
    other.write_bytes(tiny_weights_file.read_bytes() + b"")  # same content, different place
    monkeypatch.setenv("QUALICLIP_WEIGHTS", str(other))
    assert W.resolve_weights(explicit=tiny_weights_file).path == tiny_weights_file
    assert W.resolve_weights().path == other
    assert W.resolve_weights().source == "environment"
    monkeypatch.delenv("QUALICLIP_WEIGHTS")
    with pytest.raises(OfflineError, match="qualiclip weights import"):
        W.resolve_weights()


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("QUALICLIP_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.cached_weights_path() == tmp_path / "xdg" / "qualiclip" / "qualiclip.pth"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert W.cached_weights_path() == tmp_path / "home" / ".cache" / "qualiclip" / "qualiclip.pth"


def test_download_installs_and_pins_hash(tiny_bytes, tiny_spec, isolated_home, monkeypatch):
    seen = []
    with FileServer() as server:
        _serve(server, tiny_bytes, monkeypatch)
        resolved = W.resolve_weights(spec=tiny_spec, progress=lambda done, total: seen.append((done, total)))
    assert resolved.source == "download"
    assert resolved.path == isolated_home / "qualiclip.pth"
    assert resolved.path.read_bytes() == tiny_bytes
    assert W.read_recorded_hash(resolved.path) == W.sha256_file(resolved.path) == resolved.sha256
    assert seen[-1] == (len(tiny_bytes), len(tiny_bytes))
    assert [p.name for p in isolated_home.iterdir() if p.name.endswith(".part")] == []
    # Later loads come from the cache without the network.
    monkeypatch.setenv("QUALICLIP_OFFLINE", "1")
    assert W.resolve_weights(spec=tiny_spec).source == "cache"


def test_failed_download_leaves_nothing_and_retry_succeeds(tiny_bytes, tiny_spec, isolated_home, monkeypatch):
    with FileServer() as server:
        _serve(server, tiny_bytes, monkeypatch)
        server.truncate_next = 1
        with pytest.raises(WeightsError, match="nothing was saved"):
            W.download_weights(spec=tiny_spec)
        assert not (isolated_home / "qualiclip.pth").exists()
        assert list(isolated_home.glob("*.part")) == []
        path = W.download_weights(spec=tiny_spec)  # a fresh start, not a resume
    assert path.read_bytes() == tiny_bytes
    assert server.requests == 2


def test_unreachable_server_gives_one_line_advice(tiny_spec, monkeypatch):
    monkeypatch.delenv("QUALICLIP_OFFLINE")
    monkeypatch.setenv("QUALICLIP_WEIGHTS_URL", "http://127.0.0.1:9/qualiclip.pth")  # discard port: refused
    with pytest.raises(WeightsError) as err:
        W.resolve_weights(spec=tiny_spec)
    message = str(err.value)
    assert "\n" not in message and "qualiclip weights import" in message


def test_score_says_where_it_downloads_from_before_trying(isolated_home, monkeypatch, tmp_path):
    from PIL import Image

    from cli_support import run_cli

    monkeypatch.delenv("QUALICLIP_OFFLINE")
    monkeypatch.setenv("QUALICLIP_WEIGHTS_URL", "http://127.0.0.1:9/qualiclip.pth")  # refused
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(image)
    result = run_cli("score", image, "--format", "jsonl")
    assert result.exit_code == 1
    stderr = " ".join(result.stderr.split())  # Rich may wrap the long line
    assert f"Weights not found in {isolated_home}; downloading http://127.0.0.1:9/qualiclip.pth" in stderr
    # --weights, the environment or the cache: no announcement
    monkeypatch.setenv("QUALICLIP_WEIGHTS", str(tmp_path / "missing.pth"))
    assert "Weights not found" not in run_cli("score", image).stderr


def test_offline_never_touches_network(tiny_bytes, tiny_spec, monkeypatch):
    with FileServer() as server:
        server.files["/qualiclip.pth"] = tiny_bytes
        monkeypatch.setenv("QUALICLIP_WEIGHTS_URL", server.url("/qualiclip.pth"))
        with pytest.raises(OfflineError):
            W.resolve_weights(spec=tiny_spec)  # QUALICLIP_OFFLINE=1 from the fixture
        monkeypatch.delenv("QUALICLIP_OFFLINE")
        with pytest.raises(OfflineError):
            W.resolve_weights(spec=tiny_spec, offline=True)
    assert server.requests == 0


def test_corrupted_cached_file_is_refused(tiny_bytes, tiny_spec, isolated_home, monkeypatch):
    with FileServer() as server:
        _serve(server, tiny_bytes, monkeypatch)
        path = W.download_weights(spec=tiny_spec)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match"):
        W.resolve_weights(spec=tiny_spec)


def test_swapped_cached_file_is_refused(tiny_bytes, tiny_spec, isolated_home, monkeypatch, tmp_path):
    from tiny_weights import write_tiny_weights

    with FileServer() as server:
        _serve(server, tiny_bytes, monkeypatch)
        path = W.download_weights(spec=tiny_spec)
    write_tiny_weights(path, seed=7)  # structurally valid, but not the file that was installed
    with pytest.raises(WeightsError, match="corrupted or replaced"):
        W.resolve_weights(spec=tiny_spec)


def test_background_hash_is_the_same_digest(tiny_weights_file):
    resolved = W.resolve_weights(tiny_weights_file, hash_in_background=True)
    assert resolved.source == "argument"
    assert resolved.sha256 == W.sha256_file(tiny_weights_file)


def test_background_verification_fails_when_the_digest_is_read(tiny_bytes, tiny_spec, isolated_home, monkeypatch):
    from qualiclip_cli.core.pipeline.options import ScoreOptions
    from qualiclip_cli.core.pipeline.scorer import Scorer

    from tiny_weights import write_tiny_weights

    with FileServer() as server:
        _serve(server, tiny_bytes, monkeypatch)
        path = W.download_weights(spec=tiny_spec)
    write_tiny_weights(path, seed=7)  # loads fine: only the hash tells it from the installed file
    resolved = W.resolve_weights(spec=tiny_spec, hash_in_background=True)  # returns while hashing
    with pytest.raises(WeightsError, match="corrupted or replaced"):
        _ = resolved.sha256
    with pytest.raises(WeightsError, match="corrupted or replaced"):  # the Scorer reads it before scoring
        Scorer(W.resolve_weights(spec=tiny_spec, hash_in_background=True), ScoreOptions(use_cache=False))


def test_score_refuses_a_replaced_cached_file(tiny_bytes, tiny_spec, isolated_home, monkeypatch, tmp_path):
    from PIL import Image

    from cli_support import run_cli

    with FileServer() as server:
        _serve(server, tiny_bytes, monkeypatch)
        path = W.download_weights(spec=tiny_spec)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # inside the zip's central directory: the file no longer loads either
    path.write_bytes(bytes(data))
    image = tmp_path / "a.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(image)
    result = run_cli("score", image, "--format", "jsonl", "--offline")
    assert result.exit_code == 1, result.stderr
    assert "corrupted or replaced" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout.strip() == ""


def test_wrong_shape_download_is_refused(tiny_bytes, isolated_home, monkeypatch):
    with FileServer() as server:
        _serve(server, tiny_bytes, monkeypatch)
        with pytest.raises(WeightsError, match="has shape .* expected \\(32, 3, 3, 3\\)"):
            W.download_weights(spec=W.QUALICLIP)  # the official pins: the tiny file is the wrong model
    assert not (isolated_home / "qualiclip.pth").exists()
    assert list(isolated_home.glob(".*part")) == []


def test_structurally_broken_file_is_refused(tmp_path, tiny_weights_file):
    weights = layout.load_weights_dict(tiny_weights_file)
    del weights["clip_model.visual.layer2.0.conv2.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(weights, broken)
    with pytest.raises(WeightsError, match="missing tensor clip_model.visual.layer2.0.conv2.weight"):
        layout.validate_weights(layout.load_weights_dict(broken), broken)
    torch.save({"prompts_features": torch.zeros(14, 8)}, broken)
    with pytest.raises(WeightsError, match="not a QualiCLIP weights file"):
        layout.validate_weights(layout.load_weights_dict(broken), broken)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path, tiny_bytes, monkeypatch, isolated_home):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"prompts_features": torch.zeros(14, 32), "payload": _Exploit(marker)}, evil)
    with pytest.raises(WeightsError, match="would run code"):
        layout.load_weights_dict(evil)
    with pytest.raises(WeightsError, match="would run code"):
        W.import_weights(evil)
    # Same file served as a download: refused, nothing installed, nothing executed.
    with FileServer() as server:
        server.files["/qualiclip.pth"] = evil.read_bytes()
        monkeypatch.setenv("QUALICLIP_WEIGHTS_URL", server.url("/qualiclip.pth"))
        monkeypatch.delenv("QUALICLIP_OFFLINE")
        with pytest.raises(WeightsError, match="would run code"):
            W.download_weights(spec=W.QUALICLIP)
    assert not marker.exists()
    assert not (isolated_home / "qualiclip.pth").exists()


def test_garbage_file_is_refused(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a zip file at all" * 10)
    with pytest.raises(WeightsError, match="junk.pth"):
        layout.load_weights_dict(junk)


def test_import_copies_checks_and_pins(tiny_weights_file, tiny_spec, isolated_home):
    path = W.import_weights(tiny_weights_file, spec=tiny_spec)
    assert path == isolated_home / "qualiclip.pth"
    assert W.read_recorded_hash(path) == W.sha256_file(tiny_weights_file)
    assert W.resolve_weights(spec=tiny_spec).source == "cache"


# ------------------------------------------------------------------ what is hashed is what is loaded

def _swap_after_hashing(monkeypatch, target, replacement):
    """Rename ``replacement`` over ``target`` right after the weights hash is computed (whichever function
    computes it), and hold the model's load until then: the window a timing race would have to hit, every time."""
    import threading

    from qualiclip_cli.core.model import qualiclip

    swapped = []
    done = threading.Event()

    def hook(real):
        def hashed_then_swapped(*args):
            digest = real(*args)
            if not swapped:
                os.replace(replacement, target)
                swapped.append(digest)
                done.set()
            return digest
        return hashed_then_swapped

    def after_the_swap(real):
        def load(*args, **kwargs):
            done.wait(timeout=60)  # the hash runs in a thread of its own: never deadlocks, bounded anyway
            return real(*args, **kwargs)
        return load

    monkeypatch.setattr(W, "sha256_file", hook(W.sha256_file))
    monkeypatch.setattr(qualiclip, "load_weights_dict", after_the_swap(qualiclip.load_weights_dict))
    if hasattr(W, "sha256_open_file"):  # hashing through the open file the scorer then loads
        monkeypatch.setattr(W, "sha256_open_file", hook(W.sha256_open_file))
        monkeypatch.setattr(qualiclip, "load_weights_file", after_the_swap(qualiclip.load_weights_file))
    return swapped


def test_a_file_swapped_after_its_hash_is_refused_before_scoring(tmp_path, tiny_weights_file, monkeypatch):
    from qualiclip_cli.core.pipeline.options import ScoreOptions
    from qualiclip_cli.core.pipeline.scorer import Scorer

    from tiny_weights import write_tiny_weights

    path = tmp_path / "weights.pth"
    path.write_bytes(tiny_weights_file.read_bytes())
    swapped = _swap_after_hashing(monkeypatch, path, write_tiny_weights(tmp_path / "other.pth", seed=7))
    resolved = W.resolve_weights(path)  # hashed now; the scorer loads later
    assert swapped == [W.sha256_file(tiny_weights_file)] == [resolved.sha256]
    with pytest.raises(WeightsError, match="changed after it was checked"):
        Scorer(resolved, ScoreOptions(use_cache=False))


def test_pinned_file_swapped_while_a_run_starts_is_not_scored_under_the_pin(
        tmp_path, tiny_weights_file, tiny_spec, isolated_home, monkeypatch):
    import sqlite3

    from qualiclip_cli.core.pipeline.options import ScoreOptions
    from qualiclip_cli.core.pipeline.run import score_paths

    from cli_support import make_photo_dir
    from tiny_weights import write_tiny_weights

    make_photo_dir(tmp_path / "p", names=("astronaut", "coffee"))
    pinned = W.import_weights(tiny_weights_file, spec=tiny_spec)
    pin = W.read_recorded_hash(pinned)
    reference = [r.score for r in score_paths([tmp_path / "p"], options=ScoreOptions(use_cache=False)).records]
    other = write_tiny_weights(tmp_path / "other.pth", seed=7)
    other_scores = [r.score for r in score_paths([tmp_path / "p"], weights=other,
                                                 options=ScoreOptions(use_cache=False)).records]
    assert other_scores != reference  # the swap would show in the scores
    swapped = _swap_after_hashing(monkeypatch, pinned, other)
    # The first run above verified the pinned file and remembered it (an unchanged one is not hashed again:
    # tests/test_cached_pass.py); forget that, so this run hashes it and the swap hits the hash's window.
    W.verified_record_path(pinned).unlink()
    run = score_paths([tmp_path / "p"])  # the pinned file from the cache dir, hashed in the background
    assert swapped == [pin]
    assert run.weights_sha256 == pin
    assert [r.score for r in run.records] == reference  # the bytes that were hashed are the bytes scored
    db = sqlite3.connect(isolated_home / "results.sqlite3")
    assert sorted(db.execute("SELECT weights, score FROM results").fetchall()) == sorted((pin, s) for s in reference)
    db.close()


# ------------------------------------------------------------------ verify and import

@pytest.fixture(scope="module")
def nan_weights_file(tiny_weights_file, tmp_path_factory):
    weights = layout.load_weights_dict(tiny_weights_file, mmap=False)
    weights["clip_model.visual.layer3.0.conv2.weight"][0, 0, 0, 0] = float("nan")
    weights["clip_model.visual.attnpool.c_proj.bias"][3] = float("inf")
    path = tmp_path_factory.mktemp("nan") / "diverged.pth"
    torch.save(weights, path)
    return path


def test_verify_reports_non_finite_tensors(nan_weights_file, tiny_weights_file):
    from cli_support import run_cli

    result = run_cli("weights", "verify", nan_weights_file)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "clip_model.visual.layer3.0.conv2.weight holds NaN or infinite values (and 1 more tensor)" in lines[0]
    assert str(nan_weights_file) in lines[0]
    assert result.stdout == ""
    good = run_cli("weights", "verify", tiny_weights_file)
    assert good.exit_code == 0 and ": ok (sha256 " in good.stdout


def _no_copying(monkeypatch):
    import shutil

    copies = []
    monkeypatch.setattr(shutil, "copyfile", lambda *a, **k: copies.append(a))
    monkeypatch.setattr(shutil, "copyfileobj", lambda *a, **k: copies.append(a))
    return copies


@pytest.mark.parametrize("content", ["junk", "other tensors"])
def test_import_checks_the_structure_before_copying(tmp_path, tiny_spec, isolated_home, monkeypatch, content):
    source = tmp_path / "download.pth"
    if content == "junk":
        source.write_bytes(os.urandom(1 << 20))  # e.g. an HTML error page or a truncated download
    else:
        torch.save({"model.weight": torch.zeros(64, 64)}, source)  # a PyTorch file of something else
    copies = _no_copying(monkeypatch)
    with pytest.raises(WeightsError, match="nothing was installed") as err:
        W.import_weights(source, spec=tiny_spec)
    assert str(source) in str(err.value) and "\n" not in str(err.value)
    assert copies == []  # refused before a byte was copied
    assert not isolated_home.exists() or list(isolated_home.iterdir()) == []


def test_import_refuses_non_finite_weights(nan_weights_file, tiny_spec, isolated_home):
    with pytest.raises(WeightsError, match="holds NaN or infinite values"):
        W.import_weights(nan_weights_file, spec=tiny_spec)
    assert not (isolated_home / "qualiclip.pth").exists()


def test_import_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, tiny_weights_file, tiny_spec,
                                                               isolated_home, monkeypatch):
    import errno
    import shutil

    from cli_support import run_cli

    def full_disk_copyfileobj(src, dst, *args, **kwargs):
        dst.write(src.read(4096))  # some bytes got out before the disk filled up
        dst.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_disk_copyfile(src, dst, *args, **kwargs):
        with open(src, "rb") as s, open(dst, "wb") as d:
            full_disk_copyfileobj(s, d)

    monkeypatch.setattr(shutil, "copyfileobj", full_disk_copyfileobj)
    monkeypatch.setattr(shutil, "copyfile", full_disk_copyfile)
    with pytest.raises(WeightsError, match="No space left on device.*nothing was installed"):
        W.import_weights(tiny_weights_file, spec=tiny_spec)
    assert list(isolated_home.iterdir()) == []  # no partial file, no hash record
    for key in list(W.QUALICLIP.expected_shapes):  # the command installs the official record: pin the tiny shapes
        monkeypatch.delitem(W.QUALICLIP.expected_shapes, key)
    for key, shape in tiny_spec.expected_shapes.items():
        monkeypatch.setitem(W.QUALICLIP.expected_shapes, key, shape)
    result = run_cli("weights", "import", tiny_weights_file)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "internal error" not in lines[0], lines
    assert list(isolated_home.iterdir()) == []
