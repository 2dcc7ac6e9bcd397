"""`qualiclip group`, `score --groups`, `cull --per-group` and `tag --per-group` with tiny random weights and photos
generated here (EXIF written with Pillow). The tiny model's embeddings say little about the pictures, so these
tests group by time and camera (similarity thresholds at -1); test_groups.py covers similarity."""

import os
import xml.etree.ElementTree as ET

from PIL import Image, ImageEnhance

from cli_support import jsonl_rows, natural_image, run_cli
from curation_support import snapshot

ANY_PICTURE = ("--burst-sim", "-1", "--scene-sim", "-1")


def _photo(path, date=None, camera=("Canon", "EOS R5"), bias=None, brightness=1.0, name="astronaut"):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = camera
    ifd = exif.get_ifd(0x8769)
    if date is not None:
        ifd[0x9003] = date
    if bias is not None:
        from PIL.TiffImagePlugin import IFDRational

        ifd[0x9204] = IFDRational(bias, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    ImageEnhance.Brightness(natural_image(name, (64, 48))).enhance(brightness).save(path, exif=exif, quality=90)
    return path


def _shoot(root):
    """Canon: a burst of 3 (14:30:00-02), a pair 5 minutes later; Nikon: one frame during the burst."""
    for i in range(3):
        _photo(root / f"A{i}.jpg", f"2024:06:12 14:30:0{i}", brightness=1 - 0.15 * i)
    _photo(root / "N0.jpg", "2024:06:12 14:30:01", camera=("NIKON", "Z 8"), name="coffee")
    for i in range(2):
        _photo(root / f"B{i}.jpg", f"2024:06:12 14:35:0{i}", brightness=1 - 0.2 * i, name="chelsea")
    return root


def _group(*args, weights):
    result = run_cli("group", *args, "--format", "jsonl", "--weights", weights, *ANY_PICTURE)
    return result, jsonl_rows(result.stdout)


def _by_name(rows):
    return {os.path.basename(r["path"]): r for r in rows}


def test_group_by_time_and_camera_with_every_column(tmp_path, tiny_weights_file):
    result, rows = _group(_shoot(tmp_path / "shoot"), weights=tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    rows = _by_name(rows)
    groups = {}
    for name, row in rows.items():
        groups.setdefault(row["group"], set()).add(name)
    assert sorted(map(sorted, groups.values())) == [["A0.jpg", "A1.jpg", "A2.jpg"], ["B0.jpg", "B1.jpg"], ["N0.jpg"]]
    a = [rows[f"A{i}.jpg"] for i in range(3)]
    assert sorted(r["rank_in_group"] for r in a) == [1, 2, 3]
    best = next(r for r in a if r["best"])
    runner_up = next(r for r in a if r["rank_in_group"] == 2)
    assert best["score"] >= runner_up["score"]
    assert abs(best["margin"] - (best["score"] - runner_up["score"])) < 1e-5
    assert all(r["group_size"] == 3 and r["time_source"] == "exif" and r["bracket"] is False for r in a)
    assert rows["A0.jpg"]["capture_time"] == "2024-06-12T14:30:00"
    assert rows["N0.jpg"]["group_size"] == 1 and rows["N0.jpg"]["margin"] is None
    # Groups together, best first, in capture order.
    order = [os.path.basename(r["path"]) for r in jsonl_rows(result.stdout)]
    assert order.index(best["path"].split("/")[-1]) < min(order.index(f"B{i}.jpg") for i in range(2))
    assert "2 group(s) of 2 or more photos (5 photos), 1 single photo(s)" in result.stderr


def test_grouping_a_scored_library_runs_no_model_and_decodes_nothing(tmp_path, tiny_weights_file, monkeypatch):
    root = _shoot(tmp_path / "shoot")
    first, _ = _group(root, weights=tiny_weights_file)
    assert first.exit_code == 0, first.stderr

    def refuse(*args, **kwargs):
        raise AssertionError("the cached path ran the model or a decoder")

    from qualiclip_cli.core.images import decode
    from qualiclip_cli.core.pipeline.scorer import Scorer

    monkeypatch.setattr(Scorer, "score_and_embed", refuse)
    monkeypatch.setattr(decode, "decode_image", refuse)
    again, _ = _group(root, weights=tiny_weights_file)
    assert again.exit_code == 0, again.stderr
    assert again.stdout == first.stdout  # same groups, same ids, same order
    assert "6 scored (6 from cache)" in again.stderr


def test_a_library_scored_before_the_signals_is_scored_again_for_grouping_only(tmp_path, tiny_weights_file):
    from qualiclip_cli.core.paths import results_cache_path

    root = _shoot(tmp_path / "shoot")
    assert run_cli("score", root, "--weights", tiny_weights_file, "-f", "jsonl").exit_code == 0
    import sqlite3

    with sqlite3.connect(results_cache_path()) as conn:  # as a schema-2 cache migrated: no signals
        conn.execute("UPDATE results SET signals = NULL, embedding = NULL")
    scored = run_cli("score", root, "--weights", tiny_weights_file, "-f", "jsonl")
    assert "6 scored (6 from cache)" in scored.stderr
    grouped, rows = _group(root, weights=tiny_weights_file)
    assert "6 scored, " in grouped.stderr and len({r["group"] for r in rows}) == 3


def test_photos_without_exif_time_group_by_mtime_and_identical_times_do_not_crash(tmp_path, tiny_weights_file):
    root = tmp_path / "shoot"
    for i in range(3):
        path = _photo(root / f"M{i}.jpg", camera=("", ""))
        os.utime(path, ns=(1_700_000_000_000_000_000,) * 2)  # identical (a copy that set every mtime alike)
    _photo(root / "bad.jpg", "0000:00:00 00:00:00", camera=("", ""))
    os.utime(root / "bad.jpg", ns=(1_700_000_900_000_000_000,) * 2)
    result, rows = _group(root, weights=tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    rows = _by_name(rows)
    assert {r["time_source"] for r in rows.values()} == {"mtime"}
    assert len({rows[f"M{i}.jpg"]["group"] for i in range(3)}) == 1
    assert rows["bad.jpg"]["group"] != rows["M0.jpg"]["group"]
    assert rows["M0.jpg"]["capture_time"] == "2023-11-14T22:13:20+00:00"


def test_a_single_photo_an_empty_folder_and_an_unreadable_file(tmp_path, tiny_weights_file):
    one = _photo(tmp_path / "one" / "a.jpg", "2024:06:12 14:30:00")
    (one.parent / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    result, rows = _group(one.parent, weights=tiny_weights_file)
    assert result.exit_code == 3  # the broken file: an error row, the rest grouped
    rows = _by_name(rows)
    assert rows["a.jpg"]["group_size"] == 1 and rows["a.jpg"]["best"] is True
    assert rows["broken.jpg"]["status"] == "error" and rows["broken.jpg"]["group"] is None
    (tmp_path / "empty").mkdir()
    empty = run_cli("group", tmp_path / "empty", "--weights", tiny_weights_file)
    assert empty.exit_code == 1 and "no images" in empty.stderr and "Traceback" not in empty.stderr


def test_score_groups_adds_the_columns_and_csv_carries_them(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "shoot")
    plain = run_cli("score", root, "--weights", tiny_weights_file, "-f", "jsonl")
    assert "group" not in jsonl_rows(plain.stdout)[0]
    grouped = run_cli("score", root, "--groups", "--weights", tiny_weights_file, "-f", "csv", *ANY_PICTURE)
    assert grouped.exit_code == 0, grouped.stderr
    header = grouped.stdout.splitlines()[0].split(",")
    # added fields come last: after the provenance and source columns
    assert header[6:] == ["weights_sha256", "identity", "source", "group", "group_size", "rank_in_group", "best",
                          "margin", "bracket", "capture_time", "time_source"]
    table = run_cli("group", root, "--weights", tiny_weights_file, "-f", "text", *ANY_PICTURE)
    assert "3/3" in table.stdout and "1/3 best" in table.stdout


def test_brackets_are_marked_and_kept_by_a_per_group_cull(tmp_path, tiny_weights_file):
    root = tmp_path / "shoot"
    for i, bias in enumerate((-1, 0, 1)):
        _photo(root / f"X{i}.jpg", f"2024:06:12 14:30:0{i}", bias=bias, brightness=0.6 + 0.4 * i)
    _, rows = _group(root, weights=tiny_weights_file)
    assert all(r["bracket"] for r in rows) and len({r["group"] for r in rows}) == 1
    result = run_cli("cull", root, "--per-group", "--keep-top", "1", "--action", "list", "--format", "jsonl",
                     "--weights", tiny_weights_file, *ANY_PICTURE)
    assert result.exit_code == 0, result.stderr
    assert jsonl_rows(result.stdout) == []


def test_cull_per_group_keep_top_1_keeps_one_per_group_and_undo_restores_the_tree(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot")
    _, rows = _group(root, weights=tiny_weights_file)
    best = {os.path.basename(r["path"]) for r in rows if r["best"]}
    before = snapshot(root.parent, include_dirs=True)
    result = run_cli("cull", root, "--per-group", "--keep-top", "1", "--action", "move",
                     "--weights", tiny_weights_file, *ANY_PICTURE)
    assert result.exit_code == 0, result.stderr
    kept = {p.name for p in root.iterdir() if p.is_file()}
    assert kept == best and len(kept) == 3  # one per group, the single Nikon frame too
    assert {p.name for p in (root / "_rejected").iterdir()} == {"A0.jpg", "A1.jpg", "A2.jpg", "B0.jpg",
                                                                 "B1.jpg"} - best
    undo = run_cli("undo")
    assert undo.exit_code == 0, undo.stderr
    after = snapshot(root.parent, include_dirs=True)
    assert {k: v for k, v in after.items() if not k.startswith("shoot/_rejected")} == before


def test_tag_per_group_writes_keywords_keeps_the_users_and_undo_restores(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "shoot")
    _, rows = _group(root, weights=tiny_weights_file)
    rows = _by_name(rows)
    mine = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
            '<rdf:li>wedding</rdf:li><rdf:li>qualiclip|group|stale</rdf:li></rdf:Bag></dc:subject>'
            '</rdf:Description></rdf:RDF></x:xmpmeta>')
    (root / "A0.xmp").write_text(mine)
    contents = lambda: {k: v[:2] for k, v in snapshot(root).items()}  # undo restores bytes, not mtimes
    before = contents()
    result = run_cli("tag", root, "--per-group", "--weights", tiny_weights_file, *ANY_PICTURE)
    assert result.exit_code == 0, result.stderr

    def bag(sidecar, name):
        ns = {"rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#", "dc": "http://purl.org/dc/elements/1.1/",
              "lr": "http://ns.adobe.com/lightroom/1.0/"}
        return [li.text for li in ET.parse(sidecar).getroot().iterfind(f".//{name}/rdf:Bag/rdf:li", ns)]

    group_a = rows["A0.jpg"]["group"]
    expected_a0 = [f"qualiclip|group|{group_a}"] + (["qualiclip|best"] if rows["A0.jpg"]["best"] else [])
    assert bag(root / "A0.xmp", "dc:subject") == ["wedding", *expected_a0]
    assert bag(root / "A0.xmp", "lr:hierarchicalSubject") == expected_a0
    assert bag(root / "N0.xmp", "dc:subject") == []  # a single photo is in no group worth a keyword
    best_b = next(n for n in ("B0.jpg", "B1.jpg") if rows[n]["best"])
    assert "qualiclip|best" in bag(root / best_b.replace(".jpg", ".xmp"), "lr:hierarchicalSubject")
    undo = run_cli("undo")
    assert undo.exit_code == 0, undo.stderr
    assert contents() == before


def test_group_refuses_parquet_before_any_work(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "shoot")
    for args in (["-f", "parquet"], ["-o", tmp_path / "groups.parquet"]):
        result = run_cli("group", root, "--weights", tmp_path / "missing.pth", *args)
        assert result.exit_code == 2 and "not written in parquet" in result.stderr, result.stderr
    assert not (tmp_path / "groups.parquet").exists()
