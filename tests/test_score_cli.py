"""`qualiclip score` end to end: golden scores through the CLI, orientation, odd inputs, formats, cache."""

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from qualiclip_cli.commands.formats import read_records

from cli_support import jsonl_rows as _jsonl
from cli_support import make_photo_dir, natural_image, run_cli, run_process


def test_golden_scores_through_cli(golden):
    reference = json.loads((golden / "golden.json").read_text())
    result = run_cli("score", golden / "images", "--max-side", "0", "--format", "jsonl", "--details",
                     "--weights", golden / "tiny_qualiclip.pth", "--no-cache")
    assert result.exit_code == 0, result.stderr
    rows = _jsonl(result.stdout)
    assert [os.path.basename(r["path"]) for r in rows] == sorted(reference["images"])
    for row in rows:
        ref = reference["images"][os.path.basename(row["path"])]
        assert list(row) == ["path", "score", "status", "error", "width", "height", "pairs", "weights_sha256",
                             "identity", "source"]
        assert row["source"] == "file"
        assert row["status"] == "ok" and row["error"] is None
        assert [row["width"], row["height"]] == ref["size"]
        assert abs(row["score"] - ref["score"]) <= 1e-5
        assert list(row["pairs"]) == ["overall", "sharpness", "edges", "resolution", "noise", "quality", "picture"]
        assert np.allclose(list(row["pairs"].values()), ref["pair_probs"], atol=1e-4, rtol=0)


def test_default_policy_downscales_to_1024(tmp_path, tiny_weights_file):
    natural_image("astronaut", size=(1500, 1100)).save(tmp_path / "big.png")
    natural_image("coffee", size=(200, 100)).save(tmp_path / "small.png")
    result = run_cli("score", tmp_path, "--format", "jsonl", "--weights", tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    sizes = {os.path.basename(r["path"]): (r["width"], r["height"]) for r in _jsonl(result.stdout)}
    assert sizes == {"big.png": (1024, 751), "small.png": (200, 100)}  # never upscaled


def test_exif_orientation_is_applied(tmp_path, tiny_weights_file):
    image = natural_image("chelsea", size=(120, 80))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90° clockwise
    image.save(tmp_path / "tagged.png", exif=exif.tobytes())
    image.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "rotated.png")
    result = run_cli("score", tmp_path, "--format", "jsonl", "--max-side", "0", "--weights", tiny_weights_file)
    rows = {os.path.basename(r["path"]): r for r in _jsonl(result.stdout)}
    assert (rows["tagged.png"]["width"], rows["tagged.png"]["height"]) == (80, 120)
    assert rows["tagged.png"]["score"] == pytest.approx(rows["rotated.png"]["score"], abs=1e-7)
    # and it really depends on orientation: the unrotated pixels score differently
    image.save(tmp_path / "plain.png")
    rows = {os.path.basename(r["path"]): r for r in _jsonl(
        run_cli("score", tmp_path / "plain.png", "--format", "jsonl", "--max-side", "0", "--weights", tiny_weights_file).stdout)}
    assert abs(rows["plain.png"]["score"] - rows_score(tmp_path, tiny_weights_file)) > 1e-6


def rows_score(tmp_path, weights):
    out = run_cli("score", tmp_path / "rotated.png", "--format", "jsonl", "--max-side", "0", "--weights", weights)
    return _jsonl(out.stdout)[0]["score"]


def _odd_inputs(root):
    root.mkdir()
    natural_image("astronaut").save(root / "good.jpg")
    (root / "empty.jpg").write_bytes(b"")
    good = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "notes.png").write_text("this is not an image\n")
    natural_image("coffee", size=(10, 10)).save(root / "tiny.png")
    (root / "garbage.webp").write_bytes(os.urandom(512))
    return ["empty.jpg", "garbage.webp", "notes.png", "tiny.png", "truncated.jpg"]


