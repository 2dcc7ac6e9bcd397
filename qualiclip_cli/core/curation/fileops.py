"""Safe file primitives: no-clobber move and copy, verified content, atomic sidecar writes. Nothing here ever
deletes or overwrites a user's file (the trash is in trash.py).

Collision policy (`on_collision`), used by `move_file`, `copy_file` and `free_destination`:

- "number" (default): never overwrite; if the destination exists, use the first free numbered name
  `IMG_1 (1).jpg`, `IMG_1 (2).jpg`, ... The name that was actually used is returned.
- "refuse": never overwrite; if the destination exists, raise CurationError and leave everything as it was.

Every placement is no-clobber even against a race: the final name is claimed with `os.link` (fails if the
name exists) and the old name unlinked afterwards; where hard links are not supported, an empty file is created
with O_EXCL to reserve the name and then replaced. Files are removed only when they are our own duplicates
(a verified copy whose original is intact, or a temporary partial copy).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from qualiclip_cli.core.atomic import fsync_dir
from qualiclip_cli.core.errors import CurationError
from qualiclip_cli.core.hashing import sha256_file

#: number: take the next free name, IMG_1 (1).jpg; refuse: leave the file where it is. Never overwrite.
OnCollision = Literal["number", "refuse"]
ON_COLLISION_CHOICES: tuple[str, ...] = get_args(OnCollision)
PARTIAL_SUFFIX = ".qualiclip-partial"
_CHUNK = 1 << 20
# os.link errors that mean "this filesystem has no hard links", so the O_EXCL reservation is used instead.
_NO_HARDLINK_ERRNOS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS, errno.EACCES}


@dataclass(frozen=True)
class FileFacts:
    """What identifies a file's content at one moment."""

    sha256: str
    size: int
    mtime_ns: int


def file_facts(path: str | os.PathLike) -> FileFacts:
    st = os.stat(path)
    return FileFacts(sha256=sha256_file(path), size=st.st_size, mtime_ns=st.st_mtime_ns)


def same_filesystem(source: str | os.PathLike, destination_dir: str | os.PathLike) -> bool:
    """Whether a rename from `source` into the existing directory `destination_dir` stays on one filesystem."""
    return os.stat(source).st_dev == os.stat(destination_dir).st_dev


def validate_on_collision(on_collision: str) -> str:
    if on_collision not in ON_COLLISION_CHOICES:
        raise CurationError(f"unknown collision policy {on_collision!r}; use one of {', '.join(ON_COLLISION_CHOICES)}")
    return on_collision


def numbered_stem(stem: str, n: int) -> str:
    """'IMG_1' -> 'IMG_1 (2)' for n=2; n=0 gives the stem unchanged."""
    return stem if n == 0 else f"{stem} ({n})"


def numbered_name(name: str, n: int) -> str:
    """'IMG_1.jpg' -> 'IMG_1 (1).jpg' for n=1 (the number goes before the last suffix)."""
    p = Path(name)
    return numbered_stem(p.stem, n) + p.suffix


def free_destination(destination: str | os.PathLike, on_collision: str = "number",
                     taken: Iterable[Path] = ()) -> Path:
    """The name to use for `destination`: itself if free (on disk and not in `taken`), else per policy:
    "number" gives the first free numbered name, "refuse" raises CurationError."""
    validate_on_collision(on_collision)
    destination = Path(destination)
    taken = set(taken)
    n = 0
    while True:
        candidate = destination.with_name(numbered_name(destination.name, n))
        if not os.path.lexists(candidate) and candidate not in taken:
            return candidate
        if on_collision == "refuse":
            raise CurationError(f"{destination}: destination exists; refusing to overwrite")
        n += 1


def partial_path(destination: str | os.PathLike, token: str | None = None) -> Path:
    """Temporary name, in the destination's directory, for a copy being written there."""
    destination = Path(destination)
    return destination.with_name(f".{destination.name}.{token or secrets.token_hex(4)}{PARTIAL_SUFFIX}")


def missing_dirs(directory: str | os.PathLike) -> list[Path]:
    """`directory` and those of its parents that do not exist yet, outermost first."""
    probe = Path(directory)
    missing = []
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    return missing[::-1]


def make_dirs(directory: str | os.PathLike) -> list[Path]:
    """Create `directory` and missing parents; return the ones this call created, outermost first."""
    created = []
    for d in missing_dirs(directory):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                raise CurationError(f"{d}: exists and is not a directory") from None
            continue
        except OSError as exc:
            raise CurationError(f"{d}: cannot create directory ({exc.strerror or exc})") from exc
        fsync_dir(d.parent)
        created.append(d)
    return created


