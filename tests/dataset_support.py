"""Helpers for the dataset tests: WebDataset tar shards and parquet files built from small natural images."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from cli_support import natural_image

NAMES = ("astronaut", "coffee", "chelsea", "rocket")


def jpeg_bytes(name: str, size=(96, 72), exif: bytes | None = None) -> bytes:
    out = io.BytesIO()
    natural_image(name, size).save(out, "JPEG", quality=92, **({"exif": exif} if exif else {}))
    return out.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar of (member name, bytes), in the given order (WebDataset keeps a sample's members together)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def image_set(folder: Path, names=NAMES) -> dict[str, bytes]:
    """key -> JPEG bytes, also written as folder/<key>.jpg (the same images as files)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for i, name in enumerate(names):
        key = f"{i:06d}"
        images[key] = jpeg_bytes(name)
        (folder / f"{key}.jpg").write_bytes(images[key])
    return images


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def read_output(path: Path) -> dict[str, dict]:
    import pyarrow.parquet as pq

    return {row["__key__"]: row for row in pq.read_table(path).to_pylist()}
