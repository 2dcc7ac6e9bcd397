"""Cull selection, tiers and rank prefixes: deterministic, error rows never acted on, bad input refused."""

import pytest

from qualiclip_cli.core.curation.selection import (
    SCORE_KEYS,
    TIER_FOLDERS,
    CullCriteria,
    assign_tier,
    best_first,
    rank_prefix,
    rank_width,
    ranked,
    select_for_cull,
    strip_rank_prefix,
    tier_folder,
    validate_thresholds,
)
from qualiclip_cli.core.errors import UsageError
from qualiclip_cli.core.records import PAIR_NAMES, ScoreRecord


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


# ------------------------------------------------------------------------------------- --by and --unreadable


def with_pairs(path, score, **pairs):
    full = {name: 0.5 for name in PAIR_NAMES}
    full.update(pairs)
    return ScoreRecord(path=path, score=score, pairs=full)


def test_score_keys_are_the_score_and_every_pair_name():
    assert SCORE_KEYS == ("score", *PAIR_NAMES)


def test_by_a_sub_score_selects_ranks_and_keeps_on_that_sub_score():
    rs = [with_pairs("a.jpg", 0.9, sharpness=0.1), with_pairs("b.jpg", 0.1, sharpness=0.9),
          with_pairs("c.jpg", 0.5, sharpness=0.3), ERR]
    assert paths(select_for_cull(rs, CullCriteria(below=0.35, by="sharpness"))) == ["a.jpg", "c.jpg"]
    assert paths(select_for_cull(rs, CullCriteria(keep_top=1, by="sharpness"))) == ["a.jpg", "c.jpg"]
    assert paths(select_for_cull(rs, CullCriteria(bottom_percent=34, by="sharpness"))) == ["a.jpg"]
    assert [(r, rec.path) for r, rec in ranked(rs, by="sharpness")] == [(1, "b.jpg"), (2, "c.jpg"), (3, "a.jpg")]
    assert paths(select_for_cull(rs, CullCriteria(below=0.35))) == ["b.jpg"]  # the score is still the default


def test_a_record_without_the_sub_score_is_never_selected_nor_ranked():
    rs = [with_pairs("a.jpg", 0.9, sharpness=0.1), ScoreRecord(path="b.jpg", score=0.1, pairs=None),
          with_pairs("c.jpg", 0.9, noise=float("nan"))]
    assert paths(select_for_cull(rs, CullCriteria(below=1, by="sharpness"))) == ["a.jpg", "c.jpg"]
    assert paths(select_for_cull(rs, CullCriteria(below=1, by="noise"))) == ["a.jpg"]
    assert [rec.path for _, rec in ranked(rs, by="sharpness")] == ["c.jpg", "a.jpg"]


def test_an_unknown_key_is_a_usage_error():
    with pytest.raises(UsageError, match="sharpness"):
        CullCriteria(below=0.5, by="sharpnes")
    with pytest.raises(UsageError):
        ranked([], by="blur")


def test_unreadable_selects_only_broken_files_alone_or_added_to_score_criteria():
    broken = ScoreRecord.failure("z/empty.jpg", "empty file (0 bytes)", damaged=True)
    broken2 = ScoreRecord.failure("a/trunc.jpg", "truncated or damaged file", damaged=True)
    gone = ScoreRecord.failure("m/missing.jpg", "no such file or directory")
    nan = ScoreRecord.failure("n/nan.jpg", "the model produced NaN")
    rs = recs(("good.jpg", 0.8), ("low.jpg", 0.1)) + [broken, gone, nan, broken2]
    assert paths(select_for_cull(rs, CullCriteria(unreadable=True))) == ["a/trunc.jpg", "z/empty.jpg"]
    assert paths(select_for_cull(rs, CullCriteria(unreadable=True, below=0.5))) == [
        "a/trunc.jpg", "z/empty.jpg", "low.jpg"]
    assert paths(select_for_cull(rs, CullCriteria(below=0.5))) == ["low.jpg"]  # not asked: broken files stay
    with pytest.raises(UsageError, match="--unreadable"):
        CullCriteria()


def test_strip_rank_prefix_only_removes_our_pattern():
    assert strip_rank_prefix("0018_IMG_1") == "IMG_1"
    assert strip_rank_prefix("00123_0018_IMG_1") == "0018_IMG_1"  # one prefix at a time
    assert strip_rank_prefix("018_IMG_1") == "018_IMG_1"  # narrower than we ever write
    assert strip_rank_prefix("0018-IMG_1") == "0018-IMG_1" and strip_rank_prefix("0018_") == "0018_"
