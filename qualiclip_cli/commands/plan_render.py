"""Shared by cull, sort and tag: show a plan (dry run) or carry it out and report, in one format.

A dry run and a real run print the same line per operation on stdout; the real run's lines carry the
destination actually used and, for an operation that failed, the reason. Photos the plan left out are
reported too (stderr in text, rows with status "skipped" in jsonl/json). The summary, the run id and how to
undo go to stderr.

Text line:  `move  a/IMG_1.jpg -> a/_rejected/IMG_1.jpg  (score 0.2130)`, with `  [rolled back: reason]` or
`  [skipped: reason]` appended for a member of a failed unit. Paths are shown relative to the current directory when they are inside it, and
escaped (`core.names.display`): one operation is always one line, whatever its names hold.
jsonl/json rows: action, source, destination (absolute paths), status ("planned" in a dry run, "done",
"failed", "rolled_back" (put back because another member of its unit failed), "skipped" or "listed"), error,
score (of the photo; a sibling carries its photo's score), reason, sibling_of. A failure is reported once:
in text, by one warning on stderr per failed unit (a photo and its siblings), naming the member that failed
and why (its line is not also printed on stdout); in jsonl/json, by its row on stdout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional, get_args

import typer

from qualiclip_cli.commands.console import notes, stderr
from qualiclip_cli.commands.errors import EXIT_OK, EXIT_PARTIAL
from qualiclip_cli.commands.formats import write_rows
from qualiclip_cli.core.curation.fileops import OnCollision as OnCollisionChoice
from qualiclip_cli.core.curation.plan import Skip, SkipKind
from qualiclip_cli.core.names import display
from qualiclip_cli.core.paths import kernel_path

#: text: one line per operation, for people; jsonl and json: one object per operation, for programs.
PlanFormatChoice = Literal["text", "jsonl", "json"]
PLAN_FORMATS: tuple[str, ...] = get_args(PlanFormatChoice)

PlanFormat = Annotated[
    PlanFormatChoice,
    typer.Option("--format", "-f", help="text (one line per operation), jsonl or json (one object per operation: "
                                         "action, source, destination, status, error, score, reason, sibling_of)."),
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", "-n", help="Print exactly the plan a real run would carry out; change nothing."),
]
OnCollision = Annotated[
    OnCollisionChoice,
    typer.Option("--on-collision",
                 help="Never overwrite. number (default): take the next free name, IMG_1 (1).jpg, for the photo and "
                      "its siblings together; refuse: leave such photos where they are and exit 3."),
]
WithSiblings = Annotated[
    bool,
    typer.Option("--with-siblings/--no-siblings",
                 help="Sidecars (IMG_1.xmp, IMG_1.jpg.xmp) and RAW+JPEG siblings (IMG_1.CR2) go with their photo."),
]

_VERBS = {
    "move": ("moved", "would move", "file"),
    "copy": ("copied", "would copy", "file"),
    "rename": ("renamed", "would rename", "file"),
    "trash": ("sent to the trash", "would send to the trash", "file"),
    "write_sidecar": ("wrote", "would write", "sidecar"),
    "list": ("listed", "would list", "photo"),
}


@dataclass
class Row:
    action: str
    source: Path
    destination: Optional[Path]
    status: str
    error: Optional[str]
    score: Optional[float]
    reason: str
    sibling_of: Optional[Path] = None
    skip: Optional[Skip] = None  # the plan's Skip, for a photo the plan left out
    kept: tuple[str, ...] = ()   # tag: what of the user's the write kept ("rating", "label")

    def to_dict(self) -> dict:
        return {
            "action": self.action, "source": str(self.source), "destination": _str(self.destination),
            "status": self.status, "error": self.error, "score": self.score, "reason": self.reason,
            "sibling_of": _str(self.sibling_of),
        }

    def line(self) -> str:
        text = f"{self.action:<5} {display_path(self.source)}"
        if self.destination is not None:
            text += f" -> {display_path(self.destination)}"
        text += f"  ({display(self.reason)})"
        if self.status in ("failed", "rolled_back", "skipped") and self.error:
            text += f"  [{self.status.replace('_', ' ')}: {display(self.error)}]"
        return text


def _str(path: Optional[Path]) -> Optional[str]:
    return None if path is None else str(path)


def display_path(path: os.PathLike | str) -> str:
    """For people: relative to the current directory when inside it, else as it is (absolute); escaped, so it
    is one line without control characters (undecodable bytes as \\xe9)."""
    path = Path(path)
    try:
        cwd = Path(os.getcwd())
        if cwd == Path(cwd.anchor):  # at the root, relative would only drop the leading /
            return display(path)
        return display(path.relative_to(cwd))
    except (ValueError, OSError):  # outside the current directory, or it no longer exists
        return display(path)


def parse_tiers(text: str) -> tuple[float, float, float, float]:
    from qualiclip_cli.core.curation.selection import validate_thresholds
    from qualiclip_cli.core.errors import UsageError

    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"--tiers must be four comma-separated numbers, e.g. 0.2,0.4,0.6,0.8, not {text!r}") from None
    return validate_thresholds(values)


def invocation(command: str, paths: Sequence[Path]) -> list[str]:
    """The command line to record in the journal: the real one when run as `qualiclip`, else a reconstruction."""
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    if argv0 in ("qualiclip", "__main__.py") and len(sys.argv) > 1:
        return list(sys.argv[1:])
    return [command, *map(str, paths)]


def _scores(records: Iterable) -> dict[Path, float]:
    return {kernel_path(r.path): r.score for r in records if r.ok and r.score is not None}


def _rows_of_plan(plan, scores: Mapping[Path, float], predicted: Mapping[int, str]) -> list[Row]:
    rows = []
    for index, op in enumerate(plan.operations):
        status = "listed" if op.action == "list" else "planned"
        error = predicted.get(index)
        if error is not None:
            status = "failed"
        rows.append(Row(op.action, op.source, op.destination, status, error, _score_of(op, scores), op.reason,
                        op.sibling_of, kept=op.kept))
    return rows


def _rows_of_run(run, scores: Mapping[Path, float]) -> list[Row]:
    rows = []
    for outcome in run.outcomes:
        op = outcome.operation
        destination = outcome.destination if outcome.status == "done" else op.destination
        if op.action == "trash":
            destination = None
        rows.append(Row(op.action, op.source, destination, outcome.status, outcome.error, _score_of(op, scores),
                        op.reason, op.sibling_of, kept=op.kept))
    return rows


def _score_of(op, scores: Mapping[Path, float]) -> Optional[float]:
    return scores.get(op.sibling_of if op.sibling_of is not None else op.source)


def _skipped_rows(plan, action: str, scores: Mapping[Path, float]) -> list[Row]:
    return [Row(action, s.photo, None, "skipped", s.reason, scores.get(s.photo), "left out", skip=s)
            for s in plan.skipped]


def carry_out(plan, *, records: list, action: str, command: str, argv: Sequence[str], dry_run: bool, fmt: str,
              predicted_failures: Mapping[int, str] | None = None) -> int:
    """Print the plan (dry run) or execute it and print the report; summary to stderr. Returns the exit code.

    `action` names what the plan does (used for the rows of photos it left out); `predicted_failures` maps
    operation indexes to the error a real run would meet (known without changing anything), for dry runs.
    """
    from qualiclip_cli.core.curation.execute import execute

    scores = _scores(records)
    run = None
    if dry_run or not plan.changes_files:
        rows = _rows_of_plan(plan, scores, (predicted_failures or {}) if dry_run else {})
    else:
        started: list[str] = []
        try:
            run = execute(plan, command=command, argv=argv, on_start=started.append)
        except KeyboardInterrupt:
            if started:  # this run, cut short
                stderr().print(f"qualiclip: interrupted; what was done is journaled: qualiclip undo {started[0]}",
                               highlight=False, markup=False)
            raise
        rows = _rows_of_run(run, scores)
    skipped = _skipped_rows(plan, action, scores)
    _print_rows(rows, skipped, fmt)

    console = stderr()
    for row in rows:  # one warning per failed unit: its put-back and not-attempted members are in its line
        if row.status == "failed" and fmt == "text":  # jsonl/json: the row on stdout is the report
            what = "would fail" if dry_run else row.status
            console.print(f"qualiclip: warning: {row.action} {display_path(row.source)} {what}: {display(row.error)}",
                          highlight=False, markup=False)
    for row in skipped:
        level = "warning" if row.skip.kind.problem else "note"
        if row.skip.kind is SkipKind.NOT_SCORED:
            continue  # already warned about while scoring
        (console if row.skip.kind.problem else notes()).print(  # -q drops the notes, never a warning
            f"qualiclip: {level}: {display_path(row.source)} left out: {display(row.error)}", highlight=False,
            markup=False)
    notes().print("qualiclip: " + _summary(command, rows, skipped, dry_run), highlight=False, markup=False)
    if run is not None and run.run_id is not None:
        notes().print(f"qualiclip: run {run.run_id}; undo with: qualiclip undo {run.run_id}",
                      highlight=False, markup=False)

    scoring_failed = any(not r.ok for r in records)
    op_failed = any(r.status in ("failed", "rolled_back", "skipped") for r in rows)
    skip_problem = any(r.skip.kind.problem for r in skipped)
    return EXIT_PARTIAL if (scoring_failed or op_failed or skip_problem) else EXIT_OK


def _print_rows(rows: list[Row], skipped: list[Row], fmt: str) -> None:
    out = sys.stdout  # the machine formats switch it to UTF-8 when needed (write_rows)
    if fmt == "text":
        for row in rows:
            if row.status != "failed":  # a failure is reported once, by its warning on stderr
                out.write(row.line() + "\n")
    else:
        write_rows([row.to_dict() for row in rows + skipped], fmt, out)
    out.flush()


def _summary(command: str, rows: list[Row], skipped: list[Row], dry_run: bool) -> str:
    head = f"{command}{' (dry run)' if dry_run else ''}: "
    if not rows:
        parts = ["nothing to do"]
    else:
        parts = []
        for action in dict.fromkeys(r.action for r in rows):
            past, future, noun = _VERBS.get(action, (action, f"would {action}", "file"))
            mine = [r for r in rows if r.action == action]
            if dry_run or action == "list":
                n = sum(1 for r in mine if r.status != "failed")
                parts.append(f"{future if dry_run else past} {n} {noun}{'' if n == 1 else 's'}")
            else:
                n = sum(1 for r in mine if r.status == "done")
                parts.append(f"{past} {n} {noun}{'' if n == 1 else 's'}")
        failed = sum(1 for r in rows if r.status == "failed")
        rolled_back = sum(1 for r in rows if r.status == "rolled_back")
        not_attempted = sum(1 for r in rows if r.status == "skipped")
        if failed:
            parts.append(f"{failed} {'would fail' if dry_run else 'failed'}")
        if rolled_back:
            parts.append(f"{rolled_back} put back")
        if not_attempted:
            parts.append(f"{not_attempted} not attempted")
        for what in ("rating", "label"):
            kept = sum(1 for r in rows if what in r.kept and r.status in ("done", "planned"))
            if kept:
                parts.append(f"{kept} {'would keep' if dry_run else 'kept'} "
                             f"{'its' if kept == 1 else 'their'} own {what}")
    if skipped:
        parts.append(f"{len(skipped)} left out")
    text = head + ", ".join(parts)
    if dry_run:
        text += "; nothing was changed"
    return text

