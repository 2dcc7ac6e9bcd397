"""find_images: walking the PATH arguments deterministically, with filters, hidden files, symlinks and errors."""

import os
import threading
from pathlib import Path

import pytest

from qualiclip_cli.core.images import discovery
from qualiclip_cli.core.images.discovery import (
    IMAGE_EXTENSIONS,
    Found,
    Skipped,
    find_images,
    is_image_name,
    read_path_list,
)


def _touch(root: Path, *names: str) -> None:
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")  # content is irrelevant: discovery never opens files


def _rel(found, root: Path) -> list:
    out = []
    for f in found:
        rel = f.path.relative_to(root).as_posix() if f.path.is_relative_to(root) else str(f.path)
        out.append(rel if f.error is None else (rel, f.error))
    return out


def _walk(root: Path, *args: str, **kw) -> list:
    paths = [root / a for a in args] if args else [root]
    return _rel(find_images(paths, **kw), root)


@pytest.fixture
def library(tmp_path) -> Path:
    root = tmp_path / "lib"
    _touch(
        root,
        "b.jpg",
        "a.PNG",
        "notes.txt",
        "c.JpEg",
        "sub/z.heic",
        "sub/deeper/y.tif",
        "sub/deeper/readme.md",
        "m/x.webp",
        "m.avif",
        ".hidden.jpg",
        ".cache/thumb.jpg",
        "sub/.Trash/old.jpg",
        "track.gpx",
        "noext",
    )
    return root


def test_extensions_exported():
    # the pictures Pillow reads, and at least the RAW formats photographers shoot (LibRaw reads them)
    pictures = {"jpg", "jpeg", "jpe", "jfif", "mpo", "png", "tif", "tiff", "webp", "bmp", "gif", "heic", "heif", "hif",
                "avif"}
    raws = {"cr2", "cr3", "crw", "nef", "nrw", "arw", "srf", "sr2", "raf", "orf", "rw2", "pef", "dng", "srw", "x3f",
            "3fr", "iiq", "erf", "mos", "mrw", "kdc", "dcr", "rwl", "raw"}
    assert pictures | raws <= IMAGE_EXTENSIONS and IMAGE_EXTENSIONS - pictures - raws <= {"mef"}
    assert is_image_name("IMG_0001.CR3") and is_image_name("_DSC1.nef") and is_image_name("a.3FR")
    assert is_image_name("IMG_0001.JPG") and is_image_name("x.HeIc") and is_image_name(".x.png")
    assert not is_image_name("jpg") and not is_image_name("a.jpg.txt") and not is_image_name("a.")


def test_recursive_sorted_depth_first(library):
    # Files and directories of one folder are sorted together by name (code-point order: upper case
    # first), sub-folders walked where they sort.
    assert _walk(library) == [
        "a.PNG",
        "b.jpg",
        "c.JpEg",
        "m/x.webp",
        "m.avif",
        "sub/deeper/y.tif",
        "sub/z.heic",
    ]
    assert all(isinstance(f, Found) and f.ok for f in find_images([library]))


def test_order_is_deterministic_whatever_the_creation_order(tmp_path):
    names = [f"d{i % 7}/img_{(i * 7919) % 1000:04d}.jpg" for i in range(300)]
    a, b = tmp_path / "a", tmp_path / "b"
    _touch(a, *names)
    _touch(b, *reversed(names))
    assert _walk(a) == _walk(b) == sorted(set(names))


def test_not_recursive(library):
    assert _walk(library, recursive=False) == ["a.PNG", "b.jpg", "c.JpEg", "m.avif"]


def test_explicit_files_always_yielded_in_argument_order(library):
    got = _walk(library, "notes.txt", "sub", "track.gpx", ".hidden.jpg", "b.jpg")
    assert got == ["notes.txt", "sub/deeper/y.tif", "sub/z.heic", "track.gpx", ".hidden.jpg", "b.jpg"]


def test_single_path_argument_accepted(library):
    assert _rel(find_images(library / "sub"), library) == ["sub/deeper/y.tif", "sub/z.heic"]
    assert _rel(find_images(str(library / "b.jpg")), library) == ["b.jpg"]


