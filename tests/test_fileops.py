"""Safe primitives: never overwrite, verified copies, mtime kept, cross-filesystem path, no delete fallback."""

import errno
import os

import pytest

from qualiclip_cli.core.curation import fileops, trash
from qualiclip_cli.core.errors import CurationError

from curation_support import sha, write

MTIME = 1_600_000_000


@pytest.fixture
def photo(tmp_path):
    return write(tmp_path / "src" / "IMG_1.jpg", b"photo-bytes", MTIME)


def test_move_same_filesystem_keeps_content_and_mtime(tmp_path, photo):
    (tmp_path / "dst").mkdir()
    final = fileops.move_file(photo, tmp_path / "dst" / "IMG_1.jpg")
    assert final == tmp_path / "dst" / "IMG_1.jpg"
    assert not photo.exists()
    assert final.read_bytes() == b"photo-bytes" and final.stat().st_mtime_ns == MTIME * 10**9


def test_move_numbers_on_collision_and_never_touches_the_existing_file(tmp_path, photo):
    taken = write(tmp_path / "dst" / "IMG_1.jpg", b"someone else")
    write(tmp_path / "dst" / "IMG_1 (1).jpg", b"another one")
    final = fileops.move_file(photo, taken)
    assert final.name == "IMG_1 (2).jpg" and final.read_bytes() == b"photo-bytes"
    assert taken.read_bytes() == b"someone else"
    assert (tmp_path / "dst" / "IMG_1 (1).jpg").read_bytes() == b"another one"


def test_move_refuse_leaves_everything(tmp_path, photo):
    taken = write(tmp_path / "dst" / "IMG_1.jpg", b"someone else")
    with pytest.raises(CurationError, match="refusing to overwrite"):
        fileops.move_file(photo, taken, on_collision="refuse")
    assert photo.read_bytes() == b"photo-bytes" and taken.read_bytes() == b"someone else"


def test_free_destination_policies(tmp_path):
    write(tmp_path / "a.jpg", b"x")
    assert fileops.free_destination(tmp_path / "a.jpg") == tmp_path / "a (1).jpg"
    assert fileops.free_destination(tmp_path / "a.jpg", taken={tmp_path / "a (1).jpg"}) == tmp_path / "a (2).jpg"
    assert fileops.free_destination(tmp_path / "b.jpg", "refuse") == tmp_path / "b.jpg"
    with pytest.raises(CurationError):
        fileops.free_destination(tmp_path / "a.jpg", "refuse")
    with pytest.raises(CurationError):
        fileops.free_destination(tmp_path / "b.jpg", "overwrite")


def test_cross_filesystem_move_copies_verifies_then_removes(tmp_path, photo, monkeypatch):
    monkeypatch.setattr(fileops, "same_filesystem", lambda a, b: False)
    calls = []
    real_copy = fileops._copy_verified
    monkeypatch.setattr(fileops, "_copy_verified", lambda *a: (calls.append(a), real_copy(*a))[1])
    (tmp_path / "dst").mkdir()
    write(tmp_path / "dst" / "IMG_1.jpg", b"occupied")
    final = fileops.move_file(photo, tmp_path / "dst" / "IMG_1.jpg")
    assert calls, "the copy+verify path did not run"
    assert final.name == "IMG_1 (1).jpg" and final.read_bytes() == b"photo-bytes"
    assert final.stat().st_mtime_ns == MTIME * 10**9
    assert not photo.exists()
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["IMG_1 (1).jpg", "IMG_1.jpg"]  # no partial


def test_cross_filesystem_move_that_fails_verification_keeps_the_source(tmp_path, photo, monkeypatch):
    monkeypatch.setattr(fileops, "same_filesystem", lambda a, b: False)
    (tmp_path / "dst").mkdir()
    with pytest.raises(CurationError, match="did not verify"):
        fileops.move_file(photo, tmp_path / "dst" / "IMG_1.jpg", expected_sha256="0" * 64)
    assert photo.read_bytes() == b"photo-bytes"
    assert list((tmp_path / "dst").iterdir()) == []


def test_copy_keeps_source_and_mtime_and_numbers(tmp_path, photo):
    write(tmp_path / "dst" / "IMG_1.jpg", b"occupied")
    final = fileops.copy_file(photo, tmp_path / "dst" / "IMG_1.jpg")
    assert final.name == "IMG_1 (1).jpg"
    assert final.read_bytes() == photo.read_bytes() == b"photo-bytes"
    assert final.stat().st_mtime_ns == MTIME * 10**9
    assert (tmp_path / "dst" / "IMG_1.jpg").read_bytes() == b"occupied"


