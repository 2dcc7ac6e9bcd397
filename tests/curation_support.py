"""Helpers shared by the curation tests: building photo trees, records, and snapshots of a tree."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from qualiclip_cli.core.curation.plan import plan_cull
from qualiclip_cli.core.curation.selection import CullCriteria
from qualiclip_cli.core.records import ScoreRecord

REPO_ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, content: bytes, mtime: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    if mtime is not None:
        os.utime(path, ns=(mtime * 10**9, mtime * 10**9))
    return path


def record(path: Path, score: float | None, status: str = "ok") -> ScoreRecord:
    if status != "ok":
        return ScoreRecord.failure(str(path), "cannot decode")
    return ScoreRecord(path=str(path), score=score)


def snapshot(root: Path, include_dirs: bool = False) -> dict:
    """relative path -> (sha256, size, mtime_ns) for every file under root (and "dir" for directories)."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = Path(dirpath) / name
            st = p.stat()
            state[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns)
        if include_dirs:
            for name in dirnames:
                state[str((Path(dirpath) / name).relative_to(root)) + "/"] = "dir"
    return state


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cull(shoot, **kw):
    """A cull plan of a (root, records) shoot fixture: below 0.4, action move, unless ``kw`` says otherwise."""
    root, records = shoot
    kw.setdefault("action", "move")
    return plan_cull(records, CullCriteria(below=kw.pop("below", 0.4)), roots=[root], **kw)


def exiftool_xmp(*paths):
    """exiftool's reading of the XMP of `paths` (file name -> its tags, as -j -G1 gives them)."""
    exe = shutil.which("exiftool")
    if exe is None:
        pytest.fail("exiftool is required for this test (Debian/Ubuntu: apt-get install libimage-exiftool-perl)")
    out = subprocess.run([exe, "-j", "-G1", "-XMP:all", *map(str, paths)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {os.path.basename(row["SourceFile"]): row for row in json.loads(out.stdout)}
