"""Which scored photos to act on: cull criteria, quality tiers, and rank order.

Every selection, tier and ranking works on one value of each record, its *key*: the QualiCLIP score
("score", the default) or one of the seven sub-scores (`records.PAIR_NAMES`, e.g. "sharpness"). Only records
with status "ok" and a finite value for the key take part; error rows and missing values are never selected
by a score criterion, never ranked and never counted. Every ordering is deterministic: by value, then by path.

The one exception is `CullCriteria.unreadable`: it selects the error rows whose file itself is broken
(`ScoreRecord.damaged`: empty, truncated or undecodable), never those that failed for another reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from qualiclip_cli.core.errors import UsageError
from qualiclip_cli.core.records import ScoreRecord

#: What to select, tier and rank by: the score, or one of the seven sub-scores (the names of PAIR_NAMES).
ScoreKey = Literal["score", "overall", "sharpness", "edges", "resolution", "noise", "quality", "picture"]
SCORE_KEYS: tuple[str, ...] = get_args(ScoreKey)

DEFAULT_TIER_THRESHOLDS: tuple[float, float, float, float] = (0.2, 0.4, 0.6, 0.8)

# Folder name of each tier, index 0 is tier 1.
TIER_FOLDERS: tuple[str, ...] = ("1-poor", "2-fair", "3-good", "4-very-good", "5-excellent")

MIN_RANK_WIDTH = 4

#: The prefix `rank_prefix` writes: at least MIN_RANK_WIDTH digits and an underscore.
RANK_PREFIX_RE = re.compile(rf"^[0-9]{{{MIN_RANK_WIDTH},}}_")


def validate_key(by: str) -> str:
    if by not in SCORE_KEYS:
        raise UsageError(f"--by must be one of {', '.join(SCORE_KEYS)}, got {by!r}")
    return by


def value_of(record: ScoreRecord, by: str = "score") -> float | None:
    """The record's value for the key `by`: its score, or that sub-score; None when it has none (or not finite)."""
    if by == "score":
        value = record.score
    else:
        value = (record.pairs or {}).get(validate_key(by))
    if not record.ok or not _is_number(value):
        return None
    return float(value)


def scored(records: Iterable[ScoreRecord], by: str = "score") -> list[ScoreRecord]:
    """The records that can be acted on: status ok and a finite value for the key `by`."""
    validate_key(by)
    return [r for r in records if value_of(r, by) is not None]


def best_first(records: Iterable[ScoreRecord], by: str = "score") -> list[ScoreRecord]:
    """Scored records from highest to lowest value of `by`; equal values by path."""
    return sorted(scored(records, by), key=lambda r: (-value_of(r, by), r.path))


def describe(record: ScoreRecord, by: str = "score") -> str:
    """'score 0.2130' or 'sharpness 0.2130': the value a plan's reason shows."""
    return f"{by} {value_of(record, by):.4f}"


@dataclass(frozen=True)
class CullCriteria:
    """What to cull. Give at least one criterion.

    below: cull values strictly below this one (0 < below <= 1).
    keep_top: cull everything except the best N (N >= 1).
    bottom_percent: cull the worst P percent (0 < P <= 100), rounded down, so never more than P percent.
    by: the value the three above look at: "score" (default) or a sub-score name (SCORE_KEYS).
    unreadable: also cull the files that are broken (empty, truncated, undecodable: `ScoreRecord.damaged`).

    `keep_top` and `bottom_percent` both cut the ranking and cannot be combined. `below` combines with
    either of them as an intersection: a photo is culled only if every given score criterion selects it, so
    adding a score criterion can only cull fewer photos, never more. Broken files have no score, so
    `unreadable` is a criterion of its own: alone it culls only them; with score criteria it adds them to
    what those select (a union).
    """

    below: float | None = None
    keep_top: int | None = None
    bottom_percent: float | None = None
    by: str = "score"
    unreadable: bool = False

    @property
    def by_score(self) -> bool:
        """Whether any score criterion is given (else only `unreadable`)."""
        return self.below is not None or self.keep_top is not None or self.bottom_percent is not None

    def __post_init__(self) -> None:
        validate_key(self.by)
        if not self.by_score and not self.unreadable:
            raise UsageError("choose what to cull: --below, --keep-top, --bottom-percent or --unreadable")
        if self.keep_top is not None and self.bottom_percent is not None:
            raise UsageError("--keep-top and --bottom-percent conflict: use one of them")
        if self.below is not None and not (_is_number(self.below) and 0 < self.below <= 1):
            raise UsageError(f"--below must be a score in (0, 1], got {self.below!r}")
        if self.keep_top is not None and (isinstance(self.keep_top, bool) or not isinstance(self.keep_top, int)
                                          or self.keep_top < 1):
            raise UsageError(f"--keep-top must be a whole number of at least 1, got {self.keep_top!r}")
        if self.bottom_percent is not None and not (
            _is_number(self.bottom_percent) and 0 < self.bottom_percent <= 100
        ):
            raise UsageError(f"--bottom-percent must be in (0, 100], got {self.bottom_percent!r}")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def unreadable(records: Iterable[ScoreRecord]) -> list[ScoreRecord]:
    """The error rows whose file is broken (`ScoreRecord.damaged`), by path."""
    return sorted((r for r in records if not r.ok and r.damaged), key=lambda r: r.path)


