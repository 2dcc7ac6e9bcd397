"""Cull selection, tiers and rank prefixes: deterministic, error rows never acted on, bad input refused."""

import pytest

from qualiclip_cli.core.curation.selection import (
    TIER_FOLDERS,
    CullCriteria,
    assign_tier,
    best_first,
    rank_prefix,
    rank_width,
    ranked,
    select_for_cull,
    tier_folder,
    validate_thresholds,
)
from qualiclip_cli.core.errors import UsageError
from qualiclip_cli.core.records import ScoreRecord


def recs(*pairs):
    return [ScoreRecord(path=p, score=s) for p, s in pairs]


ERR = ScoreRecord.failure("z/broken.jpg", "cannot decode")
NONE_SCORE = ScoreRecord(path="a/none.jpg", score=None)


def paths(records):
    return [r.path for r in records]


def test_below_is_strict_and_ignores_errors():
    rs = recs(("c.jpg", 0.39), ("a.jpg", 0.4), ("b.jpg", 0.1)) + [ERR, NONE_SCORE]
    assert paths(select_for_cull(rs, CullCriteria(below=0.4))) == ["b.jpg", "c.jpg"]


def test_keep_top_culls_everything_but_the_best_n_with_ties_by_path():
    rs = recs(("d.jpg", 0.5), ("b.jpg", 0.5), ("a.jpg", 0.9), ("c.jpg", 0.5)) + [ERR]
    # best 2: a (0.9) then b (0.5, first path among ties); the rest culled, worst first then by path
    assert paths(select_for_cull(rs, CullCriteria(keep_top=2))) == ["c.jpg", "d.jpg"]
    assert paths(select_for_cull(rs, CullCriteria(keep_top=10))) == []


def test_bottom_percent_rounds_down():
    rs = recs(*[(f"{i:02d}.jpg", i / 100) for i in range(10)])
    assert paths(select_for_cull(rs, CullCriteria(bottom_percent=25))) == ["00.jpg", "01.jpg"]
    assert select_for_cull(rs, CullCriteria(bottom_percent=9)) == []
    assert len(select_for_cull(rs, CullCriteria(bottom_percent=100))) == 10


def test_below_combines_as_intersection():
    rs = recs(("a.jpg", 0.1), ("b.jpg", 0.2), ("c.jpg", 0.3), ("d.jpg", 0.8))
    assert paths(select_for_cull(rs, CullCriteria(below=0.25, keep_top=1))) == ["a.jpg", "b.jpg"]
    assert paths(select_for_cull(rs, CullCriteria(below=0.9, bottom_percent=50))) == ["a.jpg", "b.jpg"]


def test_order_does_not_depend_on_input_order():
    rs = recs(("b.jpg", 0.3), ("a.jpg", 0.3), ("c.jpg", 0.1))
    assert select_for_cull(rs, CullCriteria(below=1)) == select_for_cull(rs[::-1], CullCriteria(below=1))
    assert paths(best_first(rs)) == ["a.jpg", "b.jpg", "c.jpg"]


@pytest.mark.parametrize("kwargs", [
    {}, {"keep_top": 3, "bottom_percent": 10}, {"below": 0}, {"below": 1.5}, {"below": float("nan")},
    {"keep_top": 0}, {"keep_top": 2.5}, {"keep_top": True}, {"bottom_percent": 0}, {"bottom_percent": 101},
])
def test_invalid_criteria_raise_usage_error(kwargs):
    with pytest.raises(UsageError):
        CullCriteria(**kwargs)


def test_tiers_boundaries_go_up():
    assert [assign_tier(s) for s in (0.0, 0.1999, 0.2, 0.39, 0.4, 0.6, 0.79, 0.8, 1.0)] == [1, 1, 2, 2, 3, 4, 4, 5, 5]
    assert assign_tier(0.5, (0.1, 0.2, 0.3, 0.9)) == 4
    assert [tier_folder(t) for t in range(1, 6)] == list(TIER_FOLDERS)
    assert TIER_FOLDERS == ("1-poor", "2-fair", "3-good", "4-very-good", "5-excellent")


@pytest.mark.parametrize("bad", [(0.2, 0.4, 0.6), (0.4, 0.2, 0.6, 0.8), (0.2, 0.2, 0.6, 0.8), (0.0, 0.4, 0.6, 0.8),
                                 (0.2, 0.4, 0.6, 1.0), (0.2, 0.4, 0.6, "x")])
def test_invalid_thresholds(bad):
    with pytest.raises(UsageError):
        validate_thresholds(bad)


def test_rank_prefix_width_and_order():
    assert rank_width(5) == 4 and rank_width(9999) == 4 and rank_width(10000) == 5
    assert rank_prefix(1, 4) == "0001_" and rank_prefix(123, 5) == "00123_"
    rs = recs(("x.jpg", 0.2), ("y.jpg", 0.9), ("w.jpg", 0.2)) + [ERR]
    assert [(r, rec.path) for r, rec in ranked(rs)] == [(1, "y.jpg"), (2, "w.jpg"), (3, "x.jpg")]
