"""Sidecars and RAW siblings travel with their photo; look-alikes do not."""

from pathlib import Path

from qualiclip_cli.core.curation.siblings import find_siblings, renamed_sibling


def touch(d: Path, *names):
    for n in names:
        (d / n).write_bytes(n.encode())


def test_finds_sidecars_and_raw_siblings_case_insensitively(tmp_path):
    touch(tmp_path, "IMG_1.jpg", "IMG_1.xmp", "IMG_1.XMP", "IMG_1.CR2", "IMG_1.CR2.xmp", "IMG_1.jpg.xmp",
          "IMG_1.nef", "IMG_1.Dng", "IMG_1.ARW.XMP")
    got = [p.name for p in find_siblings(tmp_path / "IMG_1.jpg")]
    assert got == sorted(["IMG_1.xmp", "IMG_1.XMP", "IMG_1.CR2", "IMG_1.CR2.xmp", "IMG_1.jpg.xmp", "IMG_1.nef",
                          "IMG_1.Dng", "IMG_1.ARW.XMP"])
    assert all(p.parent == tmp_path for p in find_siblings(tmp_path / "IMG_1.jpg"))


def test_ignores_lookalikes_other_photos_and_directories(tmp_path):
    touch(tmp_path, "IMG_1.jpg", "IMG_10.xmp", "IMG_10.CR2", "img_1.xmp", "IMG_1.png", "IMG_1_01.CR2.xmp",
          "IMG_1.txt", "IMG_1.png.xmp")
    (tmp_path / "IMG_1.dng").mkdir()
    assert find_siblings(tmp_path / "IMG_1.jpg") == []


def test_photo_itself_excluded_and_missing_dir(tmp_path):
    touch(tmp_path, "IMG_2.jpg")
    assert find_siblings(tmp_path / "IMG_2.jpg") == []
    assert find_siblings(tmp_path / "nope" / "IMG_2.jpg") == []


def test_renamed_sibling_keeps_the_association():
    assert renamed_sibling("IMG_1.CR2.xmp", "IMG_1", "IMG_1 (1)") == "IMG_1 (1).CR2.xmp"
    assert renamed_sibling("IMG_1.XMP", "IMG_1", "0003_IMG_1") == "0003_IMG_1.XMP"