def rename_no_clobber(old: str | os.PathLike, new: str | os.PathLike) -> None:
    """Rename within one filesystem; raise FileExistsError if `new` exists (never replaces it)."""
    try:
        try:
            os.link(old, new, follow_symlinks=False)
        except NotImplementedError:
            os.link(old, new)
    except FileExistsError:
        raise
    except (OSError, AttributeError) as exc:
        if isinstance(exc, OSError) and exc.errno not in _NO_HARDLINK_ERRNOS:
            raise
        _reserve_then_replace(old, new)
        return
    try:
        os.unlink(old)
    except OSError:
        _drop_new_name(old, new)  # the move did not happen: the file keeps only its old name
        raise


def _drop_new_name(old: str | os.PathLike, new: str | os.PathLike) -> None:
    """Remove `new` when it is a second name of the file `old` (the link a failed rename made), else nothing."""
    try:
        if os.path.samefile(old, new):
            os.unlink(new)
    except OSError:
        pass


def _reserve_then_replace(old: str | os.PathLike, new: str | os.PathLike) -> None:
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # FileExistsError if taken
    os.close(fd)
    try:
        os.replace(old, new)  # replaces only our own empty reservation
    except BaseException:
        try:
            if os.path.getsize(new) == 0:
                os.unlink(new)
        except OSError:
            pass
        raise


def _place(old: Path, destination: Path, on_collision: str) -> Path:
    """Rename `old` (same filesystem) to `destination` or, under "number", its first free numbered name."""
    n = 0
    while True:
        candidate = destination.with_name(numbered_name(destination.name, n))
        try:
            rename_no_clobber(old, candidate)
            return candidate
        except FileExistsError:
            if on_collision == "refuse":
                raise CurationError(f"{destination}: destination exists; refusing to overwrite") from None
            n += 1


@contextmanager
def _discard_on_failure(tmp: Path, message: str):
    """On any failure inside the block remove `tmp` (our temporary file, never the user's) and re-raise;
    an OSError becomes CurationError(message) with "{reason}" replaced by the OS's reason."""
    try:
        yield
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise CurationError(message.replace("{reason}", str(exc.strerror or exc))) from exc
        raise


def _copy_verified(source: Path, partial: Path, expected_sha256: str) -> None:
    """Copy data, permission bits and times (shutil.copy2 semantics) to a new file `partial`, fsync it, and
    check its SHA-256. On any failure the partial file (ours) is removed and CurationError raised."""
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CurationError(f"{partial}: a leftover partial copy is in the way; move it aside and retry") from None
    except OSError as exc:
        raise CurationError(f"{partial}: cannot create ({exc.strerror or exc})") from exc
    with _discard_on_failure(partial, f"{source}: copy failed ({{reason}}); original left in place"):
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        shutil.copystat(source, partial)
        got = sha256_file(partial)
        if got != expected_sha256:
            raise CurationError(f"{source}: copy did not verify (SHA-256 mismatch); original left in place")


def check_source(source: Path) -> None:
    """A file we may move, copy or trash: a regular file, not a symbolic link (moving a link's content would
    replace the link by a copy, or leave it dangling)."""
    if source.is_symlink():
        raise CurationError(f"{source}: is a symbolic link; left in place")
    if not source.is_file():
        raise CurationError(f"{source}: not found or not a regular file")


def move_file(source: str | os.PathLike, destination: str | os.PathLike, on_collision: str = "number",
              partial: str | os.PathLike | None = None, expected_sha256: str | None = None) -> Path:
    """Move one file; return where it ended up. The destination directory must exist.

    Same filesystem: a no-clobber rename (link, then unlink the old name). Across filesystems: copy to
    `partial` (a temporary name in the destination directory), fsync, verify SHA-256 against the source (or
    `expected_sha256`), rename into place without clobbering, fsync the directory, and only then remove the
    source. Collisions per `on_collision` (see module docstring). Raises CurationError; on failure the source
    is left in place.
    """
    validate_on_collision(on_collision)
    source, destination = Path(source), Path(destination)
    check_source(source)
    try:
        if same_filesystem(source, destination.parent):
            final = _place(source, destination, on_collision)
            fsync_dir(destination.parent)
            if source.parent != destination.parent:
                fsync_dir(source.parent)
            return final
    except OSError as exc:
        raise CurationError(f"{source}: move failed ({exc.strerror or exc})") from exc
    expected = expected_sha256 or sha256_file(source)
    tmp = Path(partial) if partial is not None else partial_path(destination)
    final = _place_copy(source, tmp, destination, on_collision, expected)
    try:
        os.unlink(source)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        try:  # our verified copy goes again, so the file is in one place: where it was
            remove_own_copy(final, expected, source)
        except (CurationError, OSError):
            raise CurationError(f"{source}: copied and verified to {final} but the original could not be removed "
                                f"({reason}); both are kept") from exc
        raise CurationError(f"{source}: move failed ({reason}); left in place") from exc
    fsync_dir(source.parent)
    return final


