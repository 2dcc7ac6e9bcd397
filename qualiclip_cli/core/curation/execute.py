"""Carrying out a plan: each operation journaled (intent fsynced before the step, outcome after), then done.

One failing operation is recorded and the batch goes on; a sibling is not moved when its photo was not. A
journal that cannot be written stops the run, since acting without a record is not allowed. Dry runs use
`predict_failures` to say, without changing anything, which operations a real run would fail.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qualiclip_cli.core.curation import fileops, journal, trash, undo, xmp
from qualiclip_cli.core.curation.plan import Operation, Plan
from qualiclip_cli.core.errors import CurationError, JournalError, QualiclipError, error_text


@dataclass
class OpOutcome:
    index: int
    operation: Operation
    status: str                      # "done", "failed", "skipped" or "listed"
    destination: Path | None = None  # where the file actually went (done only)
    error: str | None = None


@dataclass
class RunResult:
    run_id: str | None               # None when nothing needed journaling (a list-only plan)
    journal_path: Path | None
    outcomes: list[OpOutcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = {"done": 0, "failed": 0, "skipped": 0, "listed": 0}
        for o in self.outcomes:
            counts[o.status] += 1
        return counts

    @property
    def failures(self) -> list[OpOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def execute(plan: Plan, command: str | None = None, argv: Sequence[str] = (),
            journal_directory: str | os.PathLike | None = None, cwd: str | os.PathLike | None = None,
            on_start: Callable[[str], None] | None = None) -> RunResult:
    """Carry out a plan, journaling each operation (intent fsynced before the step, outcome after).

    Per-operation failures (CurationError, OSError) are recorded and the batch continues; a journal that
    cannot be written stops the run (JournalError), since acting without a record is not allowed.
    ``on_start(run_id)`` is called once the journal exists, before the first operation: a caller interrupted
    later (Ctrl-C) knows which run to name, even while another run is going on at once.
    """
    if not plan.changes_files:
        return RunResult(None, None, [OpOutcome(i, op, "listed") for i, op in enumerate(plan.operations)])
    undo.clean_leftovers(journal_directory)  # temporaries of interrupted runs and undos, verified as ours
    writer = journal.JournalWriter.start(command or plan.command, argv, roots=plan.roots,
                                         planned=len(plan.operations), cwd=cwd, directory=journal_directory,
                                         folders=plan.folders)
    result = RunResult(writer.run_id, writer.path)
    if on_start is not None:
        on_start(writer.run_id)
    not_done: set[Path] = set()
    with writer:
        for index, op in enumerate(plan.operations):
            if op.action == "list":
                result.outcomes.append(OpOutcome(index, op, "listed"))
                continue
            if op.sibling_of is not None and op.sibling_of in not_done:
                error = f"not {op.action}d because {op.sibling_of.name} was not"
                writer.op(index, journal.PHASE_SKIPPED, action=op.action, source=str(op.source),
                          destination=_str(op.destination), sibling_of=str(op.sibling_of), error=error)
                result.outcomes.append(OpOutcome(index, op, "skipped", error=error))
                continue
            try:
                final = _execute_one(writer, index, op, plan.on_collision)
            except JournalError:
                raise
            except (QualiclipError, OSError) as exc:
                error = error_text(exc)
                writer.op(index, journal.PHASE_FAILED, action=op.action, source=str(op.source),
                          destination=_str(op.destination), error=error)
                result.outcomes.append(OpOutcome(index, op, "failed", error=error))
                not_done.add(op.source)
                continue
            result.outcomes.append(OpOutcome(index, op, "done", destination=final))
        writer.finish(result.counts())
    return result


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _execute_one(writer: journal.JournalWriter, index: int, op: Operation, on_collision: str) -> Path | None:
    base = {"action": op.action, "source": str(op.source), "reason": op.reason,
            "sibling_of": _str(op.sibling_of)}
    if op.action == "write_sidecar":
        return _write_sidecar(writer, index, op, base)
    if not op.source.is_file():
        raise CurationError(f"{op.source}: not found or not a regular file")
    facts = fileops.file_facts(op.source)
    base.update(sha256=facts.sha256, size=facts.size, mtime_ns=facts.mtime_ns)
    if op.action == "trash":
        writer.op(index, journal.PHASE_INTENT, destination=None, **base)
        receipt = trash.trash_file(op.source, facts.sha256)
        writer.op(index, journal.PHASE_DONE, destination=None, action=op.action, source=str(op.source),
                  trash_file=_str(receipt.trashed if receipt else None),
                  trash_info=_str(receipt.info if receipt else None))
        return None
    if op.action not in ("move", "rename", "copy"):
        raise CurationError(f"unknown action {op.action!r}")
    destination = fileops.free_destination(op.destination, on_collision)
    partial = fileops.partial_path(destination, journal.partial_token(writer.run_id, index))
    created = [str(d) for d in fileops.missing_dirs(destination.parent)]
    writer.op(index, journal.PHASE_INTENT, destination=str(destination), partial=str(partial),
              created_dirs=created, **base)
    fileops.make_dirs(destination.parent)
    if op.action == "copy":
        final = fileops.copy_file(op.source, destination, "refuse", partial, facts.sha256)
    else:
        final = fileops.move_file(op.source, destination, "refuse", partial, facts.sha256)
    writer.op(index, journal.PHASE_DONE, action=op.action, source=str(op.source), destination=str(final))
    return final


def _write_sidecar(writer: journal.JournalWriter, index: int, op: Operation, base: dict) -> Path:
    sidecar = op.destination
    previous = sidecar.read_bytes() if sidecar.exists() else None
    new = xmp.merge_sidecar(previous, op.tags, where=str(sidecar))  # malformed: raises, file untouched
    previous_sha = hashlib.sha256(previous).hexdigest() if previous is not None else None
    backup = None
    if previous is not None:
        backup = writer.backup_dir / f"{index:06d}-{sidecar.name}"
        writer.backup_dir.mkdir(parents=True, exist_ok=True)
        with open(backup, "xb") as out:
            out.write(previous)
            out.flush()
            os.fsync(out.fileno())
        fileops.fsync_dir(writer.backup_dir)
    partial = fileops.partial_path(sidecar, journal.partial_token(writer.run_id, index))
    writer.op(index, journal.PHASE_INTENT, destination=str(sidecar), previous_sha256=previous_sha,
              backup=_str(backup), new_sha256=hashlib.sha256(new).hexdigest(), partial=str(partial), **base)
    fileops.write_file_atomic(sidecar, new, previous_sha, partial=partial)
    writer.op(index, journal.PHASE_DONE, action=op.action, source=str(op.source), destination=str(sidecar))
    return sidecar


def predict_failures(plan: Plan) -> dict[int, str]:
    """For a dry run: the operations a real run would fail, found without changing anything, as index → the
    error text the real run would report. Today: sidecars that cannot be merged (malformed, unreadable)."""
    failures = {}
    for index, op in enumerate(plan.operations):
        if op.action != "write_sidecar":
            continue
        sidecar = Path(op.destination)
        if not sidecar.exists():
            continue
        try:
            xmp.merge_sidecar(sidecar.read_bytes(), op.tags, where=str(sidecar))
        except (CurationError, OSError) as exc:
            failures[index] = error_text(exc)  # worded as the real run would report it
    return failures
