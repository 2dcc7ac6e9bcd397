"""Datasets: `score --format parquet`, `dataset score` over tar and parquet shards, `dataset select`."""

from __future__ import annotations

import os
import sys

import pyarrow as pa  # the `data` extra, which .ci/run installs
import pyarrow.parquet as pq
import pytest
from PIL import Image

from qualiclip_cli.core.dataset.shards import expand_braces, expand_shards

from cli_support import jsonl_rows, natural_image, run_cli
from dataset_support import image_set, jpeg_bytes, read_output, write_parquet, write_tar

PAIRS = ["overall", "sharpness", "edges", "resolution", "noise", "quality", "picture"]
RESULT_COLUMNS = (["score", "status", "error", "width", "height"] + [f"pair_{n}" for n in PAIRS]
                  + ["weights_sha256", "identity", "source", "precision"])


def file_scores(folder, weights) -> dict[str, float]:
    result = run_cli("score", folder, "-f", "jsonl", "--full-precision", "--no-cache", "--weights", weights)
    assert result.exit_code == 0, result.stderr
    return {os.path.basename(r["path"]).rsplit(".", 1)[0]: r["score"] for r in jsonl_rows(result.stdout)}


def test_brace_patterns_expand_in_order_with_padding(tmp_path):
    assert expand_braces("s/{000008..000011}.tar") == ["s/000008.tar", "s/000009.tar", "s/000010.tar", "s/000011.tar"]
    assert expand_braces("{a,b}/{1..2}.tar") == ["a/1.tar", "a/2.tar", "b/1.tar", "b/2.tar"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("plain{x}.tar") == ["plain{x}.tar"]
    for name in ("000000.tar", "000001.tar", "000002.tar", "other.parquet"):
        (tmp_path / name).write_bytes(b"")
    shards, problems = expand_shards([f"{tmp_path}/{{000000..000003}}.tar", f"{tmp_path}/*.parquet",
                                      f"{tmp_path}/000001.tar"])
    assert [p.name for p in shards] == ["000000.tar", "000001.tar", "000002.tar", "other.parquet"]  # each once
    assert problems == [f"{tmp_path}/000003.tar: no such file"]


def test_tar_and_parquet_shards_score_as_the_same_files(tmp_path, tiny_weights_file):
    """One number: the same images as files, in tar shards (with other members beside them, in folders) and in a
    parquet table give the same scores."""
    images = image_set(tmp_path / "files")
    keys = sorted(images)
    write_tar(tmp_path / "shards" / "000000.tar",
              [m for k in keys[:2] for m in ((f"{k}.jpg", images[k]), (f"{k}.txt", b"a caption"))])
    write_tar(tmp_path / "shards" / "000001.tar",
              [(f"{k}.cls", b"3") for k in keys[2:3]] + [(f"{k}.jpg", images[k]) for k in keys[2:]])
    write_parquet(tmp_path / "table" / "part-0.parquet",
                  [{"__key__": k, "caption": "x", "jpg": images[k]} for k in keys])
    expected = file_scores(tmp_path / "files", tiny_weights_file)

    result = run_cli("dataset", "score", f"{tmp_path}/shards/{{000000..000001}}.tar", f"{tmp_path}/table/*.parquet",
                     "--out", tmp_path / "out", "--weights", tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["000000.parquet", "000001.parquet", "part-0.parquet"]
    tar_rows = {**read_output(tmp_path / "out" / "000000.parquet"), **read_output(tmp_path / "out" / "000001.parquet")}
    parquet_rows = read_output(tmp_path / "out" / "part-0.parquet")
    for rows in (tar_rows, parquet_rows):
        assert sorted(rows) == keys
        for key in keys:
            assert rows[key]["status"] == "ok" and rows[key]["error"] is None
            assert (rows[key]["width"], rows[key]["height"]) == (96, 72)
            assert rows[key]["score"] == pytest.approx(expected[key], abs=1e-6)
    # One row per sample, in the shard's order.
    assert list(read_output(tmp_path / "out" / "000001.parquet")) == keys[2:]


def test_bad_samples_are_error_rows_and_a_corrupt_shard_does_not_stop_the_others(tmp_path, tiny_weights_file):
    good = jpeg_bytes("coffee")
    write_tar(tmp_path / "a.tar", [
        ("ok.jpg", good), ("text.jpg", b"not a picture at all"), ("cut.jpg", good[: len(good) // 2]),
        ("caption-only.txt", b"no image here"), ("camera.nef", b"II*\x00raw"), ("after.jpg", good),
    ])
    (tmp_path / "b.tar").write_bytes(b"this is no tar" * 50)
    write_tar(tmp_path / "c.tar", [("c1.png", good)])  # a JPEG named .png: Pillow reads it by content
    result = run_cli("dataset", "score", tmp_path / "a.tar", tmp_path / "b.tar", tmp_path / "c.tar",
                     "--out", tmp_path / "out", "--weights", tiny_weights_file)
    assert result.exit_code == 3, result.stderr
    rows = read_output(tmp_path / "out" / "a.parquet")
    assert list(rows) == ["ok", "text", "cut", "caption-only", "camera", "after"]
    assert rows["ok"]["status"] == rows["after"]["status"] == "ok"
    assert rows["ok"]["score"] == pytest.approx(rows["after"]["score"], abs=0)
    for key in ("text", "cut", "caption-only", "camera"):
        assert rows[key]["status"] == "error" and rows[key]["score"] is None and rows[key]["pair_overall"] is None
    assert "not an image" in rows["text"]["error"]
    assert "truncated" in rows["cut"]["error"] or "damaged" in rows["cut"]["error"]
    assert rows["caption-only"]["error"] == "no image member in the sample (it has txt)"
    assert "RAW" in rows["camera"]["error"]
    assert not (tmp_path / "out" / "b.parquet").exists()
    assert read_output(tmp_path / "out" / "c.parquet")["c1"]["status"] == "ok"
    assert f"{tmp_path / 'b.tar'}: not a readable tar shard" in result.stderr
    assert "Traceback" not in result.stderr
    assert f"failed\t{tmp_path / 'out' / 'b.parquet'}" in result.stdout


def test_resume_skips_up_to_date_outputs_and_never_replaces_a_foreign_file(tmp_path, tiny_weights_file):
    write_tar(tmp_path / "s" / "000000.tar", [("k.jpg", jpeg_bytes("rocket", (300, 200)))])
    write_tar(tmp_path / "s" / "000001.tar", [("k.jpg", jpeg_bytes("chelsea"))])
    out = tmp_path / "out"
    args = ["dataset", "score", f"{tmp_path}/s/*.tar", "--out", out, "--weights", tiny_weights_file]
    assert run_cli(*args).exit_code == 0
    first = (out / "000000.parquet").stat().st_mtime_ns
    os.utime(out / "000000.parquet", ns=(1, 1))
    again = run_cli(*args)
    assert again.exit_code == 0
    assert again.stdout.count("skipped\t") == 2 and (out / "000000.parquet").stat().st_mtime_ns == 1
    assert "Scoring" not in again.stderr and first != 1
    # Other scoring rules: the output is replaced (its identity says how it was scored).
    smaller = run_cli(*args, "--max-side", "100")
    assert smaller.stdout.count("scored\t") == 2
    assert read_output(out / "000000.parquet")["k"]["width"] == 100
    assert "max_side=100" in read_output(out / "000000.parquet")["k"]["identity"]
    assert run_cli(*args, "--max-side", "100", "--rescore").stdout.count("scored\t") == 2
    # A file qualiclip did not write is never replaced.
    (out / "000001.parquet").write_bytes(b"mine")
    foreign = run_cli(*args, "--rescore")
    assert foreign.exit_code == 3
    assert (out / "000001.parquet").read_bytes() == b"mine"
    assert "is not a qualiclip output" in foreign.stderr
    # No temporary files are left behind.
    assert sorted(os.listdir(out)) == ["000000.parquet", "000001.parquet"]


def test_output_schema_is_stable(tmp_path, tiny_weights_file):
    write_tar(tmp_path / "x.tar", [("a.jpg", jpeg_bytes("coffee")), ("b.jpg", b"junk")])
    assert run_cli("dataset", "score", tmp_path / "x.tar", "--out", tmp_path / "o", "--embeddings",
                   "--weights", tiny_weights_file).exit_code == 3
    schema = pq.read_schema(tmp_path / "o" / "x.parquet")
    assert schema.names == ["__key__", *RESULT_COLUMNS, "embedding"]
    types = {f.name: f.type for f in schema}
    assert types["__key__"] == pa.string() and types["score"] == pa.float64() and types["width"] == pa.int32()
    assert all(types[f"pair_{n}"] == pa.float64() for n in PAIRS)
    assert types["embedding"] == pa.list_(pa.float16())
    rows = read_output(tmp_path / "o" / "x.parquet")
    assert rows["a"]["precision"] == "fp32" and len(rows["a"]["weights_sha256"]) == 64
    assert abs(sum(v * v for v in rows["a"]["embedding"]) - 1) < 1e-2  # L2-normalised (float16)
    assert rows["b"]["embedding"] is None


def test_parquet_shard_columns_and_exif_orientation(tmp_path, tiny_weights_file):
    image = natural_image("chelsea", (120, 80))
    exif = Image.Exif()
    exif[0x0112] = 6
    import io

    tagged, rotated = io.BytesIO(), io.BytesIO()
    image.save(tagged, "PNG", exif=exif.tobytes())
    image.transpose(Image.Transpose.ROTATE_270).save(rotated, "PNG")
    write_parquet(tmp_path / "t.parquet", [{"id": "tagged", "img": {"bytes": tagged.getvalue(), "path": None}},
                                           {"id": "rotated", "img": {"bytes": rotated.getvalue(), "path": None}},
                                           {"id": "missing", "img": None}])
    result = run_cli("dataset", "score", tmp_path / "t.parquet", "--image-column", "img", "--key-column", "id",
                     "--out", tmp_path / "o", "--max-side", "0", "--weights", tiny_weights_file)
    assert result.exit_code == 3, result.stderr
    rows = read_output(tmp_path / "o" / "t.parquet")
    assert (rows["tagged"]["width"], rows["tagged"]["height"]) == (80, 120)
    assert rows["tagged"]["score"] == pytest.approx(rows["rotated"]["score"], abs=1e-7)
    assert rows["missing"]["status"] == "error" and rows["missing"]["error"] == "no image bytes (null)"
    unnamed = run_cli("dataset", "score", tmp_path / "t.parquet", "--out", tmp_path / "o2", "--weights",
                      tiny_weights_file)
    assert unnamed.exit_code == 3 and "no image column" in unnamed.stderr and "--image-column" in unnamed.stderr


def test_score_format_parquet_matches_jsonl(tmp_path, tiny_weights_file):
    image_set(tmp_path / "files")
    (tmp_path / "files" / "broken.jpg").write_bytes(b"nope")
    jsonl = run_cli("score", tmp_path / "files", "-f", "jsonl", "--details", "--full-precision",
                    "--weights", tiny_weights_file)
    assert jsonl.exit_code == 3
    result = run_cli("score", tmp_path / "files", "-o", tmp_path / "s.parquet", "--embeddings",
                     "--weights", tiny_weights_file)
    assert result.exit_code == 3, result.stderr
    table = pq.read_table(tmp_path / "s.parquet")
    assert table.schema.names == ["path", *RESULT_COLUMNS, "embedding"]
    rows = table.to_pylist()
    expected = jsonl_rows(jsonl.stdout)
    assert [r["path"] for r in rows] == [r["path"] for r in expected]
    for row, ref in zip(rows, expected):
        assert (row["status"], row["error"], row["width"], row["height"], row["source"]) == (
            ref["status"], ref["error"], ref["width"], ref["height"], ref["source"])
        assert (row["weights_sha256"], row["identity"]) == (ref["weights_sha256"], ref["identity"])
        if ref["status"] == "ok":
            assert row["score"] == ref["score"]
            assert [row[f"pair_{n}"] for n in PAIRS] == [ref["pairs"][n] for n in PAIRS]
            assert len(row["embedding"]) > 0
        else:
            assert row["score"] is None and row["embedding"] is None
    assert run_cli("score", tmp_path / "files", "--embeddings", "-f", "jsonl",
                   "--weights", tiny_weights_file).exit_code == 2


def test_parquet_without_pyarrow_says_how_to_install(tmp_path, tiny_weights_file, monkeypatch):
    image_set(tmp_path / "files", ("coffee",))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    result = run_cli("score", tmp_path / "files", "-o", tmp_path / "s.parquet", "--weights", tiny_weights_file)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install "qualiclip[data]"' in lines[0]
    assert not (tmp_path / "s.parquet").exists()


def test_select_keeps_keys_by_score_and_top_percent(tmp_path):
    from qualiclip_cli.core.dataset.table import Provenance, records_table, write_table
    from qualiclip_cli.core.records import ScoreRecord

    provenance = Provenance("0" * 64, "exif+max_side=1024+bicubic-aa+fp32", "fp32")
    for shard, scores in (("000000", [0.9, 0.2, None]), ("000001", [0.5, 0.7, 0.1, 0.6, 0.3, 0.4])):
        records = [ScoreRecord("x", s, pairs={n: 0.5 for n in PAIRS}) if s is not None else
                   ScoreRecord.failure("x", "bad") for s in scores]
        write_table(records_table({"__key__": [f"{shard}-{i}" for i in range(len(scores))]}, records, provenance),
                    tmp_path / "out" / f"{shard}.parquet")
    (tmp_path / "out" / "notes.parquet").write_bytes(b"not ours")  # ignored: not a qualiclip output
    by_score = run_cli("dataset", "select", tmp_path / "out", "--min-score", "0.5")
    assert by_score.exit_code == 0, by_score.stderr
    assert by_score.stdout.splitlines() == ["000000-0", "000001-0", "000001-1", "000001-3"]
    top = run_cli("dataset", "select", tmp_path / "out", "--top-percent", "25")  # 8 scored: the best 2
    assert top.stdout.splitlines() == ["000000-0", "000001-1"]
    assert "kept 2 of 8 scored samples (1 error rows left out)" in top.stderr
    both = run_cli("dataset", "select", tmp_path / "out", "--top-percent", "50", "--min-score", "0.65",
                   "-o", tmp_path / "keep.parquet")
    assert both.exit_code == 0
    kept = pq.read_table(tmp_path / "keep.parquet").to_pylist()
    assert [(k["__key__"], k["shard"], k["score"]) for k in kept] == [("000000-0", "000000", 0.9),
                                                                       ("000001-1", "000001", 0.7)]
    assert run_cli("dataset", "select", tmp_path / "out").exit_code == 2
    assert run_cli("dataset", "select", tmp_path / "out", "--top-percent", "0").exit_code == 2


def test_dataset_usage_errors_come_before_the_model(tmp_path):
    missing = run_cli("dataset", "score", f"{tmp_path}/{{0..1}}.tar", "--out", tmp_path / "o",
                      "--weights", tmp_path / "no-weights.pth")
    assert missing.exit_code == 1
    assert f"{tmp_path}/0.tar: no such file" in missing.stderr and "weights" not in missing.stderr
    write_tar(tmp_path / "a" / "s.tar", [("k.jpg", b"x")])
    write_tar(tmp_path / "b" / "s.tar", [("k.jpg", b"x")])
    clash = run_cli("dataset", "score", tmp_path / "a" / "s.tar", tmp_path / "b" / "s.tar", "--out", tmp_path / "o")
    assert clash.exit_code == 2 and "would both write" in clash.stderr
    write_parquet(tmp_path / "p" / "t.parquet", [{"bytes": b"x"}])
    onto_input = run_cli("dataset", "score", tmp_path / "p" / "t.parquet", "--out", tmp_path / "p")
    assert onto_input.exit_code == 2 and "is an input shard" in onto_input.stderr
