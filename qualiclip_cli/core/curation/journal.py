"""The append-only journal of file operations: one JSON object per line, one file per run.

Location: `journal_dir()/<run_id>.jsonl`; sidecar backups of a run go to `journal_dir()/<run_id>.backup/`.
A run id is a sortable UTC timestamp plus a random suffix: `20250131T235959.123456Z-3f9a1c`.

Lines (every line has "type", "run_id" and "time", an ISO-8601 local time with offset):

- header (first line): version, command, argv, cwd, roots, folders, dry_run (always false: dry runs are not
  journaled), planned (number of operations in the plan). `roots` are the folders the run's files came from,
  `folders` the folders it put files into (the quarantine, `--to`, `--into`); undo touches nothing outside
  them (version 1 journals have no `folders`: see undo.py). The header's `time` is the run's start, which
  orders the runs (not the run id, which is only a name).
- op: index (position in the plan), phase, action, source, destination, reason, sibling_of, and facts of
  the file before the step: sha256, size, mtime_ns. Phases:
    "intent"  written and fsynced BEFORE the step; may carry `partial` (temporary copy name), and for
              write_sidecar `previous_sha256`, `backup` (copy of the old sidecar) and `new_sha256`;
    "done"    after the step: the final `destination`, `created_dirs`, and for trash `trash_file`/`trash_info`;
    "failed"  the step did not happen or was rolled back: `error` (one line). A done member of a unit (a photo
              and its siblings) whose other member failed is put back: a "failed" line with `rollback`
              "started" (and `rollback_partial`, the temporary name of a cross-disk move back) before it,
              then one with `rollback` "done" or "failed"; history counts such members as failed;
    "skipped" the step was not attempted: `error` says why (e.g. its photo was not moved).
  An op with only an "intent" line was interrupted mid-step; `undo` resolves it by content hash.
- end: counts of done/failed/skipped, written when the run finishes normally.
- undo_start: appended when an undo begins (an undo killed half-way leaves it as the last line).
- undo: appended by each undo: complete (bool), restored, problems.

A journal that is 0 bytes long, or holds only a torn header, belongs to a run killed while it was creating its
journal, before it changed anything: it reads back as an empty run (`RunLog.empty`).

While a run or an undo is going on, its process holds an exclusive lock (flock) on the journal, so another
process can tell a live run from an interrupted one.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from qualiclip_cli.core import paths
from qualiclip_cli.core.atomic import fsync_dir
from qualiclip_cli.core.errors import JournalError
from qualiclip_cli.core.names import json_dumps

JOURNAL_VERSION = 2
KNOWN_VERSIONS = (1, 2)
JOURNAL_SUFFIX = ".jsonl"
BACKUP_SUFFIX = ".backup"
RUN_ID_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}$")

PHASE_INTENT, PHASE_DONE, PHASE_FAILED, PHASE_SKIPPED = "intent", "done", "failed", "skipped"


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="microseconds")


def new_run_id(now: datetime | None = None) -> str:
    """Sortable (UTC timestamp to the microsecond) and unique (random suffix)."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(3)


def partial_token(run_id: str, index: int) -> str:
    """The token in the temporary names of operation `index` of a run (see fileops.partial_path)."""
    return f"{run_id[-6:]}-{index}"


#: how far in the future a run's recorded start may lie (clock adjustments) before the run is not believed
FUTURE_SLACK = timedelta(minutes=10)

#: added to an operation's token for the temporary copy made while putting a failed unit's member back
ROLLBACK_TOKEN = "-back"


def run_id_time(run_id: str) -> datetime | None:
    """The UTC time a run id was made from, or None when it is not a run id."""
    if not RUN_ID_RE.match(run_id or ""):
        return None
    return datetime.strptime(run_id[:23], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=timezone.utc)


def parse_time(text: object) -> datetime | None:
    """A journal's ISO-8601 time with its offset, or None when it is missing or not one."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


try:
    import fcntl
except ImportError:  # no flock (Windows): runs are not locked, and leftovers are not cleaned up
    fcntl = None

#: whether a live run can be told from an interrupted one (by its journal's lock)
CAN_LOCK = fcntl is not None


def _lock(fd: int) -> bool:
    """Take the exclusive lock of a journal without waiting; False when another process holds it (always
    True where there is no flock)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        # Held by another process; any other failure (a filesystem without locks, ENOLCK) must not make
        # every undo impossible, so it counts as taken.
        return exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES)
    return True


