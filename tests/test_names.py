"""File names that are not valid UTF-8, or that hold a newline, an escape sequence or markup, through every
command as a real process: nothing crashes, machine formats carry the exact bytes back, text output keeps
one line per record or operation and never lets a name reach the terminal as a control sequence, and every
change comes back with undo under the same bytes name."""

import csv
import hashlib
import io
import json
import os
import random
import re
import xml.etree.ElementTree as ET

import pytest

from qualiclip_cli.commands.formats import read_records, write_csv, write_rows
from qualiclip_cli.core import names
from qualiclip_cli.core.records import ScoreRecord

from cli_support import natural_image, run_process

# Latin-1 bytes (not UTF-8), a newline, an ESC colour sequence, Rich markup, valid UTF-8, and a plain name.
NAMES = (b"caf\xe9.jpg", b"new\nline.jpg", b"esc\x1b[31mred.jpg", b"[bold]tag.jpg", "naïve.jpg".encode(),
         b"plain.jpg")
IMAGES = ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse")


def _shoot(root) -> dict[bytes, str]:
    """The photos of NAMES under root; returns bytes name -> SHA-256 of the content."""
    root.mkdir(parents=True, exist_ok=True)
    contents = {}
    for name, image in zip(NAMES, IMAGES):
        path = os.path.join(os.fsencode(root), name)
        natural_image(image).save(os.fsdecode(path), format="JPEG", quality=90)
        with open(path, "rb") as fh:
            contents[name] = hashlib.sha256(fh.read()).hexdigest()
    return contents


def _tree(folder) -> dict[bytes, str]:
    """bytes name -> SHA-256 of every file directly in folder."""
    folder = os.fsencode(folder)
    out = {}
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                out[name] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _ok(proc, code=0):
    """The process ended as expected, with no crash, and nothing in its output can drive a terminal."""
    assert proc.returncode == code, proc.stderr
    assert "internal error" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "\x1b" not in proc.stdout and "\x1b" not in proc.stderr
    assert not re.search("[\ud800-\udfff\x80-\x9f]", proc.stdout + proc.stderr)
    return proc


def _q(*args, weights=None, env=None, code=0):
    extra = ("--weights", weights) if weights is not None else ()
    # run_process decodes stdout and stderr as UTF-8, strictly: a raw undecodable byte fails the test here.
    return _ok(run_process(*args, *extra, env=env), code)


def _basenames(rows, key="path"):
    return sorted(os.path.basename(os.fsencode(row[key])) for row in rows)


def _jsonl(text):
    return [json.loads(line) for line in text.splitlines()]


# ----------------------------------------------------------------------------------------------- the forms


def test_json_form_is_valid_utf8_and_gives_the_bytes_back():
    name = os.fsdecode(b"/p/caf\xe9\n\x1b\x7f.jpg") + "\x85\u2028é"
    text = names.json_dumps({"path": name, "score": float("nan"), "pairs": {"x": float("inf")}})
    text.encode("utf-8")  # no lone surrogate left in the text
    assert "\\udce9" in text and "\\u001b" in text and "\\u0085" in text and "\\u2028" in text and "é" in text
    back = json.loads(text)
    assert back == {"path": name, "score": None, "pairs": {"x": None}}
    assert os.fsencode(back["path"]).startswith(b"/p/caf\xe9\n\x1b\x7f.jpg")


def test_csv_form_reads_back_exactly_any_text():
    alphabet = ["\\", "u", "0", "d", "c", "e", "9", "a", "\n", "\udce9", "\udc80", "\x1b", "é", "\x85", "\u2028",
                "\r", ",", '"']
    rng = random.Random(0)
    samples = ["", "\\udce9", "\\\\udce9", "C:\\Users\\x.jpg", "\\u0041"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(5000)]
    for text in samples:
        cell = names.csv_cell(text)
        cell.encode("utf-8")
        assert not re.search("[\x00-\x1f\x7f-\x9f]", cell), repr(cell)
        assert names.csv_text(cell) == text, (text, cell)
    assert names.csv_cell("C:\\Users\\x.jpg") == "C:\\Users\\x.jpg"  # ordinary backslashes stay as they are