def test_odd_inputs_give_error_rows_and_exit_3(tmp_path, tiny_weights_file):
    bad = _odd_inputs(tmp_path / "photos")
    proc = run_process("score", tmp_path / "photos", "--format", "jsonl", "--weights", tiny_weights_file)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    rows = {os.path.basename(r["path"]): r for r in _jsonl(proc.stdout)}
    assert rows["good.jpg"]["status"] == "ok"
    for name in bad:
        assert rows[name]["status"] == "error" and rows[name]["score"] is None
        assert rows[name]["error"] and "\n" not in rows[name]["error"]
        assert name in proc.stderr  # a one-line warning naming the file


def test_missing_path_among_others_is_an_error_row_warned_once(tmp_path, tiny_weights_file):
    make_photo_dir(tmp_path / "p", names=("astronaut",))
    result = run_cli("score", tmp_path / "p", tmp_path / "nope.jpg", "--format", "jsonl", "--weights", tiny_weights_file)
    assert result.exit_code == 3
    assert [r["status"] for r in _jsonl(result.stdout)] == ["ok", "error"]
    assert result.stderr.count("nope.jpg") == 1  # warned by the walk, not again for its error row


def test_missing_path_is_reported_before_the_weights_are_looked_for(tmp_path):
    """A typo must not cost a model load: with weights that do not exist, the walk's message still wins."""
    make_photo_dir(tmp_path / "p", names=("astronaut",))
    missing_weights = tmp_path / "no-such-weights.pth"
    alone = run_process("score", tmp_path / "typo", "--weights", missing_weights)
    assert alone.returncode == 1, alone.stderr
    assert alone.stderr.strip().splitlines() == [f"qualiclip: error: {tmp_path / 'typo'}: no such file or directory"]
    # Among paths that hold images it is warned about before the weights are resolved, and the run goes on.
    among = run_process("score", tmp_path / "typo", tmp_path / "p", "--weights", missing_weights)
    lines = among.stderr.strip().splitlines()
    assert among.returncode == 1 and len(lines) == 2, among.stderr
    assert lines[0] == f"warning: {tmp_path / 'typo'}: no such file or directory"
    assert "no-such-weights.pth" in lines[1] and "Traceback" not in among.stderr


@pytest.mark.parametrize("command", [["score"], ["cull", "--below", "0.5"], ["sort"], ["tag"]])
def test_a_walk_without_images_fails_fast_naming_what_it_found(tmp_path, command):
    shoot = tmp_path / "videos"
    shoot.mkdir()
    for name in ("MVI_1.MOV", "MVI_2.MOV", "MVI_3.MP4", "MVI_3.THM", ".DS_Store"):
        (shoot / name).write_bytes(b"video")
    result = run_cli(*command, shoot, "--weights", tmp_path / "no-such-weights.pth")
    assert result.exit_code == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"qualiclip: error: no images in {shoot}: 4 files with other extensions (.MOV, .MP4, .THM), 1 hidden file"]
    assert result.stdout == ""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(*command, empty, "--weights", tmp_path / "no-such-weights.pth")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"qualiclip: error: no images in {empty}: no files there"


def test_an_empty_folder_starts_no_download(tmp_path):
    """An empty folder must not start the weights download: the server sees no request. With a photo it does
    (the control: the download is really reachable in this setup)."""
    from http_server import FileServer
    from tiny_weights import write_tiny_weights

    weights = write_tiny_weights(tmp_path / "tiny.pth", seed=0)
    (tmp_path / "empty").mkdir()
    with FileServer() as server:
        server.files["/qualiclip.pth"] = weights.read_bytes()
        env = {"QUALICLIP_HOME": str(tmp_path / "home"), "QUALICLIP_WEIGHTS_URL": server.url("/qualiclip.pth"),
               "QUALICLIP_OFFLINE": "0", "QUALICLIP_WEIGHTS": ""}
        nothing = run_process("score", tmp_path / "empty", env=env)
        assert nothing.returncode == 1 and "no images in" in nothing.stderr
        assert server.requests == 0 and not (tmp_path / "home").exists()
        make_photo_dir(tmp_path / "p", names=("astronaut",))
        run_process("score", tmp_path / "p", "--format", "jsonl", env=env)  # (tiny weights fail the real shapes)
        assert server.requests == 1