def test_include_exclude_match_relative_path_or_basename(library):
    assert _walk(library, include=["*.jpg", "*.JpEg"]) == ["b.jpg", "c.JpEg"]
    # Relative-path patterns ("*" also crosses "/").
    assert _walk(library, include=["sub/*"]) == ["sub/deeper/y.tif", "sub/z.heic"]
    assert _walk(library, include=["sub/deeper/*"]) == ["sub/deeper/y.tif"]
    # Basename patterns apply at any depth.
    assert _walk(library, include=["y.*"]) == ["sub/deeper/y.tif"]
    assert _walk(library, exclude=["*.heic", "a.*"]) == ["b.jpg", "c.JpEg", "m/x.webp", "m.avif", "sub/deeper/y.tif"]
    # Exclude prunes directories by name or relative path.
    assert _walk(library, exclude=["deeper"]) == ["a.PNG", "b.jpg", "c.JpEg", "m/x.webp", "m.avif", "sub/z.heic"]
    assert _walk(library, exclude=["sub/deeper"]) == _walk(library, exclude=["deeper"])
    # include and exclude together; and they apply to explicitly named files too.
    assert _walk(library, include=["*.jpg", "*.tif"], exclude=["sub/*"]) == ["b.jpg"]
    assert _walk(library, "b.jpg", "notes.txt", exclude=["*.txt"]) == ["b.jpg"]


def test_no_folder_name_is_special(tmp_path):
    _touch(tmp_path, "_rejected/r.jpg", "keep/k.jpg")
    assert _walk(tmp_path) == ["_rejected/r.jpg", "keep/k.jpg"]
    assert _walk(tmp_path, exclude=["_rejected"]) == ["keep/k.jpg"]


def test_hidden(library):
    assert ".hidden.jpg" not in _walk(library)
    got = _walk(library, hidden=True)
    assert got == [
        ".cache/thumb.jpg",
        ".hidden.jpg",
        "a.PNG",
        "b.jpg",
        "c.JpEg",
        "m/x.webp",
        "m.avif",
        "sub/.Trash/old.jpg",
        "sub/deeper/y.tif",
        "sub/z.heic",
    ]
    # A hidden directory named explicitly is walked (its hidden children still follow the flag).
    assert _walk(library, ".cache") == [".cache/thumb.jpg"]


def test_camera_extensions_are_walked(tmp_path):
    """Cameras write HEIF as .HIF and multi-picture JPEGs as .MPO; .jpe and .jfif are JPEG too; RAWs in any case."""
    _touch(tmp_path, "A.HIF", "b.mpo", "c.JPE", "d.jfif", "e.ARW", "f.Cr3", "g.dng")
    assert _walk(tmp_path) == ["A.HIF", "b.mpo", "c.JPE", "d.jfif", "e.ARW", "f.Cr3", "g.dng"]


def test_raw_jpeg_pairs_yield_one_half(tmp_path):
    # IMG_1 and IMG_3 are RAW+JPEG (IMG_3 as RAW+HEIF), IMG_2 is RAW only, IMG_4 JPEG only; IMG_10 shares no stem.
    _touch(tmp_path, "IMG_1.CR3", "IMG_1.JPG", "IMG_2.nef", "IMG_3.ARW", "IMG_3.HIF", "IMG_4.jpg", "IMG_10.dng",
           "sub/IMG_1.CR3")
    skipped = Skipped()
    got = _rel(find_images([tmp_path], skipped=skipped), tmp_path)
    assert got == ["IMG_1.JPG", "IMG_10.dng", "IMG_2.nef", "IMG_3.HIF", "IMG_4.jpg", "sub/IMG_1.CR3"]
    assert skipped.paired_raws == 2 and "2 RAWs scored from their camera JPEGs (RAW+JPEG pairs)" in skipped.describe()
    skipped = Skipped()
    got = _rel(find_images([tmp_path], raw_pairs="raw", skipped=skipped), tmp_path)
    assert got == ["IMG_1.CR3", "IMG_10.dng", "IMG_2.nef", "IMG_3.ARW", "IMG_4.jpg", "sub/IMG_1.CR3"]
    assert skipped.paired_pictures == 2 and skipped.paired_raws == 0
    got = _rel(find_images([tmp_path], raw_pairs="both"), tmp_path)
    assert got == ["IMG_1.CR3", "IMG_1.JPG", "IMG_10.dng", "IMG_2.nef", "IMG_3.ARW", "IMG_3.HIF", "IMG_4.jpg",
                   "sub/IMG_1.CR3"]
    # a partner the walk would not yield (excluded, hidden) makes no pair; a file argument is always yielded
    assert _rel(find_images([tmp_path], exclude=["*.JPG"], recursive=False), tmp_path) == [
        "IMG_1.CR3", "IMG_10.dng", "IMG_2.nef", "IMG_3.HIF", "IMG_4.jpg"]
    assert _rel(find_images([tmp_path / "IMG_1.CR3", tmp_path / "IMG_1.JPG"]), tmp_path) == ["IMG_1.CR3", "IMG_1.JPG"]
    with pytest.raises(ValueError, match="raw_pairs"):
        list(find_images([tmp_path], raw_pairs="jpg"))