def copy_file(source: str | os.PathLike, destination: str | os.PathLike, on_collision: str = "number",
              partial: str | os.PathLike | None = None, expected_sha256: str | None = None) -> Path:
    """Copy one file (data, permission bits and mtime, like shutil.copy2) and return the name used.

    Always through a verified temporary copy in the destination directory, renamed into place without
    clobbering. Collisions per `on_collision`. The source is never modified.
    """
    validate_on_collision(on_collision)
    source, destination = Path(source), Path(destination)
    check_source(source)
    expected = expected_sha256 or sha256_file(source)
    tmp = Path(partial) if partial is not None else partial_path(destination)
    return _place_copy(source, tmp, destination, on_collision, expected)


def _place_copy(source: Path, tmp: Path, destination: Path, on_collision: str, expected: str) -> Path:
    _copy_verified(source, tmp, expected)
    with _discard_on_failure(tmp, f"{source}: cannot place copy at {destination} ({{reason}})"):
        final = _place(tmp, destination, on_collision)
    fsync_dir(destination.parent)
    return final


def remove_own_copy(path: str | os.PathLike, sha256: str, original: str | os.PathLike | None = None) -> None:
    """Remove a file this program created (a copy or a sidecar), only if its content is still `sha256` and,
    when `original` is given, that original still exists with the same content. Otherwise CurationError."""
    path = Path(path)
    if sha256_file(path) != sha256:
        raise CurationError(f"{path}: changed since it was written; left in place")
    if original is not None:
        if not Path(original).is_file() or sha256_file(original) != sha256:
            raise CurationError(f"{path}: its original {original} is gone or changed; the copy is kept")
    os.unlink(path)
    fsync_dir(path.parent)