def test_display_form_is_one_line_without_controls():
    name = os.fsdecode(b"a/caf\xe9\nx\ty\rz\x1b[31m\x07\x7f.jpg") + "\x9b\u2028\u202e"
    shown = names.display(name)
    assert shown == "a/caf\\xe9\\nx\\ty\\rz\\x1b[31m\\x07\\x7f.jpg\\u009b\\u2028\\u202e"
    assert len(shown.splitlines()) == 1 and shown.isprintable()
    assert names.display("naïve [bold] 写真.jpg") == "naïve [bold] 写真.jpg"


def test_writers_never_write_nan():
    record = ScoreRecord(path=os.fsdecode(b"caf\xe9.jpg"), score=float("nan"), width=1, height=1,
                         pairs={"overall": float("nan")})
    for fmt in ("jsonl", "json"):
        out = io.StringIO()
        write_rows([record.to_dict(details=True)], fmt, out)
        assert "NaN" not in out.getvalue()
        json.loads(out.getvalue().splitlines()[0] if fmt == "jsonl" else out.getvalue())
    out = io.StringIO()
    write_csv([record], out, details=True)
    assert "nan" not in out.getvalue().lower().replace("pair_", "")
    assert read_records(out.getvalue(), "csv")[0].path == record.path


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_read_records_round_trips_a_name_with_every_kind_of_trouble(fmt):
    name = os.fsdecode(b"d/caf\xe9\n,\"\x1b\\udce9.jpg")
    record = ScoreRecord(path=name, score=0.5, width=2, height=3)
    out = io.StringIO()
    (write_rows([record.to_dict()], "jsonl", out) if fmt == "jsonl" else write_csv([record], out))
    assert read_records(out.getvalue(), fmt) == [record]
    if fmt == "csv":
        assert list(csv.reader(io.StringIO(out.getvalue())))[1][0] == "d/caf\\udce9\\u000a,\"\\u001b\\\\udce9.jpg"



def test_an_error_naming_a_file_is_one_escaped_line(tmp_path):
    (tmp_path / "p").mkdir()
    natural_image("astronaut").save(tmp_path / "p" / "a.jpg")
    weights = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"no\x1b[31mw\xe9[b]\nx.pth"))
    proc = _q("score", tmp_path / "p", "--weights", weights, code=1)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("qualiclip: error: ")
    assert "no\\x1b[31mw\\xe9[b]\\nx.pth" in lines[0]  # shown as it is: escaped, and [b] not read as markup


def test_error_text_shows_a_bytes_file_name_as_text():
    from qualiclip_cli.core.errors import error_text

    exc = FileNotFoundError(2, "No such file or directory", b"/p/caf\xe9.jpg")
    assert error_text(exc) == os.fsdecode(b"/p/caf\xe9.jpg") + ": No such file or directory"


# ---------------------------------------------------------------------------------------------- commands


