"""RAW shoots through the commands: `source` in every format, RAW+JPEG pairs scored once (`--raw-pairs`), a
RAW-only cull and its undo, tag's sidecar for a RAW, bad RAWs as error rows, the cache's RAW identity."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cli_support import jsonl_rows, run_cli, run_process
from curation_support import snapshot
from dng_support import write_dng

SENSOR = np.ascontiguousarray(data.astronaut()[:384, :512])
SMALL = np.ascontiguousarray(data.coffee()[:200, :300])


def _raw_shoot(root: Path) -> Path:
    """IMG_1: a DNG with a full preview; IMG_2: a DNG with a 32-px thumbnail only (developed); IMG_3: a JPEG."""
    root.mkdir(parents=True, exist_ok=True)
    write_dng(root / "IMG_1.dng", SENSOR, preview=SENSOR, orientation=6)
    write_dng(root / "IMG_2.DNG", SMALL, thumbnail=np.ascontiguousarray(SMALL[::8, ::8]))
    Image.fromarray(SMALL).save(root / "IMG_3.jpg", quality=92)
    return root


def _by_name(rows):
    return {os.path.basename(r["path"]): r for r in rows}


def test_source_is_in_every_format(tmp_path, tiny_weights_file):
    shoot = _raw_shoot(tmp_path / "shoot")
    want = {"IMG_1.dng": "raw-preview", "IMG_2.DNG": "raw-demosaic", "IMG_3.jpg": "file"}
    for fmt in ("jsonl", "json", "csv"):
        result = run_cli("score", shoot, "--format", fmt, "--max-side", "256", "--weights", tiny_weights_file)
        assert result.exit_code == 0, result.stderr
        if fmt == "jsonl":
            rows = jsonl_rows(result.stdout)
        elif fmt == "json":
            rows = json.loads(result.stdout)
        else:
            rows = list(csv.DictReader(io.StringIO(result.stdout)))
            assert list(rows[0])[:6] == ["path", "score", "status", "error", "width", "height"]
            assert list(rows[0])[-1] == "source"  # added after the first release: the last column
        assert {name: r["source"] for name, r in _by_name(rows).items()} == want, fmt
        sizes = {name: (int(r["width"]), int(r["height"])) for name, r in _by_name(rows).items()}
        assert sizes["IMG_1.dng"] == (192, 256)  # the preview, turned upright (orientation 6), at 256 px
        assert sizes["IMG_2.DNG"] == (150, 100)  # the half-size development (150×100), not upscaled
    # the cached second run serves the same sources
    again = run_cli("score", shoot, "--format", "jsonl", "--max-side", "256", "--weights", tiny_weights_file)
    rows = _by_name(jsonl_rows(again.stdout))
    assert {name: r["source"] for name, r in rows.items()} == want
    table = run_cli("score", shoot, "--max-side", "256", "--format", "text", "--weights", tiny_weights_file)
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["path", "score", "source", "status"]
    assert [line.split()[2] for line in lines[1:]] == ["raw-preview", "raw-demosaic", "file"]
    plain = run_cli("score", shoot / "IMG_3.jpg", "--format", "text", "--weights", tiny_weights_file)
    assert plain.stdout.splitlines()[0].split() == ["path", "score", "status"]  # no RAW, no source column


def test_a_raw_jpeg_pair_is_scored_once(tmp_path, tiny_weights_file):
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    write_dng(shoot / "IMG_1.CR3.dng", SENSOR, preview=SENSOR)  # not a pair: stem IMG_1.CR3
    write_dng(shoot / "IMG_1.dng", SENSOR, preview=SENSOR)
    Image.fromarray(SENSOR).save(shoot / "IMG_1.JPG", quality=92)
    write_dng(shoot / "IMG_2.dng", SMALL, preview=SMALL)

    def names(*extra):
        result = run_cli("score", shoot, "--format", "jsonl", "--max-side", "128", "--weights", tiny_weights_file,
                         *extra)
        assert result.exit_code == 0, result.stderr
        return result, sorted(_by_name(jsonl_rows(result.stdout)))

    result, got = names()
    assert got == ["IMG_1.CR3.dng", "IMG_1.JPG", "IMG_2.dng"]
    assert "1 RAW scored from its camera JPEG (RAW+JPEG pair)" in result.stderr
    assert names("--raw-pairs", "raw")[1] == ["IMG_1.CR3.dng", "IMG_1.dng", "IMG_2.dng"]
    assert names("--raw-pairs", "both")[1] == ["IMG_1.CR3.dng", "IMG_1.JPG", "IMG_1.dng", "IMG_2.dng"]
    bad = run_cli("score", shoot, "--raw-pairs", "jpg", "--weights", tiny_weights_file)
    assert bad.exit_code == 2 and "jpeg" in bad.stderr and "both" in bad.stderr


def test_raw_only_cull_moves_the_sidecars_and_undo_restores_the_tree(tmp_path, tiny_weights_file, home):
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    write_dng(shoot / "IMG_1.dng", SENSOR, preview=SENSOR)
    write_dng(shoot / "IMG_2.dng", SMALL, preview=SMALL)
    (shoot / "IMG_1.xmp").write_bytes(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>\n")  # Lightroom's naming
    (shoot / "IMG_2.dng.xmp").write_bytes(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>\n")  # darktable's
    before = snapshot(shoot)
    result = run_cli("cull", shoot, "--below", "1", "--action", "move", "--max-side", "128",
                     "--weights", tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir(shoot)) == ["_rejected"]
    assert sorted(os.listdir(shoot / "_rejected")) == ["IMG_1.dng", "IMG_1.xmp", "IMG_2.dng", "IMG_2.dng.xmp"]
    undo = run_cli("undo")
    assert undo.exit_code == 0, undo.stderr
    assert snapshot(shoot) == before  # every file back, byte for byte, with its mtime


def test_when_the_raw_is_scored_its_camera_jpeg_travels_with_it(tmp_path, tiny_weights_file, home):
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    write_dng(shoot / "IMG_1.dng", SENSOR, preview=SENSOR)
    Image.fromarray(SENSOR).save(shoot / "IMG_1.JPG", quality=92)
    before = snapshot(shoot)
    result = run_cli("cull", shoot, "--below", "1", "--action", "move", "--raw-pairs", "raw", "--max-side", "128",
                     "--weights", tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir(shoot / "_rejected")) == ["IMG_1.JPG", "IMG_1.dng"]
    assert "(camera picture of IMG_1.dng)" in result.stdout
    assert run_cli("undo").exit_code == 0
    assert snapshot(shoot) == before


def test_tag_writes_the_sidecar_lightroom_reads_for_a_raw(tmp_path, tiny_weights_file, home):
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    write_dng(shoot / "IMG_1.dng", SENSOR, preview=SENSOR)
    result = run_cli("tag", shoot, "--max-side", "128", "--weights", tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir(shoot)) == ["IMG_1.dng", "IMG_1.xmp"]  # Lightroom reads IMG_1.xmp beside a RAW
    assert b"xmp:Rating" in (shoot / "IMG_1.xmp").read_bytes()


def test_bad_raws_are_error_rows_and_the_run_goes_on(tmp_path, tiny_weights_file):
    shoot = _raw_shoot(tmp_path / "shoot")
    whole = (shoot / "IMG_1.dng").read_bytes()
    (shoot / "IMG_4.dng").write_bytes(whole[: len(whole) // 2])
    (shoot / "IMG_5.NEF").write_text("this is not a raw file\n")
    result = run_process("score", shoot, "--format", "jsonl", "--max-side", "256", "--weights", tiny_weights_file,
                         "--no-cache")
    assert result.returncode == 3, result.stderr
    rows = _by_name(jsonl_rows(result.stdout))
    assert [rows[n]["status"] for n in ("IMG_1.dng", "IMG_2.DNG", "IMG_3.jpg")] == ["ok"] * 3
    assert rows["IMG_4.dng"]["status"] == "error" and rows["IMG_4.dng"]["error"].startswith("truncated RAW file")
    assert rows["IMG_5.NEF"]["error"].startswith("not a RAW file")
    assert rows["IMG_4.dng"]["source"] is None
    assert "Traceback" not in result.stderr and "Unexpected end of file" not in result.stderr


def test_without_rawpy_each_raw_gets_one_line_and_the_rest_is_scored(tmp_path, tiny_weights_file):
    shoot = _raw_shoot(tmp_path / "shoot")
    blocker = tmp_path / "block"
    (blocker / "rawpy").mkdir(parents=True)
    (blocker / "rawpy" / "__init__.py").write_text("raise ImportError('no wheel for this platform')\n")
    pythonpath = os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH", "")]))
    result = run_process("score", shoot, "--format", "jsonl", "--max-side", "256", "--weights", tiny_weights_file,
                         "--no-cache", env={"PYTHONPATH": pythonpath})
    assert result.returncode == 3, result.stderr
    rows = _by_name(jsonl_rows(result.stdout))
    assert rows["IMG_3.jpg"]["status"] == "ok"
    for name in ("IMG_1.dng", "IMG_2.DNG"):
        assert rows[name]["error"] == ("RAW files need rawpy, which is not installed here (pip install rawpy; "
                                       "no wheel for this platform)")
    assert "Traceback" not in result.stderr


def test_a_raw_row_cached_under_another_rule_is_not_served(tmp_path):
    """The RAW rule is part of a RAW file's identity: a row stored under the plain identity (as a RAW named on the
    command line was scored by Pillow before) is a miss; a JPEG's row under it is a hit."""
    from qualiclip_cli.core.images.policy import raw_scoring_identity
    from qualiclip_cli.core.pipeline.cache import FileIdentity, ResultsCache
    from qualiclip_cli.core.records import ScoreRecord

    shoot = _raw_shoot(tmp_path / "shoot")
    raw, jpeg = FileIdentity.of(shoot / "IMG_1.dng"), FileIdentity.of(shoot / "IMG_3.jpg")
    rec = ScoreRecord(path="x", score=0.5, pairs={"overall": 0.5}, width=10, height=10, source="file")
    with ResultsCache(tmp_path / "old.sqlite3", "w" * 64, "policy") as old:  # no RAW identity: every row "policy"
        old.store(raw, rec)
        old.store(jpeg, rec)
    with ResultsCache(tmp_path / "old.sqlite3", "w" * 64, "policy", raw_identity=raw_scoring_identity("policy")) as new:
        assert new.lookup(raw, "IMG_1.dng") is None
        assert new.lookup(jpeg, "IMG_3.jpg").score == 0.5
        new.store(raw, ScoreRecord(path="x", score=0.25, pairs={}, width=10, height=10, source="raw-preview"))
        new.flush()
        hit = new.lookup(raw, "IMG_1.dng")
        assert (hit.score, hit.source) == (0.25, "raw-preview")


