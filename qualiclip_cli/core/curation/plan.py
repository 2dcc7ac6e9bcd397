"""Plans: the operations a cull, sort or tag would carry out, built from score records by reading the disk only.

Curation runs as plan -> execute (execute.py) -> undo (undo.py). Nothing here prints; the CLI renders plans,
results and reports.

- A `Plan` is an ordered list of `Operation`s built from score records by `plan_cull`, `plan_sort_into`,
  `plan_rank_prefix` or `plan_tag`. Building a plan only reads the disk; the CLI renders a dry run and the
  report of a real run from the same operations.
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

Paths: every path is read as the kernel reads it (`paths.kernel_path`: a ".." after a symbolic link leaves the
link's target), so a plan acts on the files that were scored. A photo that is a symbolic link is left out
(`SkipKind.SYMLINK`) of every plan that changes files. A destination folder that exists as a symbolic link
below the folder the user named (the root for `_rejected`, the quarantine folder, the --into folder) refuses
the whole plan (CurationError) before anything moves: only a folder the user named is followed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Literal, get_args

from qualiclip_cli.core.curation import fileops, xmp
from qualiclip_cli.core.curation.selection import (
    DEFAULT_TIER_THRESHOLDS,
    RANK_PREFIX_RE,
    CullCriteria,
    assign_tier,
    describe,
    rank_prefix,
    rank_width,
    ranked,
    scored,
    select_for_cull,
    strip_rank_prefix,
    tier_folder,
    validate_key,
    validate_thresholds,
    value_of,
)
from qualiclip_cli.core.curation.siblings import RAW_EXTENSIONS, DirectoryIndex, find_siblings, renamed_sibling
from qualiclip_cli.core.errors import CurationError, UsageError
from qualiclip_cli.core.paths import kernel_path
from qualiclip_cli.core.records import ScoreRecord

QUARANTINE_DIRNAME = "_rejected"
CullAction = Literal["list", "move", "copy", "trash"]
CULL_ACTIONS: tuple[str, ...] = get_args(CullAction)
SortMode = Literal["copy", "move"]
SORT_MODES: tuple[str, ...] = get_args(SortMode)


class SkipKind(Enum):
    """Why a plan left a photo out. `problem`: the user's request was not carried out for it (exit 3)."""

    NOT_FOUND = "not found"
    DESTINATION_EXISTS = "destination exists"
    SIDECAR_TAKEN = "sidecar taken"
    SIDECAR_READ_ONLY = "sidecar read-only"
    NOT_SCORED = "not scored"
    IN_QUARANTINE = "in the quarantine"
    IN_TARGET = "in the target folder"
    SYMLINK = "symbolic link"
    UNCHANGED = "already named"

    @property
    def problem(self) -> bool:
        return self in (SkipKind.NOT_FOUND, SkipKind.DESTINATION_EXISTS, SkipKind.SIDECAR_TAKEN, SkipKind.SYMLINK,
                        SkipKind.SIDECAR_READ_ONLY)


@dataclass(frozen=True)
class Skip:
    """A photo the plan left out: its kind, and the one-line reason shown to the user."""

    photo: Path
    kind: SkipKind
    reason: str


@dataclass(frozen=True)
class Operation:
    """One step of a plan. `destination` is None for list and trash; for write_sidecar, `source` is the
    photo, `destination` its sidecar and `tags` what to write. `sibling_of` names the photo a sidecar or
    RAW file travels with."""

    action: str  # list, move, copy, rename (a move within one folder), trash or write_sidecar
    source: Path
    destination: Path | None
    reason: str
    sibling_of: Path | None = None
    tags: xmp.SidecarTags | None = None
    kept: tuple[str, ...] = ()  # write_sidecar: what of the user's the plan saw kept ("rating", "label")


@dataclass
class Plan:
    command: str
    operations: list[Operation] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)    # where the photos came from (journaled: undo's scope)
    on_collision: str = "number"
    skipped: list[Skip] = field(default_factory=list)  # photos left out, and why
    folders: list[Path] = field(default_factory=list)  # where they go: quarantine, --to, --into (undo's scope)

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
    return kernel_path(path)  # ".." read as the kernel does, so we act on the file that was scored


