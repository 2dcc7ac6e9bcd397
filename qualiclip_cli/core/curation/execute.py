"""Carrying out a plan: each operation journaled (intent fsynced before the step, outcome after), then done.

A photo and its siblings move (copy, rename, go to the trash) as one unit: when one member cannot, the members
already done are put back, journaled, and the unit is reported once, by its failing member. One failing unit
is recorded and the batch goes on. A journal that cannot be written stops the run, since acting without a
record is not allowed. Dry runs use
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
from qualiclip_cli.core.curation.siblings import renamed_sibling
from qualiclip_cli.core.errors import CurationError, JournalError, QualiclipError, error_text


@dataclass
class OpOutcome:
    index: int
    operation: Operation
    status: str                      # "done", "failed", "rolled_back", "skipped" or "listed"
    destination: Path | None = None  # where the file actually went (done only)
    error: str | None = None


@dataclass
class RunResult:
    run_id: str | None               # None when nothing needed journaling (a list-only plan)
    journal_path: Path | None
    outcomes: list[OpOutcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = {"done": 0, "failed": 0, "rolled_back": 0, "skipped": 0, "listed": 0}
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

    A photo and its siblings (the operations that follow it with `sibling_of` naming it) are one unit: when
    a member cannot be carried out, the members already done are put back (each rollback journaled: a
    "failed" line with `rollback` "started" before it, "done" or "failed" after), the rest are not
    attempted, and the unit has one "failed" outcome, the others "rolled_back" or "skipped".
    Per-unit failures (CurationError, OSError) are recorded and the batch continues; a journal that cannot
    be written stops the run (JournalError), since acting without a record is not allowed.
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
    with writer:
        for unit in units(plan.operations):
            result.outcomes.extend(_execute_unit(writer, plan, unit))
        writer.finish(result.counts())
    return result


def units(operations: Sequence[Operation]) -> list[list[int]]:
    """The plan's operations grouped into units, as lists of indexes: a photo, then its siblings."""
    groups: list[list[int]] = []
    for index, op in enumerate(operations):
        if op.sibling_of is not None and groups and operations[groups[-1][0]].source == op.sibling_of:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


@dataclass
class _Step:
    """A member of a unit that was carried out: what is needed to put it back."""

    index: int
    operation: Operation
    final: Path | None
    sha256: str
    receipt: trash.TrashReceipt | None = None


def _execute_unit(writer: journal.JournalWriter, plan: Plan, unit: list[int]) -> list[OpOutcome]:
    ops = [plan.operations[i] for i in unit]
    if ops[0].action == "list":
        return [OpOutcome(i, op, "listed") for i, op in zip(unit, ops)]
    outcomes: list[OpOutcome] = []
    steps: list[_Step] = []
    failure: BaseException | None = None
    try:
        destinations = _unit_destinations(ops, plan.on_collision)
    except CurationError as exc:  # a destination of the unit is taken (refuse): nothing of it is attempted
        destinations, failure = [op.destination for op in ops], exc
    failed: Operation | None = None
    for index, op, destination in zip(unit, ops, destinations):
        if failure is None:
            try:
                steps.append(_execute_one(writer, index, op, destination))
            except JournalError:
                raise
            except (QualiclipError, OSError) as exc:
                failure = exc
            else:
                outcomes.append(OpOutcome(index, op, "done", destination=steps[-1].final))
                continue
        if failed is not None:  # after the failing member: not attempted
            error = f"not attempted, since {failed.source.name} could not be {_past(failed.action)}"
            writer.op(index, journal.PHASE_SKIPPED, action=op.action, source=str(op.source),
                      destination=_str(op.destination), sibling_of=_str(op.sibling_of), error=error)
            outcomes.append(OpOutcome(index, op, "skipped", error=error))
            continue
        failed, error = op, _member_error(op, failure)
        writer.op(index, journal.PHASE_FAILED, action=op.action, source=str(op.source),
                  destination=_str(op.destination), error=error)
        problems = {step.index: _roll_back(writer, step, op) for step in reversed(steps)}
        stuck = [p for p in problems.values() if p is not None]
        if len(ops) > 1:
            error += "; " + ("; ".join(stuck) if stuck else f"{_unit_name(ops)} left where it was")
        for outcome in outcomes:
            if problems.get(outcome.index) is None:
                outcome.status, outcome.destination = "rolled_back", None
                outcome.error = f"put back, since {op.source.name} could not be {_past(op.action)}"
        outcomes.append(OpOutcome(index, op, "failed", error=error))
    return outcomes


