"""Undo: put back what a journaled run changed, last operation first, each file located by its SHA-256.

Moved files go back to their source (never overwriting; an occupied source is reported), copies we made are
removed only while their original is intact, trashed files come back from the trash, sidecars get their previous
content back (or are removed when we created them). Anything that cannot be put back safely is left where it is
and reported; a partially undone run can be undone again.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from qualiclip_cli.core.curation import fileops, journal, trash
from qualiclip_cli.core.errors import CurationError, JournalError, QualiclipError, error_text


@dataclass
class UndoItem:
    index: int
    action: str
    path: str       # the original path the file belongs at
    status: str     # "restored", "removed_copy", "nothing_to_do" or "problem"
    message: str


@dataclass
class UndoReport:
    run_id: str
    items: list[UndoItem] = field(default_factory=list)

    @property
    def restored(self) -> list[UndoItem]:
        return [i for i in self.items if i.status in ("restored", "removed_copy")]

    @property
    def problems(self) -> list[UndoItem]:
        return [i for i in self.items if i.status == "problem"]

    @property
    def complete(self) -> bool:
        return not self.problems


def undo(run_id: str, journal_directory: str | os.PathLike | None = None) -> UndoReport:
    """Reverse a run, last operation first, and mark it undone (completely or partially).

    Every file is located by its SHA-256: moved files go back to their source (never overwriting; an
    occupied source is reported), copies we made are removed only while their original is intact, trashed
    files come back from the freedesktop.org trash, sidecars get their previous content back (or are removed
    when we created them). Operations interrupted mid-step are resolved the same way. Anything that cannot
    be put back safely is left where it is and reported. A partially undone run can be undone again.
    """
    log = journal.read_run(run_id, journal_directory)
    if log.undone == "complete":
        raise JournalError(f"run {run_id} was already undone")
    report = UndoReport(run_id)
    for op in reversed(log.ops):
        try:
            item = _undo_one(op)
        except (QualiclipError, OSError) as exc:
            item = UndoItem(op.index, op.action, op.intent.get("source", ""), "problem", error_text(exc))
        report.items.append(item)
    for op in reversed(log.ops):
        for folder in reversed(op.intent.get("created_dirs") or []):
            try:
                os.rmdir(folder)  # only if still empty
            except OSError:
                pass
    journal.append_undo(log, report.complete, len(report.restored), len(report.problems))
    return report


def undo_latest(journal_directory: str | os.PathLike | None = None) -> UndoReport:
    """Undo the newest run that is not undone completely; JournalError when there is none."""
    run_id = journal.latest_run_id(journal_directory)
    if run_id is None:
        raise JournalError("nothing to undo: every run is undone already, or there is none (see qualiclip history)")
    return undo(run_id, journal_directory)


def _undo_one(op: journal.OpEntry) -> UndoItem:
    source = op.intent.get("source", "")
    if op.phase == journal.PHASE_SKIPPED or op.intent.get("phase") != journal.PHASE_INTENT:
        return UndoItem(op.index, op.action, source, "nothing_to_do", "was not carried out")
    handler = {"move": _undo_move, "rename": _undo_move, "copy": _undo_copy, "trash": _undo_trash,
               "write_sidecar": _undo_sidecar}.get(op.action)
    if handler is None:
        raise CurationError(f"operation {op.index}: unknown action {op.action!r}")
    status, message = handler(op)
    return UndoItem(op.index, op.action, source, status, message)


class _Hashes:
    """SHA-256 of paths, computed at most once; None for a missing file."""

    def __init__(self):
        self._cache: dict[Path, str | None] = {}

    def __call__(self, path: Path) -> str | None:
        if path not in self._cache:
            self._cache[path] = fileops.sha256_file(path) if path.is_file() else None
        return self._cache[path]


def _drop_partial(op: journal.OpEntry) -> None:
    partial = op.intent.get("partial")
    if partial and os.path.lexists(partial):
        os.unlink(partial)  # our own temporary copy, named for this run and operation


def _undo_move(op: journal.OpEntry) -> tuple[str, str]:
    src, dst = Path(op.intent["source"]), Path(op.get("destination"))
    want, hashes = op.intent["sha256"], _Hashes()
    killed_mid_step = op.phase == journal.PHASE_INTENT
    if src.exists() and dst.exists():
        if os.path.samefile(src, dst):  # killed between link and unlink: two names, one file
            os.unlink(dst)
            return "restored", f"back at {src}"
        if hashes(src) == want and hashes(dst) == want:  # verified copy made, original not yet removed
            os.unlink(dst)
            _drop_partial(op)
            return "restored", f"back at {src}"
        if hashes(src) == want:
            if killed_mid_step and dst.stat().st_size == 0 and hashes(src) != hashes(dst):
                os.unlink(dst)  # the empty name reservation of a no-hard-link filesystem, ours
            _drop_partial(op)
            return "nothing_to_do", f"already at {src}"
        return "problem", f"{src} is now occupied by another file; the moved file stays at {dst}"
    if dst.exists() and hashes(dst) == want:
        fileops.make_dirs(src.parent)
        fileops.move_file(dst, src, on_collision="refuse", expected_sha256=want)
        _drop_partial(op)
        return "restored", f"back at {src}"
    if src.exists():
        _drop_partial(op)
        return "nothing_to_do", f"already at {src}"
    partial = Path(op.intent.get("partial") or "")
    if op.intent.get("partial") and partial.is_file() and hashes(partial) == want:
        fileops.make_dirs(src.parent)
        fileops.move_file(partial, src, on_collision="refuse", expected_sha256=want)
        return "restored", f"back at {src}"
    if dst.exists():
        return "problem", f"{dst} changed since the run; left in place"
    return "problem", f"not found at {src} or {dst}"


def _undo_copy(op: journal.OpEntry) -> tuple[str, str]:
    src, dst = Path(op.intent["source"]), Path(op.get("destination"))
    want, hashes = op.intent["sha256"], _Hashes()
    _drop_partial(op)
    if not dst.exists():
        return "nothing_to_do", f"no copy at {dst}"
    if hashes(dst) != want:
        if op.phase == journal.PHASE_DONE:
            return "problem", f"the copy {dst} changed since the run; kept"
        return "nothing_to_do", f"{dst} is not our copy"
    if hashes(src) != want:
        return "problem", f"the original {src} is gone or changed; the copy {dst} is kept"
    fileops.remove_own_copy(dst, want, src)
    return "removed_copy", f"removed the copy {dst}"


def _undo_trash(op: journal.OpEntry) -> tuple[str, str]:
    src = Path(op.intent["source"])
    want = op.intent["sha256"]
    if src.exists():
        if fileops.sha256_file(src) == want:
            return "nothing_to_do", f"already at {src}"
        return "problem", f"{src} is now occupied by another file; the trashed file stays in the trash"
    receipt = None
    trashed, info = op.get("trash_file"), op.get("trash_info")
    if trashed and info and Path(trashed).is_file() and fileops.sha256_file(trashed) == want:
        receipt = trash.TrashReceipt(Path(trashed), Path(info))
    if receipt is None:
        receipt = trash.find_in_trash(src, want)
    if receipt is None:
        return "problem", f"{src} was not found in the trash; restore it from the system trash by hand"
    trash.restore_from_trash(receipt, src, want)
    return "restored", f"back at {src} from the trash"


def _undo_sidecar(op: journal.OpEntry) -> tuple[str, str]:
    sidecar = Path(op.intent["destination"])
    previous, new = op.intent.get("previous_sha256"), op.intent.get("new_sha256")
    current = fileops.sha256_file(sidecar) if sidecar.is_file() else None
    if current == previous:
        return "nothing_to_do", f"{sidecar} already as before"
    if current not in (new, None):
        return "problem", f"{sidecar} changed since the run; left as it is"
    if previous is None:
        fileops.remove_own_copy(sidecar, new)
        return "restored", f"removed {sidecar}, which the run created"
    backup = Path(op.intent["backup"])
    try:
        data = backup.read_bytes()
    except OSError as exc:
        raise CurationError(f"{sidecar}: the backup {backup} of its previous content is unreadable") from exc
    if hashlib.sha256(data).hexdigest() != previous:
        raise CurationError(f"{sidecar}: the backup {backup} does not match the journal; left as it is")
    fileops.write_file_atomic(sidecar, data, current)
    return "restored", f"{sidecar} has its previous content again"
