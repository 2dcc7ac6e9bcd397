"""Undo: put back what a journaled run changed, last operation first, each file located by its SHA-256.

Moved files go back to their source (never overwriting; an occupied source is reported), copies we made are
removed only while their original is intact, trashed files come back from the trash, sidecars get their previous
content back (or are taken away when we created them). Anything that cannot be put back safely is left where it
is and reported; a partially undone run can be undone again.

What is at a path is judged by the path itself: a symbolic link is never followed (lstat, O_NOFOLLOW). An
original path that is now a link (say, to the quarantined copy) is reported and left alone, and a file is only
ever removed while another directory entry verifiably holds the same bytes as a regular file
(`fileops.remove_duplicate`); sidecars undo takes away or replaces are first kept in the run's backup folder.

A journal is not trusted blindly. Before anything is touched, `check_journal` verifies the whole journal and
refuses it (JournalError naming the journal and the reason) when any line fails:

- every line carries the run id of its file, the header's start agrees with the time in the run id;
- every path is absolute and normal (no `..`), and lies in the run's scope: the `roots` and `folders` its
  header records;
- a move, copy or rename has two different paths (a rename stays in its folder), a content hash, and any
  temporary name is exactly the one this program makes for that run and operation;
- a sidecar write names an XMP file beside its photo, and its backup is exactly the file this run's backup
  folder would hold for it; a trash receipt has the trash's files/ and info/ layout;
- created folders are the destination's own parents.

A version 1 journal (written before the header recorded `folders`) gets as its scope its recorded roots plus
the path arguments of its recorded command line (the `--to` or `--into` folder among them), resolved against
its recorded working folder; a photo named as an argument brings its own folder. Whatever is outside that
scope makes the journal refused, like any other.

Temporary files are named for their run and operation (`fileops.partial_path` with `journal.partial_token`,
plus "u" for undo's own), so `clean_leftovers` can remove those an interrupted run or undo left behind: only
exact names from a journal that passes the checks, not in use by a live process, regular files created after
the run began, and never a complete copy that is the only one left.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from qualiclip_cli.core.curation import fileops, journal, trash
from qualiclip_cli.core.errors import CurationError, JournalError, QualiclipError, error_text

_ACTIONS = ("move", "rename", "copy", "trash", "write_sidecar")
# How far apart a run id's time and its header's start may be (they are taken microseconds apart).
_START_SLACK = timedelta(seconds=60)
# A leftover temporary file must have been created after its run began (less this, for coarse clocks).
_CTIME_SLACK_S = 2.0


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
    A journal that fails `check_journal` is refused (JournalError) before any file is touched.
    """
    log = journal.read_run(run_id, journal_directory)
    if log.empty:
        raise JournalError(f"run {run_id} was cut off while it was creating its journal, before it changed "
                           "anything: there is nothing to undo")
    if log.undone == "complete":
        raise JournalError(f"run {run_id} was already undone")
    check_journal(log)
    run = _Run(log)
    clean_leftovers(journal_directory, except_run=run_id)  # other runs' leftovers; this run's own are handled below
    writer = journal.Reopened.open(log)
    report = UndoReport(run_id)
    with writer:
        writer.undo_started()
        run.clean()
        for op in reversed(log.ops):
            try:
                item = _undo_one(run, op)
            except (QualiclipError, OSError) as exc:
                item = UndoItem(op.index, op.action, op.intent.get("source", ""), "problem", error_text(exc))
            report.items.append(item)
        for op in reversed(log.ops):
            for folder in reversed(op.intent.get("created_dirs") or []):
                try:
                    os.rmdir(folder)  # only if still empty
                except OSError:
                    pass
        writer.undo_finished(report.complete, len(report.restored), len(report.problems))
    return report


def undo_latest(journal_directory: str | os.PathLike | None = None) -> UndoReport:
    """Undo the run that started last and is not undone completely; JournalError when there is none."""
    run_id = journal.latest_run_id(journal_directory)
    if run_id is None:
        raise JournalError("nothing to undo: every run is undone already, or there is none (see qualiclip history)")
    return undo(run_id, journal_directory)


