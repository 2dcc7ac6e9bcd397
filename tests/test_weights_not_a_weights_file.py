"""Files that are not weights files, given to every command that reads one: one line that says so, naming the file;
never an internal error, never "Python objects that would run code" for bytes that are simply not a PyTorch file."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import pytest
import torch

from cli_support import make_photo_dir, run_cli


def _zip_of_something_else() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("readme.txt", "a zip archive, but not torch's")
        archive.writestr("photos/IMG_1.jpg", b"\xff\xd8\xff")
    return buf.getvalue()


NOT_PYTORCH = {
    "text": (b"hello, these are not weights\n", "it is text, starting 'hello, these are not weights'"),
    "html": (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>gone</body></html>\n",
             "it is an HTML page"),
    "zip": (_zip_of_something_else(), "a zip archive without PyTorch's data.pkl"),
    "empty": (b"", "the file is empty"),
    "binary": (bytes(range(1, 256)) * 8, "neither a zip archive nor pickled tensors"),
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    make_photo_dir(root, names=("astronaut",))
    return root


def _one_line_error(result, path) -> str:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert str(path) in line
    assert "internal error" not in line and "Traceback" not in result.stderr
    assert "would run code" not in line
    return line


@pytest.mark.parametrize("kind", sorted(NOT_PYTORCH))
def test_a_file_in_no_pytorch_format_is_called_that_by_every_command(kind, tmp_path, photos, isolated_home):
    content, what = NOT_PYTORCH[kind]
    bad = tmp_path / "qualiclip.pth"
    bad.write_bytes(content)

    scored = run_cli("score", "--weights", bad, photos, "--format", "jsonl")
    line = _one_line_error(scored, bad)
    assert "not a PyTorch weights file" in line and what in line
    assert scored.stdout == ""

    verified = run_cli("weights", "verify", bad)
    line = _one_line_error(verified, bad)
    assert "not a PyTorch weights file" in line and what in line

    imported = run_cli("weights", "import", bad)
    line = _one_line_error(imported, bad)
    assert "not a PyTorch weights file" in line and what in line and "nothing was installed" in line
    assert not (isolated_home / "qualiclip.pth").exists()
    assert bad.read_bytes() == content  # the user's file is left as it was


@pytest.mark.parametrize("kind", ["plain pickle", "damaged legacy file"])
def test_pickled_bytes_that_torch_cannot_read_are_damaged_not_dangerous(kind, tmp_path, photos):
    bad = tmp_path / "weights.pth"
    if kind == "plain pickle":
        bad.write_bytes(pickle.dumps({"clip_model.visual.conv1.weight": [1.0, 2.0]}, protocol=4))
    else:
        legacy = tmp_path / "legacy.pth"
        torch.save({"prompts_features": torch.zeros(14, 8)}, legacy, _use_new_zipfile_serialization=False)
        data = bytearray(legacy.read_bytes())
        data[12:40] = os.urandom(28)  # damage inside the pickled header
        bad.write_bytes(bytes(data[:60]))
    for args in (("score", "--weights", bad, photos), ("weights", "verify", bad)):
        line = _one_line_error(run_cli(*args), bad)
        assert "corrupted or not a PyTorch weights file" in line, line


def test_a_file_that_would_run_code_is_still_refused_as_such(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("true",))

    evil = tmp_path / "evil.pth"
    torch.save({"prompts_features": torch.zeros(14, 8), "payload": Exploit()}, evil)
    result = run_cli("weights", "verify", evil)
    assert result.exit_code == 1
    assert "would run code" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_torch_file_whose_keys_are_not_names_is_not_a_qualiclip_file(tmp_path):
    odd = tmp_path / "odd.pth"
    torch.save({1: torch.zeros(2), "prompts_features": torch.zeros(14, 8)}, odd)
    result = run_cli("weights", "verify", odd)
    assert result.exit_code == 1 and "internal error" not in result.stderr
    assert "not a QualiCLIP weights file" in result.stderr and len(result.stderr.strip().splitlines()) == 1