def _past(action: str) -> str:
    return {"move": "moved", "copy": "copied", "rename": "renamed", "trash": "trashed"}.get(action, action)


def _unit_name(ops: list[Operation]) -> str:
    """How a failure row names its unit: the photo, and how many siblings travel with it."""
    n = len(ops) - 1
    return ops[0].source.name if n == 0 else f"{ops[0].source.name} with its {n} sibling{'' if n == 1 else 's'}"


def _member_error(op: Operation, exc: BaseException) -> str:
    """The one-line reason, naming the member (an OSError raised without a file name gets the member's)."""
    if isinstance(exc, OSError) and not isinstance(exc, QualiclipError) and not exc.filename:
        return f"{op.source}: {exc.strerror or exc}"
    return error_text(exc)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _unit_destinations(ops: list[Operation], on_collision: str) -> list[Path | None]:
    """Where each member goes now. The plan picked free names; when one was taken since, "number" gives the
    whole unit the next free number together (IMG_1 (1).jpg with IMG_1 (1).xmp), "refuse" raises."""
    planned = [op.destination for op in ops]
    if ops[0].action not in ("move", "rename", "copy") or planned[0] is None:
        return planned
    stem = planned[0].stem
    n = 0
    while True:
        new_stem = fileops.numbered_stem(stem, n)
        names = [p if p is None or n == 0 else p.with_name(_renumbered(p.name, stem, new_stem, n)) for p in planned]
        taken = [p for p in names if p is not None and os.path.lexists(p)]
        if not taken:
            return names
        if on_collision == "refuse":
            raise CurationError(f"{taken[0]}: destination exists; refusing to overwrite")
        n += 1


def _renumbered(name: str, stem: str, new_stem: str, n: int) -> str:
    return renamed_sibling(name, stem, new_stem) if name.startswith(stem) else fileops.numbered_name(name, n)


def _execute_one(writer: journal.JournalWriter, index: int, op: Operation, destination: Path | None) -> _Step:
    base = {"action": op.action, "source": str(op.source), "reason": op.reason,
            "sibling_of": _str(op.sibling_of)}
    if op.action == "write_sidecar":
        return _Step(index, op, _write_sidecar(writer, index, op, base), "")
    fileops.check_source(op.source)
    facts = fileops.file_facts(op.source)
    base.update(sha256=facts.sha256, size=facts.size, mtime_ns=facts.mtime_ns)
    if op.action == "trash":
        writer.op(index, journal.PHASE_INTENT, destination=None, **base)
        receipt = trash.trash_file(op.source, facts.sha256)
        writer.op(index, journal.PHASE_DONE, destination=None, action=op.action, source=str(op.source),
                  trash_file=_str(receipt.trashed if receipt else None),
                  trash_info=_str(receipt.info if receipt else None))
        return _Step(index, op, None, facts.sha256, receipt)
    if op.action not in ("move", "rename", "copy"):
        raise CurationError(f"unknown action {op.action!r}")
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
    return _Step(index, op, final, facts.sha256)