def clean_leftovers(journal_directory: str | os.PathLike | None = None, except_run: str | None = None) -> int:
    """Remove the temporary files that interrupted runs and undos left behind; return how many.

    Only runs whose journal does not end normally are looked at, only when no live process holds their
    journal, and only when the journal passes `check_journal`; see `_Run.clean` for what is removed.
    `except_run`: a run not to look at (the one being undone, already read and checked, cleans its own).
    Problems are not raised: a leftover that cannot be judged safely is left where it is.
    """
    removed = 0
    if not journal.CAN_LOCK:
        return removed  # a live run could not be told from an interrupted one
    for run_id in journal.unsettled_run_ids(journal_directory):
        if run_id == except_run:
            continue
        try:
            log = journal.read_run(run_id, journal_directory)
            if log.empty or log.undone == "complete":
                continue
            check_journal(log)
            run = _Run(log)
            writer = journal.Reopened.open(log, busy_ok=True)
            if writer is None:
                continue  # a live run or undo: its temporaries are in use
            with writer:
                removed += run.clean()
        except (QualiclipError, OSError, KeyError, TypeError, ValueError):
            continue  # never a reason to stop the run that is starting
    return removed


# ---------------------------------------------------------------------------------------- the journal check

@dataclass(frozen=True)
class Scope:
    """The folders a run may touch, as its journal records them."""

    folders: tuple[Path, ...]

    def contains(self, path: Path) -> bool:
        """Whether `path` (absolute and normal) lies in one of the folders. Judged on the paths as written: a
        run made with --follow-symlinks legitimately reaches files through linked folders, and what undo
        then does to a file is judged at the file itself (links are never followed there)."""
        return any(path == f or f in path.parents for f in self.folders)


def _refuse(log: journal.RunLog, reason: str) -> JournalError:
    return JournalError(f"{log.path}: refused, nothing was changed: {reason}")


def _normal_path(value: object) -> Path | None:
    if not isinstance(value, str) or not value or "\0" in value:
        return None
    if not os.path.isabs(value) or os.path.normpath(value) != value:
        return None
    return Path(value)


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def journal_scope(log: journal.RunLog) -> Scope:
    """The run's scope: recorded roots and folders (version 2), or what a version 1 journal allows (see the
    module docstring). Entries that are not absolute normal paths are refused."""
    header = log.header
    recorded = list(header.get("roots") or [])
    if header.get("version") != 1:
        recorded += list(header.get("folders") or [])
    folders = []
    for value in recorded:
        path = _normal_path(value)
        if path is None or path == Path(path.anchor):
            raise _refuse(log, f"its header records {value!r} as a folder (not an absolute folder path)")
        folders.append(path)
    if header.get("version") == 1:
        folders += _v1_argument_folders(log)
    return Scope(tuple(dict.fromkeys(folders)))


def _v1_argument_folders(log: journal.RunLog) -> list[Path]:
    cwd = _normal_path(log.header.get("cwd"))
    argv = log.header.get("argv") or []
    if cwd is None or not isinstance(argv, list):
        return []
    sources = {op.intent.get("source") for op in log.ops}
    found = []
    for arg in argv[1:]:
        if not isinstance(arg, str) or not arg:
            continue
        if arg.startswith(("--to=", "--into=")):
            arg = arg.split("=", 1)[1]
        elif arg.startswith("-"):
            continue
        path = Path(os.path.normpath(os.path.join(cwd, arg)))
        if path == Path(path.anchor):
            continue  # a whole filesystem is never a scope
        found.append(path)
        if str(path) in sources:
            found.append(path.parent)  # a photo named on the command line: its sidecars are beside it
    return found


