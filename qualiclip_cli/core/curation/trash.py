"""The system trash: send a file there (never a fallback to deleting), find it again, and restore it.

send2trash does the sending (freedesktop.org trash on Linux, the native one elsewhere); finding and restoring
read the freedesktop.org layout (files/ and info/*.trashinfo) of the home trash and each mount's trash.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from qualiclip_cli.core.curation import fileops
from qualiclip_cli.core.errors import CurationError
from qualiclip_cli.core.hashing import sha256_file


@dataclass(frozen=True)
class TrashReceipt:
    """Where a trashed file went (freedesktop.org trash): the file under files/ and its .trashinfo."""

    trashed: Path
    info: Path


def trash_file(path: str | os.PathLike, sha256: str | None = None) -> TrashReceipt | None:
    """Send one file to the system trash with send2trash (freedesktop.org trash on Linux).

    If no trash is available or sending fails, raise CurationError: there is never a fallback to deleting.
    Returns where the file went when it can be found (Linux/BSD trash layouts; `sha256` confirms it), else None.
    """
    import send2trash  # imported here so the rest of the core works without it

    path = Path(path)
    fileops.check_source(path)
    try:
        send2trash.send2trash(str(path))
    except Exception as exc:  # any failure of the trash means: nothing happened, nothing deleted
        raise CurationError(f"{path}: could not move to the system trash ({exc}); left in place") from exc
    if os.path.lexists(path):
        raise CurationError(f"{path}: the system trash did not take the file; left in place")
    return find_in_trash(path, sha256)


def trash_dirs(original: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Candidate freedesktop.org trash directories for a file, as (trash dir, top dir for relative paths)."""
    if sys.platform in ("win32", "darwin"):
        return []
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    candidates = [(Path(data_home) / "Trash", Path(data_home))]
    mount = _mount_point(Path(os.path.abspath(original)).parent)
    if mount is not None:
        uid = str(os.getuid())
        candidates += [(mount / ".Trash" / uid, mount), (mount / f".Trash-{uid}", mount)]
    return candidates


def _mount_point(directory: Path) -> Path | None:
    path = Path(os.path.realpath(directory))
    while not os.path.ismount(path):
        if path.parent == path:
            return None
        path = path.parent
    return path


def find_in_trash(original: str | os.PathLike, sha256: str | None = None) -> TrashReceipt | None:
    """The most recently trashed file whose .trashinfo names `original` (and whose content is `sha256`, when
    given), or None."""
    wanted = os.path.realpath(original)
    found: list[tuple[str, str, TrashReceipt]] = []
    for trash, topdir in trash_dirs(original):
        info_dir = trash / "info"
        try:
            infos = sorted(info_dir.glob("*.trashinfo"))
        except OSError:
            continue
        for info in infos:
            recorded, when = _read_trashinfo(info)
            if recorded is None:
                continue
            full = recorded if os.path.isabs(recorded) else os.path.join(topdir, recorded)
            if os.path.realpath(full) != wanted:
                continue
            trashed = trash / "files" / info.name[: -len(".trashinfo")]
            if not trashed.is_file():
                continue
            if sha256 is not None and sha256_file(trashed) != sha256:
                continue
            found.append((when or "", info.name, TrashReceipt(trashed=trashed, info=info)))
    if not found:
        return None
    return max(found, key=lambda t: (t[0], t[1]))[2]


def _read_trashinfo(info: Path) -> tuple[str | None, str | None]:
    try:
        text = info.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None, None
    recorded = when = None
    for line in text.splitlines():
        if line.startswith("Path="):
            # %-escaped bytes of the name; one that is not UTF-8 comes back as Python's own str for it
            recorded = unquote(line[len("Path="):], errors="surrogateescape")
        elif line.startswith("DeletionDate="):
            when = line[len("DeletionDate="):]
    return recorded, when


def restore_from_trash(receipt: TrashReceipt, original: str | os.PathLike, sha256: str | None = None,
                       partial: str | os.PathLike | None = None) -> None:
    """Move a trashed file back to `original` (never overwriting) and drop its .trashinfo. `partial` names the
    temporary copy when the trash is on another filesystem (see fileops.move_file)."""
    if sha256 is not None and sha256_file(receipt.trashed) != sha256:
        raise CurationError(f"{receipt.trashed}: content differs from the trashed file; left in the trash")
    original = Path(original)
    fileops.make_dirs(original.parent)
    fileops.move_file(receipt.trashed, original, on_collision="refuse", partial=partial, expected_sha256=sha256)
    try:
        os.unlink(receipt.info)
    except FileNotFoundError:
        pass
