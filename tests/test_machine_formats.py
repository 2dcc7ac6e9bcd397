"""The machine formats are tidy: floats to 6 significant digits (every digit with --full-precision), every row names
the weights and the scoring identity that gave it, `pairs` is null rather than absent, and `-o FILE` says which
format it wrote when the file's extension does not; files of older versions still read back."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re

import pytest

from qualiclip_cli.commands.formats import read_records, write_csv, write_rows
from qualiclip_cli.core.records import ScoreRecord

from cli_support import jsonl_rows as _jsonl
from cli_support import make_photo_dir, run_cli


def _sig_digits(text: str) -> int:
    mantissa = text.lower().split("e")[0].replace("-", "").replace(".", "").lstrip("0")
    return len(mantissa)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    make_photo_dir(root, names=("astronaut", "coffee"))
    (root / "broken.jpg").write_bytes(b"\xff\xd8broken")
    return root


@pytest.fixture(scope="module")
def scored(photos, tiny_weights_file):
    """jsonl, json and csv of one run (with --details), and the same jsonl in full precision."""
    out = {}
    for fmt in ("jsonl", "json", "csv"):
        result = run_cli("score", photos, "--format", fmt, "--details", "--weights", tiny_weights_file)
        assert result.exit_code == 3, result.stderr  # the broken file
        out[fmt] = result.stdout
    full = run_cli("score", photos, "--format", "jsonl", "--details", "--full-precision", "--weights",
                   tiny_weights_file)
    out["full"] = full.stdout
    return out


def test_floats_have_six_significant_digits_and_full_precision_has_them_all(scored):
    rows, full = _jsonl(scored["jsonl"]), _jsonl(scored["full"])
    ok = [(r, f) for r, f in zip(rows, full, strict=True) if r["status"] == "ok"]
    assert len(ok) == 2
    texts = []
    for row, exact in ok:
        values = [row["score"], *row["pairs"].values()]
        exact_values = [exact["score"], *exact["pairs"].values()]
        for value, exact_value in zip(values, exact_values, strict=True):
            assert value == float(f"{exact_value:.6g}")  # rounded, not truncated or re-computed
            texts.append(repr(value))
    assert max(_sig_digits(t) for t in texts) <= 6
    # full precision is more than six digits (float32 scores as float64 have ~16 of them)
    assert any(_sig_digits(repr(f["score"])) > 6 for _, f in ok)
    # the raw text too: no 0.5714260339736938 in the rounded output
    assert all(_sig_digits(m) <= 6 for m in re.findall(r"\d+\.\d+(?:e-?\d+)?", scored["jsonl"]))
    for row in csv.DictReader(io.StringIO(scored["csv"])):
        for name in ["score"] + [k for k in row if k.startswith("pair_")]:
            assert row[name] == "" or _sig_digits(row[name]) <= 6, (name, row[name])


def test_every_row_names_the_weights_and_scoring_identity(scored, tiny_weights_file):
    sha = hashlib.sha256(tiny_weights_file.read_bytes()).hexdigest()
    json_rows = json.loads(scored["json"])
    csv_rows = list(csv.DictReader(io.StringIO(scored["csv"])))
    for rows in (_jsonl(scored["jsonl"]), json_rows, csv_rows):
        assert len(rows) == 3
        assert {r["weights_sha256"] for r in rows} == {sha}  # error rows too: the run's weights
        identities = {r["identity"] for r in rows}
        assert len(identities) == 1 and "max_side=1024" in identities.pop()
    header = next(csv.reader(io.StringIO(scored["csv"])))
    assert header[:6] == ["path", "score", "status", "error", "width", "height"]  # documented order kept
    assert header[-3:] == ["weights_sha256", "identity", "source"]  # new columns only at the end


def test_pairs_is_null_not_absent_without_details(photos, tiny_weights_file):
    result = run_cli("score", photos, "--format", "jsonl", "--weights", tiny_weights_file)
    rows = _jsonl(result.stdout)
    assert all("pairs" in r and r["pairs"] is None for r in rows)
    assert all(list(r)[:7] == ["path", "score", "status", "error", "width", "height", "pairs"] for r in rows)
    assert all(list(r)[-1] == "source" for r in rows)  # added later: at the end
    assert [r["source"] for r in rows] == [("file" if r["status"] == "ok" else None) for r in rows]  # null on error
    assert {r["status"] for r in rows} == {"ok", "error"}


@pytest.mark.parametrize(("name", "args", "note"), [
    ("scores.txt", (), "as jsonl (the default when the extension names no format"),
    ("scores.out", (), "as jsonl (the default when the extension names no format"),
    ("scores.csv", ("--format", "jsonl"), "as jsonl (from --format)"),
    ("scores.txt", ("--format", "csv"), "as csv (from --format)"),
    ("scores.csv", (), None),
    ("scores.JSONL", (), None),
    ("scores.txt", ("--format", "text"), None),
])
def test_output_file_says_which_format_it_wrote(name, args, note, photos, tmp_path, tiny_weights_file):
    out = tmp_path / name
    result = run_cli("score", photos, "-o", out, *args, "--weights", tiny_weights_file)
    assert result.exit_code == 3 and out.is_file()
    notes = [line for line in result.stderr.splitlines() if "wrote" in line]
    if note is None:
        assert notes == []
    else:
        assert len(notes) == 1 and notes[0].startswith(f"qualiclip: wrote {out} {note}"), notes
        fmt = note.split()[1]
        text = out.read_text()
        if fmt == "jsonl":
            assert len(_jsonl(text)) == 3
        else:
            assert len(read_records(text, fmt)) == 3


def test_old_files_read_back_unchanged():
    """Files written before rounding and provenance: full precision, no weights_sha256/identity, no pairs."""
    old_jsonl = ('{"path": "a.jpg", "score": 0.5714260339736938, "status": "ok", "error": null, "width": 96, '
                 '"height": 72}\n'
                 '{"path": "b.jpg", "score": null, "status": "error", "error": "truncated image file", '
                 '"width": null, "height": null}\n')
    old_csv = ("path,score,status,error,width,height,pair_overall,pair_sharpness,pair_edges,pair_resolution,"
               "pair_noise,pair_quality,pair_picture\n"
               "a.jpg,0.5714260339736938,ok,,96,72,0.1,0.2,0.3,0.4,0.5,0.6,0.7000000000000001\n")
    a = read_records(old_jsonl, "jsonl")
    assert a[0] == ScoreRecord("a.jpg", 0.5714260339736938, width=96, height=72)
    assert a[1].status == "error" and a[1].error == "truncated image file"
    b = read_records(old_csv, "csv")[0]
    assert b.score == 0.5714260339736938 and b.pairs["picture"] == 0.7000000000000001
    assert read_records(json.dumps(json.loads("[" + old_jsonl.replace("\n", ",").rstrip(",") + "]")), "json") == a


def test_new_files_read_back_as_records():
    record = ScoreRecord("a.jpg", 0.5714260339736938, width=96, height=72,
                         pairs={n: 0.123456789 for n in ("overall", "sharpness", "edges", "resolution", "noise",
                                                         "quality", "picture")})
    provenance = {"weights_sha256": "ab" * 32, "identity": "exif+max_side=1024+bicubic-aa+fp32"}
    out = io.StringIO()
    write_csv([record], out, details=True, provenance=provenance)
    back = read_records(out.getvalue(), "csv")[0]
    assert back.score == 0.571426 and back.pairs["overall"] == 0.123457
    out = io.StringIO()
    write_rows([{**record.to_dict(True), **provenance}], "jsonl", out, full_precision=True)
    assert read_records(out.getvalue(), "jsonl") == [record]  # full precision round-trips exactly


def test_rounding_leaves_everything_but_floats_alone():
    from qualiclip_cli.commands.formats import rounded

    row = {"rank": 3, "path": "x.jpg", "score": 0.123456789, "pairs": {"overall": 1e-10 / 3}, "ok": True,
           "nan": float("nan"), "none": None}
    out = rounded(row)
    assert out["rank"] == 3 and isinstance(out["rank"], int) and out["ok"] is True and out["none"] is None
    assert out["score"] == 0.123457 and out["pairs"]["overall"] == 3.33333e-11
    assert out["nan"] != out["nan"]  # the writers drop it (null), as before
    assert rounded(row, full_precision=True) is row