def test_what_the_walk_skipped_is_counted(library):
    _touch(library, "sub/deeper/IMG_1.XMP", "sub/other.xmp")
    skipped = Skipped()
    got = _rel(find_images([library], exclude=["deeper", "m.*"], skipped=skipped), library)
    assert got == ["a.PNG", "b.jpg", "c.JpEg", "m/x.webp", "sub/z.heic"]
    # notes.txt, track.gpx, noext, sub/other.xmp (sub/deeper is pruned, so its files are not looked at)
    assert skipped.extensions == {"txt": ("txt", 1), "gpx": ("gpx", 1), "": ("", 1), "xmp": ("xmp", 1)}
    assert (skipped.hidden_files, skipped.hidden_folders) == (1, 2)  # .hidden.jpg; .cache and sub/.Trash
    assert (skipped.excluded_files, skipped.excluded_folders) == (1, 1)  # m.avif; sub/deeper
    assert skipped.total == 4 + 3 + 2
    assert skipped.describe() == [
        "4 files with other extensions (no extension, .gpx, .txt, .xmp)",
        "1 hidden file", "2 hidden folders", "1 excluded file", "1 excluded folder",
    ]
    flat = Skipped()
    assert _rel(find_images([library], recursive=False, skipped=flat), library) == ["a.PNG", "b.jpg", "c.JpEg", "m.avif"]
    assert flat.folders == 2 and "2 sub-folders not walked (not recursive)" in flat.describe()
    # a named file that include/exclude leaves out is counted as excluded too
    named = Skipped()
    assert list(find_images([library / "notes.txt"], exclude=["*.txt"], skipped=named)) == []
    assert named.excluded_files == 1 and named.describe() == ["1 excluded file"]


def test_many_other_extensions_are_named_up_to_six(tmp_path):
    _touch(tmp_path, *(f"f.e{i}" for i in range(8)), "g.E0")
    skipped = Skipped()
    assert list(find_images([tmp_path], skipped=skipped)) == []
    assert skipped.describe() == ["9 files with other extensions (.e0, .e1, .e2, .e3, .e4, .e5, …)"]


@pytest.mark.parametrize("chunk_size", [1, 3, 1 << 16])
def test_path_list_is_bytes_split_on_newline_or_nul(chunk_size):
    import io

    listed = b"a b.jpg\n\ncaf\xe9.jpg\n  \nlast.jpg"
    assert list(read_path_list(io.BytesIO(listed), chunk_size=chunk_size)) == [
        "a b.jpg", os.fsdecode(b"caf\xe9.jpg"), "  ", "last.jpg",  # any byte string is a name; blank lines go
    ]
    assert os.fsencode(list(read_path_list(io.BytesIO(listed)))[1]) == b"caf\xe9.jpg"
    nul = b"line\nbreak.jpg\0\0b.jpg\0"
    assert list(read_path_list(io.BytesIO(nul), null=True, chunk_size=chunk_size)) == ["line\nbreak.jpg", "b.jpg"]
    assert list(read_path_list(io.BytesIO(b""), chunk_size=chunk_size)) == []


def test_missing_path_and_walk_goes_on(library):
    got = _walk(library, "nope.jpg", "m")
    assert got == [("nope.jpg", "no such file or directory"), "m/x.webp"]


def test_duplicates_yielded_once(library):
    got = _walk(library, "sub", ".", "sub/z.heic", "b.jpg")
    assert got == ["sub/deeper/y.tif", "sub/z.heic", "a.PNG", "b.jpg", "c.JpEg", "m/x.webp", "m.avif"]
    # The same file through a different spelling of its path is still one file.
    alias = str(library / "sub" / ".." / "b.jpg")
    assert [f.path for f in find_images([library / "b.jpg", alias])] == [library / "b.jpg"]


needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX symlinks")


@needs_symlinks
def test_symlinks_not_followed_by_default(tmp_path):
    outside = tmp_path / "outside"
    _touch(outside, "o.jpg")
    root = tmp_path / "root"
    _touch(root, "r.jpg")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "linkfile.jpg").symlink_to(outside / "o.jpg")
    (root / "broken.jpg").symlink_to(tmp_path / "gone.jpg")
    assert _walk(root) == ["r.jpg"]
    got = _rel(find_images([root], follow_symlinks=True), root)
    assert got == [("broken.jpg", "broken symbolic link (its target does not exist)"), "linkdir/o.jpg", "r.jpg"]
    # linkfile.jpg is the same file as linkdir/o.jpg: yielded once, at its first occurrence.
    # A symlink named on the command line is always followed.
    assert _rel(find_images([root / "linkdir", root / "linkfile.jpg"]), root) == ["linkdir/o.jpg"]