def test_score_every_format_carries_every_name(tmp_path, tiny_weights_file):
    root = tmp_path / "shoot"
    _shoot(root)
    bad = os.path.join(os.fsencode(root), b"broken\xff\n\x1b[2J.jpg")
    with open(bad, "wb") as fh:
        fh.write(b"not a JPEG at all")
    expected = sorted([*NAMES, os.path.basename(bad)])

    first = _q("score", root, "--format", "jsonl", weights=tiny_weights_file, code=3)
    rows = _jsonl(first.stdout)
    assert _basenames(rows) == expected
    assert {os.path.basename(os.fsencode(r["path"])): r["status"] for r in rows}[os.path.basename(bad)] == "error"
    warnings = [line for line in first.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "broken\\xff\\n\\x1b[2J.jpg" in warnings[0]

    again = _q("score", root, "--format", "jsonl", weights=tiny_weights_file, code=3)  # from the results cache
    assert f"({len(NAMES)} from cache)" in again.stderr
    assert _jsonl(again.stdout) == rows

    as_json = _q("score", root, "--format", "json", "--details", weights=tiny_weights_file, code=3)
    assert _basenames(json.loads(as_json.stdout)) == expected
    as_csv = _q("score", root, "--format", "csv", "--details", weights=tiny_weights_file, code=3)
    assert len(as_csv.stdout.splitlines()) == len(expected) + 1  # a newline in a name does not split its row
    assert sorted(os.path.basename(os.fsencode(r.path)) for r in read_records(as_csv.stdout, "csv")) == expected
    for fmt in ("text", "table"):
        table = _q("score", root, "--format", fmt, "--details", weights=tiny_weights_file, code=3)
        lines = table.stdout.splitlines()
        assert len(lines) == len(expected) + 1, table.stdout  # the header, then one line per record
        assert any("caf\\xe9.jpg" in line for line in lines) and any("[bold]tag.jpg" in line for line in lines)

    for ext in ("jsonl", "json", "csv"):
        out = tmp_path / f"results.{ext}"
        _q("score", root, "-o", out, weights=tiny_weights_file, code=3)
        text = out.read_bytes().decode("utf-8")  # strictly valid UTF-8
        assert sorted(os.path.basename(os.fsencode(r.path)) for r in read_records(text, ext)) == expected
    out = tmp_path / "results.txt"
    _q("score", root, "-o", out, "--format", "text", weights=tiny_weights_file, code=3)
    assert len(out.read_bytes().decode("utf-8").splitlines()) == len(expected) + 1

    # A POSIX locale, and a stream that only takes ASCII: no encoding error, machine output still UTF-8.
    posix = _q("score", root, "--format", "jsonl", weights=tiny_weights_file, code=3,
               env={"LANG": "C", "LC_ALL": "C"})
    assert _jsonl(posix.stdout) == rows
    ascii_only = {"PYTHONIOENCODING": "ascii"}
    assert _jsonl(_q("score", root, "-f", "jsonl", weights=tiny_weights_file, code=3, env=ascii_only).stdout) == rows
    shown = _q("score", root, "-f", "text", weights=tiny_weights_file, code=3, env=ascii_only)
    assert "na\\xefve.jpg" in shown.stdout and len(shown.stdout.splitlines()) == len(expected) + 1


def test_cull_dry_run_real_run_history_and_undo(tmp_path, tiny_weights_file):
    root = tmp_path / "shoot"
    before = _shoot(root)
    n = len(NAMES)

    dry = _q("cull", root, "--below", "1", "--action", "move", "--dry-run", weights=tiny_weights_file)
    assert len(dry.stdout.splitlines()) == n and all(line.startswith("move ") for line in dry.stdout.splitlines())
    assert any("caf\\xe9.jpg -> " in line for line in dry.stdout.splitlines())
    plan = _jsonl(_q("cull", root, "--below", "1", "--action", "move", "--dry-run", "-f", "jsonl",
                     weights=tiny_weights_file).stdout)
    assert _basenames(plan, "source") == sorted(NAMES) == _basenames(plan, "destination")
    assert _tree(root) == before

    real = _q("cull", root, "--below", "1", "--action", "move", weights=tiny_weights_file)
    assert real.stdout == dry.stdout
    assert _tree(root / "_rejected") == before and _tree(root) == {}

    runs = _jsonl(_q("history", "--format", "jsonl").stdout)
    assert len(runs) == 1 and runs[0]["state"] == "done" and runs[0]["counts"]["done"] == n
    table = _q("history", "--format", "text")
    assert len(table.stdout.splitlines()) == 2

    undo = _q("undo")
    assert len(undo.stdout.splitlines()) == n
    assert _tree(root) == before  # every file back, under the same bytes name, the same content
    assert _jsonl(_q("history").stdout)[0]["state"] == "undone"


def test_sort_into_and_rank_prefix_then_undo(tmp_path, tiny_weights_file):
    root = tmp_path / "shoot"
    before = _shoot(root)
    n = len(NAMES)

    ranking = _q("sort", root, "--format", "text", weights=tiny_weights_file)
    assert len(ranking.stdout.splitlines()) == n
    assert _basenames(_jsonl(_q("sort", root, "-f", "jsonl", weights=tiny_weights_file).stdout)) == sorted(NAMES)

    into = _q("sort", root, "--into", tmp_path / "tiers", weights=tiny_weights_file)
    assert len(into.stdout.splitlines()) == n
    copies = {}
    for tier in os.listdir(tmp_path / "tiers"):
        copies.update(_tree(tmp_path / "tiers" / tier))
    assert copies == before and _tree(root) == before
    _q("undo")
    assert [files for _, _, files in os.walk(tmp_path / "tiers") if files] == [] and _tree(root) == before

    renamed = _q("sort", root, "--rank-prefix", "-f", "jsonl", weights=tiny_weights_file)
    rows = _jsonl(renamed.stdout)
    assert len(rows) == n and all(r["status"] == "done" for r in rows)
    after = _tree(root)
    assert sorted(name[len(b"0001_"):] for name in after) == sorted(NAMES)
    assert all(re.match(rb"^\d{4}_", name) for name in after)
    assert len(_q("undo").stdout.splitlines()) == n
    assert _tree(root) == before


def test_tag_writes_sidecars_named_from_the_bytes_and_undo_removes_them(tmp_path, tiny_weights_file):
    root = tmp_path / "shoot"
    before = _shoot(root)
    n = len(NAMES)

    dry = _q("tag", root, "--dry-run", weights=tiny_weights_file)
    assert len(dry.stdout.splitlines()) == n
    tagged = _q("tag", root, weights=tiny_weights_file)
    assert tagged.stdout == dry.stdout
    files = _tree(root)
    sidecars = sorted(name for name in files if name.endswith(b".xmp"))
    assert sidecars == sorted(name[: -len(b".jpg")] + b".xmp" for name in NAMES)
    for name in sidecars:
        with open(os.path.join(os.fsencode(root), name), "rb") as fh:
            data = fh.read()
        data.decode("utf-8")
        ET.fromstring(data)  # well-formed XML
    journal = [p for p in (tmp_path / "qualiclip-home").rglob("*.jsonl")]
    assert journal, "the run was journaled"
    for path in journal:
        for line in path.read_bytes().decode("utf-8").splitlines():  # valid UTF-8, one entry a line
            json.loads(line)

    _q("undo")
    assert _tree(root) == before


def test_cull_to_the_trash_and_undo_find_a_non_utf8_name(tmp_path, tiny_weights_file):
    root = tmp_path / "shoot"
    before = _shoot(root)
    data_home, user_home = tmp_path / "xdg-data", tmp_path / "user-home"
    user_home.mkdir()
    env = {"XDG_DATA_HOME": str(data_home), "HOME": str(user_home)}  # send2trash reads them at import

    trashed = _q("cull", root, "--below", "1", "--action", "trash", weights=tiny_weights_file, env=env)
    assert len(trashed.stdout.splitlines()) == len(NAMES) and _tree(root) == {}
    assert _tree(data_home / "Trash" / "files") == before
    runs = _jsonl(_q("history", "-f", "jsonl").stdout)
    assert runs[0]["counts"]["done"] == len(NAMES)

    _q("undo", env=env)
    assert _tree(root) == before
    assert _tree(data_home / "Trash" / "files") == {}


def test_a_label_no_sidecar_can_hold_is_refused_before_anything_is_written(tmp_path, tiny_weights_file):
    root = tmp_path / "shoot"
    before = _shoot(root)
    for label in (os.fsdecode(b"red\xe9"), "red\x01"):
        proc = _q("tag", root, "--reject-below", "0.5", "--reject-label", label, weights=tiny_weights_file, code=2)
        assert len(proc.stderr.splitlines()) == 1 and "--reject-label" in proc.stderr
        assert _tree(root) == before


# --------------------------------------------------------------------- weights, evaluate, train, their help


def _official_shaped_weights(path: bytes) -> bytes:
    """A weights file with the official model's layout and pinned shapes, about 100 kB: every tensor is one
    zero expanded to its shape (torch.save keeps the one-element storage). `weights import` and `weights
    verify` accept it; it cannot score anything."""
    import torch

    from qualiclip_cli.core.model import weights as W
    from qualiclip_cli.core.model.architecture import RN50, ModifiedResNet

    with torch.device("meta"):
        shapes = {f"clip_model.visual.{k}": tuple(v.shape) for k, v in ModifiedResNet(RN50).state_dict().items()}
    shapes.update(W.QUALICLIP.expected_shapes)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        torch.save({key: torch.zeros(()).expand(shape) for key, shape in shapes.items()}, fh)
    return path


def _one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_weights_verify_import_and_path_with_non_utf8_names(tmp_path):
    base = os.fsencode(tmp_path)
    source = _official_shaped_weights(os.path.join(base, b"dl\xe9\nfolder", b"qualiclip-caf\xe9.pth"))
    home = os.path.join(base, b"h\xe9me\x1b[31m")
    installed = os.path.join(home, b"qualiclip.pth")
    env = {"QUALICLIP_HOME": os.fsdecode(home)}
    with open(source, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()

    shown = names.display(os.fsdecode(source))
    verified = _q("weights", "verify", os.fsdecode(source), env=env)
    assert _one_line(verified.stdout) == f"{shown}: ok (sha256 {digest})"

    assert _one_line(_q("weights", "path", env=env).stdout) == names.display(os.fsdecode(installed))
    imported = _q("weights", "import", os.fsdecode(source), env=env)
    assert _one_line(imported.stdout) == names.display(os.fsdecode(installed))
    assert digest in imported.stderr
    with open(installed, "rb") as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == digest  # the file itself, under the exact bytes name
    assert sorted(os.listdir(home)) == sorted([b"qualiclip.pth", b"qualiclip.pth.sha256"]), os.listdir(home)

    again = _q("weights", "verify", env=env)  # the installed file, in a folder whose name is not UTF-8
    assert _one_line(again.stdout) == f"{names.display(os.fsdecode(installed))}: ok (sha256 {digest})"


def _weights_copy(tiny_weights_file, folder: bytes, name: bytes) -> str:
    """The tiny weights under folder/name (bytes); returns the path as Python holds it."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(tiny_weights_file, "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    return os.fsdecode(path)


# A weights file name that is not UTF-8, holds markup and an escape: its label is the file name.
HOSTILE_WEIGHTS = b"w\xe9[b]\x1b.pth"


def test_evaluate_synthetic_over_non_utf8_photos_and_weights(tmp_path, tiny_weights_file):
    base = os.fsencode(tmp_path)
    held_out = os.path.join(base, b"held\xe9out")
    os.makedirs(held_out)
    for name, image in zip((b"caf\xe9.jpg", b"new\nline.jpg", b"plain.jpg"), IMAGES):
        natural_image(image).save(os.fsdecode(os.path.join(held_out, name)), format="JPEG", quality=90)
    with open(os.path.join(held_out, b"broken\xff\n\x1b[2J.jpg"), "wb") as fh:
        fh.write(b"not a JPEG at all")
    weights = _weights_copy(tiny_weights_file, os.path.join(base, b"m\xe9dels"), HOSTILE_WEIGHTS)
    label = os.fsdecode(HOSTILE_WEIGHTS)
    args = ("evaluate", "--synthetic", os.fsdecode(held_out), "--weights", weights, "--weights", tiny_weights_file,
            "--crop-size", "48", "--crops", "1", "--distortions", "jpeg,gaublur")

    as_json = _q(*args, "--format", "json")
    data = json.loads(as_json.stdout)
    assert [r["weights"] for r in data["results"]] == [label, "tiny.pth"]  # the exact name, back from the JSON
    assert all(r["images"] == 3 for r in data["results"])
    assert "NaN" not in as_json.stdout and "Infinity" not in as_json.stdout
    warnings = [line for line in as_json.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "broken\\xff\\n\\x1b[2J.jpg" in warnings[0], as_json.stderr

    table = _q(*args, "--format", "text")
    assert "w\\xe9[b]\\x1b.pth" in table.stdout  # escaped, and [b] not read as markup


def test_evaluate_mos_reads_names_as_raw_bytes_or_escapes(tmp_path, tiny_weights_file):
    folder = os.path.join(os.fsencode(tmp_path), b"m\xe9s")
    os.makedirs(folder)
    photos = (b"caf\xe9.jpg", b"r\xf6ck.jpg", b"new\nline.jpg", b"back\\slash.jpg", b"plain.jpg")
    for name, image in zip(photos, IMAGES):
        natural_image(image).save(os.fsdecode(os.path.join(folder, name)), format="JPEG", quality=90)
    table = os.path.join(folder, b"ratings \xe9.csv")
    with open(table, "wb") as fh:
        fh.write(b"path,mos\n"
                 b"caf\xe9.jpg,1.0\n"  # the name's own bytes (not UTF-8)
                 b"r\\udcf6ck.jpg,2.0\n"  # the escape machine formats write for an undecodable byte
                 b'"new\nline.jpg",3.0\n'  # a quoted cell holding a newline
                 b"back\\slash.jpg,3.5\n"  # a backslash that starts no escape is itself
                 + os.path.join(folder, b"plain.jpg") + b",4.0\n"  # absolute, in a folder that is not UTF-8
                 b"gone\xe9.jpg,5.0\n")  # missing: skipped with a warning
    weights = _weights_copy(tiny_weights_file, os.path.join(os.fsencode(tmp_path), b"m\xe9dels"), HOSTILE_WEIGHTS)

    result = _q("evaluate", "--mos", os.fsdecode(table), "--weights", weights, "--format", "csv")
    header, row = [[names.csv_text(cell) for cell in r] for r in csv.reader(io.StringIO(result.stdout))]
    assert len(result.stdout.splitlines()) == 2
    assert header == ["weights", "n", "srcc", "plcc", "failed"]
    assert row[0] == os.fsdecode(HOSTILE_WEIGHTS)  # the exact name, back from the csv cell
    assert (row[1], row[4]) == ("5", "1"), result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "gone\\xe9.jpg" in warnings[0], result.stderr


def test_train_and_preview_over_non_utf8_names(tmp_path, tiny_weights_file):
    import torch

    from qualiclip_cli.core.model import layout

    base = os.fsencode(tmp_path)
    pristine = os.path.join(base, b"pristine\xe9")
    os.makedirs(pristine)
    photos = (b"caf\xe9.jpg", b"new\nline.jpg", b"plain.jpg")
    for name, image in zip(photos, IMAGES):
        natural_image(image).save(os.fsdecode(os.path.join(pristine, name)), format="JPEG", quality=90)
    with open(os.path.join(pristine, b"bad\xff\n\x1b[2J.jpg"), "wb") as fh:
        fh.write(b"not a JPEG at all")
    init = _weights_copy(tiny_weights_file, os.path.join(base, b"in\xe9t"), b"[bold]start\xe9.pth")
    out = os.path.join(base, b"run\xe9[b]\n\x1b[31m")

    # 2 steps of 2 photos: one pass over the 4 files, so the unreadable one is met (and warned about) once.
    trained = _q("train", "--pristine", os.fsdecode(pristine), "--out", os.fsdecode(out), "--init", init,
                 "--steps", "2", "--batch-size", "2", "--crop-size", "48", "--workers", "0", "--max-side", "0",
                 "--distortions", "jpeg,gaublur", "--log-every", "1", "--checkpoint-every", "1")
    weights = os.path.join(out, b"qualiclip-finetuned.pth")
    assert trained.stdout == names.display(os.fsdecode(weights)) + "\n"
    assert f"Training from file weights ({names.display(init)}) on 4 photos" in trained.stderr  # [bold] shown
    assert f"checkpoint at step 1: {names.display(os.fsdecode(os.path.join(out, b'checkpoint.pt')))}\n" in trained.stderr
    assert f"; weights: {names.display(os.fsdecode(weights))}\n" in trained.stderr
    warnings = [line for line in trained.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "bad\\xff\\n\\x1b[2J.jpg" in warnings[0], trained.stderr

    # What the run writes names every file exactly, in valid UTF-8.
    def read_json(name):
        with open(os.path.join(out, name), "rb") as fh:
            return json.loads(fh.read().decode("utf-8"))

    config, summary = read_json(b"config.json"), read_json(b"summary.json")
    assert config["pristine"] == [os.fsdecode(pristine)] and config["out_dir"] == os.fsdecode(out)
    assert summary["init"]["path"] == init and summary["images"] == 4
    with open(os.path.join(out, b"log.jsonl"), "rb") as fh:
        assert [json.loads(line)["step"] for line in fh.read().decode("utf-8").splitlines()] == [1, 2]
    with open(os.path.join(out, b"checkpoint.pt"), "rb") as fh:
        state = torch.load(fh, weights_only=True)
    assert sorted(os.fsencode(p) for p in state["data_order"]["files"]) == sorted(
        os.path.join(pristine, name) for name in (*photos, b"bad\xff\n\x1b[2J.jpg"))
    assert os.fsencode(state["init"]["path"]) == os.fsencode(init)
    layout.validate_weights(layout.load_weights_dict(os.fsdecode(weights)), "trained")  # loads by its bytes name

    grid = os.path.join(base, b"grid\xe9\n.png")
    shown = _q("train", "preview", "--pristine", os.fsdecode(os.path.join(pristine, b"new\nline.jpg")),
               "--out", os.fsdecode(grid), "--crop-size", "48", "--distortions", "jpeg")
    assert shown.stdout == names.display(os.fsdecode(grid)) + "\n"
    assert _one_line(shown.stderr).startswith(names.display(os.fsdecode(os.path.join(pristine, b"new\nline.jpg"))))
    with open(grid, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("command", ["train", "train preview", "evaluate", "weights", "weights import",
                                     "weights verify", "weights path", "weights download"])
def test_help_of_the_training_and_weights_commands_on_an_ascii_stream(command):
    # A stream that takes only ASCII (a POSIX terminal, a log): the help is written escaped, never crashes.
    shown = _q(*command.split(), "--help", env={"PYTHONIOENCODING": "ascii"})
    assert "Usage:" in shown.stdout and shown.stdout.isascii()
    assert "SPEC" not in shown.stdout


def test_weights_download_into_a_folder_whose_name_is_not_utf8(tmp_path):
    from http_server import FileServer

    base = os.fsencode(tmp_path)
    with open(_official_shaped_weights(os.path.join(base, b"src", b"qualiclip.pth")), "rb") as fh:
        body = fh.read()
    home = os.path.join(base, b"cach\xe9\n")
    with FileServer() as server:  # on 127.0.0.1, in this process
        server.files["/qualiclip.pth"] = body
        env = {"QUALICLIP_HOME": os.fsdecode(home), "QUALICLIP_OFFLINE": "",
               "QUALICLIP_WEIGHTS_URL": server.url("/qualiclip.pth")}
        fetched = _q("weights", "download", env=env)
    installed = os.path.join(home, b"qualiclip.pth")
    assert _one_line(fetched.stdout) == names.display(os.fsdecode(installed))
    with open(installed, "rb") as fh:
        assert fh.read() == body
    assert hashlib.sha256(body).hexdigest() in fetched.stderr


def test_a_clip_safetensors_file_whose_name_is_not_utf8_loads(tmp_path):
    # `train --init FILE.safetensors` (and --init openai's cached file) go through this reader.
    import torch
    from safetensors.torch import save

    from training.init_weights import load_clip_safetensors

    from tiny_weights import tiny_clip_state_dict

    state = tiny_clip_state_dict(0)
    path = os.path.join(os.fsencode(tmp_path), b"rn50-caf\xe9\n.safetensors")
    with open(path, "wb") as fh:
        fh.write(save({key: value.contiguous() for key, value in state.items()}))
    loaded = load_clip_safetensors(os.fsdecode(path))
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_the_download_announcement_names_a_hostile_cache_folder_as_text(tmp_path):
    from cli_support import make_photo_dir

    home = tmp_path / "h\xe9[bold]me\x1b[31m"
    photos = make_photo_dir(tmp_path / "shoot", names=("astronaut",))
    proc = run_process("score", photos[0], env={"QUALICLIP_HOME": str(home), "QUALICLIP_OFFLINE": "",
                                                "QUALICLIP_WEIGHTS_URL": "http://127.0.0.1:9/qualiclip.pth"})
    assert proc.returncode == 1  # the refused port: a one-line error after the announcement
    [line] = [x for x in proc.stderr.splitlines() if "Weights not found" in x]
    assert "h\xe9[bold]me\\x1b[31m" in line and "\x1b" not in proc.stderr