def _roll_back(writer: journal.JournalWriter, step: _Step, cause: Operation) -> str | None:
    """Put one done member of a failed unit back: a moved or renamed file back at its source, our copy
    removed, a trashed file back from the trash. Journaled before and after, so that undo (which finds files
    by content) resolves a run killed in the middle. Returns the problem, or None when it is back."""
    op, index = step.operation, step.index
    fields = {"action": op.action, "source": str(op.source), "destination": _str(step.final),
              "error": f"put back, since {cause.source.name} could not be {_past(cause.action)}"}
    if step.receipt is not None:
        fields.update(trash_file=str(step.receipt.trashed), trash_info=str(step.receipt.info))
    partial = None
    if op.action in ("move", "rename"):
        partial = fileops.partial_path(op.source, journal.partial_token(writer.run_id, index) + journal.ROLLBACK_TOKEN)
        fields["rollback_partial"] = str(partial)
    writer.op(index, journal.PHASE_FAILED, rollback="started", **fields)
    try:
        if op.action == "copy":
            fileops.remove_own_copy(step.final, step.sha256, op.source)
        elif op.action == "trash":
            receipt = step.receipt or trash.find_in_trash(op.source, step.sha256)
            if receipt is None:
                raise CurationError(f"{op.source}: not found in the trash")
            trash.restore_from_trash(receipt, op.source, step.sha256)
        else:
            fileops.move_file(step.final, op.source, "refuse", partial, step.sha256)
    except (QualiclipError, OSError) as exc:
        where = f"it stays at {step.final}" if step.final is not None else "it stays in the trash"
        problem = f"{op.source} could not be put back ({error_text(exc)}); {where}"
        writer.op(index, journal.PHASE_FAILED, rollback="failed", **{**fields, "error": problem})
        return problem
    writer.op(index, journal.PHASE_FAILED, rollback="done", **fields)
    return None


def _write_sidecar(writer: journal.JournalWriter, index: int, op: Operation, base: dict) -> Path:
    sidecar = op.destination
    found = xmp.read_sidecar(sidecar)  # a link, FIFO, device or oversized file: raises, nothing opened or changed
    previous = found.data if found is not None else None
    new = xmp.merge_sidecar(previous, op.tags, where=str(sidecar))  # malformed or a DTD: raises, file untouched
    previous_sha = hashlib.sha256(previous).hexdigest() if previous is not None else None
    backup = None
    if found is not None:
        backup = writer.backup_dir / f"{index:06d}-{sidecar.name}"
        writer.backup_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(previous)
            out.flush()
            if hasattr(os, "fchmod"):
                os.fchmod(out.fileno(), found.mode)  # the backup has the sidecar's permission bits
            os.fsync(out.fileno())
        if not hasattr(os, "fchmod"):
            os.chmod(backup, found.mode)
        fileops.fsync_dir(writer.backup_dir)
    partial = fileops.partial_path(sidecar, journal.partial_token(writer.run_id, index))
    writer.op(index, journal.PHASE_INTENT, destination=str(sidecar), previous_sha256=previous_sha,
              backup=_str(backup), new_sha256=hashlib.sha256(new).hexdigest(), partial=str(partial), **base)
    fileops.write_file_atomic(sidecar, new, previous_sha, partial=partial,
                              mode=found.mode if found is not None else None)
    writer.op(index, journal.PHASE_DONE, action=op.action, source=str(op.source), destination=str(sidecar))
    return sidecar


def predict_failures(plan: Plan) -> dict[int, str]:
    """For a dry run: the operations a real run would fail, found without changing anything, as index → the
    error text the real run would report. Today: sidecars that cannot be read or merged (malformed, a DTD, a
    link, a FIFO, too large, unreadable)."""
    failures = {}
    for index, op in enumerate(plan.operations):
        if op.action != "write_sidecar":
            continue
        sidecar = Path(op.destination)
        try:
            found = xmp.read_sidecar(sidecar)  # refuses links, FIFOs (never opened) and oversized files
            if found is not None:
                xmp.merge_sidecar(found.data, op.tags, where=str(sidecar))
        except (CurationError, OSError) as exc:
            failures[index] = error_text(exc)  # worded as the real run would report it
    return failures
