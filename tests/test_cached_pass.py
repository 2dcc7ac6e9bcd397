"""A fully cached pass: no torch imported, no model loaded, the weights pin checked without re-hashing an unchanged
file; a miss still loads the model and scores. Also the torch-free identity and the precision `auto` resolves to."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from qualiclip_cli.core.errors import WeightsError
from qualiclip_cli.core.model import runtime
from qualiclip_cli.core.model import weights as W
from qualiclip_cli.core.pipeline.options import ScoreOptions
from qualiclip_cli.core.pipeline.scorer import planned_identities

from cli_support import jsonl_rows, make_photo_dir, natural_image, run_process
from cli_support import torch_probe as _probe


def test_a_fully_cached_pass_imports_no_torch_and_a_miss_still_scores(tmp_path, tiny_weights_file, isolated_home):
    photos = make_photo_dir(tmp_path / "shoot")
    env = {"QUALICLIP_HOME": str(isolated_home), "QUALICLIP_WEIGHTS": str(tiny_weights_file)}
    cpu = ["--device", "cpu"]  # `auto` needs torch to ask where CUDA may exist; the test must not depend on that
    first = run_process("score", tmp_path / "shoot", "-f", "jsonl", *cpu, env=env)
    assert first.returncode == 0, first.stderr
    scored = jsonl_rows(first.stdout)

    done, torch_imported = _probe("score", tmp_path / "shoot", "-f", "jsonl", *cpu, env=env)
    assert done.returncode == 0, done.stderr
    assert not torch_imported
    assert jsonl_rows(done.stdout) == scored  # same scores, weights hash and identity as the pass that scored
    assert "4 from cache" in done.stderr

    quarantine = tmp_path / "shoot" / "_rejected"
    for args in (["cull", tmp_path / "shoot", "--below", "0.99", "--dry-run"],
                 ["sort", tmp_path / "shoot", "--into", tmp_path / "tiers", "--dry-run"],
                 ["sort", tmp_path / "shoot", "-f", "jsonl"],
                 ["tag", tmp_path / "shoot", "--dry-run"],
                 ["group", tmp_path / "shoot", "-f", "jsonl"]):
        done, torch_imported = _probe(*args, *cpu, env=env)
        assert done.returncode == 0, (args, done.stderr)
        assert not torch_imported, args
    assert "would" in _probe("cull", tmp_path / "shoot", "--below", "0.99", "--dry-run", *cpu, env=env)[0].stderr
    assert not quarantine.exists() and not (tmp_path / "tiers").exists() and not list(tmp_path.rglob("*.xmp"))
    grouped = jsonl_rows(done.stdout)  # group's signals came from the cache: every photo has its group
    assert len(grouped) == len(photos) and all(row.get("group") is not None for row in grouped)

    done, torch_imported = _probe("score", tmp_path / "shoot", tmp_path / "missing.jpg", "-f", "jsonl", *cpu, env=env)
    assert done.returncode == 3 and not torch_imported  # a walk problem is an error row, the pass stays cached
    assert [r["status"] for r in jsonl_rows(done.stdout)].count("error") == 1 and "missing.jpg" in done.stderr

    natural_image("camera").save(tmp_path / "shoot" / "IMG_new.jpg", quality=90)  # one miss: the model loads
    done, torch_imported = _probe("score", tmp_path / "shoot", "-f", "jsonl", *cpu, env=env)
    assert done.returncode == 0, done.stderr
    assert torch_imported
    rows = jsonl_rows(done.stdout)
    assert len(rows) == 5 and all(row["status"] == "ok" for row in rows)
    assert "4 from cache" in done.stderr
    assert {row["path"]: row["score"] for row in rows if "IMG_new" not in row["path"]} == \
        {row["path"]: row["score"] for row in scored}


# --------------------------------------------------------------------------------------------- the weights pin


def _pinned(tiny_weights_file) -> Path:
    """The tiny file installed as the official one, pinned as an install would pin it."""
    cached = W.cached_weights_path()
    cached.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tiny_weights_file, cached)
    W.record_hash(cached, W.sha256_file(cached))
    return cached


def _no_hashing(monkeypatch):
    def refuse(*args):
        raise AssertionError("hashed")

    monkeypatch.setattr(W, "sha256_file", refuse)
    monkeypatch.setattr(W, "_sha256_open_file", refuse)


def test_an_unchanged_verified_file_is_not_hashed_again(tiny_weights_file, isolated_home, monkeypatch):
    cached = _pinned(tiny_weights_file)
    digest = W.read_recorded_hash(cached)
    assert not W.verified_record_path(cached).exists()
    assert W.resolve_weights(hash_in_background=True).sha256 == digest  # hashed, checked, remembered
    assert W.verified_record_path(cached).exists()

    _no_hashing(monkeypatch)
    for background in (False, True):
        resolved = W.resolve_weights(hash_in_background=background)
        assert resolved.sha256 == digest
        with resolved.open_for_loading() as f:  # the loader's handle, not hashed either
            assert f.read(4) == tiny_weights_file.read_bytes()[:4]


def test_a_changed_file_is_hashed_and_refused(tiny_weights_file, isolated_home, monkeypatch):
    cached = _pinned(tiny_weights_file)
    W.resolve_weights()  # verified and remembered
    data = bytearray(cached.read_bytes())
    data[-1] ^= 1
    stat = cached.stat()
    with open(cached, "r+b") as f:  # same size, same mtime: only the change time and the content differ
        f.write(data)
    os.utime(cached, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    for background in (False, True):
        with pytest.raises(WeightsError, match="does not match"):
            W.resolve_weights(hash_in_background=background).wait_verified()


def test_a_file_replaced_after_the_check_is_hashed_before_it_is_loaded(tiny_weights_file, isolated_home):
    cached = _pinned(tiny_weights_file)
    W.resolve_weights()
    resolved = W.resolve_weights()  # not hashed: the file is the verified one
    other = cached.with_name("other")
    data = bytearray(tiny_weights_file.read_bytes())
    data[-1] ^= 1
    other.write_bytes(data)
    os.replace(other, cached)
    with pytest.raises(WeightsError, match="changed after it was checked"):
        resolved.open_for_loading()


def test_a_new_pin_invalidates_the_verified_record(tiny_weights_file, isolated_home):
    cached = _pinned(tiny_weights_file)
    W.resolve_weights()
    assert W.verified_unchanged(cached) is not None
    W.record_hash(cached, "0" * 64)
    assert W.verified_unchanged(cached) is None
    with pytest.raises(WeightsError, match="does not match"):
        W.resolve_weights()


# --------------------------------------------------------------------------------------------- device, precision


def test_auto_precision_is_fp16_on_cuda_only():
    assert runtime.pick_precision("auto", "cuda") == "fp16"
    assert runtime.pick_precision("auto", "cpu") == "fp32"
    assert runtime.pick_precision("auto", "mps") == "fp32"
    assert runtime.pick_precision("fp32", "cuda") == "fp32"


def test_the_device_kind_without_torch(monkeypatch):
    assert runtime.device_type_without_torch("cpu") == "cpu"
    assert runtime.device_type_without_torch("mps") == "cpu"  # same precision and decoder: same identity
    assert runtime.device_type_without_torch("cuda:1") == "cuda"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert runtime.cuda_impossible() and runtime.device_type_without_torch("auto") == "cpu"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(runtime, "cuda_impossible", lambda: False)
    assert runtime.device_type_without_torch("auto") is None  # only torch can tell
    assert planned_identities(ScoreOptions()) is None
    with pytest.raises(Exception, match="unknown device"):
        runtime.device_type_without_torch("tpu")


def test_planned_identities_are_the_scorers(tiny_weights_file):
    from qualiclip_cli.core.pipeline.scorer import Scorer

    for options in (ScoreOptions(device="cpu"), ScoreOptions(device="cpu", max_side=0, precision="bf16"),
                    ScoreOptions(device="cpu", draft=True, decoder="nvjpeg")):
        scorer = Scorer(W.resolve_weights(tiny_weights_file), options)
        assert planned_identities(options) == (scorer.identity, scorer.raw_identity)
    cuda = planned_identities(ScoreOptions(device="cuda"))
    assert cuda[0].endswith("+nvjpeg+fp16")
    assert json.dumps(cuda)  # plain strings