def refuse_linked_folders(base: str | os.PathLike, folder: str | os.PathLike, hint: str) -> None:
    """Raise CurationError when a folder between `base` (excluded: the user named it, or it holds the photos)
    and `folder` exists as a symbolic link: files put there would land wherever it leads, maybe another disk."""
    base, folder = _abs(base), _abs(folder)
    probe = base
    for part in folder.relative_to(base).parts:
        probe = probe / part
        if probe.is_symlink():
            raise CurationError(f"{probe}: is a symbolic link (to {os.readlink(probe)}); refusing to put files "
                                f"where it leads; {hint}")
        if not probe.is_dir():
            return  # missing (created as a real folder when needed) or not a folder (reported when used)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class _Planner:
    """Builds a plan, keeping track of which destinations are taken and which files are already handled."""

    def __init__(self, plan: Plan, records: Iterable[ScoreRecord], with_siblings: bool,
                 base: Path | None = None, hint: str = ""):
        fileops.validate_on_collision(plan.on_collision)
        self.base, self.hint = base, hint  # destinations are checked for symbolic links below `base`
        self.checked: set[Path] = set()
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

    def available(self, photo: Path, action: str) -> bool:
        if photo in self.claimed:
            return False
        if action != "list" and photo.is_symlink():  # never replaced by a copy nor left dangling
            self.plan.skipped.append(Skip(photo, SkipKind.SYMLINK, "is a symbolic link; left in place"))
            return False
        if not photo.is_file():
            self.plan.skipped.append(Skip(photo, SkipKind.NOT_FOUND, "not found"))
            return False
        return True

    def add_group(self, action: str, photo: Path, dest_dir: Path | None, new_stem: str, reason: str) -> None:
        """Plan the photo and its siblings: all into dest_dir with the stem `new_stem` (numbered together on a
        clash), or, for trash and list (dest_dir None), without destinations."""
        siblings = self.siblings(photo) if action != "list" else []
        if dest_dir is not None and self.base is not None and dest_dir not in self.checked:
            refuse_linked_folders(self.base, dest_dir, self.hint)
            self.checked.add(dest_dir)
        if dest_dir is None:
            targets: list[Path | None] = [None] * (1 + len(siblings))
        else:
            targets = self._free_group_names(photo, siblings, dest_dir, new_stem)
            if targets is None:
                return
        self.plan.operations.append(Operation(action, photo, targets[0], reason))
        for sibling, target in zip(siblings, targets[1:]):
            kind = ("sidecar" if sibling.suffix.lower() == ".xmp" else
                    "RAW" if sibling.suffix.lower().lstrip(".") in RAW_EXTENSIONS else "camera picture")
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
                self.plan.skipped.append(Skip(photo, SkipKind.DESTINATION_EXISTS, f"destination exists: {targets[0]}"))
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
              with_siblings: bool = True, on_collision: str = "number",
              selection: Sequence[ScoreRecord] | None = None) -> Plan:
    """Plan a cull of the records selected by `criteria` (worst first), or of ``selection`` when given (e.g.
    `groups.select_per_group`'s, made with the same criteria).

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
    selected = []
    for rec in select_for_cull(records, criteria) if selection is None else selection:
        photo = _abs(rec.path)
        root = _root_of(photo, root_list)
        bin_dir = quarantine if quarantine is not None else root / QUARANTINE_DIRNAME
        if _inside(photo, bin_dir):
            plan.skipped.append(Skip(photo, SkipKind.IN_QUARANTINE, "already in the quarantine folder"))
            continue
        selected.append((rec, photo, root, bin_dir))
    if action in ("move", "copy"):  # the whole cull is refused before anything moves
        for _, photo, root, bin_dir in selected:
            base, hint = (quarantine, LINKED_FOLDER_HINT) if quarantine is not None else (root, LINKED_QUARANTINE_HINT)
            dest_dir = bin_dir / photo.parent.relative_to(root)
            if dest_dir not in planner.checked:
                refuse_linked_folders(base, dest_dir, hint)
                planner.checked.add(dest_dir)
    for rec, photo, root, bin_dir in selected:
        if not planner.available(photo, action):
            continue
        reason = describe(rec, criteria.by) if rec.ok else f"unreadable: {rec.error}"
        dest_dir = bin_dir / photo.parent.relative_to(root) if action in ("move", "copy") else None
        planner.add_group(action, photo, dest_dir, photo.stem, reason)
        if dest_dir is not None and bin_dir not in plan.folders:
            plan.folders.append(bin_dir)
    return _cover_sources(plan)


LINKED_QUARANTINE_HINT = "to send the rejects there, name that folder as the quarantine folder"
LINKED_FOLDER_HINT = "remove the link or choose another folder"


def refuse_linked_quarantine(roots: Iterable[str | os.PathLike]) -> None:
    """Before a cull into the default quarantine: refuse when a root's `_rejected` is a symbolic link
    (CurationError), so that nothing is scored in vain. `plan_cull` checks every destination folder again."""
    for root in _normal_roots(roots):
        refuse_linked_folders(root, root / QUARANTINE_DIRNAME, LINKED_QUARANTINE_HINT)


def plan_sort_into(records: Iterable[ScoreRecord], into_dir: str | os.PathLike,
                   thresholds: Sequence[float] = DEFAULT_TIER_THRESHOLDS, mode: str = "copy",
                   with_siblings: bool = True, on_collision: str = "number",
                   roots: Iterable[str | os.PathLike] = (), by: str = "score") -> Plan:
    """Plan copying (default) or moving photos into tier folders `<into_dir>/<1-poor .. 5-excellent>/<path>`.

    `<path>` is the photo's path relative to the root it was found under (the deepest of `roots` holding it;
    a photo under none, or named itself as a root, goes by its name): `shoot/2024/a.jpg` sorted from root
    `shoot` lands in `<into_dir>/3-good/2024/a.jpg`, as cull keeps sub-folders under `_rejected/`. Clashing
    names (photos from several roots) are numbered. The tier is that of the value `by` (the score or a
    sub-score). Photos already under `into_dir` and records without that value are left out.
    """
    if mode not in SORT_MODES:
        raise UsageError(f"sort mode must be one of {', '.join(SORT_MODES)}, got {mode!r}")
    bounds = validate_thresholds(thresholds)
    validate_key(by)
    records = list(records)
    into = _abs(into_dir)
    root_list = _normal_roots(roots)
    plan = Plan(command="sort", roots=root_list, on_collision=on_collision, folders=[into])
    planner = _Planner(plan, records, with_siblings, base=into, hint=LINKED_FOLDER_HINT)
    for rec in sorted(scored(records, by), key=lambda r: r.path):
        photo = _abs(rec.path)
        if _inside(photo, into):
            plan.skipped.append(Skip(photo, SkipKind.IN_TARGET, "already inside the target folder"))
            continue
        if not planner.available(photo, mode):
            continue
        tier = assign_tier(value_of(rec, by), bounds)
        reason = f"tier {tier}, {describe(rec, by)}"
        sub_folder = photo.parent.relative_to(_root_of(photo, root_list))
        planner.add_group(mode, photo, into / tier_folder(tier) / sub_folder, photo.stem, reason)
    _skip_unscored(plan, records, by)
    return _cover_sources(plan)


def rank_renamed(journal_directory: str | os.PathLike | None = None) -> dict[Path, int]:
    """The names qualiclip's rank renames gave files, as the journal records them: path -> size of the file.

    Every done rename of a `sort` run (the only renames sort makes are --rank-prefix ones) that has not been
    completely undone; an unreadable journal is passed over (its names are then not recognised)."""
    from qualiclip_cli.core.curation import journal

    names: dict[Path, int] = {}
    for log in _live_runs(("sort",), journal_directory):
        for op in log.ops:
            destination, size = op.get("destination"), op.get("size")
            if op.action == "rename" and op.phase == journal.PHASE_DONE and isinstance(destination, str):
                names[Path(destination)] = size if isinstance(size, int) else -1
    return names


def _our_prefix(photo: Path, renamed: dict[Path, int]) -> bool:
    """Whether the photo's leading digits are a rank prefix we wrote: its name matches the pattern we write
    and the journal records a rank rename to exactly this path, of a file of this size."""
    if not RANK_PREFIX_RE.match(photo.name) or photo not in renamed:
        return False
    try:
        return renamed[photo] in (-1, photo.stat().st_size)
    except OSError:
        return False


def plan_rank_prefix(records: Iterable[ScoreRecord], with_siblings: bool = True,
                     on_collision: str = "number", by: str = "score",
                     journal_directory: str | os.PathLike | None = None) -> Plan:
    """Plan renaming photos in place with their rank: `0001_IMG_1.jpg` for the best of all records given
    (one ranking across every folder, by the value `by`; width from the count, at least 4 digits). Siblings
    get the same prefix.

    A prefix that an earlier rank rename wrote is replaced, not stacked: `0018_IMG_1.jpg` becomes
    `0003_IMG_1.jpg`. A prefix counts as ours only when the journal (`rank_renamed`) says a rank rename gave
    the file exactly that name (and the file has the size it had then); a name of the same shape that
    qualiclip did not write (`2024_trip.jpg`, a renamed file whose journal is gone) keeps it and gets the
    rank in front. A photo already named for its rank is left out (`SkipKind.UNCHANGED`)."""
    validate_key(by)
    records = list(records)
    order = ranked(records, by)
    width = rank_width(len(order))
    renamed = rank_renamed(journal_directory) if order else {}
    plan = Plan(command="sort", on_collision=on_collision)
    planner = _Planner(plan, records, with_siblings)
    for rank, rec in order:
        photo = _abs(rec.path)
        if not planner.available(photo, "rename"):
            continue
        stem = strip_rank_prefix(photo.stem) if _our_prefix(photo, renamed) else photo.stem
        new_stem = rank_prefix(rank, width) + stem
        if new_stem == photo.stem:
            plan.skipped.append(Skip(photo, SkipKind.UNCHANGED, f"already named for rank {rank}"))
            planner.claimed.add(photo)
            continue
        reason = f"rank {rank} of {len(order)}, {describe(rec, by)}"
        planner.add_group("rename", photo, photo.parent, new_stem, reason)
    _skip_unscored(plan, records, by)
    return _cover_sources(plan)


def plan_tag(records: Iterable[ScoreRecord], weights_sha256: str, preprocessing: str,
             thresholds: Sequence[float] = DEFAULT_TIER_THRESHOLDS, reject_below: float | None = None,
             reject_label: str | None = None, naming: str = "adobe", rewrite_read_only: bool = False,
             overwrite_ratings: bool = False, overwrite_labels: bool = False,
             keywords: Mapping[int, tuple[str, ...]] | None = None) -> Plan:
    """Plan writing the XMP sidecars of each scored photo (see xmp.py for what is written and how it merges).

    Which sidecars: every existing one of the photo in either naming (IMG_1.xmp, IMG_1.jpg.xmp), or, when
    there is none, the one `naming` names; and, for a RAW+JPEG pair, the RAW's own sidecar (IMG_1.CR2.xmp)
    when it exists or `naming` is "append" (adobe naming gives the RAW no sidecar of its own: IMG_1.xmp is
    both's). Each gets the photo's rating and is its own operation.

    A rating (or label) that is not ours is kept unless `overwrite_ratings` (`overwrite_labels`); the plan
    reads each existing sidecar (xmp.read_sidecar: no link followed, nothing blocks, size-limited) to say so in
    the operation (`kept`, and its reason), and the merge decides again when it runs. `reject_label` labels
    the rejects (rating -1) only. Photos whose sidecar another photo already uses (IMG_1.jpg and IMG_1.png with
    adobe naming) are left out after the first, and so are photos whose sidecar is read-only
    (xmp.is_read_only) unless `rewrite_read_only`. A sidecar that is a link, a FIFO, too large or malformed
    fails when its operation runs (or is predicted to, in a dry run). ``keywords`` (id(record) -> our keywords,
    e.g. `groups.group_keywords`): written into the keyword bags, replacing our earlier ones (xmp.KEYWORD_BAGS);
    a record it does not name gets none of ours."""
    bounds = validate_thresholds(thresholds)
    records = list(records)
    plan = Plan(command="tag")
    used: dict[Path, Path] = {}
    directories = DirectoryIndex()
    for rec in sorted(scored(records), key=lambda r: r.path):
        photo = _abs(rec.path)
        if not photo.is_file():
            plan.skipped.append(Skip(photo, SkipKind.NOT_FOUND, "not found"))
            continue
        sidecars = [(f, s) for f, s in _sidecars_to_write(photo, naming, directories) if s not in used]
        if not sidecars or sidecars[0][0] != photo:  # its existing ones are another photo's (IMG_1.jpg, IMG_1.png)
            sidecars.insert(0, (photo, xmp.sidecar_path(photo, naming, directories)))
        first = sidecars[0][1]
        if first in used:
            plan.skipped.append(Skip(photo, SkipKind.SIDECAR_TAKEN, f"sidecar {first.name} already used for {used[first].name}"))
            continue
        rating = xmp.rating_for(rec.score, bounds, reject_below)
        tags = xmp.SidecarTags(rating=rating, score=rec.score, weights_sha256=weights_sha256,
                               preprocessing=preprocessing, pairs=rec.pairs,
                               label=reject_label if rating == xmp.REJECT_RATING else None,
                               overwrite_rating=overwrite_ratings, manage_label=reject_label is not None,
                               overwrite_label=overwrite_labels,
                               keywords=None if keywords is None else tuple(keywords.get(id(rec), ())))
        for n, (source, sidecar) in enumerate(sidecars):
            if sidecar in used:
                continue  # the RAW's sidecar, already written for another photo of the same stem
            used[sidecar] = photo
            if not rewrite_read_only and xmp.is_read_only(sidecar):
                plan.skipped.append(Skip(photo, SkipKind.SIDECAR_READ_ONLY,
                                         f"sidecar {sidecar.name} is read-only; left untouched (--rewrite-read-only "
                                         "rewrites it, keeping its permissions)"))
                if n == 0:
                    break
                continue
            kept, reason = _tag_reason(sidecar, tags, rec.score)
            if source != photo:
                reason += f"; RAW of {photo.name}"
            plan.operations.append(Operation("write_sidecar", source, sidecar, reason, tags=tags, kept=kept))
    _skip_unscored(plan, records)
    return _cover_sources(plan)


def curated_folders(roots: Iterable[str | os.PathLike],
                    journal_directory: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """Folders below the roots that earlier cull and sort runs put photos into (`cull --to`, `sort --into`,
    any quarantine), as recorded in their journals, with the run's id: `tag` does not walk them, as cull and
    sort do not walk their own. Runs completely undone, and unreadable journals, are passed over; a folder
    that is itself one of the roots (the user named it) is walked."""
    root_list = _normal_roots(roots)
    found: dict[Path, str] = {}
    for log in _live_runs(("cull", "sort"), journal_directory):
        for folder in log.header.get("folders") or []:
            if not isinstance(folder, str):
                continue
            path = _abs(folder)
            if path not in root_list and any(_inside(path, r) for r in root_list):
                found.setdefault(path, log.run_id)
    return sorted(found.items())


def _live_runs(commands: tuple[str, ...], journal_directory: str | os.PathLike | None) -> Iterator:
    """The journaled runs of these commands (oldest first) that are not completely undone; unreadable
    journals, and empty ones (killed before they began: no command), are passed over."""
    from qualiclip_cli.core.curation import journal
    from qualiclip_cli.core.errors import JournalError

    for run_id in journal.run_ids(journal_directory):
        try:
            log = journal.read_run(run_id, journal_directory)
        except (JournalError, OSError, ValueError):
            continue
        if log.header.get("command") in commands and log.undone != "complete":
            yield log


def _sidecars_to_write(photo: Path, naming: str, index: DirectoryIndex) -> list[tuple[Path, Path]]:
    """(file the sidecar belongs to, sidecar) pairs for a photo: its own first, then its RAWs'."""
    pairs = [(photo, s) for s in xmp.sidecars_of(photo, naming, index)]
    for sibling in find_siblings(photo, index):
        if sibling.suffix.lower().lstrip(".") not in RAW_EXTENSIONS:
            continue
        own = xmp.sidecar_path(sibling, "append", index)  # IMG_1.CR2.xmp, any letter case
        if (naming == "append" or os.path.lexists(own)) and own not in {s for _, s in pairs}:
            pairs.append((sibling, own))
    return pairs


def _tag_reason(sidecar: Path, tags: xmp.SidecarTags, score: float) -> tuple[tuple[str, ...], str]:
    """What the write keeps of the user's, and the operation's reason."""
    decision = xmp.MergeDecision()
    try:
        found = xmp.read_sidecar(sidecar)
        if found is not None:
            decision = xmp.merge_decision(found.data, tags, where=str(sidecar))
    except (CurationError, OSError):
        pass  # the operation fails when it runs, with this reason (a dry run predicts it)
    kept: list[str] = []
    if decision.kept_rating is not None:
        kept.append("rating")
        parts = [f"kept its own rating {decision.kept_rating}"]
    else:
        parts = [f"rating {tags.rating}"]
    if decision.kept_label is not None:
        kept.append("label")
        parts.append(f"kept its own label {decision.kept_label}")
    elif tags.label is not None and decision.kept_rating is None:
        parts.append(f"label {tags.label}")
    parts.append(f"score {score:.4f}")
    return tuple(kept), ", ".join(parts)


def _cover_sources(plan: Plan) -> Plan:
    """Add to the plan's roots the folder of every photo no root holds, so the roots cover every source."""
    for op in plan.operations:
        if not any(_inside(op.source, r) for r in plan.roots):
            plan.roots.append(op.source.parent)
    return plan


def _skip_unscored(plan: Plan, records: list[ScoreRecord], by: str = "score") -> None:
    ok = {id(r) for r in scored(records, by)}
    for rec in records:
        if id(rec) not in ok:
            why = (rec.error or rec.status) if not rec.ok or by == "score" else f"no {by} sub-score"
            plan.skipped.append(Skip(_abs(rec.path), SkipKind.NOT_SCORED, f"not scored ({why})"))