def check_journal(log: journal.RunLog) -> Scope:
    """Verify a whole journal before undo touches anything (rules in the module docstring); return its scope.
    Raises JournalError naming the journal and the first reason found."""
    header = log.header
    if header.get("version") not in journal.KNOWN_VERSIONS:
        raise _refuse(log, f"unknown journal version {header.get('version')!r}")
    started, named = log.started, journal.run_id_time(log.run_id)
    if started is None or named is None or abs(started - named) > _START_SLACK:
        raise _refuse(log, "its recorded start does not match its run id")
    if started > datetime.now(timezone.utc) + journal.FUTURE_SLACK:
        raise _refuse(log, "its recorded start is in the future")
    lines = [header, *(line for op in log.ops for line in (op.intent, op.outcome) if line is not None)]
    if log.end is not None:
        lines.append(log.end)
    if any(line.get("run_id") != log.run_id for line in lines + log.undos + log.undo_starts):
        raise _refuse(log, "it holds lines of another run")
    scope = journal_scope(log)
    for op in log.ops:
        reason = _op_problem(log, scope, op)
        if reason is not None:
            raise _refuse(log, f"operation {op.index}: {reason}")
    return scope


def _op_problem(log: journal.RunLog, scope: Scope, op: journal.OpEntry) -> str | None:
    """Why one operation's lines are not what this program writes for that run, or None."""
    intent = op.intent
    action = intent.get("action")
    if action not in _ACTIONS:
        return f"unknown action {action!r}"
    if op.outcome is not None and op.outcome.get("action") not in (None, action):
        return "its outcome names another action"
    if intent.get("phase") != journal.PHASE_INTENT:
        return None  # skipped, or failed before its intent: undo does nothing with it
    source = _normal_path(intent.get("source"))
    if source is None:
        return "its source is not an absolute normal path"
    if not scope.contains(source):
        return f"{source} is outside the run's folders"
    if action == "trash":
        return _trash_problem(intent, op.outcome) if _is_sha256(intent.get("sha256")) else "no content hash"
    destination = _normal_path(intent.get("destination"))
    if destination is None:
        return "its destination is not an absolute normal path"
    if not scope.contains(destination):
        return f"{destination} is outside the run's folders"
    if destination == source or fileops.same_entry(destination, source):
        return "its source and destination are the same file"
    if op.outcome is not None and op.outcome.get("destination") not in (None, str(destination)):
        return "its outcome names another destination"
    partial = intent.get("partial")
    if partial is not None and partial != str(fileops.partial_path(destination, journal.partial_token(log.run_id, op.index))):
        return "its temporary name is not one qualiclip makes for this run"
    rollback_partial = op.outcome.get("rollback_partial") if op.outcome is not None else None
    expected = fileops.partial_path(source, journal.partial_token(log.run_id, op.index) + journal.ROLLBACK_TOKEN)
    if rollback_partial is not None and rollback_partial != str(expected):
        return "its rollback's temporary name is not one qualiclip makes for this run"
    for folder in intent.get("created_dirs") or []:
        path = _normal_path(folder)
        if path is None or not (path == destination.parent or path in destination.parent.parents):
            return f"{folder!r} is not a folder on the way to its destination"
    if action == "write_sidecar":
        return _sidecar_problem(log, op, source, destination)
    if not _is_sha256(intent.get("sha256")):
        return "no content hash"
    if action == "rename" and destination.parent != source.parent:
        return "a rename that leaves its folder"
    return None


def _sidecar_problem(log: journal.RunLog, op: journal.OpEntry, photo: Path, sidecar: Path) -> str | None:
    intent = op.intent
    if sidecar.suffix.lower() != ".xmp" or sidecar.parent != photo.parent:
        return f"{sidecar} is not an XMP sidecar beside its photo"
    previous, new, backup = intent.get("previous_sha256"), intent.get("new_sha256"), intent.get("backup")
    if not _is_sha256(new) or not (previous is None or _is_sha256(previous)):
        return "no content hashes"
    expected = None if previous is None else str(log.backup_dir / f"{op.index:06d}-{sidecar.name}")
    if backup != expected:
        return "its backup is not in this run's backup folder"
    return None