def test_no_clobber_without_hard_links(tmp_path, monkeypatch):
    def no_links(*a, **k):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    a, b = write(tmp_path / "a", b"A"), write(tmp_path / "b", b"B")
    with pytest.raises(FileExistsError):
        fileops.rename_no_clobber(a, b)
    assert a.read_bytes() == b"A" and b.read_bytes() == b"B"
    fileops.rename_no_clobber(a, tmp_path / "c")
    assert (tmp_path / "c").read_bytes() == b"A" and not a.exists()


def test_trash_failure_never_deletes(photo, monkeypatch):
    import send2trash

    def broken(path):
        raise OSError("no trash here")

    monkeypatch.setattr(send2trash, "send2trash", broken)
    with pytest.raises(CurationError, match="could not move to the system trash"):
        trash.trash_file(photo)
    assert photo.read_bytes() == b"photo-bytes"


def test_atomic_write_refuses_when_the_file_changed(tmp_path):
    side = write(tmp_path / "IMG_1.xmp", b"old")
    with pytest.raises(CurationError, match="changed"):
        fileops.write_file_atomic(side, b"new", expected_sha256=sha(b"something else"))
    assert side.read_bytes() == b"old"
    with pytest.raises(CurationError, match="appeared"):
        fileops.write_file_atomic(side, b"new", expected_sha256=None)
    fileops.write_file_atomic(side, b"new", expected_sha256=sha(b"old"))
    assert side.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["IMG_1.xmp"]  # no temp files left


def test_remove_own_copy_only_when_identical_and_original_intact(tmp_path):
    orig, copy = write(tmp_path / "o", b"same"), write(tmp_path / "c", b"same")
    with pytest.raises(CurationError):
        fileops.remove_own_copy(copy, sha(b"other"), orig)
    orig.write_bytes(b"edited")
    with pytest.raises(CurationError, match="kept"):
        fileops.remove_own_copy(copy, sha(b"same"), orig)
    assert copy.exists()
    orig.write_bytes(b"same")
    fileops.remove_own_copy(copy, sha(b"same"), orig)
    assert not copy.exists() and orig.exists()


def test_make_dirs_reports_what_it_created(tmp_path):
    created = fileops.make_dirs(tmp_path / "a" / "b" / "c")
    assert created == [tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c"]
    assert fileops.make_dirs(tmp_path / "a" / "b") == []


def _unlink_fails_for(path, err=errno.EACCES):
    real = os.unlink

    def unlink(p, *a, **k):
        if str(p) == str(path):
            raise OSError(err, os.strerror(err), str(p))
        return real(p, *a, **k)
    return unlink


def test_rename_whose_old_name_cannot_be_removed_leaves_no_second_name(tmp_path, photo, monkeypatch):
    (tmp_path / "dst").mkdir()
    monkeypatch.setattr(fileops.os, "unlink", _unlink_fails_for(photo))
    with pytest.raises(CurationError, match="move failed .Permission denied"):
        fileops.move_file(photo, tmp_path / "dst" / "IMG_1.jpg")
    monkeypatch.undo()
    assert photo.read_bytes() == b"photo-bytes" and os.stat(photo).st_nlink == 1
    assert list((tmp_path / "dst").iterdir()) == []  # the new name it had linked is gone again


def test_cross_filesystem_move_whose_original_cannot_be_removed_keeps_one_file(tmp_path, photo, monkeypatch):
    monkeypatch.setattr(fileops, "same_filesystem", lambda a, b: False)
    (tmp_path / "dst").mkdir()
    monkeypatch.setattr(fileops.os, "unlink", _unlink_fails_for(photo))
    with pytest.raises(CurationError, match="move failed .Permission denied.; left in place"):
        fileops.move_file(photo, tmp_path / "dst" / "IMG_1.jpg")
    monkeypatch.undo()
    assert photo.read_bytes() == b"photo-bytes"
    assert list((tmp_path / "dst").iterdir()) == []  # our verified copy removed: the file is where it was


def test_a_symlinked_photo_is_never_moved_copied_or_trashed(tmp_path, photo):
    link = tmp_path / "src" / "LINK_1.jpg"
    link.symlink_to(photo)
    (tmp_path / "dst").mkdir()
    for act in (lambda: fileops.move_file(link, tmp_path / "dst" / "LINK_1.jpg"),
                lambda: fileops.copy_file(link, tmp_path / "dst" / "LINK_1.jpg"),
                lambda: trash.trash_file(link)):
        with pytest.raises(CurationError, match="is a symbolic link; left in place"):
            act()
    assert link.is_symlink() and os.readlink(link) == str(photo) and photo.read_bytes() == b"photo-bytes"
    assert list((tmp_path / "dst").iterdir()) == []