def test_camera_extensions_are_scored(tmp_path, tiny_weights_file):
    import pillow_heif

    pillow_heif.register_heif_opener()
    shoot = tmp_path / "camera"
    shoot.mkdir()
    image = natural_image("astronaut")
    image.save(shoot / "A.HIF", format="HEIF")
    image.save(shoot / "B.MPO", format="MPO", save_all=True, append_images=[natural_image("coffee")])
    image.save(shoot / "C.jpe", format="JPEG", quality=95)
    image.save(shoot / "D.JFIF", format="JPEG", quality=95)
    result = run_cli("score", shoot, "--format", "jsonl", "--weights", tiny_weights_file, "--no-cache")
    assert result.exit_code == 0, result.stderr
    rows = _jsonl(result.stdout)
    assert [os.path.basename(r["path"]) for r in rows] == ["A.HIF", "B.MPO", "C.jpe", "D.JFIF"]
    assert all(r["status"] == "ok" and (r["width"], r["height"]) == image.size for r in rows)


def test_summary_counts_what_the_walk_skipped(tmp_path, tiny_weights_file):
    make_photo_dir(tmp_path / "p", names=("astronaut",))
    (tmp_path / "p" / "IMG_0000.xmp").write_text("<x/>")
    (tmp_path / "p" / ".thumbs").mkdir()
    result = run_cli("score", tmp_path / "p", "--format", "jsonl", "--weights", tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("qualiclip: 1 scored")
    assert summary.endswith("; skipped 1 file with another extension (.xmp), 1 hidden folder")


def _score_stdin(args, data: bytes, cwd, weights):
    env = dict(os.environ, QUALICLIP_HOME=str(cwd / "home"))
    return subprocess.run([sys.executable, "-m", "qualiclip_cli", "score", *args, "--format", "jsonl",
                           "--weights", str(weights)], input=data, capture_output=True, cwd=cwd, env=env,
                          timeout=120)


def test_paths_from_stdin_and_files_from(tmp_path, tiny_weights_file):
    image = natural_image("astronaut")
    image.save(tmp_path / "with space.jpg")
    odd = b"caf\xe9.jpg"  # not UTF-8: any byte string is a name
    image.save(os.path.join(os.fsencode(tmp_path), odd), format="JPEG")
    (tmp_path / "line\nbreak.jpg").write_bytes((tmp_path / "with space.jpg").read_bytes())

    proc = _score_stdin(["-"], b"with space.jpg\n\n" + odd + b"\nmissing.jpg\n", tmp_path, tiny_weights_file)
    assert proc.returncode == 3, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]
    assert rows[0]["path"] == "with space.jpg" and os.fsencode(rows[1]["path"]) == odd
    assert rows[2]["path"] == "missing.jpg" and rows[2]["error"] == "no such file or directory"

    proc = _score_stdin(["-0", "--files-from", "-"], b"line\nbreak.jpg\0with space.jpg\0", tmp_path, tiny_weights_file)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["path"] for line in proc.stdout.decode().splitlines()] == ["line\nbreak.jpg", "with space.jpg"]

    (tmp_path / "list.txt").write_bytes(b"with space.jpg\n")
    proc = _score_stdin([str(tmp_path / "line\nbreak.jpg"), "--files-from", str(tmp_path / "list.txt")], b"",
                        tmp_path, tiny_weights_file)
    assert proc.returncode == 0, proc.stderr
    assert [os.path.basename(json.loads(line)["path"]) for line in proc.stdout.decode().splitlines()] == [
        "line\nbreak.jpg", "with space.jpg"]  # the PATHs first, then the list