def _trash_problem(intent: dict, outcome: dict | None) -> str | None:
    if outcome is None:
        return None
    trashed, info = outcome.get("trash_file"), outcome.get("trash_info")
    if trashed is None and info is None:
        return None
    trashed, info = _normal_path(trashed), _normal_path(info)
    if trashed is None or info is None:
        return "a trash receipt without absolute normal paths"
    if (trashed.parent.name, info.parent.name) != ("files", "info") or trashed.parent.parent != info.parent.parent \
            or info.name != trashed.name + ".trashinfo":
        return "a trash receipt outside a trash folder"
    return None


# ---------------------------------------------------------------------------------------------- undoing

class _Run:
    """A checked run being undone: its log, and the names of its temporary files."""

    def __init__(self, log: journal.RunLog):
        self.log = log
        started = log.started
        self.not_before = started.timestamp() - _CTIME_SLACK_S if started is not None else float("inf")

    def undo_partial(self, op: journal.OpEntry, target: Path) -> Path:
        """The temporary name undo uses for writing `target` back (recognisable as this run's)."""
        return fileops.partial_path(target, journal.partial_token(self.log.run_id, op.index) + "u")

    def drop_leftover(self, partial: Path | None, sha256: str | None, holders: list[Path]) -> bool:
        """Remove one of our temporary files: a regular file at exactly that name, created after the run
        began, and not a complete copy (`sha256`) that no holder has. Returns whether it was removed."""
        if partial is None:
            return False
        st = fileops.lstat_or_none(partial)
        if not fileops.is_regular(st) or st.st_ctime < self.not_before:
            return False
        if sha256 is not None and fileops.holds_copy(partial, sha256) \
                and not any(fileops.holds_copy(h, sha256) for h in holders):
            return False  # the only complete copy left: undo may still need it
        os.unlink(partial)
        return True

    def clean(self) -> int:
        """Remove this run's temporary files left by an interrupted step of the run or of an earlier undo."""
        removed = 0
        for op in self.log.ops:
            intent = op.intent
            if intent.get("phase") != journal.PHASE_INTENT:
                continue
            source, destination = Path(intent["source"]), intent.get("destination")
            if op.action == "trash":
                removed += self.drop_leftover(self.undo_partial(op, source), intent["sha256"], [source])
                continue
            destination = Path(destination)
            if op.action == "write_sidecar":
                partial = intent.get("partial")
                if op.phase == journal.PHASE_INTENT and partial:
                    removed += self.drop_leftover(Path(partial), None, [])  # our generated XMP
                backup = intent.get("backup")
                previous = intent.get("previous_sha256")
                removed += self.drop_leftover(self.undo_partial(op, destination), previous,
                                              [Path(backup)] if backup else [])
                continue
            holders = [source, destination]
            if op.phase == journal.PHASE_INTENT and intent.get("partial"):
                removed += self.drop_leftover(Path(intent["partial"]), intent["sha256"], holders)
            rollback_partial = op.outcome.get("rollback_partial") if op.outcome is not None else None
            if rollback_partial and op.outcome.get("rollback") == "started":  # killed while putting it back
                removed += self.drop_leftover(Path(rollback_partial), intent["sha256"], holders)
            removed += self.drop_leftover(self.undo_partial(op, source), intent["sha256"], holders)
        return removed


def _undo_one(run: _Run, op: journal.OpEntry) -> UndoItem:
    source = op.intent.get("source", "")
    if op.phase == journal.PHASE_SKIPPED or op.intent.get("phase") != journal.PHASE_INTENT:
        return UndoItem(op.index, op.action, source, "nothing_to_do", "was not carried out")
    handler = {"move": _undo_move, "rename": _undo_move, "copy": _undo_copy, "trash": _undo_trash,
               "write_sidecar": _undo_sidecar}[op.action]
    status, message = handler(run, op)
    return UndoItem(op.index, op.action, source, status, message)


