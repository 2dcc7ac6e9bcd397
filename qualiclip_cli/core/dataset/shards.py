"""Dataset shards as samples: WebDataset tar shards and parquet files with an image-bytes column.

`expand_shards` turns the SHARDS arguments (brace ranges and lists such as ``shards/{000000..000146}.tar``, globs,
plain paths) into the shard files, in argument order. `read_samples` reads one shard as `Sample`s, in the shard's
own order, without decoding anything: a sample's image bytes, or why it has none (the bad sample is a row, the
shard goes on). A shard that cannot be read as a whole (not a tar, a cut tar, not a parquet file, no image
column) raises `ShardError`: the caller reports it and goes on with the other shards.

WebDataset's grouping: a tar member ``dir/000042.jpg`` belongs to sample ``dir/000042`` (the member's name up to
the first dot of its base name), its extension ``jpg`` names the field; a sample's members are consecutive. The
image is the member named by ``image_field`` (an extension such as ``jpg``, or several, comma-separated, the first
present wins), or by default the first member whose extension is a picture's (`filetypes.PICTURE_EXTENSIONS`).
"""

from __future__ import annotations

import glob
import os
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qualiclip_cli.core.errors import QualiclipError, one_line
from qualiclip_cli.core.filetypes import PICTURE_EXTENSIONS, RAW_EXTENSIONS

#: The file kinds a shard may be, by extension.
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PARQUET_SUFFIXES = (".parquet", ".pq")
#: The columns tried, in order, for a parquet shard's image bytes when none is named (`bytes`: what Ray's
#: `read_binary_files` gives; `image`: Hugging Face datasets, a struct with a `bytes` field; `jpg`: img2dataset).
IMAGE_COLUMNS = ("bytes", "image", "jpg", "jpeg", "png", "webp")
#: The columns tried, in order, for a parquet shard's sample key (else the row number).
KEY_COLUMNS = ("__key__", "key")
#: A brace expression: a numeric range {000..146} (zero padding kept) or a list {a,b,c}.
_BRACE = re.compile(r"\{([^{}]*)\}")


class ShardError(QualiclipError):
    """A whole shard cannot be read (one line, naming the shard)."""


@dataclass
class Sample:
    """One sample of a shard: its key, and its image bytes or why there are none."""

    key: str
    name: str  # how messages name it: "<shard>:<member>" (tar) or "<shard>:<key>" (parquet)
    data: bytes | None = None
    extension: str = ""  # the image member's extension (tar), "" when unknown
    error: str | None = None


def expand_braces(pattern: str) -> list[str]:
    """``a/{000..002}.tar`` → a/000.tar, a/001.tar, a/002.tar; ``{x,y}.tar`` → x.tar, y.tar; nested and repeated
    braces expand left to right. A brace that is neither a range nor a list stays as written."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[:match.start()], match[1], pattern[match.end():]
    ranged = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if ranged:
        first, last = ranged[1], ranged[2]
        width = len(first) if first.startswith("0") or last.startswith("0") else 0
        lo, hi = int(first), int(last)
        step = 1 if hi >= lo else -1
        items = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    elif "," in body:
        items = body.split(",")
    else:
        return [head + "{" + body + "}" + t for t in expand_braces(tail)]
    return [expanded for item in items for expanded in expand_braces(head + item + tail)]


def expand_shards(patterns: list[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """The shard files the SHARDS arguments name, in order and each once, and the arguments that name none
    (a missing file, a glob that matches nothing), as one-line problems."""
    shards: list[Path] = []
    seen: set[str] = set()
    problems: list[str] = []
    for pattern in patterns:
        for expanded in expand_braces(os.fspath(pattern)):
            if glob.has_magic(expanded):
                matches = sorted(glob.glob(expanded))
                if not matches:
                    problems.append(f"{expanded}: no file matches")
            elif os.path.isfile(expanded):
                matches = [expanded]
            else:
                problems.append(f"{expanded}: " + ("is a directory, not a shard" if os.path.isdir(expanded)
                                                    else "no such file"))
                matches = []
            for match in matches:
                if match not in seen and os.path.isfile(match):
                    seen.add(match)
                    shards.append(Path(match))
    return shards, problems


def shard_kind(path: Path) -> str:
    """"tar" or "parquet", from the shard's name; ShardError for anything else."""
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise ShardError(f"{path}: not a shard (expected .tar, .tar.gz or .parquet)")