@needs_symlinks
def test_symlink_loop_reported_not_hanging(tmp_path):
    root = tmp_path / "root"
    _touch(root, "a/a.jpg", "a/b/b.jpg")
    (root / "a" / "b" / "up").symlink_to(root / "a", target_is_directory=True)  # a/b/up -> a
    (root / "self").symlink_to(root, target_is_directory=True)  # root/self -> root
    result: list = []

    def run():
        result.extend(find_images([root], follow_symlinks=True))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "walk did not terminate"
    got = _rel(result, root)
    assert got[:2] == ["a/a.jpg", "a/b/b.jpg"]
    errors = [g for g in got if isinstance(g, tuple)]
    assert [e[0] for e in errors] == ["a/b/up", "self"]
    assert all(e[1].startswith("symlink loop: ") for e in errors)
    assert str(root / "a") in errors[0][1]
    # Without following, the links are simply skipped.
    assert _walk(root) == ["a/a.jpg", "a/b/b.jpg"]


@needs_symlinks
def test_symlinked_directory_walked_once(tmp_path):
    root = tmp_path / "root"
    _touch(root, "real/p.jpg")
    (root / "alias1").symlink_to(root / "real", target_is_directory=True)
    (root / "zalias").symlink_to(root / "real", target_is_directory=True)
    got = _rel(find_images([root], follow_symlinks=True), root)
    assert got == ["alias1/p.jpg"]  # first occurrence in sorted order; no loop error for a plain alias


def test_unreadable_directory_reported_and_walk_continues(tmp_path, monkeypatch):
    root = tmp_path / "root"
    _touch(root, "a/1.jpg", "locked/2.jpg", "z/3.jpg")
    locked = str(root / "locked")
    real_scandir = os.scandir

    def fake_scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(discovery.os, "scandir", fake_scandir)
    assert _walk(root) == ["a/1.jpg", ("locked", "cannot read directory: permission denied"), "z/3.jpg"]
    # The same for an unreadable root argument.
    assert _rel(find_images([root / "locked", root / "z"]), root) == [
        ("locked", "cannot read directory: permission denied"),
        "z/3.jpg",
    ]


def test_special_files(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.jpg")
    _touch(tmp_path, "x.jpg")
    assert _walk(tmp_path) == ["x.jpg"]  # not a regular file: ignored in a walk
    assert _walk(tmp_path, "pipe.jpg") == [("pipe.jpg", "not a regular file or directory")]


def test_many_files_quickly(tmp_path):
    for d in range(20):
        sub = tmp_path / f"d{d:02d}"
        sub.mkdir()
        for i in range(250):
            (sub / f"IMG_{i:04d}.JPG").touch()
            if i % 5 == 0:
                (sub / f"IMG_{i:04d}.xmp").touch()
    found = list(find_images([tmp_path]))
    assert len(found) == 5000 and all(f.ok for f in found)
    assert found[0].path == tmp_path / "d00" / "IMG_0000.JPG"
    assert found[-1].path == tmp_path / "d19" / "IMG_0249.JPG"


@needs_symlinks
def test_dotdot_is_read_as_the_kernel_does_and_the_spelling_kept_when_equivalent(tmp_path, monkeypatch):
    _touch(tmp_path, "dd/elsewhere/inner/i.jpg", "dd/elsewhere/e.jpg", "dd/shoot/s.jpg")
    (tmp_path / "dd/shoot/link").symlink_to(tmp_path / "dd/elsewhere/inner", target_is_directory=True)
    monkeypatch.chdir(tmp_path / "dd/shoot")
    # after a symlinked folder, ".." leaves the link's target: the kernel's folder, spelled absolute
    got = [f.path for f in find_images(["link/..", "link/../e.jpg"])]
    assert got == [tmp_path / "dd/elsewhere/e.jpg", tmp_path / "dd/elsewhere/inner/i.jpg"]
    assert all(p.is_absolute() and ".." not in p.parts for p in got)
    # where the lexical reading is the kernel's, the argument is kept as written
    assert [f.path for f in find_images(["../shoot", "../../dd/elsewhere/e.jpg"])] == [
        Path("../shoot/s.jpg"), Path("../../dd/elsewhere/e.jpg")]
