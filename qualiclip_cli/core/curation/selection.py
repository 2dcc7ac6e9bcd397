"""Which scored photos to act on: cull criteria, quality tiers, and rank order.

Only records with status "ok" and a score take part; error rows and missing scores are never selected,
never ranked and never counted. Every ordering is deterministic: by score, then by path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from qualiclip_cli.core.errors import UsageError
from qualiclip_cli.core.records import ScoreRecord

DEFAULT_TIER_THRESHOLDS: tuple[float, float, float, float] = (0.2, 0.4, 0.6, 0.8)

# Folder name of each tier, index 0 is tier 1.
TIER_FOLDERS: tuple[str, ...] = ("1-poor", "2-fair", "3-good", "4-very-good", "5-excellent")

MIN_RANK_WIDTH = 4


def scored(records: Iterable[ScoreRecord]) -> list[ScoreRecord]:
    """The records that can be acted on: status ok and a finite score."""
    return [r for r in records if r.ok and r.score is not None and math.isfinite(r.score)]


def best_first(records: Iterable[ScoreRecord]) -> list[ScoreRecord]:
    """Scored records from highest to lowest score; equal scores by path."""
    return sorted(scored(records), key=lambda r: (-r.score, r.path))


@dataclass(frozen=True)
class CullCriteria:
    """What to cull. Give at least one criterion.

    below: cull scores strictly below this value (0 < below <= 1).
    keep_top: cull everything except the best N (N >= 1).
    bottom_percent: cull the worst P percent (0 < P <= 100), rounded down, so never more than P percent.

    `keep_top` and `bottom_percent` both cut the ranking and cannot be combined. `below` combines with
    either of them as an intersection: a photo is culled only if every given criterion selects it, so adding
    a criterion can only cull fewer photos, never more.
    """

    below: float | None = None
    keep_top: int | None = None
    bottom_percent: float | None = None

    def __post_init__(self) -> None:
        if self.below is None and self.keep_top is None and self.bottom_percent is None:
            raise UsageError("choose what to cull: --below, --keep-top or --bottom-percent")
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


def select_for_cull(records: Iterable[ScoreRecord], criteria: CullCriteria) -> list[ScoreRecord]:
    """The records to cull, worst first (by score, then path). Error rows are never selected.

    Rank cuts use one total order, best first by score and then path: among equal scores the earlier path
    counts as the better one, so which of them is kept never depends on input order.
    """
    order = best_first(records)
    chosen = order
    if criteria.keep_top is not None:
        chosen = order[criteria.keep_top:]
    elif criteria.bottom_percent is not None:
        count = math.floor(len(order) * criteria.bottom_percent / 100)
        chosen = order[len(order) - count:] if count else []
    if criteria.below is not None:
        chosen = [r for r in chosen if r.score < criteria.below]
    return sorted(chosen, key=lambda r: (r.score, r.path))


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


def ranked(records: Iterable[ScoreRecord]) -> list[tuple[int, ScoreRecord]]:
    """(rank, record) best first, rank starting at 1, over all scored records given (one global ranking)."""
    return [(i, rec) for i, rec in enumerate(best_first(records), start=1)]
