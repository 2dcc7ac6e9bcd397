"""Undo never deletes the last copy of a photo, and a journal cannot steer it: symbolic links at the original
paths, forged or edited journals, empty journals left by a kill, and the temporary files of killed runs."""

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from qualiclip_cli.core.curation import fileops, journal
from qualiclip_cli.core.curation.execute import execute
from qualiclip_cli.core.curation.plan import plan_sort_into, plan_tag
from qualiclip_cli.core.curation.undo import clean_leftovers, undo, undo_latest
from qualiclip_cli.core.errors import JournalError

from cli_support import run_cli
from curation_support import REPO_ROOT, cull, record, sha, snapshot, write

SIDECAR = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>IMG_1</dc:title>'
           b'</rdf:Description></rdf:RDF></x:xmpmeta>')

# A child that runs the real core and SIGKILLs itself at one exact step (patched in by the test only).
KILLED_CHILD = """
import json, os, signal, sys
from qualiclip_cli.core.curation import fileops
from qualiclip_cli.core.curation.execute import execute
from qualiclip_cli.core.curation.plan import plan_tag
from qualiclip_cli.core.curation.undo import undo
from qualiclip_cli.core.records import ScoreRecord
what, marker = sys.argv[1], sys.argv[2]

def kill_at(name):
    real = getattr(fileops, name)
    def wrapper(*args, **kwargs):
        if any(marker in str(a) for a in args):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    setattr(fileops, name, wrapper)

if what == "tag":  # killed with the sidecar's temporary file written, before it is renamed into place
    kill_at("rename_no_clobber")
    records = [ScoreRecord(path=p, score=s) for p, s in json.loads(sys.argv[3])]
    execute(plan_tag(records, "ab" * 32, "policy"))
else:  # undo across filesystems, killed with its verified copy written, before it is renamed into place
    fileops.same_filesystem = lambda a, b: False
    kill_at("_place")
    undo(sys.argv[3])
"""


@pytest.fixture
def shoot(tmp_path):
    root = tmp_path / "shoot"
    records = []
    for i, (rel, score) in enumerate({"a/IMG_1.jpg": 0.1, "a/IMG_2.jpg": 0.9, "b/IMG_3.jpg": 0.2,
                                       "IMG_5.jpg": 0.05}.items()):
        records.append(record(write(root / rel, f"photo {rel} ".encode() * (i + 3), 1_500_000_000 + i), score))
    write(root / "a/IMG_1.xmp", SIDECAR, 1_500_000_100)
    return root, records


def tree(tmp_path):
    """Every file (bytes, size, mtime) and folder under tmp_path except qualiclip's own state."""
    state = snapshot(tmp_path, include_dirs=True)
    return {k: v for k, v in state.items() if not k.startswith("qhome")}


def rewrite(path, edit):
    """Rewrite a journal line by line: `edit(line)` returns the line to keep (changed or not)."""
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(edit(line)) + "\n" for line in lines))


def op_lines(path, index):
    return [x for x in map(json.loads, path.read_text().splitlines()) if x.get("index") == index]


# ------------------------------------------------------------------------------------- symbolic links

def test_a_link_at_the_original_path_after_a_move_keeps_the_photo(shoot, home, tmp_path):
    root, _ = shoot
    run = execute(cull(shoot))
    moved = root / "_rejected/a/IMG_1.jpg"
    photo = moved.read_bytes()
    (root / "a/IMG_1.jpg").symlink_to(moved)  # what `ln -s _rejected/... a/IMG_1.jpg` leaves

    result = run_cli("undo")
    assert result.exit_code == 3, result.stderr
    assert "symbolic link" in result.stderr and str(root / "a/IMG_1.jpg") in result.stderr
    assert moved.read_bytes() == photo and not moved.is_symlink()  # the photo survives
    assert (root / "a/IMG_1.jpg").is_symlink() and (root / "a/IMG_1.jpg").read_bytes() == photo
    assert (root / "b/IMG_3.jpg").is_file()  # the rest of the run was undone
    assert journal.read_run(run.run_id).undone == "partial"


