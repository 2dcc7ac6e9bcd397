"""SHA-256 of a file, read in 1 MiB chunks: the weights pin and the curation content checks use the same one."""

from __future__ import annotations

import hashlib
import os

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)  # releases the GIL: hashing overlaps other threads' work
    return digest.hexdigest()


def sha256_open_file(fd: int) -> str:
    """SHA-256 of an open file's whole content, read with os.pread: the descriptor's offset (shared with its
    duplicates) never moves, so a loader may read the same open file meanwhile."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        digest.update(chunk)  # releases the GIL
        offset += len(chunk)
    return digest.hexdigest()
