"""The append-only journal of file operations: one JSON object per line, one file per run.

Location: `journal_dir()/<run_id>.jsonl`; sidecar backups of a run go to `journal_dir()/<run_id>.backup/`.
A run id is a sortable UTC timestamp plus a random suffix: `20250131T235959.123456Z-3f9a1c`.

Lines (every line has "type", "run_id" and "time", an ISO-8601 local time with offset):

- header (first line): version, command, argv, cwd, roots, dry_run (always false: dry runs are not
  journaled), planned (number of operations in the plan).
- op: index (position in the plan), phase, action, source, destination, reason, sibling_of, and facts of
  the file before the step: sha256, size, mtime_ns. Phases:
    "intent"  written and fsynced BEFORE the step; may carry `partial` (temporary copy name), and for
              write_sidecar `previous_sha256`, `backup` (copy of the old sidecar) and `new_sha256`;
    "done"    after the step: the final `destination`, `created_dirs`, and for trash `trash_file`/`trash_info`;
    "failed"  the step did not happen or was rolled back: `error` (one line);
    "skipped" the step was not attempted: `error` says why (e.g. its photo was not moved).
  An op with only an "intent" line was interrupted mid-step; `undo` resolves it by content hash.
- end: counts of done/failed/skipped, written when the run finishes normally.
- undo: appended by each undo: complete (bool), restored, problems.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from qualiclip_cli.core import paths
from qualiclip_cli.core.atomic import fsync_dir
from qualiclip_cli.core.errors import JournalError

JOURNAL_VERSION = 1
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
              directory: str | os.PathLike | None = None) -> JournalWriter:
        """Create the run's journal file and write its header."""
        folder = _directory(directory)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JournalError(f"{folder}: cannot create the journal directory ({exc.strerror or exc})") from exc
        run_id = new_run_id()
        writer = cls(folder / f"{run_id}{JOURNAL_SUFFIX}", run_id)
        try:
            writer._fd = os.open(writer.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except OSError as exc:
            raise JournalError(f"{writer.path}: cannot create the journal ({exc.strerror or exc})") from exc
        fsync_dir(folder)
        writer.write({
            "type": "header", "version": JOURNAL_VERSION, "command": command, "argv": list(argv),
            "cwd": str(cwd if cwd is not None else os.getcwd()), "roots": [str(r) for r in roots],
            "dry_run": False, "planned": planned,
        })
        return writer

    @property
    def backup_dir(self) -> Path:
        return self.path.with_name(self.run_id + BACKUP_SUFFIX)

    def write(self, entry: dict) -> None:
        if self._fd is None:
            raise JournalError(f"{self.path}: journal is closed")
        line = {"type": entry.get("type", "op"), "run_id": self.run_id, "time": now_iso(), **entry}
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
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

    @property
    def state(self) -> str:
        """One word for `history`: unreadable, undone, partly undone, done or interrupted."""
        if self.problem:
            return "unreadable"
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
                          finished=self.end is not None, undone=self.undone)


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
        if entry.get("type") != "undo" and torn:
            # Only the killed run's last line may be torn; undo lines may follow it, nothing else.
            raise JournalError(f"{path}:{torn[0]}: unreadable journal line")
        entries.append(entry)
    if not entries or entries[0].get("type") != "header":
        raise JournalError(f"{path}: journal has no header")
    log = RunLog(run_id=run_id, path=path, header=entries[0])
    by_index: dict[int, OpEntry] = {}
    for entry in entries[1:]:
        kind = entry.get("type")
        if kind == "op":
            # An op's first line stands as its intent (one skipped, or failed before its intent was written,
            # has a single line); every line that is not an intent is its outcome.
            op = by_index.setdefault(entry["index"], OpEntry(index=entry["index"], intent=entry))
            if entry["phase"] != PHASE_INTENT:
                op.outcome = entry
        elif kind == "end":
            log.end = entry
        elif kind == "undo":
            log.undos.append(entry)
    log.ops = [by_index[i] for i in sorted(by_index)]
    return log


def run_ids(directory: str | os.PathLike | None = None) -> list[str]:
    """All run ids in the journal directory, oldest first."""
    folder = _directory(directory)
    if not folder.is_dir():
        return []
    ids = [p.name[: -len(JOURNAL_SUFFIX)] for p in folder.glob(f"*{JOURNAL_SUFFIX}")]
    return sorted(i for i in ids if RUN_ID_RE.match(i))


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
    """The newest readable run (by default the newest not completely undone), or None."""
    for summary in _summaries(directory):
        if summary.problem is None and (include_undone or summary.undone != "complete"):
            return summary.run_id
    return None


def append_undo(log: RunLog, complete: bool, restored: int, problems: int) -> None:
    """Mark a run as undone (completely or partially) by appending an undo line."""
    writer = JournalWriter(log.path, log.run_id)
    try:
        writer._fd = os.open(log.path, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        raise JournalError(f"{log.path}: cannot append ({exc.strerror or exc})") from exc
    with writer:
        if log.path.read_bytes()[-1:] not in (b"", b"\n"):
            os.write(writer._fd, b"\n")  # end a line torn by a killed run, so ours stays readable
        writer.write({"type": "undo", "complete": complete, "restored": restored, "problems": problems})