def test_a_schema_2_cache_is_migrated_with_source_file(tmp_path):
    import sqlite3

    from qualiclip_cli.core.pipeline.cache import FileIdentity, ResultsCache

    photo = tmp_path / "IMG_1.jpg"
    Image.fromarray(SMALL).save(photo)
    ident = FileIdentity.of(photo)
    db = tmp_path / "results.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE results (path BLOB NOT NULL, weights TEXT NOT NULL, identity TEXT NOT NULL, "
                 "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, score REAL NOT NULL, pairs TEXT NOT NULL, "
                 "width INTEGER NOT NULL, height INTEGER NOT NULL, scored_at REAL NOT NULL, "
                 "PRIMARY KEY (path, weights, identity))")
    conn.execute("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (ident.key, "w", "p", ident.size, ident.mtime_ns, 0.75, "{}", 300, 200, 0.0))
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with ResultsCache(db, "w", "p") as cache:
        hit = cache.lookup(ident, str(photo))
    assert (hit.score, hit.source, hit.width) == (0.75, "file", 300)
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 3


@pytest.mark.parametrize("name", ["IMG_1.CR3", "_DSC0001.NEF", "DSC01.arw", "X.raf", "P1.ORF", "P1.rw2", "i.PEF"])
def test_raw_extensions_are_walked_and_reported_per_file(tmp_path, tiny_weights_file, name):
    """Each RAW extension is picked up by the walk (a text file in disguise here: an error row, not "no images")."""
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    (shoot / name).write_text("text\n")
    result = run_cli("score", shoot, "--format", "jsonl", "--weights", tiny_weights_file, "--no-cache")
    assert result.exit_code == 3, result.stderr
    (row,) = jsonl_rows(result.stdout)
    assert row["status"] == "error" and row["error"].startswith("not a RAW file")
