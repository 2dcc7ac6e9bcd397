"""Curation as plan -> execute -> undo. Nothing here prints; the CLI renders plans, results and reports.

- A `Plan` is an ordered list of `Operation`s built from score records by `plan_cull`, `plan_sort_into`,
  `plan_rank_prefix` or `plan_tag`. Building a plan only reads the disk. `Plan.describe()` gives the lines a
  dry run shows; `execute` reports the same `Operation.describe()` text for what it did.
- Plans never target an existing file: under on_collision="number" a free numbered name is chosen at plan
  time for a photo and all its siblings together (IMG_1 (1).jpg with IMG_1 (1).xmp), and re-checked when the
  operation runs; under "refuse" such photos are left out of the plan (`Plan.skipped`) and an operation whose
  destination appears before it runs fails without touching anything.
- `execute` journals each operation's intent (fsynced) before acting and its outcome after; one failing
  operation is recorded and the batch goes on. A sibling is not moved when its photo was not.
- `undo` walks a run backwards and puts every file back where it was, deciding by SHA-256 where each file is,
  so an interrupted run (even killed mid-step) is undone without losing anything.

Quarantine layout for `plan_cull` (action move or copy): by default each photo goes to
`<root>/_rejected/<path relative to root>`, inside the root it was found under (same filesystem, so moves
are renames, and the rejects stay next to the shoot they came from). With `quarantine_dir`, photos go to
`<quarantine_dir>/<path relative to their root>` (photos from several roots share that tree; clashes are
numbered). Photos already inside the quarantine folder are left out.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from qualiclip_cli.core import fileops, journal, xmp
from qualiclip_cli.core.errors import CurationError, JournalError, QualiclipError, UsageError
from qualiclip_cli.core.records import ScoreRecord
from qualiclip_cli.core.selection import (
    DEFAULT_TIER_THRESHOLDS, CullCriteria, assign_tier, rank_prefix, rank_width, ranked, scored, select_for_cull,
    tier_folder, validate_thresholds,
)
from qualiclip_cli.core.siblings import DirectoryIndex, find_siblings, renamed_sibling

QUARANTINE_DIRNAME = "_rejected"
CULL_ACTIONS = ("list", "move", "copy", "trash")
SORT_MODES = ("copy", "move")
# Actions an Operation can carry. "rename" is a move within one directory; "list" changes nothing.
ACTIONS = ("list", "move", "copy", "rename", "trash", "write_sidecar")


@dataclass(frozen=True)
class Operation:
    """One step of a plan. `destination` is None for list and trash; for write_sidecar, `source` is the
    photo, `destination` its sidecar and `tags` what to write. `sibling_of` names the photo a sidecar or
    RAW file travels with."""

    action: str
    source: Path
    destination: Path | None
    reason: str
    sibling_of: Path | None = None
    tags: xmp.SidecarTags | None = None

    def describe(self, destination: Path | None = None) -> str:
        """One line, the same for a dry run and for a report of what was done (pass the final destination)."""
        target = destination if destination is not None else self.destination
        text = f"{self.action} {self.source}"
        if target is not None:
            text += f" -> {target}"
        return f"{text}  ({self.reason})"


@dataclass
class Plan:
    command: str
    operations: list[Operation] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)
    on_collision: str = "number"
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # photos left out, and why

    def describe(self) -> list[str]:
        return [op.describe() for op in self.operations]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operations:
            counts[op.action] = counts.get(op.action, 0) + 1
        return counts

    @property
    def changes_files(self) -> bool:
        return any(op.action != "list" for op in self.operations)

    def __len__(self) -> int:
        return len(self.operations)

    def __iter__(self):
        return iter(self.operations)


def _abs(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class _Planner:
    """Builds a plan, keeping track of which destinations are taken and which files are already handled."""

    def __init__(self, plan: Plan, records: Iterable[ScoreRecord], with_siblings: bool):
        fileops.validate_on_collision(plan.on_collision)
        self.plan = plan
        self.with_siblings = with_siblings
        self.record_paths = {_abs(r.path) for r in records}
        self.taken: set[Path] = set()
        self.claimed: set[Path] = set()
        self.directories = DirectoryIndex()

    def siblings(self, photo: Path) -> list[Path]:
        if not self.with_siblings:
            return []
        return [s for s in find_siblings(photo, self.directories)
                if s not in self.record_paths and s not in self.claimed]

    def available(self, photo: Path) -> bool:
        if photo in self.claimed:
            return False
        if not photo.is_file():
            self.plan.skipped.append((photo, "not found"))
            return False
        return True

    def add_group(self, action: str, photo: Path, dest_dir: Path | None, new_stem: str, reason: str) -> None:
        """Plan the photo and its siblings: all into dest_dir with the stem `new_stem` (numbered together on a
        clash), or, for trash and list (dest_dir None), without destinations."""
        siblings = self.siblings(photo) if action != "list" else []
        if dest_dir is None:
            targets: list[Path | None] = [None] * (1 + len(siblings))
        else:
            targets = self._free_group_names(photo, siblings, dest_dir, new_stem)
            if targets is None:
                return
        self.plan.operations.append(Operation(action, photo, targets[0], reason))
        for sibling, target in zip(siblings, targets[1:]):
            kind = "sidecar" if sibling.suffix.lower() == ".xmp" else "RAW"
            self.plan.operations.append(
                Operation(action, sibling, target, f"{kind} of {photo.name}", sibling_of=photo))
        self.claimed.update([photo, *siblings])
        self.taken.update(t for t in targets if t is not None)

    def _free_group_names(self, photo: Path, siblings: list[Path], dest_dir: Path,
                          new_stem: str) -> list[Path] | None:
        n = 0
        while True:
            stem = fileops.numbered_stem(new_stem, n)
            names = [stem + photo.suffix] + [renamed_sibling(s.name, photo.stem, stem) for s in siblings]
            targets = [dest_dir / name for name in names]
            if not any(os.path.lexists(t) or t in self.taken for t in targets):
                return targets
            if self.plan.on_collision == "refuse":
                self.plan.skipped.append((photo, f"destination exists: {targets[0]}"))
                return None
            n += 1


def _root_of(photo: Path, roots: Sequence[Path]) -> Path:
    containing = [r for r in roots if _inside(photo, r) and r != photo]
    return max(containing, key=lambda r: len(r.parts)) if containing else photo.parent


def _normal_roots(roots: Iterable[str | os.PathLike]) -> list[Path]:
    result = []
    for root in roots:
        r = _abs(root)
        result.append(r.parent if r.is_file() else r)
    return result


def plan_cull(records: Iterable[ScoreRecord], criteria: CullCriteria, action: str = "move",
              roots: Iterable[str | os.PathLike] = (), quarantine_dir: str | os.PathLike | None = None,
              with_siblings: bool = True, on_collision: str = "number") -> Plan:
    """Plan a cull of the records selected by `criteria` (worst first).

    action: "list" (report only), "move" or "copy" into the quarantine (layout in the module docstring),
    or "trash" (system trash). Sidecars and RAW siblings go with their photo unless with_siblings=False.
    """
    if action not in CULL_ACTIONS:
        raise UsageError(f"cull action must be one of {', '.join(CULL_ACTIONS)}, got {action!r}")
    if quarantine_dir is not None and action not in ("move", "copy"):
        raise UsageError("a quarantine folder only applies to move or copy")
    records = list(records)
    root_list = _normal_roots(roots)
    plan = Plan(command="cull", roots=root_list, on_collision=on_collision)
    planner = _Planner(plan, records, with_siblings)
    quarantine = _abs(quarantine_dir) if quarantine_dir is not None else None
    for rec in select_for_cull(records, criteria):
        photo = _abs(rec.path)
        root = _root_of(photo, root_list)
        bin_dir = quarantine if quarantine is not None else root / QUARANTINE_DIRNAME
        if _inside(photo, bin_dir):
            plan.skipped.append((photo, "already in the quarantine folder"))
            continue
        if not planner.available(photo):
            continue
        reason = f"score {rec.score:.4f}"
        dest_dir = bin_dir / photo.parent.relative_to(root) if action in ("move", "copy") else None
        planner.add_group(action, photo, dest_dir, photo.stem, reason)
    return plan


def plan_sort_into(records: Iterable[ScoreRecord], into_dir: str | os.PathLike,
                   thresholds: Sequence[float] = DEFAULT_TIER_THRESHOLDS, mode: str = "copy",
                   with_siblings: bool = True, on_collision: str = "number") -> Plan:
    """Plan copying (default) or moving photos into tier folders `<into_dir>/<1-poor .. 5-excellent>/<name>`.

    The tier folders are flat (clashing names are numbered). Photos already under `into_dir` and records
    without a score are left out.
    """
    if mode not in SORT_MODES:
        raise UsageError(f"sort mode must be one of {', '.join(SORT_MODES)}, got {mode!r}")
    bounds = validate_thresholds(thresholds)
    records = list(records)
    into = _abs(into_dir)
    plan = Plan(command="sort", roots=[into], on_collision=on_collision)
    planner = _Planner(plan, records, with_siblings)
    for rec in sorted(scored(records), key=lambda r: r.path):
        photo = _abs(rec.path)
        if _inside(photo, into):
            plan.skipped.append((photo, "already inside the target folder"))
            continue
        if not planner.available(photo):
            continue
        tier = assign_tier(rec.score, bounds)
        reason = f"tier {tier}, score {rec.score:.4f}"
        planner.add_group(mode, photo, into / tier_folder(tier), photo.stem, reason)
    _skip_unscored(plan, records)
    return plan


def plan_rank_prefix(records: Iterable[ScoreRecord], with_siblings: bool = True,
                     on_collision: str = "number") -> Plan:
    """Plan renaming photos in place with their rank: `0001_IMG_1.jpg` for the best of all records given
    (one ranking across every folder; width from the count, at least 4 digits). Siblings get the same
    prefix. An existing prefix is not stripped: undo a previous ranking first to re-rank."""
    records = list(records)
    order = ranked(records)
    width = rank_width(len(order))
    plan = Plan(command="sort", on_collision=on_collision)
    planner = _Planner(plan, records, with_siblings)
    for rank, rec in order:
        photo = _abs(rec.path)
        if not planner.available(photo):
            continue
        reason = f"rank {rank} of {len(order)}, score {rec.score:.4f}"
        planner.add_group("rename", photo, photo.parent, rank_prefix(rank, width) + photo.stem, reason)
    _skip_unscored(plan, records)
    return plan


def plan_tag(records: Iterable[ScoreRecord], weights_sha256: str, preprocessing: str,
             thresholds: Sequence[float] = DEFAULT_TIER_THRESHOLDS, reject_below: float | None = None,
             label: str | None = None, naming: str = "adobe") -> Plan:
    """Plan writing one XMP sidecar per scored photo (see xmp.py for what is written and how it merges).
    Photos whose sidecar name another photo already uses (IMG_1.jpg and IMG_1.png with adobe naming) are
    left out after the first."""
    bounds = validate_thresholds(thresholds)
    records = list(records)
    plan = Plan(command="tag")
    used: dict[Path, Path] = {}
    directories = DirectoryIndex()
    for rec in sorted(scored(records), key=lambda r: r.path):
        photo = _abs(rec.path)
        if not photo.is_file():
            plan.skipped.append((photo, "not found"))
            continue
        sidecar = xmp.sidecar_path(photo, naming, directories)
        if sidecar in used:
            plan.skipped.append((photo, f"sidecar {sidecar.name} already used for {used[sidecar].name}"))
            continue
        used[sidecar] = photo
        rating = xmp.rating_for(rec.score, bounds, reject_below)
        tags = xmp.SidecarTags(rating=rating, score=rec.score, weights_sha256=weights_sha256,
                               preprocessing=preprocessing, pairs=rec.pairs, label=label)
        plan.operations.append(Operation("write_sidecar", photo, sidecar, f"rating {rating}, score {rec.score:.4f}",
                                         tags=tags))
    _skip_unscored(plan, records)
    return plan


def _skip_unscored(plan: Plan, records: list[ScoreRecord]) -> None:
    ok = {id(r) for r in scored(records)}
    for rec in records:
        if id(rec) not in ok:
            plan.skipped.append((_abs(rec.path), f"not scored ({rec.error or rec.status})"))


# ------------------------------------------------------------------------------------------------ execute


@dataclass
class OpOutcome:
    index: int
    operation: Operation
    status: str                      # "done", "failed", "skipped" or "listed"
    destination: Path | None = None  # where the file actually went (done only)
    error: str | None = None

    def describe(self) -> str:
        return self.operation.describe(self.destination)


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
            journal_directory: str | os.PathLike | None = None, cwd: str | os.PathLike | None = None) -> RunResult:
    """Carry out a plan, journaling each operation (intent fsynced before the step, outcome after).

    Per-operation failures (CurationError, OSError) are recorded and the batch continues; a journal that
    cannot be written stops the run (JournalError), since acting without a record is not allowed.
    """
    if not plan.changes_files:
        return RunResult(None, None, [OpOutcome(i, op, "listed") for i, op in enumerate(plan.operations)])
    writer = journal.JournalWriter.start(command or plan.command, argv, roots=plan.roots,
                                         planned=len(plan.operations), cwd=cwd, directory=journal_directory)
    result = RunResult(writer.run_id, writer.path)
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


def error_text(exc: BaseException) -> str:
    """The one-line reason a failed operation reports (also used to predict it in dry runs)."""
    if isinstance(exc, OSError) and not isinstance(exc, QualiclipError):
        text = f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else str(exc)
    else:
        text = str(exc)
    return " ".join(text.split()) or type(exc).__name__


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
        receipt = fileops.trash_file(op.source, facts.sha256)
        writer.op(index, journal.PHASE_DONE, destination=None, action=op.action, source=str(op.source),
                  trash_file=_str(receipt.trashed if receipt else None),
                  trash_info=_str(receipt.info if receipt else None))
        return None
    if op.action not in ("move", "rename", "copy"):
        raise CurationError(f"unknown action {op.action!r}")
    destination = fileops.free_destination(op.destination, on_collision)
    partial = fileops.partial_path(destination, f"{writer.run_id[-6:]}-{index}")
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
    writer.op(index, journal.PHASE_INTENT, destination=str(sidecar), previous_sha256=previous_sha,
              backup=_str(backup), new_sha256=hashlib.sha256(new).hexdigest(), **base)
    fileops.write_file_atomic(sidecar, new, previous_sha)
    writer.op(index, journal.PHASE_DONE, action=op.action, source=str(op.source), destination=str(sidecar))
    return sidecar


# --------------------------------------------------------------------------------------------------- undo


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
        receipt = fileops.TrashReceipt(Path(trashed), Path(info))
    if receipt is None:
        receipt = fileops.find_in_trash(src, want)
    if receipt is None:
        return "problem", f"{src} was not found in the trash; restore it from the system trash by hand"
    fileops.restore_from_trash(receipt, src, want)
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
