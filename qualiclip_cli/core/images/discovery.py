"""Finding the image files named on the command line.

`find_images` turns the PATH arguments of a command into a deterministic stream of `Found` entries:
one per image file to process, plus one per problem the user should hear about (a missing argument,
an unreadable directory, a symlink loop). Problems never stop the walk.

Rules:

* Arguments are read as the kernel reads them: a ``..`` after a symbolic link steps out of the link's
  target (``shoot/link/..`` is the folder above the target, not ``shoot``). An argument whose lexical
  reading (os.path.abspath) names the same place is kept as written; any other is replaced by its kernel
  reading, an absolute path, so every path handed out names the file that is opened and acted on.
* Arguments are handled in the order given. A file argument is always yielded, whatever its extension
  (the decoder reports it if it is not an image) and even if its name starts with a dot. A directory
  argument is walked: recursively by default, only its own files with ``recursive=False``.
* Inside a directory, entries (files and sub-directories together) are visited sorted by name (plain
  code-point order), depth first, so the output order never depends on the file system.
* Walked files count as images when their extension, compared case-insensitively, is in
  `IMAGE_EXTENSIONS` (camera spellings included: ``.jpe``, ``.jfif``, ``.mpo``, ``.hif``; and every RAW format of
  `filetypes.RAW_EXTENSIONS`).
* RAW+JPEG pairs: a RAW and a camera picture (JPEG or HEIF, `filetypes.CAMERA_PICTURE_EXTENSIONS`) of the same
  stem (exact, e.g. ``IMG_1.CR3`` and ``IMG_1.JPG``) in one walked folder are one frame. With ``raw_pairs="jpeg"``
  (the default) the walk yields the camera picture and passes over the RAW (counted: curation moves it with its
  JPEG); ``"raw"`` yields the RAW and passes over the picture; ``"both"`` yields both. Only files the walk would
  yield form a pair (an excluded or hidden partner does not count). File arguments are always yielded.
* Nothing is left out silently: pass a `Skipped` (``skipped=``) and the walk counts what it passed over,
  by reason: files with other extensions (and which extensions), hidden files and folders, files and
  folders left out by ``include``/``exclude``, symbolic links not followed, sub-folders not entered when
  not recursive. A hidden, excluded or unentered folder counts once; its contents are not looked at.
* Names starting with ``.`` (files and directories) are skipped during a walk unless ``hidden=True``.
* Symbolic links met during a walk (to files or directories) are skipped unless ``follow_symlinks=True``.
  Symlinks named on the command line are always followed. When following, a directory that leads back to
  one of its own ancestors is reported as ``Found(path, "symlink loop: ...")`` instead of being walked
  again, and a symlinked directory whose target was already walked elsewhere is not walked twice.
  A broken link with an image name is reported as an error entry.
* ``include`` / ``exclude`` are `fnmatch` glob patterns. Each pattern is tried against the file's path
  relative to the argument it was found under (``/``-separated, e.g. ``2023/holiday/IMG_1.jpg``) and against
  its base name (``IMG_1.jpg``); a match on either counts. Note that ``*`` also matches ``/``, so
  ``2023/*`` matches everything below ``2023``. A file is kept when ``include`` is empty or one of its
  patterns matches, and no ``exclude`` pattern matches. ``exclude`` patterns also prune directories
  (matched against the directory's relative path and its name, e.g. ``--exclude _rejected``). For a file
  argument the relative path is its base name. Case sensitivity follows the platform (`fnmatch.fnmatch`).
* The same file (same device and inode, so hard links count as one) reached twice — through two
  arguments, or a followed symlink — is yielded once, at its first occurrence.

No folder name is treated specially: excluding a quarantine folder is the caller's choice (pass it in
``exclude``).
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, get_args

from qualiclip_cli.core.filetypes import IMAGE_EXTENSIONS, is_camera_picture_name, is_image_name, is_raw_name
from qualiclip_cli.core.paths import kernel_path, lexical_reading_agrees

__all__ = ["IMAGE_EXTENSIONS", "RAW_PAIRS", "Found", "RawPairs", "Skipped", "find_images", "is_image_name",
           "read_path_list"]

#: What a walk scores of a RAW+JPEG pair (a RAW and a camera JPEG or HEIF of the same stem in one folder).
RawPairs = Literal["jpeg", "raw", "both"]
RAW_PAIRS: tuple[str, ...] = get_args(RawPairs)

#: At most this many extensions are named in `Skipped.describe`.
_EXTENSIONS_NAMED = 6


@dataclass(frozen=True)
class Found:
    """One result of a walk: an image file to process (``error is None``) or a problem to report."""

    path: Path
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _counted(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


@dataclass
class Skipped:
    """What a walk passed over, counted by reason as it goes (see the module docstring)."""

    #: lower-case extension ("" for none) -> (its spelling as first met, e.g. "ARW"; how many files)
    extensions: dict[str, tuple[str, int]] = field(default_factory=dict)
    hidden_files: int = 0
    hidden_folders: int = 0
    excluded_files: int = 0
    excluded_folders: int = 0
    links: int = 0  # symbolic links not followed
    folders: int = 0  # sub-folders not entered (not recursive)
    paired_raws: int = 0  # RAWs of RAW+JPEG pairs, scored from their JPEG (raw_pairs="jpeg")
    paired_pictures: int = 0  # camera JPEG/HEIF of RAW+JPEG pairs, scored from their RAW (raw_pairs="raw")

    def other_extension(self, name: str) -> None:
        _, dot, ext = name.rpartition(".")
        ext = ext if dot else ""
        spelling, n = self.extensions.get(ext.lower(), (ext, 0))
        self.extensions[ext.lower()] = (spelling, n + 1)

    @property
    def total(self) -> int:
        return (sum(n for _, n in self.extensions.values()) + self.hidden_files + self.hidden_folders
                + self.excluded_files + self.excluded_folders + self.links + self.folders + self.paired_raws
                + self.paired_pictures)

    def describe(self) -> list[str]:
        """One phrase per reason that occurred, e.g. "3 files with other extensions (.txt, .xmp)"."""
        parts = []
        if self.extensions:
            n = sum(count for _, count in self.extensions.values())
            names = [f".{spelling}" if key else "no extension" for key, (spelling, _) in sorted(self.extensions.items())]
            shown = ", ".join(names[:_EXTENSIONS_NAMED]) + (", …" if len(names) > _EXTENSIONS_NAMED else "")
            parts.append(_counted(n, "file with another extension", "files with other extensions") + f" ({shown})")
        for n, one, many in (
            (self.hidden_files, "hidden file", "hidden files"),
            (self.hidden_folders, "hidden folder", "hidden folders"),
            (self.excluded_files, "excluded file", "excluded files"),
            (self.excluded_folders, "excluded folder", "excluded folders"),
            (self.links, "symbolic link not followed", "symbolic links not followed"),
            (self.folders, "sub-folder not walked (not recursive)", "sub-folders not walked (not recursive)"),
            (self.paired_raws, "RAW scored from its camera JPEG (RAW+JPEG pair)",
             "RAWs scored from their camera JPEGs (RAW+JPEG pairs)"),
            (self.paired_pictures, "camera JPEG of a RAW+JPEG pair scored from its RAW",
             "camera JPEGs of RAW+JPEG pairs scored from their RAWs"),
        ):
            if n:
                parts.append(_counted(n, one, many))
        return parts


def read_path_list(stream: BinaryIO, null: bool = False, chunk_size: int = 1 << 16) -> Iterator[str]:
    """The paths listed in a binary stream, one per line (``null``: NUL-separated), as they are read.

    Any byte string is a name (read as the file system does, `os.fsdecode`); nothing is stripped, so a name may
    hold spaces, and with ``null`` newlines too; empty entries (blank lines) are ignored.
    """
    sep = b"\0" if null else b"\n"
    rest = b""
    while chunk := stream.read(chunk_size):
        *complete, rest = (rest + chunk).split(sep)
        yield from (os.fsdecode(name) for name in complete if name)
    if rest:
        yield os.fsdecode(rest)


def _matches(patterns: tuple[str, ...], rel: str, name: str) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def _os_reason(exc: OSError) -> str:
    """A short lower-case reason for an OSError, without the path (the Found entry carries it)."""
    if isinstance(exc, FileNotFoundError):
        return "no such file or directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, NotADirectoryError):
        return "not a directory"
    text = exc.strerror or str(exc) or type(exc).__name__
    return " ".join(text.split()).lower()


def _as_the_kernel_reads(arg: str | os.PathLike[str]) -> Path:
    """The argument as written when that names what the kernel opens, else its kernel reading (absolute):
    `shoot/link/..` is the folder above the link's target, not `shoot`."""
    try:
        if lexical_reading_agrees(arg):
            return Path(arg)
        return kernel_path(arg)
    except (OSError, ValueError):  # unreadable or invalid: reported by the stat that follows
        return Path(arg)