def shard_stem(path: Path) -> str:
    """The shard's name without its shard extension: 000042.tar → 000042."""
    name = path.name
    for suffix in TAR_SUFFIXES + PARQUET_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def split_member(name: str) -> tuple[str, str]:
    """A tar member's (key, extension) by WebDataset's rule: the name up to the first dot of its base name."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, (ext if dot else "")


def count_samples(path: Path, image_column: str | None = None, key_column: str | None = None) -> int:
    """How many samples `read_samples` will give (tar: headers only; parquet: the footer); ShardError when the
    shard cannot be read."""
    if shard_kind(path) == "parquet":
        return _open_parquet(path).metadata.num_rows
    try:
        with _open_tar(path, headers_only=True) as tar:
            keys = [split_member(m.name)[0] for m in tar if m.isfile() and not _is_metadata(m.name)]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ShardError(f"{path}: not a readable tar shard ({one_line(exc)})") from None
    return sum(1 for i, key in enumerate(keys) if i == 0 or key != keys[i - 1])


def read_samples(path: Path, image_field: str | None = None, key_column: str | None = None) -> Iterator[Sample]:
    """The samples of one shard, in its order (see the module docstring). ``image_field``: the tar member
    extension(s) or the parquet column holding the image (None: found as described); ``key_column``: the parquet
    column of the key (None: `KEY_COLUMNS`, else the row number). Raises ShardError, possibly after some samples,
    when the shard as a whole cannot be read."""
    if shard_kind(path) == "parquet":
        yield from _parquet_samples(path, image_field, key_column)
    else:
        yield from _tar_samples(path, image_field)


# -- tar ----------------------------------------------------------------------------------------------------


def _open_tar(path: Path, headers_only: bool = False) -> tarfile.TarFile:
    """The shard as a tar read in order (gzip-compressed by its name), so a damaged one fails with its reason.
    ``headers_only``: an uncompressed tar opened for seeking, so listing its members reads their headers and skips
    their data (a stream reads every byte)."""
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return tarfile.open(path, "r|gz")
    return tarfile.open(path, "r:" if headers_only else "r|")


def _is_metadata(name: str) -> bool:
    return name.rpartition("/")[2].startswith(".")  # e.g. ._ files a Mac's tar adds


def _tar_samples(path: Path, image_field: str | None) -> Iterator[Sample]:
    wanted = [e.strip().lower() for e in image_field.split(",") if e.strip()] if image_field else None
    try:
        with _open_tar(path) as tar:
            key: str | None = None
            members: dict[str, tuple[str, bytes | None]] = {}  # extension -> (member name, bytes if a candidate)
            for member in tar:
                if not member.isfile() or _is_metadata(member.name):
                    continue
                member_key, ext = split_member(member.name)
                if member_key != key and key is not None:
                    yield _tar_sample(path, key, members, wanted)
                    members = {}
                key = member_key
                ext = ext.lower()
                if ext not in members:
                    # The tar is read as a stream: a member that may be the image is read now, the others skipped.
                    data = _read_member(tar, member) if _is_candidate(ext, wanted) else None
                    members[ext] = (member.name, data)
            if key is not None:
                yield _tar_sample(path, key, members, wanted)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise ShardError(f"{path}: not a readable tar shard ({one_line(exc)})") from None


def _is_candidate(ext: str, wanted: list[str] | None) -> bool:
    if wanted is not None:
        return ext in wanted
    return ext.rpartition(".")[2] in PICTURE_EXTENSIONS | RAW_EXTENSIONS


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    stream = tar.extractfile(member)
    data = stream.read() if stream is not None else b""
    if len(data) != member.size:
        raise tarfile.ReadError(f"member {member.name} is cut short")
    return data


def _tar_sample(path: Path, key: str, members: dict[str, tuple[str, bytes | None]],
                wanted: list[str] | None) -> Sample:
    if wanted is not None:
        ext = next((e for e in wanted if e in members), None)
    else:
        ext = next((e for e in members if _is_candidate(e, None)), None)
    if ext is None:
        found = ", ".join(sorted(members)) or "nothing"
        looked = f" named {', '.join(wanted)}" if wanted else ""
        return Sample(key, f"{path}:{key}", error=f"no image member{looked} in the sample (it has {found})")
    name, data = members[ext]
    return Sample(key, f"{path}:{name}", data, ext.rpartition(".")[2])


# -- parquet ------------------------------------------------------------------------------------------------


def _open_parquet(path: Path):
    from qualiclip_cli.core.dataset.table import require_pyarrow

    require_pyarrow()
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # ArrowInvalid, OSError...: pyarrow's own kinds
        raise ShardError(f"{path}: not a readable parquet file ({one_line(exc)})") from None


def _parquet_samples(path: Path, image_column: str | None, key_column: str | None) -> Iterator[Sample]:
    parquet = _open_parquet(path)
    names = parquet.schema_arrow.names
    column = image_column or next((c for c in IMAGE_COLUMNS if c in names), None)
    if column is None or column not in names:
        what = f"no column {column!r}" if column else f"no image column (none of {', '.join(IMAGE_COLUMNS)})"
        raise ShardError(f"{path}: {what}; name the image column with --image-column")
    key = key_column or next((c for c in KEY_COLUMNS if c in names), None)
    if key is not None and key not in names:
        raise ShardError(f"{path}: no key column {key!r}")
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=256, columns=[column] + ([key] if key else [])):
            images = batch.column(0).to_pylist()
            keys = batch.column(1).to_pylist() if key else [None] * len(images)
            for value, sample_key in zip(images, keys):
                sample_key = str(row) if sample_key is None else str(sample_key)
                yield _parquet_sample(path, sample_key, value)
                row += 1
    except ShardError:
        raise
    except Exception as exc:
        raise ShardError(f"{path}: not a readable parquet file ({one_line(exc)})") from None


def _parquet_sample(path: Path, key: str, value) -> Sample:
    name = f"{path}:{key}"
    if isinstance(value, dict):  # Hugging Face's image struct: {"bytes": ..., "path": ...}
        value = value.get("bytes")
    if value is None:
        return Sample(key, name, error="no image bytes (null)")
    if isinstance(value, str):
        return Sample(key, name, error="the image column holds text, not image bytes")
    return Sample(key, name, bytes(value))