def test_path_list_mistakes_fail_fast(tmp_path):
    weights = tmp_path / "no-such-weights.pth"
    empty = _score_stdin(["-"], b"\n\n", tmp_path, weights)
    assert empty.returncode == 1 and b"no paths were given" in empty.stderr and b"weights" not in empty.stderr
    missing = _score_stdin(["--files-from", str(tmp_path / "nolist.txt")], b"", tmp_path, weights)
    assert missing.returncode == 2 and b"nolist.txt: no such file or directory" in missing.stderr
    twice = _score_stdin(["-", "--files-from", "-"], b"a.jpg\n", tmp_path, weights)
    assert twice.returncode == 2 and b"stdin can be read only once" in twice.stderr
    nothing = run_cli("score")
    assert nothing.exit_code == 2 and "no PATH given" in nothing.stderr


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_formats_parse_back(tmp_path, tiny_weights_file, fmt):
    make_photo_dir(tmp_path / "p")
    (tmp_path / "p" / "broken.jpg").write_bytes(b"\xff\xd8broken")
    result = run_cli("score", tmp_path / "p", "--format", fmt, "--details", "--weights", tiny_weights_file)
    assert result.exit_code == 3
    records = read_records(result.stdout, fmt)
    assert len(records) == 5
    ok = [r for r in records if r.ok]
    assert len(ok) == 4 and all(0.0 <= r.score <= 1.0 and len(r.pairs) == 7 for r in ok)
    assert [r.status for r in records if not r.ok] == ["error"]
    out_file = tmp_path / f"results.{fmt}"
    result = run_cli("score", tmp_path / "p", "--details", "--output", out_file, "--weights", tiny_weights_file)
    assert read_records(out_file.read_text(), fmt) == records  # format chosen from the extension


def test_sort_orders(tmp_path, tiny_weights_file):
    make_photo_dir(tmp_path / "p")
    best_first = _jsonl(run_cli("score", tmp_path / "p", "--format", "jsonl", "--sort", "-score", "--weights", tiny_weights_file).stdout)
    scores = [r["score"] for r in best_first]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    ascending = _jsonl(run_cli("score", tmp_path / "p", "--format", "jsonl", "--sort", "score", "--weights", tiny_weights_file).stdout)
    assert [r["score"] for r in ascending] == sorted(scores)


def test_equal_scores_rank_the_same_in_score_and_sort(tmp_path, tiny_weights_file):
    """One ranking: `score --sort -score` lists ties in the order `sort` ranks them; `--sort score` reverses it."""
    make_photo_dir(tmp_path / "p", names=("coffee", "astronaut", "astronaut", "chelsea", "astronaut"))
    common = ("--format", "jsonl", "--weights", tiny_weights_file)
    best = _jsonl(run_cli("score", tmp_path / "p", "--sort", "-score", *common).stdout)
    scores = [r["score"] for r in best]
    assert len(set(scores)) < len(scores)  # the three identical photos tie
    ranking = _jsonl(run_cli("sort", tmp_path / "p", *common).stdout)
    assert [r["path"] for r in best] == [r["path"] for r in ranking]
    worst = _jsonl(run_cli("score", tmp_path / "p", "--sort", "score", *common).stdout)
    assert [r["path"] for r in worst] == [r["path"] for r in reversed(best)]


def test_table_output_and_usage_errors(tmp_path, tiny_weights_file):
    make_photo_dir(tmp_path / "p", names=("astronaut",))
    result = run_cli("score", tmp_path / "p", "--format", "table", "--weights", tiny_weights_file, env={"COLUMNS": "300"})
    assert result.exit_code == 0 and "IMG_0000.jpg" in result.stdout and "score" in result.stdout
    assert run_cli("score", tmp_path / "p", "--sort", "size").exit_code == 2
    assert run_cli("score", tmp_path / "p", "--max-side", "huge").exit_code == 2
    assert run_cli("score", tmp_path / "p", "--format", "xml").exit_code == 2


def test_missing_weights_offline_is_one_line_error(tmp_path):
    make_photo_dir(tmp_path / "p", names=("astronaut",))
    proc = run_process("score", tmp_path / "p", env={"QUALICLIP_HOME": str(tmp_path / "home"), "QUALICLIP_OFFLINE": "1"})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "qualiclip weights import" in proc.stderr
    assert len([l for l in proc.stderr.splitlines() if "error" in l]) == 1


