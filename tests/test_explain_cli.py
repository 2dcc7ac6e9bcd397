"""`qualiclip explain`: the maps through the CLI add up to the logits whose sigmoids `score --details` reports,
worst regions in original (oriented) coordinates, PNGs that never replace a file, error rows like `score`'s."""

import json
import math
import os

import numpy as np
from PIL import Image

from cli_support import jsonl_rows, natural_image, run_cli

PAIRS = ["overall", "sharpness", "edges", "resolution", "noise", "quality", "picture"]


def _explain_json(*args):
    result = run_cli("explain", *args, "--format", "json")
    return result, (json.loads(result.stdout) if result.stdout.strip() else None)


def test_golden_maps_add_up_and_match_score_details(golden):
    weights = golden / "tiny_qualiclip.pth"
    result, rows = _explain_json(golden / "images", "--max-side", "0", "--weights", weights, "--full-precision")
    assert result.exit_code == 0, result.stderr
    scored = run_cli("score", golden / "images", "--max-side", "0", "--details", "--format", "jsonl",
                     "--weights", weights, "--no-cache", "--full-precision")
    assert scored.exit_code == 0, scored.stderr
    by_path = {r["path"]: r for r in jsonl_rows(scored.stdout)}
    assert [r["path"] for r in rows] == list(by_path)  # same walk, same order
    for row in rows:
        assert list(row) == ["path", "status", "error", "score", "width", "height", "original_width",
                             "original_height", "grid", "pairs", "worst_map", "worst", "image"]
        ref = by_path[row["path"]]
        assert row["status"] == "ok" and row["image"] is None  # json alone writes no PNG
        assert abs(row["score"] - ref["score"]) <= 1e-6
        rows_, cols = row["grid"]
        assert (rows_, cols) == (ref["height"] // 32, ref["width"] // 32)
        assert list(row["pairs"]) == PAIRS
        for name, pair in row["pairs"].items():
            cells = np.array(pair["map"])
            assert cells.shape == (rows_, cols)
            assert abs(cells.sum() + pair["constant"] - pair["logit"]) <= 1e-4
            assert abs(1 / (1 + math.exp(-pair["logit"])) - ref["pairs"][name]) <= 1e-5
            assert abs(pair["probability"] - ref["pairs"][name]) <= 1e-6


def test_rounded_json_still_adds_up(golden):
    result, rows = _explain_json(golden / "images" / "rocket.jpg", "--weights", golden / "tiny_qualiclip.pth")
    assert result.exit_code == 0, result.stderr
    for pair in rows[0]["pairs"].values():
        assert abs(sum(map(sum, pair["map"])) + pair["constant"] - pair["logit"]) <= 1e-4


def test_worst_regions_are_boxes_of_the_original_oriented_photo(tmp_path, tiny_weights_file):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 400×200 landscape, shown as a 200×400 portrait
    natural_image("astronaut", size=(400, 200)).save(tmp_path / "tagged.jpg", exif=exif.tobytes(), quality=95)
    result, rows = _explain_json(tmp_path / "tagged.jpg", "--max-side", "128", "--top-k", "4", "--pair", "noise",
                                 "--weights", tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    row = rows[0]
    assert (row["original_width"], row["original_height"]) == (200, 400)
    assert (row["width"], row["height"]) == (64, 128) and row["grid"] == [4, 2]
    assert row["worst_map"] == "noise" and len(row["worst"]) == 4
    cells = np.array(row["pairs"]["noise"]["map"])
    values = [w["value"] for w in row["worst"]]
    assert values == sorted(values) and values == sorted(cells.flatten().tolist())[:4]
    for worst in row["worst"]:
        r, c = np.argwhere(cells == worst["value"])[0]
        # cell (r, c) covers scored pixels [32c, 32c+32) × [32r, 32r+32); the scale to the original is 200/64.
        assert worst["box"] == [math.floor(32 * c * 200 / 64), math.floor(32 * r * 400 / 128),
                                math.ceil(32 * (c + 1) * 200 / 64), math.ceil(32 * (r + 1) * 400 / 128)]
        assert 0 <= worst["box"][0] < worst["box"][2] <= 200 and 0 <= worst["box"][1] < worst["box"][3] <= 400


def test_pngs_error_rows_and_no_file_is_replaced(tmp_path, tiny_weights_file, monkeypatch):
    shoot = tmp_path / "shoot"
    shoot.mkdir()
    natural_image("coffee", size=(160, 96)).save(shoot / "a b.jpg")
    (shoot / "broken.jpg").write_bytes(b"not a jpeg")
    out = shoot / "maps"  # inside the scanned folder
    out.mkdir()
    (out / "a b.explain.png").write_bytes(b"the user's own file")
    monkeypatch.chdir(tmp_path)
    result = run_cli("explain", shoot, "-o", out, "--weights", tiny_weights_file)
    assert result.exit_code == 3, result.stderr
    assert "broken.jpg" in result.stderr and "not an image" in result.stderr
    assert (out / "a b.explain.png").read_bytes() == b"the user's own file"
    written = out / "a b-2.explain.png"
    assert result.stdout == f"{written}\t{shoot / 'a b.jpg'}\n"
    with Image.open(written) as png:
        assert png.size == (160, 96)
    # The maps folder inside the scanned folder is not scanned: the next run explains the same single photo.
    again = run_cli("explain", shoot, "-o", out, "--weights", tiny_weights_file, "--format", "json")
    rows = json.loads(again.stdout)
    assert [os.path.basename(r["path"]) for r in rows] == ["a b.jpg", "broken.jpg"]
    assert rows[1]["status"] == "error" and rows[1]["pairs"] is None and "not an image" in rows[1]["error"]
    assert rows[0]["image"] == str(out / "a b-3.explain.png")


def test_all_pairs_sheet_and_default_folder(tmp_path, tiny_weights_file, monkeypatch):
    natural_image("rocket", size=(128, 96)).save(tmp_path / "r.png")
    monkeypatch.chdir(tmp_path)
    result = run_cli("explain", "r.png", "--all-pairs", "--weights", tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    sheet = tmp_path / "qualiclip-explain" / "r.pairs.png"
    with Image.open(sheet) as png:
        assert png.size == (4 * 128, 2 * (96 + 16))  # eight labelled panels, four to a row
        pixels = np.asarray(png.convert("RGB"))
    # The panels differ (each is its own pair's map), but share the photo underneath.
    first, second = pixels[16:112, :128].astype(int), pixels[16:112, 128:256].astype(int)
    assert np.abs(first - second).max() > 0


def test_help_lists_the_maps_and_gives_examples():
    result = run_cli("explain", "--help")
    assert result.exit_code == 0
    for word in ("sharpness", "picture", "--all-pairs", "Examples", "qualiclip explain photo.jpg"):
        assert word in result.stdout


def test_overlay_reddens_what_pulls_down_and_leaves_zero_cells_alone():
    from qualiclip_cli.core.images.overlay import overlay

    grey = np.full((70, 100, 3), 128, np.uint8)  # a 2×3 grid; the last 6 rows and 4 columns have no cell
    values = np.zeros((2, 3))
    values[0, 0] = -2.0
    values[1, 2] = 1.0
    out = overlay(grey, values).astype(int)
    assert out[5, 5, 0] > 128 + 40 and out[5, 5, 2] < 128 - 40  # strongest negative: red
    assert out[55, 85, 2] > 128 and out[55, 85, 0] < 128  # positive: blue, half as strong
    assert (out[66:, :] == 128).all() and (out[:, 97:] == 128).all()  # no cell there: untouched
    assert (out[50:64, 0:20] == 128).all()  # a zero cell far from the others: untouched