def test_a_link_to_the_copy_at_the_original_path_after_sort_into_keeps_the_copy(shoot, home, tmp_path):
    root, records = shoot
    run = execute(plan_sort_into(records, tmp_path / "sorted", mode="copy"))
    original = root / "b/IMG_3.jpg"
    (copy,) = (tmp_path / "sorted").rglob("IMG_3.jpg")
    photo = copy.read_bytes()
    original.unlink()
    original.symlink_to(copy)  # a duplicate finder's "link" mode

    report = undo(run.run_id)
    assert [(i.path, "symbolic link" in i.message) for i in report.problems] == [(str(original), True)]
    assert copy.read_bytes() == photo and not copy.is_symlink()
    assert original.read_bytes() == photo
    assert not (tmp_path / "sorted/1-poor").exists()  # the other copies, with intact originals, were removed


def test_remove_duplicate_never_removes_the_only_entry(tmp_path):
    a = write(tmp_path / "d/a.jpg", b"only copy")
    (tmp_path / "link").symlink_to(tmp_path / "d")
    for keeper in (a, tmp_path / "link/a.jpg", tmp_path / "d/../d/a.jpg"):
        with pytest.raises(Exception, match="same file"):
            fileops.remove_duplicate(a, sha(b"only copy"), keeper)
    (tmp_path / "b.jpg").symlink_to(a)
    with pytest.raises(Exception, match="symbolic link"):
        fileops.remove_duplicate(a, sha(b"only copy"), tmp_path / "b.jpg")
    assert a.read_bytes() == b"only copy"
    os.link(a, tmp_path / "hard.jpg")
    fileops.remove_duplicate(a, sha(b"only copy"), tmp_path / "hard.jpg")  # two names: one may go
    assert (tmp_path / "hard.jpg").read_bytes() == b"only copy" and not a.exists()


# ------------------------------------------------------------------------------------- forged journals

def _refused(run_id, tmp_path, match="refused"):
    before = tree(tmp_path)
    with pytest.raises(JournalError, match=match):
        undo(run_id)
    assert tree(tmp_path) == before  # every file's bytes and every listing unchanged


def test_a_partial_name_the_program_did_not_make_is_refused(shoot, home, tmp_path):
    run = execute(cull(shoot))
    victim = write(tmp_path / "shoot/a/notes.txt", b"the user's notes")

    def edit(line):
        if line.get("index") == 0 and line.get("phase") == "intent":
            line["partial"] = str(victim)
        return line

    rewrite(run.journal_path, edit)
    _refused(run.run_id, tmp_path, "temporary name")
    assert victim.read_bytes() == b"the user's notes"
    before = tree(tmp_path)
    result = run_cli("undo")  # plain undo picks it (the latest run) and refuses it the same way
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and str(run.journal_path) in result.stderr and "refused" in result.stderr
    assert tree(tmp_path) == before


def test_a_trash_receipt_outside_a_trash_folder_is_refused(shoot, home, tmp_path):
    root, _ = shoot
    run = execute(cull(shoot))
    moved = root / "_rejected/IMG_5.jpg"
    victim = write(tmp_path / "shoot/a/notes.txt", b"the user's notes")

    def edit(line):  # the move of IMG_5.jpg turned into a trash whose receipt names a user's file
        if line.get("index") == 0 and line.get("type") == "op":
            assert line["source"] == str(root / "IMG_5.jpg")
            line.update(action="trash", destination=None)
            line.pop("partial", None)
            line.pop("created_dirs", None)
            if line["phase"] == "done":
                line.update(trash_file=str(moved), trash_info=str(victim))
        return line

    rewrite(run.journal_path, edit)
    _refused(run.run_id, tmp_path, "trash receipt")
    assert victim.read_bytes() == b"the user's notes"


def test_a_move_onto_itself_is_refused(shoot, home, tmp_path):
    run = execute(cull(shoot))
    keep = tmp_path / "shoot/a/IMG_2.jpg"  # a photo the run did not touch

    def edit(line):
        if line.get("index") == 0 and line.get("type") == "op":
            line["source"] = line["destination"] = str(keep)
            line.pop("partial", None)
            line["sha256"] = fileops.sha256_file(keep)
        return line

    rewrite(run.journal_path, edit)
    _refused(run.run_id, tmp_path, "same file")