def test_cache_hit_decodes_nothing_and_returns_same_numbers(tmp_path, tiny_weights_file, monkeypatch):
    make_photo_dir(tmp_path / "p")
    first = _jsonl(run_cli("score", tmp_path / "p", "--format", "jsonl", "--details", "--weights", tiny_weights_file).stdout)

    import qualiclip_cli.core.images.decode as decode

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file that was cached")

    monkeypatch.setattr(decode, "decode_image", no_decoding)
    second = run_cli("score", tmp_path / "p", "--format", "jsonl", "--details", "--weights", tiny_weights_file)
    assert second.exit_code == 0, second.stderr
    assert _jsonl(second.stdout) == first
    assert "4 from cache" in second.stderr


def test_cache_invalidation(tmp_path, tiny_weights_file, monkeypatch):
    from tiny_weights import write_tiny_weights

    paths = make_photo_dir(tmp_path / "p")
    run_cli("score", tmp_path / "p", "--format", "jsonl", "--weights", tiny_weights_file)
    import qualiclip_cli.core.images.decode as decode

    real = decode.decode_image
    decoded = []

    def counting(path, *args, **kwargs):
        decoded.append(os.path.basename(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(decode, "decode_image", counting)
    natural_image("camera").save(paths[0], quality=92)  # content (size/mtime) changes
    run_cli("score", tmp_path / "p", "--format", "jsonl", "--weights", tiny_weights_file)
    assert decoded == ["IMG_0000.jpg"]
    decoded.clear()
    run_cli("score", tmp_path / "p", "--format", "jsonl", "--max-side", "64", "--weights", tiny_weights_file)
    assert len(decoded) == 4  # another policy
    decoded.clear()
    other = write_tiny_weights(tmp_path / "other.pth", seed=3)
    run_cli("score", tmp_path / "p", "--format", "jsonl", "--weights", other)
    assert len(decoded) == 4  # other weights
    decoded.clear()
    run_cli("score", tmp_path / "p", "--format", "jsonl", "--weights", other, "--rescore")
    assert len(decoded) == 4
    decoded.clear()
    run_cli("score", tmp_path / "p", "--format", "jsonl", "--weights", other, "--precision", "fp32", "--no-cache")
    assert len(decoded) == 4


def test_no_cache_writes_nothing(tmp_path, tiny_weights_file, isolated_home):
    make_photo_dir(tmp_path / "p", names=("astronaut",))
    run_cli("score", tmp_path / "p", "--format", "jsonl", "--no-cache", "--weights", tiny_weights_file)
    assert not (isolated_home / "results.sqlite3").exists()


def test_concurrent_runs_share_the_cache(tmp_path, tiny_weights_file, isolated_home):
    make_photo_dir(tmp_path / "p", names=("astronaut", "coffee", "chelsea", "rocket", "camera", "coins"))
    cmd = [sys.executable, "-m", "qualiclip_cli", "score", str(tmp_path / "p"), "--format", "jsonl",
           "--weights", str(tiny_weights_file)]
    env = dict(os.environ)
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    assert _jsonl(outs[0][0]) == _jsonl(outs[1][0])
    db = sqlite3.connect(isolated_home / "results.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 6


def test_nvjpeg_decoder_path_matches_pillow_and_falls_back(tmp_path, tiny_weights_file):
    """The batched-JPEG decoder path (torchvision's libjpeg-turbo here, nvjpeg on CUDA) scores like Pillow,
    caches under its own identity, and hands files it does not take (PNG, a broken JPEG) to Pillow."""
    make_photo_dir(tmp_path / "p")
    natural_image("camera", size=(100, 90)).save(tmp_path / "p" / "gray.png")
    (tmp_path / "p" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    common = ["--format", "jsonl", "--weights", tiny_weights_file, "--no-jpeg-draft"]
    pillow = run_cli("score", tmp_path / "p", "--decoder", "pillow", *common)
    batched = run_cli("score", tmp_path / "p", "--decoder", "nvjpeg", *common)
    assert pillow.exit_code == batched.exit_code == 3
    a, b = _jsonl(pillow.stdout), _jsonl(batched.stdout)
    assert [r["path"] for r in a] == [r["path"] for r in b]
    assert [r["status"] for r in b] == ["ok"] * 4 + ["error", "ok"]  # IMG_0000..3, broken.jpg, gray.png
    for x, y in zip(a, b):
        assert (x["width"], x["height"]) == (y["width"], y["height"])
        if x["status"] == "ok":
            assert abs(x["score"] - y["score"]) < 1e-3
    assert "from cache" not in batched.stderr  # another decoder is another scoring identity
    assert run_cli("score", tmp_path / "p", "--decoder", "turbo", *common).exit_code == 2


def test_batches_hold_equal_shapes_only_and_keep_scores(tmp_path, tiny_weights_file):
    root = tmp_path / "p"
    root.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea", "rocket", "camera")):
        natural_image(name, size=(96, 72) if i % 2 else (64, 80)).save(root / f"{i}.png")
    common = ["--format", "jsonl", "--no-cache", "--weights", tiny_weights_file, "--max-side", "0"]
    one = _jsonl(run_cli("score", root, "--batch-size", "1", *common).stdout)
    batched = _jsonl(run_cli("score", root, "--batch-size", "4", *common).stdout)
    assert [r["path"] for r in one] == [r["path"] for r in batched] == sorted(r["path"] for r in one)
    for x, y in zip(one, batched):
        assert abs(x["score"] - y["score"]) < 1e-5 and (x["width"], x["height"]) == (y["width"], y["height"])


def test_inline_decoding_gives_the_same_records(tmp_path, tiny_weights_file):
    make_photo_dir(tmp_path / "p")
    (tmp_path / "p" / "broken.jpg").write_bytes(b"\xff\xd8broken")
    common = ["--format", "jsonl", "--no-cache", "--weights", tiny_weights_file]
    threaded = run_cli("score", tmp_path / "p", "--workers", "3", *common)
    inline = run_cli("score", tmp_path / "p", "--workers", "0", *common)
    assert threaded.exit_code == inline.exit_code == 3
    assert _jsonl(threaded.stdout) == _jsonl(inline.stdout)


@pytest.fixture(scope="module")
def nan_weights_file(tiny_weights_file, tmp_path_factory):
    """The tiny weights with one NaN in the attention pool's output projection: every score is NaN, as
    diverged fine-tuned weights give."""
    import torch

    weights = torch.load(tiny_weights_file, weights_only=True)
    weights["clip_model.visual.attnpool.c_proj.weight"][0, 0] = float("nan")
    path = tmp_path_factory.mktemp("nan") / "nan.pth"
    torch.save(weights, path)
    return path


def test_nan_score_is_an_error_row_never_cached(tmp_path, nan_weights_file, isolated_home):
    make_photo_dir(tmp_path / "p", names=("astronaut", "coffee"))
    result = run_cli("score", tmp_path / "p", "--format", "jsonl", "--details", "--weights", nan_weights_file)
    assert result.exit_code == 3, result.stderr
    assert "NaN" not in result.stdout.replace("the model produced NaN", "")  # no NaN value in the JSON
    rows = _jsonl(result.stdout)  # strict JSON: json.loads would accept NaN, so check the text above too
    assert [(r["status"], r["score"], r["pairs"]) for r in rows] == [("error", None, None)] * 2
    assert all(r["error"].startswith("the model produced NaN") for r in rows)
    assert result.stderr.count("the model produced NaN") == 2  # one warning per file
    out = tmp_path / "out.jsonl"
    result = run_cli("score", tmp_path / "p", "-o", out, "--weights", nan_weights_file)
    assert result.exit_code == 3
    assert "NaN" not in out.read_text().replace("the model produced NaN", "")
    assert [r["status"] for r in _jsonl(out.read_text())] == ["error"] * 2
    db = sqlite3.connect(isolated_home / "results.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0
    db.close()


def test_cull_below_never_silently_keeps_a_nan(tmp_path, nan_weights_file):
    make_photo_dir(tmp_path / "p", names=("astronaut", "coffee"))
    result = run_cli("cull", tmp_path / "p", "--below", "1.0", "--action", "move", "--weights", nan_weights_file)
    assert result.exit_code == 3, result.stderr  # not "nothing to do", exit 0
    assert result.stderr.count("the model produced NaN") >= 2
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["IMG_0000.jpg", "IMG_0001.jpg"]
