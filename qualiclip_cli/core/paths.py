"""Where qualiclip keeps its files. Resolved lazily (on each call) so tests and users can set env vars late.

- cache_dir(): weights and the results cache. QUALICLIP_HOME, else $XDG_CACHE_HOME/qualiclip, else ~/.cache/qualiclip.
- state_dir(): the journal of file operations (must survive a cache purge). QUALICLIP_HOME/state, else
  $XDG_STATE_HOME/qualiclip, else ~/.local/state/qualiclip.

And how a user's path is read: `kernel_path` (".." as the kernel takes it, never collapsed lexically); and
`native_name`, a name for a file that code outside Python (which takes names as UTF-8 text) can open, and
`open_file_name`, the name of a file already open.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    home = _env_path("QUALICLIP_HOME")
    if home is not None:
        return home
    xdg = _env_path("XDG_CACHE_HOME")
    return (xdg if xdg is not None else Path.home() / ".cache") / "qualiclip"


def state_dir() -> Path:
    home = _env_path("QUALICLIP_HOME")
    if home is not None:
        return home / "state"
    xdg = _env_path("XDG_STATE_HOME")
    return (xdg if xdg is not None else Path.home() / ".local" / "state") / "qualiclip"


def journal_dir() -> Path:
    return state_dir() / "journal"


def results_cache_path() -> Path:
    return cache_dir() / "results.sqlite3"


def kernel_path(path: str | os.PathLike) -> Path:
    """`path` made absolute as the kernel reads it. A ".." steps out of the folder the component before it
    really is: after a symbolic link, out of the link's target, not back to the folder holding the link, as
    os.path.abspath's lexical collapsing would have it. So the part up to the last ".." is resolved
    (os.path.realpath) and the rest kept as written; a path without ".." is only made absolute. The last
    component is never resolved unless it is "..": a link to a file stays that link."""
    parts = Path(path).parts
    if ".." not in parts:
        return Path(os.path.abspath(path))
    last = len(parts) - 1 - parts[::-1].index("..")
    return Path(os.path.realpath(Path(*parts[: last + 1])), *parts[last + 1:])


def lexical_reading_agrees(path: str | os.PathLike) -> bool:
    """Whether os.path.abspath's lexical reading of `path` names the same place as the kernel's."""
    parts = Path(path).parts
    if ".." not in parts:
        return True
    last = len(parts) - 1 - parts[::-1].index("..")
    prefix = Path(*parts[: last + 1])
    return os.path.realpath(os.path.abspath(prefix)) == os.path.realpath(prefix)


_PROC_FD = "/proc/self/fd"  # where Linux names each open file of this process


@contextmanager
def native_name(path: str | os.PathLike) -> Iterator[str]:
    """A name under which native code that takes file names as UTF-8 text (torch's zip reader and memory map,
    safetensors) opens `path`. A name that is not valid UTF-8 (its undecodable bytes held as lone surrogates)
    cannot be handed over as such: the file is opened here and its /proc/self/fd entry, which names the very
    file opened, stands in for it while the block runs (where /proc is not mounted, the name is given as it
    is, and the native reader's error names the reason)."""
    name = os.fspath(path)
    try:
        name.encode("utf-8")
        representable = True
    except UnicodeEncodeError:
        representable = False
    if representable or not os.path.isdir(_PROC_FD):
        yield name
        return
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        yield f"{_PROC_FD}/{fd}"
    finally:
        os.close(fd)


def open_file_name(fd: int) -> str | None:
    """The name (Linux's /proc/self/fd entry) that opens the very file open as ``fd`` again, whatever is renamed
    over its path meanwhile; None where the system names no open files."""
    return f"{_PROC_FD}/{fd}" if os.path.isdir(_PROC_FD) else None