# Opening flags for reading a file we were not given by the user as a photo (a sidecar): never follow a symlink,
# never block (a FIFO opened for reading waits for a writer otherwise), binary on Windows.
_READ_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))
_KINDS = ((stat.S_ISLNK, "a symbolic link (not followed)"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _not_regular(path: Path, mode: int) -> CurationError:
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return CurationError(f"{path}: {kind}, not a regular file; left untouched")


@contextmanager
def open_regular(path: str | os.PathLike):
    """Open an existing regular file for reading, as (binary file, its fstat), without following a symlink and
    without blocking: whatever is at `path` is looked at with lstat first, opened with O_NOFOLLOW|O_NONBLOCK (a
    FIFO or a device is never opened), and checked again on the open descriptor (it may have been swapped).

    FileNotFoundError when nothing is there; CurationError (one line, naming the file and why) for a symbolic
    link (even one to a regular file), a FIFO, a device, a directory or a file that cannot be read."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CurationError(f"{path}: cannot read ({exc.strerror or exc}); left untouched") from exc
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a link that replaced the file meanwhile
            raise _not_regular(path, stat.S_IFLNK) from None
        raise CurationError(f"{path}: cannot read ({exc.strerror or exc}); left untouched") from exc
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        yield handle, st


def _size_text(n: int) -> str:
    return f"{n // (1 << 20)} MiB" if n % (1 << 20) == 0 else f"{n} bytes"


def read_regular_file(path: str | os.PathLike, limit: int) -> tuple[bytes, os.stat_result]:
    """The content and fstat of the regular file at `path` (see `open_regular`: no link followed, nothing that
    could block opened), refused with CurationError when it is larger than `limit` bytes (checked on the size
    and again while reading, so a file growing meanwhile is not read without bound). FileNotFoundError when
    nothing is there."""
    path = Path(path)
    with open_regular(path) as (handle, st):
        too_big = CurationError(f"{path}: larger than {_size_text(limit)}, the most accepted here; left untouched")
        if st.st_size > limit:
            raise too_big
        data = handle.read(limit + 1)
        if len(data) > limit:
            raise too_big
    return data, st


def _sha256_of_regular(path: Path) -> str | None:
    """SHA-256 of the regular file at `path`, None when nothing is there; CurationError for anything else."""
    digest = hashlib.sha256()
    try:
        with open_regular(path) as (handle, _):
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest()


def _set_mode(fd: int, path: Path, mode: int) -> None:
    if hasattr(os, "fchmod"):
        os.fchmod(fd, mode)
    else:  # Windows
        os.chmod(path, mode)


def write_file_atomic(path: str | os.PathLike, data: bytes, expected_sha256: str | None,
                      partial: str | os.PathLike | None = None, mode: int | None = None) -> None:
    """Give `path` the content `data` atomically (temp file in the same directory, fsync, rename).

    `expected_sha256` is the content we read before deciding to write (None: the file did not exist). If the
    file changed in the meantime (or appeared), or is no longer a regular file (a symlink, a FIFO), raise
    CurationError and leave it alone: a link is replaced by nothing and never written through. `mode`: the
    permission bits the new file gets (default: those of the file it replaces, or 0666 less the umask for a
    new one). Used for sidecars, which are ours to update; never used on a photo. The temporary file is
    `partial` when given (a name the caller journaled, so an interrupted write can be cleaned up), else a fresh
    `partial_path(path)`; it is created with O_EXCL, never over an existing file.
    """
    path = Path(path)
    tmp = Path(partial) if partial is not None else partial_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        raise CurationError(f"{tmp}: a leftover temporary file is in the way; move it aside and retry") from None
    except OSError as exc:
        raise CurationError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    with _discard_on_failure(tmp, f"{path}: cannot write ({{reason}})"):
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
            if expected_sha256 is None:
                _set_mode(out.fileno(), tmp, (0o666 & ~_umask()) if mode is None else mode)
            else:
                if _sha256_of_regular(path) != expected_sha256:
                    raise CurationError(f"{path}: changed while it was being updated; left alone")
                if mode is None:
                    mode = stat.S_IMODE(os.lstat(path).st_mode)
                _set_mode(out.fileno(), tmp, mode)
        if expected_sha256 is None:
            try:
                rename_no_clobber(tmp, path)
            except FileExistsError:
                raise CurationError(f"{path}: appeared while it was being written; left alone") from None
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)


# ---- what is at a path, without following symbolic links (undo decides with these)

def lstat_or_none(path: str | os.PathLike) -> os.stat_result | None:
    """The path's own status (a symbolic link is not followed), or None when nothing is there."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def is_regular(st: os.stat_result | None) -> bool:
    return st is not None and stat.S_ISREG(st.st_mode)


def regular_sha256(path: str | os.PathLike) -> str | None:
    """SHA-256 of the regular file at `path` itself, or None when there is none: missing, a symbolic link
    (never followed), a directory, a device, a FIFO (never opened) or a file that cannot be opened."""
    try:
        return _sha256_of_regular(Path(path))
    except CurationError:
        return None


def _entry(path: str | os.PathLike) -> str:
    """The directory entry a path names: its folder resolved, its own name kept (a link is not followed)."""
    path = Path(path)
    return os.path.join(os.path.realpath(path.parent), path.name)


def same_entry(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one directory entry (through a symlinked folder, `..` or the like)."""
    return os.path.normcase(_entry(a)) == os.path.normcase(_entry(b))


def holds_copy(path: str | os.PathLike, sha256: str) -> bool:
    """Whether `path` itself (not a link's target) is a regular file whose content is `sha256`."""
    return regular_sha256(path) == sha256


def remove_duplicate(path: str | os.PathLike, sha256: str, keeper: str | os.PathLike) -> None:
    """Remove `path` only when another entry, `keeper`, verifiably holds the same bytes as a regular file:
    both are regular files (neither is a symbolic link), both have the content `sha256`, they are two
    directory entries (not one reached by two spellings), and a shared inode has a second name. Otherwise
    CurationError, and nothing is removed. This is how undo drops a file: never the last copy of anything."""
    path, keeper = Path(path), Path(keeper)
    if same_entry(path, keeper):
        raise CurationError(f"{path}: it is the same file as {keeper}; left in place")
    st, kst = lstat_or_none(path), lstat_or_none(keeper)
    if not is_regular(st):
        raise CurationError(f"{path}: not a regular file (a link or gone); left in place")
    if not is_regular(kst):
        what = "a symbolic link" if kst is not None and stat.S_ISLNK(kst.st_mode) else "not a regular file"
        raise CurationError(f"{keeper} is {what}; {path} is kept")
    if (st.st_dev, st.st_ino) == (kst.st_dev, kst.st_ino) and st.st_nlink < 2:
        raise CurationError(f"{path}: it is the same file as {keeper}; left in place")
    if regular_sha256(path) != sha256:
        raise CurationError(f"{path}: changed since it was written; left in place")
    if regular_sha256(keeper) != sha256:
        raise CurationError(f"{keeper} is gone or changed; {path} is kept")
    os.unlink(path)
    fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