def _directory(directory: str | os.PathLike | None) -> Path:
    return Path(directory) if directory is not None else paths.journal_dir()


def run_path(run_id: str, directory: str | os.PathLike | None = None) -> Path:
    if not RUN_ID_RE.match(run_id or ""):
        raise JournalError(f"{run_id!r} is not a run id (see `qualiclip history`)")
    return _directory(directory) / f"{run_id}{JOURNAL_SUFFIX}"


class JournalWriter:
    """Appends the lines of one run. Every line is flushed and fsynced before `write` returns."""

    def __init__(self, path: Path, run_id: str):
        self.path = path
        self.run_id = run_id
        self._fd: int | None = None

    @classmethod
    def start(cls, command: str, argv: Sequence[str], roots: Iterable[str | os.PathLike] = (),
              planned: int = 0, cwd: str | os.PathLike | None = None,
              directory: str | os.PathLike | None = None,
              folders: Iterable[str | os.PathLike] = ()) -> JournalWriter:
        """Create the run's journal file (locked while this run lasts) and write its header."""
        folder = _directory(directory)
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: a journal steers undo
        except OSError as exc:
            raise JournalError(f"{folder}: cannot create the journal directory ({exc.strerror or exc})") from exc
        run_id = new_run_id()
        writer = cls(folder / f"{run_id}{JOURNAL_SUFFIX}", run_id)
        try:
            writer._fd = os.open(writer.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except OSError as exc:
            raise JournalError(f"{writer.path}: cannot create the journal ({exc.strerror or exc})") from exc
        _lock(writer._fd)
        fsync_dir(folder)
        writer.write({
            "type": "header", "version": JOURNAL_VERSION, "command": command, "argv": list(argv),
            "cwd": str(cwd if cwd is not None else os.getcwd()), "roots": [_absolute(r) for r in roots],
            "folders": [_absolute(f) for f in folders], "dry_run": False, "planned": planned,
        })
        return writer

    @property
    def backup_dir(self) -> Path:
        return backup_dir(self.path, self.run_id)

    def write(self, entry: dict) -> None:
        if self._fd is None:
            raise JournalError(f"{self.path}: journal is closed")
        line = {"type": entry.get("type", "op"), "run_id": self.run_id, "time": now_iso(), **entry}
        data = (json_dumps(line) + "\n").encode("utf-8")  # any file name, losslessly (\udcXX escapes)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot write the journal ({exc.strerror or exc})") from exc

    def op(self, index: int, phase: str, **fields) -> None:
        self.write({"type": "op", "index": index, "phase": phase, **fields})

    def finish(self, counts: dict) -> None:
        self.write({"type": "end", "counts": counts})

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _absolute(path: str | os.PathLike) -> str:
    return os.path.normpath(os.path.abspath(path))


def backup_dir(journal_path: Path, run_id: str) -> Path:
    """Where a run keeps copies of the sidecars it replaced (and undo the ones it takes away)."""
    return journal_path.with_name(run_id + BACKUP_SUFFIX)


@dataclass
class OpEntry:
    """What the journal says about one operation: its intent line and its outcome line, if any."""

    index: int
    intent: dict
    outcome: dict | None = None

    @property
    def phase(self) -> str:
        return self.outcome["phase"] if self.outcome else PHASE_INTENT

    @property
    def action(self) -> str:
        return self.intent["action"]

    def get(self, key: str, default=None):
        """A field, the outcome line taking precedence over the intent line."""
        if self.outcome is not None and self.outcome.get(key) is not None:
            return self.outcome[key]
        return self.intent.get(key, default)


@dataclass
class RunSummary:
    run_id: str
    time: str
    command: str
    argv: list[str]
    counts: dict[str, int]
    finished: bool        # the run reached its end (False: interrupted)
    undone: str | None    # None, "complete" or "partial" (an undo left problems)
    problem: str | None = None  # set when the run's journal cannot be read (then the other fields are empty)
    empty: bool = False   # killed while creating its journal, before it changed anything
    undo_interrupted: bool = False  # an undo began and did not finish (killed): undo it again

    @property
    def state(self) -> str:
        """A word or two for `history`: unreadable, empty, undo interrupted, undone, partly undone, done or
        interrupted."""
        if self.problem:
            return "unreadable"
        if self.empty:
            return "empty"
        if self.undo_interrupted:
            return "undo interrupted"
        if self.undone == "complete":
            return "undone"
        if self.undone == "partial":
            return "partly undone"
        return "done" if self.finished else "interrupted"


@dataclass
class RunLog:
    """One run as read back from its journal."""

    run_id: str
    path: Path
    header: dict
    ops: list[OpEntry] = field(default_factory=list)
    end: dict | None = None
    undos: list[dict] = field(default_factory=list)
    undo_starts: list[dict] = field(default_factory=list)
    empty: bool = False   # 0 bytes or a torn header: the run was killed before it changed anything
    undo_interrupted: bool = False  # the last undo_start has no undo line after it

    @property
    def started(self) -> datetime | None:
        """The run's start as its header records it (None for an empty journal or a header without it)."""
        return parse_time(self.header.get("time"))

    @property
    def backup_dir(self) -> Path:
        return backup_dir(self.path, self.run_id)

    @property
    def undone(self) -> str | None:
        if not self.undos:
            return None
        return "complete" if self.undos[-1].get("complete") else "partial"

    def counts(self) -> dict[str, int]:
        counts = {PHASE_DONE: 0, PHASE_FAILED: 0, PHASE_SKIPPED: 0, "interrupted": 0}
        for op in self.ops:
            counts["interrupted" if op.phase == PHASE_INTENT else op.phase] += 1
        counts["planned"] = int(self.header.get("planned", len(self.ops)))
        return counts

    def summary(self) -> RunSummary:
        return RunSummary(run_id=self.run_id, time=self.header.get("time", ""), command=self.header.get("command", ""),
                          argv=list(self.header.get("argv", [])), counts=self.counts(),
                          finished=self.end is not None, undone=self.undone, empty=self.empty,
                          undo_interrupted=self.undo_interrupted)


def read_run(run_id: str, directory: str | os.PathLike | None = None) -> RunLog:
    """Read one run. A torn line at the end of the run's own lines (the process was killed while writing
    it) is ignored; any other unreadable line raises JournalError."""
    path = run_path(run_id, directory)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise JournalError(f"no run {run_id} in {path.parent}") from None
    except OSError as exc:
        raise JournalError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    entries = []
    torn: list[int] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            torn.append(number)
            continue
        if not isinstance(entry, dict):
            raise JournalError(f"{path}:{number}: unreadable journal line")
        if entry.get("type") not in ("undo", "undo_start") and torn:
            # Only the killed run's last line may be torn; undo lines may follow it, nothing else.
            raise JournalError(f"{path}:{torn[0]}: unreadable journal line")
        entries.append(entry)
    if not entries and _torn_header(raw.strip()):
        # Killed while the journal was being created: nothing was done yet.
        return RunLog(run_id=run_id, path=path, header={}, empty=True)
    if not entries or entries[0].get("type") != "header":
        raise JournalError(f"{path}: journal has no header")
    log = RunLog(run_id=run_id, path=path, header=entries[0])
    by_index: dict[int, OpEntry] = {}
    for entry in entries[1:]:
        kind = entry.get("type")
        if kind == "op":
            # An op's first line stands as its intent (one skipped, or failed before its intent was written,
            # has a single line); every line that is not an intent is its outcome.
            if not isinstance(entry.get("index"), int) or not isinstance(entry.get("phase"), str):
                raise JournalError(f"{path}: an operation line without an index or phase")
            op = by_index.setdefault(entry["index"], OpEntry(index=entry["index"], intent=entry))
            if entry["phase"] != PHASE_INTENT:
                op.outcome = entry
        elif kind == "end":
            log.end = entry
        elif kind == "undo":
            log.undos.append(entry)
            log.undo_interrupted = False
        elif kind == "undo_start":
            log.undo_starts.append(entry)
            log.undo_interrupted = True
    log.ops = [by_index[i] for i in sorted(by_index)]
    return log


_HEADER_START = b'{"type": "header"'


def _torn_header(raw: bytes) -> bool:
    """Whether a journal's bytes are nothing, or the beginning of a header line cut off by a kill."""
    return b"\n" not in raw and raw[:len(_HEADER_START)] == _HEADER_START[:len(raw)]


def _listed_ids(folder: Path) -> list[str]:
    """The run ids of the journals in `folder`, in no particular order."""
    if not folder.is_dir():
        return []
    ids = [p.name[: -len(JOURNAL_SUFFIX)] for p in folder.glob(f"*{JOURNAL_SUFFIX}")]
    return [i for i in ids if RUN_ID_RE.match(i)]


def run_ids(directory: str | os.PathLike | None = None) -> list[str]:
    """All run ids in the journal directory, oldest first: in the order of the starts their headers record
    (a file's name does not order it; a journal without a readable start goes by the time in its name)."""
    folder = _directory(directory)
    ids = _listed_ids(folder)
    return sorted(ids, key=lambda i: (_recorded_start(folder / f"{i}{JOURNAL_SUFFIX}") or run_id_time(i), i))


def _recorded_start(path: Path) -> datetime | None:
    """The start time in a journal's header line, read without reading the rest of the file."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
        header = json.loads(first)
    except (OSError, ValueError):
        return None
    return parse_time(header.get("time")) if isinstance(header, dict) and header.get("type") == "header" else None


def _summaries(directory: str | os.PathLike | None) -> Iterator[RunSummary]:
    """Summaries of all runs, newest first, each journal read only when its summary is asked for."""
    for run_id in reversed(run_ids(directory)):
        try:
            yield read_run(run_id, directory).summary()
        except JournalError as exc:
            yield RunSummary(run_id=run_id, time="", command="", argv=[], counts={}, finished=False,
                             undone=None, problem=str(exc))


def history(directory: str | os.PathLike | None = None) -> list[RunSummary]:
    """Summaries of all runs, newest first. A run whose journal is unreadable is listed with `problem` set."""
    return list(_summaries(directory))


def latest_run_id(directory: str | os.PathLike | None = None, include_undone: bool = False) -> str | None:
    """The run that started last among the readable ones (by default the newest not completely undone;
    empty journals, of runs killed before they began, never count), or None."""
    latest_possible = datetime.now(timezone.utc) + FUTURE_SLACK
    for summary in _summaries(directory):
        started = parse_time(summary.time)
        if started is not None and started > latest_possible:
            continue  # a start in the future: not a run of this clock (an edited or forged journal)
        if summary.problem is None and not summary.empty and (include_undone or summary.undone != "complete"):
            return summary.run_id
    return None


def _last_line(path: Path) -> dict | None:
    """The last complete line of a journal, read from its end; None when there is none or it is unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - (1 << 16)))
            tail = f.read()
    except OSError:
        return None
    lines = [line for line in tail.split(b"\n") if line.strip()]
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a torn last line
        return entry if isinstance(entry, dict) else None
    return None