def _what(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    return "not a regular file"


def _drop_partial(run: _Run, op: journal.OpEntry) -> None:
    """Remove our temporary copies of an operation: the step's, and its rollback's (if a unit was put back)."""
    holders = [Path(op.intent["source"]), Path(op.intent["destination"])]
    for partial in (op.intent.get("partial"), op.outcome.get("rollback_partial") if op.outcome else None):
        if partial:
            run.drop_leftover(Path(partial), op.intent.get("sha256"), holders)


def _undo_move(run: _Run, op: journal.OpEntry) -> tuple[str, str]:
    src, dst = Path(op.intent["source"]), Path(op.intent["destination"])
    want = op.intent["sha256"]
    src_st, dst_st = fileops.lstat_or_none(src), fileops.lstat_or_none(dst)
    if src_st is not None and not fileops.is_regular(src_st):
        return "problem", f"{src} is now {_what(src_st)}, not the photo; the moved file stays at {dst}"
    src_ok = src_st is not None and fileops.holds_copy(src, want)
    if dst_st is not None and not fileops.is_regular(dst_st):
        if src_ok:
            _drop_partial(run, op)
            return "nothing_to_do", f"already at {src}"
        return "problem", f"{dst} is now {_what(dst_st)}; left as it is"
    if src_st is not None and dst_st is not None:
        if src_ok and fileops.holds_copy(dst, want):
            # two names of one file (killed between link and unlink), or a verified copy next to its original
            fileops.remove_duplicate(dst, want, src)
            _drop_partial(run, op)
            return "restored", f"back at {src}"
        if src_ok:
            if op.phase == journal.PHASE_INTENT and dst_st.st_size == 0 and dst_st.st_ctime >= run.not_before:
                os.unlink(dst)  # the empty name reservation of a no-hard-link filesystem, ours
            _drop_partial(run, op)
            return "nothing_to_do", f"already at {src}"
        return "problem", f"{src} is now occupied by another file; the moved file stays at {dst}"
    if dst_st is not None and fileops.holds_copy(dst, want):
        fileops.make_dirs(src.parent)
        fileops.move_file(dst, src, on_collision="refuse", partial=run.undo_partial(op, src), expected_sha256=want)
        _drop_partial(run, op)
        return "restored", f"back at {src}"
    if src_st is not None:
        _drop_partial(run, op)
        return "nothing_to_do", f"already at {src}"
    partial = Path(op.intent.get("partial") or "")
    if op.intent.get("partial") and fileops.holds_copy(partial, want):
        fileops.make_dirs(src.parent)
        fileops.move_file(partial, src, on_collision="refuse", partial=run.undo_partial(op, src),
                          expected_sha256=want)
        return "restored", f"back at {src}"
    if dst_st is not None:
        return "problem", f"{dst} changed since the run; left in place"
    return "problem", f"not found at {src} or {dst}"


def _undo_copy(run: _Run, op: journal.OpEntry) -> tuple[str, str]:
    src, dst = Path(op.intent["source"]), Path(op.intent["destination"])
    want = op.intent["sha256"]
    _drop_partial(run, op)
    dst_st = fileops.lstat_or_none(dst)
    if dst_st is None:
        return "nothing_to_do", f"no copy at {dst}"
    if not fileops.holds_copy(dst, want):
        if op.phase == journal.PHASE_DONE:
            return "problem", f"the copy {dst} changed since the run; kept"
        return "nothing_to_do", f"{dst} is not our copy"
    src_st = fileops.lstat_or_none(src)
    if src_st is not None and not fileops.is_regular(src_st):
        return "problem", f"the original {src} is now {_what(src_st)}; the copy {dst} is kept"
    if not fileops.holds_copy(src, want):
        return "problem", f"the original {src} is gone or changed; the copy {dst} is kept"
    fileops.remove_duplicate(dst, want, src)
    return "removed_copy", f"removed the copy {dst}"


def _in_a_trash(trashed: Path, original: Path) -> bool:
    top = trashed.parent.parent
    return any(Path(os.path.abspath(t)) == top for t, _ in trash.trash_dirs(original))


def _undo_trash(run: _Run, op: journal.OpEntry) -> tuple[str, str]:
    src = Path(op.intent["source"])
    want = op.intent["sha256"]
    src_st = fileops.lstat_or_none(src)
    if src_st is not None:
        if not fileops.is_regular(src_st):
            return "problem", f"{src} is now {_what(src_st)}; the trashed file stays in the trash"
        if fileops.holds_copy(src, want):
            return "nothing_to_do", f"already at {src}"
        return "problem", f"{src} is now occupied by another file; the trashed file stays in the trash"
    receipt = None
    trashed, info = op.get("trash_file"), op.get("trash_info")
    if trashed and info and _in_a_trash(Path(trashed), src) and fileops.holds_copy(trashed, want):
        receipt = trash.TrashReceipt(Path(trashed), Path(info))
    if receipt is None:
        receipt = trash.find_in_trash(src, want)
    if receipt is None:
        return "problem", f"{src} was not found in the trash; restore it from the system trash by hand"
    trash.restore_from_trash(receipt, src, want, partial=run.undo_partial(op, src))
    return "restored", f"back at {src} from the trash"


def _keep_in_backup(run: _Run, op: journal.OpEntry, sidecar: Path, sha256: str) -> Path:
    """Copy the sidecar's current content (`sha256`) into the run's backup folder before undo replaces or
    removes it, so not even our own sidecar is lost; returns the copy."""
    folder = run.log.backup_dir
    kept = folder / f"{op.index:06d}-{sidecar.name}.undone-{sha256[:16]}"
    if fileops.holds_copy(kept, sha256):
        return kept
    data, mode = _read_regular(sidecar, sha256)
    folder.mkdir(parents=True, exist_ok=True)
    fileops.write_file_atomic(kept, data, None, mode=mode)
    return kept


#: the largest sidecar backup undo reads back (sidecars over 4 MiB are refused by tag; older runs had no cap)
_BACKUP_READ_LIMIT = 64 << 20


def _read_regular(path: Path, sha256: str) -> tuple[bytes, int]:
    """The bytes and permission bits of the regular file at `path` itself (a link is not followed, nothing
    that could block is opened), checked against `sha256`."""
    try:
        data, st = fileops.read_regular_file(path, _BACKUP_READ_LIMIT)
    except OSError as exc:
        raise CurationError(f"{path}: unreadable ({exc.strerror or exc}); left as it is") from exc
    if hashlib.sha256(data).hexdigest() != sha256:
        raise CurationError(f"{path}: does not match the journal; left as it is")
    return data, stat.S_IMODE(st.st_mode)


def _undo_sidecar(run: _Run, op: journal.OpEntry) -> tuple[str, str]:
    sidecar = Path(op.intent["destination"])
    previous, new = op.intent.get("previous_sha256"), op.intent["new_sha256"]
    partial = op.intent.get("partial")
    if op.phase == journal.PHASE_INTENT and partial:
        run.drop_leftover(Path(partial), None, [])
    st = fileops.lstat_or_none(sidecar)
    if st is not None and not fileops.is_regular(st):
        return "problem", f"{sidecar} is now {_what(st)}; left as it is"
    current = fileops.regular_sha256(sidecar) if st is not None else None
    if current == previous:
        return "nothing_to_do", f"{sidecar} already as before"
    if current not in (new, None):
        return "problem", f"{sidecar} changed since the run; left as it is"
    if previous is None:
        kept = _keep_in_backup(run, op, sidecar, new)
        fileops.remove_duplicate(sidecar, new, kept)
        return "restored", f"removed {sidecar}, which the run created"
    backup = Path(op.intent["backup"])
    try:
        data, mode = _read_regular(backup, previous)  # the backup has the sidecar's permission bits
    except CurationError:
        raise CurationError(f"{sidecar}: the backup {backup} of its previous content is missing or does not "
                            "match the journal; left as it is") from None
    if current is not None:
        _keep_in_backup(run, op, sidecar, current)
    fileops.write_file_atomic(sidecar, data, current, partial=run.undo_partial(op, sidecar), mode=mode)
    return "restored", f"{sidecar} has its previous content again"
