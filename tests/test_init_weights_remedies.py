"""The remedy an error names for the starting weights of `train` is one that works for that very file: the OpenAI
CLIP file is not a QualiCLIP file (`qualiclip weights import` refuses it), and `train` takes a file by --init, not
--weights. Each test follows the advice it was given and checks that it works."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from qualiclip_cli.core.errors import OfflineError, WeightsError
from qualiclip_cli.core.model import layout
from qualiclip_cli.core.model import weights as W
from training.init_weights import OPENAI_RN50, load_init

from cli_support import make_photo_dir, run_cli
from http_server import FileServer


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    make_photo_dir(root, names=("astronaut", "coffee"))
    return root


@pytest.fixture()
def tiny_clip(tiny_weights_file, tmp_path):
    """A CLIP state dict in safetensors, like open_clip's hub file, and a spec pinned to its size."""
    from safetensors.torch import save_file

    start = layout.load_weights_dict(tiny_weights_file, mmap=False)
    clip_sd = {k[len("clip_model."):]: v.contiguous() for k, v in start.items() if k.startswith("clip_model.")}
    path = tmp_path / "open_clip_model.safetensors"  # the name a browser gives the download
    save_file(clip_sd, str(path))
    spec = dataclasses.replace(
        OPENAI_RN50, expected_shapes={"clip_model.visual.conv1.weight": tuple(clip_sd["visual.conv1.weight"].shape)})
    return path, spec


def _one_line(result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _saved_as(message: str) -> Path:
    match = re.search(r"save it as (\S+\.safetensors)", message)
    assert match, message
    return Path(match[1])


@pytest.mark.parametrize("how", ["offline", "failed download"])
def test_train_init_openai_names_where_the_file_goes_not_weights_import(how, photos, tmp_path, isolated_home,
                                                                       monkeypatch):
    args = ("train", "--pristine", photos, "--init", "openai", "--out", tmp_path / "run", "--workers", "0")
    if how == "offline":
        message = _one_line(run_cli(*args))
    else:
        monkeypatch.delenv("QUALICLIP_OFFLINE")
        with FileServer() as server:  # answers 404: the download fails, locally
            monkeypatch.setenv("QUALICLIP_CLIP_URL", server.url("/gone.safetensors"))
            message = _one_line(run_cli(*args))
        assert "download of" in message and "failed" in message
    assert "weights import" not in message  # refuses this file: it is not a QualiCLIP file
    assert _saved_as(message) == isolated_home / "openai-clip-rn50.safetensors"


def test_the_openai_remedy_works(tiny_clip, isolated_home):
    source, spec = tiny_clip
    with pytest.raises(OfflineError) as err:
        load_init("openai", offline=True, openai_spec=spec)
    dest = _saved_as(str(err.value))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(source.read_bytes())  # what the message said to do
    init = load_init("openai", offline=True, openai_spec=spec)
    assert init.source == "openai" and init.path == dest
    assert W.read_recorded_hash(dest) == W.sha256_file(source)  # checked and pinned on first use


def test_a_damaged_openai_file_names_a_remedy_that_works(tiny_clip, isolated_home, monkeypatch):
    source, spec = tiny_clip
    dest = isolated_home / spec.filename
    dest.parent.mkdir(parents=True)
    dest.write_bytes(source.read_bytes())
    load_init("openai", offline=True, openai_spec=spec)  # pinned
    dest.write_bytes(source.read_bytes()[:-1] + b"\0")  # damaged afterwards
    with pytest.raises(WeightsError, match="does not match") as err:
        load_init("openai", offline=True, openai_spec=spec)
    message = str(err.value)
    assert "weights download" not in message and "weights import" not in message  # both are QualiCLIP-only
    assert f"delete {dest} and {W.hash_record_path(dest)}" in message
    # Follow it: delete both; the next run downloads the file again.
    dest.unlink()
    W.hash_record_path(dest).unlink()
    monkeypatch.delenv("QUALICLIP_OFFLINE")
    with FileServer() as server:
        server.files["/clip.safetensors"] = source.read_bytes()
        monkeypatch.setenv("QUALICLIP_CLIP_URL", server.url("/clip.safetensors"))
        init = load_init("openai", openai_spec=spec)
    assert init.sha256 == W.sha256_file(source)


def test_train_init_qualiclip_offline_names_train_s_own_option(photos, tmp_path, tiny_weights_file):
    message = _one_line(run_cli("train", "--pristine", photos, "--out", tmp_path / "run", "--workers", "0"))
    assert "offline mode is on" in message
    assert "--weights" not in message  # train has no --weights option
    assert "(or pass --init FILE)" in message
    # Following it: --init FILE gets past the starting weights.
    init = load_init(str(tiny_weights_file), offline=True)
    assert init.source == "file" and torch.is_tensor(init.clip_sd["visual.conv1.weight"])