def unsettled_run_ids(directory: str | os.PathLike | None = None) -> list[str]:
    """Runs whose journal does not end with the end of the run or of an undo: interrupted runs and undos
    (and runs going on right now, which `Reopened` tells apart by their lock), by name: their order does not
    matter, so no header is read to sort them (this runs at the start of every run)."""
    folder = _directory(directory)
    result = []
    for run_id in sorted(_listed_ids(folder)):
        last = _last_line(folder / f"{run_id}{JOURNAL_SUFFIX}")
        if last is None or last.get("type") not in ("end", "undo"):
            result.append(run_id)
    return result


class Reopened(JournalWriter):
    """A run's journal opened again to append to it, holding its lock: no other process runs or undoes that
    run meanwhile. `Reopened.open` raises JournalError when the lock is held elsewhere (or, with
    `busy_ok`, returns None)."""

    @classmethod
    def open(cls, log: RunLog, busy_ok: bool = False) -> Reopened | None:
        writer = cls(log.path, log.run_id)
        try:
            writer._fd = os.open(log.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise JournalError(f"{log.path}: cannot append ({exc.strerror or exc})") from exc
        if not _lock(writer._fd):
            writer.close()
            if busy_ok:
                return None
            raise JournalError(f"{log.path}: run {log.run_id} is in use by another qualiclip process "
                               "(still running, or being undone); try again when it has finished")
        with suppress(OSError):
            with open(log.path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                last = f.read(1)
            if last not in (b"", b"\n"):
                os.write(writer._fd, b"\n")  # end a line torn by a killed run, so ours stays readable
        return writer

    def undo_started(self) -> None:
        self.write({"type": "undo_start"})

    def undo_finished(self, complete: bool, restored: int, problems: int) -> None:
        self.write({"type": "undo", "complete": complete, "restored": restored, "problems": problems})