def select_for_cull(records: Iterable[ScoreRecord], criteria: CullCriteria) -> list[ScoreRecord]:
    """The records to cull: the broken files first (by path) when `criteria.unreadable`, then the photos the
    score criteria select, worst first (by the value of `criteria.by`, then path). Other error rows are never
    selected.

    Rank cuts use one total order, best first by value and then path: among equal values the earlier path
    counts as the better one, so which of them is kept never depends on input order.
    """
    records = list(records)
    broken = unreadable(records) if criteria.unreadable else []
    if not criteria.by_score:
        return broken
    by = criteria.by
    order = best_first(records, by)
    chosen = order
    if criteria.keep_top is not None:
        chosen = order[criteria.keep_top:]
    elif criteria.bottom_percent is not None:
        count = math.floor(len(order) * criteria.bottom_percent / 100)
        chosen = order[len(order) - count:] if count else []
    if criteria.below is not None:
        chosen = [r for r in chosen if value_of(r, by) < criteria.below]
    return broken + sorted(chosen, key=lambda r: (value_of(r, by), r.path))


def validate_thresholds(thresholds: Sequence[float]) -> tuple[float, float, float, float]:
    """Four tier boundaries, strictly increasing, each strictly inside (0, 1). Raises UsageError otherwise."""
    values = tuple(thresholds)
    if len(values) != 4 or not all(_is_number(t) for t in values):
        raise UsageError(f"tier thresholds must be four numbers, got {list(values)!r}")
    if not all(0 < t < 1 for t in values):
        raise UsageError(f"tier thresholds must lie strictly between 0 and 1, got {list(values)!r}")
    if not all(a < b for a, b in zip(values, values[1:])):
        raise UsageError(f"tier thresholds must be strictly increasing, got {list(values)!r}")
    return values  # type: ignore[return-value]


def assign_tier(score: float, thresholds: Sequence[float] = DEFAULT_TIER_THRESHOLDS) -> int:
    """Tier 1..5 of a score: 1 below the first threshold, 5 at or above the last (a boundary goes up)."""
    bounds = validate_thresholds(thresholds)
    return 1 + sum(1 for t in bounds if score >= t)


def tier_folder(tier: int) -> str:
    """Folder name of a tier: 1-poor, 2-fair, 3-good, 4-very-good, 5-excellent."""
    if not 1 <= tier <= len(TIER_FOLDERS):
        raise UsageError(f"tier must be 1..{len(TIER_FOLDERS)}, got {tier!r}")
    return TIER_FOLDERS[tier - 1]


def rank_width(count: int) -> int:
    """Digits of a rank prefix: enough for `count`, at least 4."""
    return max(MIN_RANK_WIDTH, len(str(max(count, 0))))


def rank_prefix(rank: int, width: int) -> str:
    """'0001_' for rank 1 at width 4."""
    return f"{rank:0{width}d}_"


def strip_rank_prefix(name: str) -> str:
    """`name` without one leading rank prefix ('0018_IMG_1' -> 'IMG_1'); unchanged when it has none. Only call
    it for a name qualiclip is known to have written (plan_rank_prefix asks the journal): '2024_trip' has the
    same shape."""
    match = RANK_PREFIX_RE.match(name)
    return name[match.end():] if match and match.end() < len(name) else name


def ranked(records: Iterable[ScoreRecord], by: str = "score") -> list[tuple[int, ScoreRecord]]:
    """(rank, record) best first by `by`, rank starting at 1, over all scored records given (one global
    ranking)."""
    return [(i, rec) for i, rec in enumerate(best_first(records, by), start=1)]