def test_a_sidecar_write_outside_the_roots_is_refused(shoot, home, tmp_path):
    root, records = shoot
    run = execute(plan_tag(records, "ab" * 32, "policy"))
    victim = write(tmp_path / "elsewhere/IMG_9.xmp", b"<x:xmpmeta>someone else's</x:xmpmeta>")

    def edit(line):
        if line.get("index") == 0 and line.get("type") == "op":
            line["source"], line["destination"] = str(victim.with_suffix(".jpg")), str(victim)
            line.pop("partial", None)
            if line["phase"] == "intent":
                line.update(previous_sha256=None, backup=None, new_sha256=fileops.sha256_file(victim))
        return line

    rewrite(run.journal_path, edit)
    _refused(run.run_id, tmp_path, "outside the run's folders")


def test_a_copy_onto_a_users_identical_file_outside_the_folders_is_refused(shoot, home, tmp_path):
    root, _ = shoot
    run = execute(cull(shoot, action="copy", quarantine_dir=tmp_path / "q"))
    first = op_lines(run.journal_path, 0)[0]
    victim = write(tmp_path / "backup-disk/IMG_5.jpg", (root / "IMG_5.jpg").read_bytes())
    assert first["source"] == str(root / "IMG_5.jpg")

    def edit(line):
        if line.get("index") == 0 and line.get("type") == "op":
            line["destination"] = str(victim)
            line["partial"] = str(fileops.partial_path(victim, journal.partial_token(run.run_id, 0)))
        return line

    rewrite(run.journal_path, edit)
    _refused(run.run_id, tmp_path, "outside the run's folders")
    assert victim.read_bytes() == (root / "IMG_5.jpg").read_bytes()


def test_a_backup_outside_the_backup_folder_is_refused(shoot, home, tmp_path):
    root, records = shoot
    run = execute(plan_tag([r for r in records if r.path.endswith("IMG_1.jpg")], "ab" * 32, "policy"))
    (line,) = [x for x in op_lines(run.journal_path, 0) if x["phase"] == "intent"]
    assert line["destination"] == str(root / "a/IMG_1.xmp") and line["backup"]
    planted = write(tmp_path / "shoot/a/planted.xmp", b"<x:xmpmeta>planted content</x:xmpmeta>")

    def edit(line):
        if line.get("index") == 0 and line.get("phase") == "intent":
            line.update(backup=str(planted), previous_sha256=fileops.sha256_file(planted))
        return line

    rewrite(run.journal_path, edit)
    _refused(run.run_id, tmp_path, "backup folder")


def test_a_forged_run_id_that_sorts_last_but_started_earlier_is_not_undone(shoot, home, tmp_path):
    run = execute(cull(shoot))
    forged_id = "29991231T235959.999999Z-ffffff"
    earlier = (datetime.fromisoformat(journal.read_run(run.run_id).header["time"]) - timedelta(hours=1)).isoformat()
    forged = run.journal_path.with_name(forged_id + ".jsonl")
    forged.write_text("".join(json.dumps({**json.loads(x), "run_id": forged_id,
                                          **({"time": earlier} if json.loads(x)["type"] == "header" else {})}) + "\n"
                              for x in run.journal_path.read_text().splitlines()))
    assert journal.run_ids() == [forged_id, run.run_id]  # ordered by recorded start, not by name
    assert journal.latest_run_id() == run.run_id
    _refused(forged_id, tmp_path, "start does not match its run id")
    report = undo_latest()
    assert report.run_id == run.run_id and report.complete
    assert journal.read_run(forged_id).undone is None


