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
