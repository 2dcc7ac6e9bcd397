"""Grouping on synthetic signals (core/curation/groups.py), EXIF capture signals (core/images/capture.py) and the
results cache's schema 3 (the signals stored with the score; schema-2 rows migrated without them)."""

import os
import random
import sqlite3

import numpy as np
import pytest
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from qualiclip_cli.core.curation.groups import (
    GroupOptions,
    group_keywords,
    group_records,
    grouped_order,
    select_per_group,
)
from qualiclip_cli.core.curation.selection import CullCriteria
from qualiclip_cli.core.errors import UsageError
from qualiclip_cli.core.images.capture import camera_key, exif_time, read_capture
from qualiclip_cli.core.records import ScoreRecord, Signals

T0 = 1_718_202_605.0  # 2024-06-12 14:30:05 UTC
DIM = 16


def _vector(seed: int, noise: float = 0.0, base: int | None = None) -> np.ndarray:
    """A unit vector; with ``base`` and ``noise``, one near that base vector (cosine about 1/sqrt(1+noise²))."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=DIM)
    if base is not None:
        b = np.random.default_rng(base).normal(size=DIM)
        b /= np.linalg.norm(b)
        v = b + noise * v / np.linalg.norm(v)
    return v / np.linalg.norm(v)


def _similar(base: int, cosine: float, seed: int) -> np.ndarray:
    """A unit vector with exactly this cosine to the base vector ``base``."""
    b = _vector(base)
    r = _vector(seed)
    r -= (r @ b) * b
    r /= np.linalg.norm(r)
    return cosine * b + np.sqrt(1 - cosine**2) * r


def rec(name, t, vec, score=0.5, camera="Canon R5", bias=None, size=(120, 80)):
    signals = Signals(capture_time=t, capture_text=f"t{t}", time_source="exif", camera=camera, exposure_bias=bias,
                      embedding=np.asarray(vec, dtype="<f2").tobytes())
    return ScoreRecord(path=f"shoot/{name}.jpg", score=score, width=size[0], height=size[1], signals=signals)


def _groups(records, **options):
    infos = group_records(records, GroupOptions(**options))
    return {r.path.split("/")[-1][:-4]: (g.group if g else None) for r, g in zip(records, infos)}, infos


def _partition(names_to_group):
    """The groups as a set of frozensets of names (ids aside)."""
    by: dict = {}
    for name, g in names_to_group.items():
        by.setdefault(g, set()).add(name)
    return {frozenset(v) for v in by.values()}


# ------------------------------------------------------------------------------------------------ time


def test_a_burst_is_one_group_and_a_later_frame_of_the_same_scene_another():
    v = _vector(1)
    records = [rec("a", T0, v), rec("b", T0 + 0.3, v), rec("c", T0 + 0.6, v), rec("d", T0 + 300, v)]
    names, _ = _groups(records)
    assert _partition(names) == {frozenset("abc"), frozenset("d")}


def test_a_clock_jump_splits_a_burst():
    v = _vector(1)
    records = [rec("a", T0, v), rec("b", T0 + 0.5, v), rec("c", T0 + 3600 + 1, v), rec("d", T0 + 3600 + 1.4, v)]
    names, _ = _groups(records)
    assert _partition(names) == {frozenset("ab"), frozenset("cd")}


def test_identical_timestamps_link_past_a_different_frame_between():
    # Three frames of one second: the sort puts the different one between the two alike; the lookback finds them.
    same, other = _vector(1), _vector(2)
    records = [rec("a", T0, same), rec("b", T0, other), rec("c", T0, same)]
    names, _ = _groups(records)
    assert _partition(names) == {frozenset("ac"), frozenset("b")}


def test_no_group_spans_more_than_max_span():
    v = _vector(3)
    records = [rec(f"f{i:02d}", T0 + 50 * i, v) for i in range(19)]  # 15 minutes, a frame every 50 s
    _, infos = _groups(records)
    spans: dict = {}
    for r, g in zip(records, infos):
        spans.setdefault(g.group, []).append(r.signals.capture_time)
    assert len(spans) >= 2
    assert all(max(t) - min(t) <= 600 for t in spans.values())


def test_a_long_group_with_weak_links_is_split_and_a_strong_one_is_not():
    # 0.85 passes the burst similarity (0.80) but not the scene similarity (0.90): weak links.
    weak = [rec(f"w{i:03d}", T0 + i, _similar(5, 0.85 if i % 2 else 0.99, 100 + i)) for i in range(400)]
    names, _ = _groups(weak)
    assert len(set(names.values())) > 1
    strong = [rec(f"s{i:03d}", T0 + i, _similar(5, 0.99, 100 + i)) for i in range(200)]  # 200 s < split span
    names, _ = _groups(strong)
    assert len(set(names.values())) == 1


# ------------------------------------------------------------------------------------------------ camera, orientation


def test_two_cameras_at_one_moment_are_never_merged():
    v = _vector(1)
    records = [rec("a1", T0, v, camera="serial:111"), rec("b1", T0 + 0.1, v, camera="serial:222"),
               rec("a2", T0 + 0.2, v, camera="serial:111"), rec("b2", T0 + 0.3, v, camera="serial:222")]
    names, _ = _groups(records)
    assert _partition(names) == {frozenset({"a1", "a2"}), frozenset({"b1", "b2"})}


def test_portrait_and_landscape_are_never_merged():
    v = _vector(1)
    records = [rec("l1", T0, v), rec("p1", T0 + 0.2, v, size=(80, 120)), rec("l2", T0 + 0.4, v)]
    names, _ = _groups(records)
    assert _partition(names) == {frozenset({"l1", "l2"}), frozenset({"p1"})}


# ------------------------------------------------------------------------------------------------ similarity


def test_similarity_decides_within_the_burst_gap_and_the_stricter_one_within_the_scene_gap():
    records = [rec("a", T0, _vector(1)), rec("b", T0 + 0.5, _similar(1, 0.85, 7)),  # burst: 0.85 >= 0.80
               rec("c", T0 + 1.0, _vector(2)),  # different picture within the burst gap
               rec("d", T0 + 30, _similar(2, 0.85, 8)),  # 30 s later, 0.85 < scene 0.90: not linked
               rec("e", T0 + 60, _similar(2, 0.95, 9))]  # 59 s after c, 0.95 >= 0.90 with c
    names, _ = _groups(records)
    assert _partition(names) == {frozenset("ab"), frozenset("ce"), frozenset("d")}
    # Every threshold is an option: a lower scene similarity takes d in too.
    names, _ = _groups(records, scene_similarity=0.8)
    assert names["d"] == names["c"]


def test_options_are_checked():
    with pytest.raises(UsageError, match="--burst-gap"):
        GroupOptions(burst_gap=-1)
    with pytest.raises(UsageError, match="--scene-sim"):
        GroupOptions(scene_similarity=1.5)


# ------------------------------------------------------------------------------------------------ brackets, ranking


def test_an_exposure_bracket_is_marked_and_never_culled_per_group():
    v = _vector(1)
    bracket = [rec(f"x{i}", T0 + 0.2 * i, v, score=0.3 + 0.1 * i, bias=b) for i, b in enumerate((-1.0, 0.0, 1.0))]
    burst = [rec(f"y{i}", T0 + 100 + 0.2 * i, _vector(2), score=0.3 + 0.1 * i, bias=0.0) for i in range(3)]
    records = bracket + burst
    infos = group_records(records)
    assert [g.bracket for g in infos] == [True] * 3 + [False] * 3
    culled = select_per_group(records, infos, CullCriteria(keep_top=1))
    assert [r.path for r in culled] == ["shoot/y0.jpg", "shoot/y1.jpg"]  # the bracket stays whole
    assert group_keywords(records, infos)[id(bracket[0])][-1] == "qualiclip|bracket"


def test_ranks_best_and_margin():
    v = _vector(1)
    records = [rec("a", T0, v, score=0.40), rec("b", T0 + 0.2, v, score=0.70), rec("c", T0 + 0.4, v, score=0.65)]
    infos = group_records(records)
    assert [(g.rank, g.best, g.size) for g in infos] == [(3, False, 3), (1, True, 3), (2, False, 3)]
    assert infos[1].margin == pytest.approx(0.05)
    assert [r.path[6:7] for r in grouped_order(records, infos)] == ["b", "c", "a"]
    single = group_records([rec("s", T0, v)])[0]
    assert (single.size, single.rank, single.best, single.margin) == (1, 1, True, None)


def test_records_without_signals_are_in_no_group():
    records = [rec("a", T0, _vector(1)), ScoreRecord.failure("shoot/bad.jpg", "cannot decode"),
               ScoreRecord(path="shoot/old.jpg", score=0.5, width=10, height=10)]
    infos = group_records(records)
    assert infos[0] is not None and infos[1] is None and infos[2] is None
    assert group_records([]) == []


def test_same_input_same_groups_and_ids_in_any_order():
    rng = random.Random(4)
    records = []
    for burst in range(6):
        for k in range(rng.randint(1, 5)):
            records.append(rec(f"b{burst}_{k}", T0 + 200 * burst + 0.3 * k, _similar(burst, 0.97, 50 + k),
                               score=rng.random()))
    first = [(r.path, g) for r, g in zip(records, group_records(records))]
    shuffled = records[:]
    rng.shuffle(shuffled)
    again = dict((r.path, g) for r, g in zip(shuffled, group_records(shuffled)))
    assert dict(first) == again
    assert len({g.group for _, g in first}) == 6


# ------------------------------------------------------------------------------------------------ per-group cull


def test_per_group_cull_keeps_the_best_of_each_group_and_singletons_unless_below():
    v1, v2, v3 = _vector(1), _vector(2), _vector(3)
    records = [rec("a", T0, v1, 0.5), rec("b", T0 + 0.2, v1, 0.6), rec("c", T0 + 0.4, v1, 0.2),
               rec("d", T0 + 100, v2, 0.3), rec("e", T0 + 100.3, v2, 0.1),
               rec("s", T0 + 500, v3, 0.05)]
    infos = group_records(records)
    names = lambda rs: [r.path[6:7] for r in rs]
    assert names(select_per_group(records, infos, CullCriteria(keep_top=1))) == ["e", "c", "a"]
    # --below selects a single photo too (s), and narrows the groups' cuts (a, 0.5, is kept).
    assert names(select_per_group(records, infos, CullCriteria(keep_top=1, below=0.25))) == ["s", "e", "c"]
    assert names(select_per_group(records, infos, CullCriteria(below=0.25))) == ["s", "e", "c"]
    assert names(select_per_group(records, infos, CullCriteria(bottom_percent=50))) == ["e", "c"]


# ------------------------------------------------------------------------------------------------ capture signals


def _jpeg(path, date=None, subsec=None, offset=None, make=None, model=None, serial=None, bias=None):
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    ifd = exif.get_ifd(0x8769)
    for tag, value in ((0x9003, date), (0x9291, subsec), (0x9011, offset), (0xA431, serial)):
        if value is not None:
            ifd[tag] = value
    if bias is not None:
        ifd[0x9204] = IFDRational(*bias)
    Image.new("RGB", (40, 30), (90, 120, 150)).save(path, exif=exif)
    return path


def test_capture_time_from_exif_with_subseconds_and_offset(tmp_path):
    photo = _jpeg(tmp_path / "a.jpg", "2024:06:12 14:30:05", "25", "+02:00", "Canon", "EOS R5", "0123", (-2, 3))
    capture = read_capture(photo)
    assert capture.time_source == "exif"
    assert capture.capture_text == "2024-06-12T14:30:05.250000+02:00"
    assert capture.capture_time == pytest.approx(T0 - 2 * 3600 + 0.25)
    assert capture.camera == "serial:0123"
    assert capture.exposure_bias == pytest.approx(-2 / 3)


def test_capture_without_offset_reads_the_wall_clock_and_the_camera_from_make_and_model(tmp_path):
    capture = read_capture(_jpeg(tmp_path / "a.jpg", "2024:06:12 14:30:05", make="NIKON", model="Z 8"))
    assert (capture.capture_text, capture.capture_time, capture.camera) == ("2024-06-12T14:30:05", T0, "NIKON Z 8")
    assert capture.exposure_bias is None


@pytest.mark.parametrize("date", [None, "0000:00:00 00:00:00", "2024:13:40 99:00:00", "not a date", ""])
def test_no_or_malformed_exif_time_falls_back_to_the_mtime(tmp_path, date):
    photo = _jpeg(tmp_path / "a.jpg", date)
    os.utime(photo, ns=(1_600_000_000_500_000_000,) * 2)
    capture = read_capture(photo)
    assert capture.time_source == "mtime"
    assert capture.capture_time == pytest.approx(1_600_000_000.5)
    assert capture.capture_text == "2020-09-13T12:26:40.500000+00:00"
    assert capture.camera == ""


def test_a_future_date_is_kept_and_a_file_without_exif_or_not_an_image_uses_the_mtime(tmp_path):
    assert read_capture(_jpeg(tmp_path / "f.jpg", "2091:01:01 00:00:00")).time_source == "exif"
    png = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(png)
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not really")
    assert read_capture(png).time_source == read_capture(junk).time_source == "mtime"


def test_exif_time_and_camera_key_edge_cases():
    assert exif_time("2024-06-12 14:30:05")[1] == "2024-06-12T14:30:05"  # exifread's own spelling
    assert exif_time("2024:06:12 14:30:05", "5", "+99:00")[1] == "2024-06-12T14:30:05.500000"  # bad offset: none
    assert camera_key("000000", "Canon", "R5") == "Canon R5"  # an all-zero serial is no serial
    assert camera_key(None, None, None) == ""


# ------------------------------------------------------------------------------------------------ cache


def test_cache_keeps_the_signals_and_migrates_schema_2_rows_without_them(tmp_path):
    from qualiclip_cli.core.pipeline.cache import SCHEMA_VERSION, FileIdentity, ResultsCache

    db = tmp_path / "results.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE results (path BLOB NOT NULL, weights TEXT NOT NULL, identity TEXT NOT NULL,
            size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, score REAL NOT NULL, pairs TEXT NOT NULL,
            width INTEGER NOT NULL, height INTEGER NOT NULL, scored_at REAL NOT NULL,
            PRIMARY KEY (path, weights, identity));
        INSERT INTO results VALUES (X'2F6F6C64', 'w', 'id', 1, 1, 0.25, '{}', 10, 10, 0);
        PRAGMA user_version = 2;
    """)
    conn.close()
    old = FileIdentity("/old", 1, 1)
    new = FileIdentity("/new", 1, 1)
    signals = rec("n", T0, _vector(1), bias=0.5).signals
    with ResultsCache(db, "w", "id") as cache:
        hit = cache.lookup(old, "old")
        assert hit.score == 0.25 and hit.signals is None  # the score survives the migration
        assert cache.lookup(old, "old", need_signals=True) is None  # grouping scores it again
        cache.store(new, ScoreRecord(path="new", score=0.5, pairs={}, width=10, height=10, signals=signals))
    with ResultsCache(db, "w", "id") as cache:
        assert cache.lookup(new, "new", need_signals=True).signals == signals
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