def test_a_forged_run_that_claims_a_future_start_is_neither_picked_nor_undone(shoot, home, tmp_path):
    run = execute(cull(shoot))
    forged_id = "29991231T235959.999999Z-ffffff"
    future = datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc).isoformat()
    forged = run.journal_path.with_name(forged_id + ".jsonl")
    forged.write_text("".join(json.dumps({**json.loads(x), "run_id": forged_id,
                                          **({"time": future} if json.loads(x)["type"] == "header" else {})}) + "\n"
                              for x in run.journal_path.read_text().splitlines()))
    assert journal.run_ids() == [run.run_id, forged_id]  # its recorded start is the latest...
    assert journal.latest_run_id() == run.run_id          # ...but a start in the future is not believed
    _refused(forged_id, tmp_path, "start is in the future")
    assert undo_latest().run_id == run.run_id


def test_a_version_1_journal_of_todays_code_still_undoes(shoot, home, tmp_path):
    """Written before the header recorded its folders: the recorded roots and the command line's folders."""
    root, records = shoot
    before = tree(tmp_path)
    sort_run = execute(plan_sort_into(records, tmp_path / "sorted", mode="move"), command="sort",
                       argv=["sort", "shoot", "--into", "sorted"], cwd=tmp_path)

    def as_version_1(line):
        if line["type"] == "header":
            line.update(version=1, roots=[str(tmp_path / "sorted")])  # what version 1 recorded for sort
            del line["folders"]
        return line

    rewrite(sort_run.journal_path, as_version_1)
    assert undo(sort_run.run_id).complete
    assert tree(tmp_path) == before


# ------------------------------------------------------------------------------------- empty journals

@pytest.mark.parametrize("content", [b"", b'{"type": "header", "version": 2, "comm'])
def test_a_journal_cut_off_at_its_creation_is_an_empty_run(shoot, home, tmp_path, content):
    run = execute(cull(shoot))
    empty_id = journal.new_run_id()
    (run.journal_path.parent / f"{empty_id}.jsonl").write_bytes(content)

    listed = run_cli("history", "--format", "jsonl")
    assert listed.exit_code == 0
    states = {r["run_id"]: r["state"] for r in map(json.loads, listed.stdout.splitlines())}
    assert states == {empty_id: "empty", run.run_id: "done"}
    with pytest.raises(JournalError, match="nothing to undo"):
        undo(empty_id)
    assert journal.latest_run_id() == run.run_id
    done = run_cli("undo")
    assert done.exit_code == 0 and f"undo {run.run_id}" in done.stderr


# ------------------------------------------------------------------------------------- leftovers

def _partials(folder):
    return sorted(p.name for p in folder.rglob(f"*{fileops.PARTIAL_SUFFIX}"))


def _killed(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.run([sys.executable, "-c", KILLED_CHILD, *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_a_killed_tag_leaves_no_temporary_file_after_the_next_run(shoot, home, tmp_path):
    root, records = shoot
    look_alike = write(root / "b/.IMG_3.xmp.0123abcd.qualiclip-partial", b"not ours: no journal names it")
    _killed("tag", "IMG_3.xmp", json.dumps([(r.path, r.score) for r in records]))
    assert len(_partials(root)) == 2  # the killed write's temporary file, and the user's look-alike

    execute(cull(shoot, below=0.06))  # the next run, of another command
    assert _partials(root) == [look_alike.name] and look_alike.read_bytes() == b"not ours: no journal names it"
    (killed,) = [s for s in journal.history() if s.command == "tag"]
    assert undo(killed.run_id).complete
    assert not (root / "b/IMG_3.xmp").exists() and (root / "a/IMG_1.xmp").read_bytes() == SIDECAR


def test_a_killed_undo_leaves_no_temporary_file_after_the_next_undo(shoot, home, tmp_path):
    root, _ = shoot
    before = tree(tmp_path)
    run = execute(cull(shoot))
    _killed("undo", ".IMG_3.jpg.", run.run_id)
    assert len(_partials(root / "b")) == 1 and not (root / "b/IMG_3.jpg").exists()
    assert journal.history()[0].state == "undo interrupted"

    assert clean_leftovers() == 1  # what the next run of any command does first
    assert _partials(root) == []
    assert undo(run.run_id).complete
    assert tree(tmp_path) == before