def _unreadable(directory: Path, exc: OSError) -> Found:
    return Found(directory, f"cannot read directory: {_os_reason(exc)}")


class _Walker:
    def __init__(
        self,
        recursive: bool,
        include: tuple[str, ...],
        exclude: tuple[str, ...],
        hidden: bool,
        follow_symlinks: bool,
        skipped: Skipped | None = None,
        raw_pairs: RawPairs = "jpeg",
    ) -> None:
        if raw_pairs not in RAW_PAIRS:
            raise ValueError(f"raw_pairs must be one of {', '.join(RAW_PAIRS)}, got {raw_pairs!r}")
        self.raw_pairs = raw_pairs
        self.skipped = skipped if skipped is not None else Skipped()
        self.recursive = recursive
        self.include = include
        self.exclude = exclude
        self.hidden = hidden
        self.follow = follow_symlinks
        self.seen_files: set[tuple[int, int]] = set()
        self.walked_dirs: set[tuple[int, int]] = set()

    # -- files ---------------------------------------------------------------------------------------
    def _wanted(self, rel: str, name: str) -> bool:
        if self.include and not _matches(self.include, rel, name):
            return False
        return not (self.exclude and _matches(self.exclude, rel, name))

    def _first_time(self, st: os.stat_result) -> bool:
        key = (st.st_dev, st.st_ino)
        if key in self.seen_files:
            return False
        self.seen_files.add(key)
        return True

    # -- arguments -----------------------------------------------------------------------------------
    def argument(self, arg: str | os.PathLike[str]) -> Iterator[Found]:
        path = _as_the_kernel_reads(arg)
        try:
            st = os.stat(path)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and os.path.islink(path):
                yield Found(path, "broken symbolic link (its target does not exist)")
            else:
                yield Found(path, _os_reason(exc))
            return
        except ValueError:  # embedded NUL byte and the like
            yield Found(path, "invalid path")
            return
        if stat.S_ISDIR(st.st_mode):
            yield from self.walk(path, st)
        elif stat.S_ISREG(st.st_mode):
            if not self._wanted(path.name, path.name):
                self.skipped.excluded_files += 1
            elif self._first_time(st):
                yield Found(path)
        else:
            yield Found(path, "not a regular file or directory")

    # -- directories ---------------------------------------------------------------------------------
    def _list(self, directory: Path) -> list[os.DirEntry[str]]:
        with os.scandir(directory) as it:
            entries = list(it)
        entries.sort(key=lambda e: e.name)
        return entries

    def _yielded_name(self, entry: os.DirEntry[str], rel: str) -> bool:
        """Would the walk yield this entry, judged by its name and kind (for RAW+JPEG pairing)?"""
        name = entry.name
        if not is_image_name(name) or (not self.hidden and name.startswith(".")):
            return False
        try:
            if entry.is_symlink() and not self.follow:
                return False
            if not entry.is_file(follow_symlinks=True):
                return False
        except OSError:
            return False
        return self._wanted(rel, name)

    def _paired_away(self, entries: list[os.DirEntry[str]], prefix: str) -> set[str]:
        """Names in one folder the walk passes over as the other half of a RAW+JPEG pair (`raw_pairs`)."""
        if self.raw_pairs == "both":
            return set()
        raws: dict[str, list[str]] = {}
        pictures: dict[str, list[str]] = {}
        for entry in entries:
            name = entry.name
            kind = raws if is_raw_name(name) else pictures if is_camera_picture_name(name) else None
            if kind is not None and self._yielded_name(entry, prefix + name):
                kind.setdefault(name.rpartition(".")[0], []).append(name)
        dropped, partners = (raws, pictures) if self.raw_pairs == "jpeg" else (pictures, raws)
        return {name for stem, names in dropped.items() if stem in partners for name in names}

    def walk(self, root: Path, root_stat: os.stat_result) -> Iterator[Found]:
        # Explicit stack of (entries iterator, relative prefix, dir key): no recursion limit.
        stack: list[tuple[Iterator[os.DirEntry[str]], str, tuple[int, int]]] = []
        paired_away: dict[tuple[int, int], set[str]] = {}  # per folder on the stack: the other halves of pairs
        on_path: dict[tuple[int, int], Path] = {}

        def enter(directory: Path, key: tuple[int, int], prefix: str) -> Found | None:
            """Push the directory's entries onto the stack, or return the problem to report."""
            try:
                entries = self._list(directory)
            except OSError as exc:
                return _unreadable(directory, exc)
            self.walked_dirs.add(key)
            on_path[key] = directory
            paired_away[key] = self._paired_away(entries, prefix)
            stack.append((iter(entries), prefix, key))
            return None

        problem = enter(root, (root_stat.st_dev, root_stat.st_ino), "")
        if problem is not None:
            yield problem
        while stack:
            it, prefix, key = stack[-1]
            entry = next(it, None)
            if entry is None:
                stack.pop()
                on_path.pop(key, None)
                paired_away.pop(key, None)
                continue

            name = entry.name
            rel = prefix + name
            path = Path(entry.path)

            try:
                is_link = entry.is_symlink()
            except OSError:
                is_link = False
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False

            if not self.hidden and name.startswith("."):
                if is_dir and not is_link:
                    self.skipped.hidden_folders += 1
                else:
                    self.skipped.hidden_files += 1
                continue
            if is_link and not self.follow:
                self.skipped.links += 1
                continue

            if is_dir:
                if not self.recursive:
                    self.skipped.folders += 1
                    continue
                if self.exclude and _matches(self.exclude, rel, name):
                    self.skipped.excluded_folders += 1
                    continue
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError as exc:
                    yield _unreadable(path, exc)
                    continue
                dkey = (st.st_dev, st.st_ino)
                if dkey in on_path:
                    kind = "symlink loop" if is_link else "directory loop"
                    yield Found(path, f"{kind}: {path} leads back to {on_path[dkey]}")
                    continue
                if is_link and dkey in self.walked_dirs:
                    continue  # same directory already walked through another route: nothing new there
                problem = enter(path, dkey, rel + "/")
                if problem is not None:
                    yield problem
                continue

            # A file (or something else, or a broken link when following).
            if not is_image_name(name):
                self.skipped.other_extension(name)
                continue
            if not self._wanted(rel, name):
                self.skipped.excluded_files += 1
                continue
            if name in paired_away.get(key, ()):
                if is_raw_name(name):
                    self.skipped.paired_raws += 1
                else:
                    self.skipped.paired_pictures += 1
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                if is_link:
                    yield Found(path, "broken symbolic link (its target does not exist)")
                continue  # vanished since the directory was listed
            except OSError as exc:
                yield Found(path, _os_reason(exc))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            if self._first_time(st):
                yield Found(path)


def find_images(
    paths: Iterable[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    recursive: bool = True,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    hidden: bool = False,
    follow_symlinks: bool = False,
    skipped: Skipped | None = None,
    raw_pairs: RawPairs = "jpeg",
) -> Iterator[Found]:
    """Yield the image files under ``paths`` (files and directories), in a deterministic order.

    See the module docstring for every rule. Problems are yielded as ``Found(path, error)`` and the walk
    goes on; a missing argument gives ``Found(path, "no such file or directory")``. ``skipped``, when given,
    is filled in as the walk goes with what it passed over. ``raw_pairs``: which half of a RAW+JPEG pair is
    yielded ("jpeg", "raw" or "both").
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    walker = _Walker(recursive, tuple(include), tuple(exclude), hidden, follow_symlinks, skipped, raw_pairs)
    for arg in paths:
        yield from walker.argument(arg)
