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
