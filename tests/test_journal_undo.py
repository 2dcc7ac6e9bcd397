"""Plan -> execute -> undo: dry runs touch nothing, undo restores trees byte-identical (paths, contents,
mtimes), siblings travel and come back, collisions never overwrite, interrupted steps are recovered."""

import errno
import json
import os
import subprocess
import sys

import pytest

from qualiclip_cli.core.curation import fileops, journal
from qualiclip_cli.core.curation.execute import execute
from qualiclip_cli.core.curation.plan import SkipKind, plan_cull, plan_rank_prefix, plan_sort_into, plan_tag
from qualiclip_cli.core.curation.selection import CullCriteria
from qualiclip_cli.core.curation.undo import undo
from qualiclip_cli.core.errors import CurationError, JournalError

from curation_support import REPO_ROOT, cull, record, snapshot, write


class Crash(BaseException):
    """Stands for the process dying at this point (not caught by per-operation error handling)."""


@pytest.fixture
def shoot(tmp_path):
    root = tmp_path / "shoot"
    t = 1_500_000_000
    files = {
        "a/IMG_1.jpg": 0.10, "a/IMG_1.xmp": None, "a/IMG_1.CR2": None, "a/IMG_1.CR2.xmp": None,
        "a/IMG_2.jpg": 0.90, "b/IMG_3.jpg": 0.20, "b/IMG_3.jpg.xmp": None, "b/IMG_4.png": 0.35,
        "c/broken.jpg": "error", "IMG_5.jpg": 0.05,
    }
    records = []
    for i, (rel, score) in enumerate(files.items()):
        p = write(root / rel, f"content of {rel}".encode() * (i + 1), t + i * 1000)
        if score == "error":
            records.append(record(p, None, status="error"))
        elif score is not None:
            records.append(record(p, score))
    return root, records


def test_dry_run_plans_touch_nothing(shoot, home, tmp_path):
    root, records = shoot
    before = snapshot(tmp_path, include_dirs=True)
    plans = [cull(shoot), cull(shoot, action="trash"), cull(shoot, action="copy", quarantine_dir=tmp_path / "q"),
             plan_sort_into(records, tmp_path / "sorted", mode="move"),
             plan_rank_prefix(records),
             plan_tag(records, "ab" * 32, "policy")]
    operations = [op for p in plans for op in p.operations]
    assert len(operations) > 20
    assert snapshot(tmp_path, include_dirs=True) == before
    assert not home.exists()


def test_plan_renders_like_the_run(shoot, home):
    plan = cull(shoot)
    result = execute(plan, argv=["cull", "--below", "0.4"])
    assert [o.operation for o in result.outcomes] == plan.operations  # one outcome per planned step, in order
    assert all(o.status == "done" and o.destination == o.operation.destination for o in result.outcomes)


def test_move_and_undo_restore_the_tree_byte_identical(shoot, home, tmp_path):
    root, records = shoot
    before = snapshot(root, include_dirs=True)
    plan = cull(shoot)
    result = execute(plan, command="cull", argv=["cull", str(root), "--below", "0.4"])
    assert result.counts()["done"] == len(plan) and not result.failures
    rejected = root / "_rejected"
    # photos keep their relative layout, siblings travel with them
    for rel in ("a/IMG_1.jpg", "a/IMG_1.xmp", "a/IMG_1.CR2", "a/IMG_1.CR2.xmp", "b/IMG_3.jpg",
                "b/IMG_3.jpg.xmp", "b/IMG_4.png", "IMG_5.jpg"):
        assert (rejected / rel).is_file() and not (root / rel).exists(), rel
    assert (root / "a/IMG_2.jpg").exists() and (root / "c/broken.jpg").exists()

    report = undo(result.run_id)
    assert report.complete and len(report.restored) == len(plan)
    assert snapshot(root, include_dirs=True) == before  # paths, contents, mtimes; _rejected/ gone too
    (summary,) = journal.history()
    assert summary.run_id == result.run_id and summary.undone == "complete" and summary.finished
    assert summary.command == "cull" and summary.counts["done"] == len(plan)
    with pytest.raises(JournalError, match="already undone"):
        undo(result.run_id)


def test_journal_lines(shoot, home):
    root, _ = shoot
    result = execute(cull(shoot), command="cull", argv=["cull", str(root)], cwd="/somewhere")
    lines = [json.loads(x) for x in result.journal_path.read_text().splitlines()]
    header = lines[0]
    assert result.journal_path.parent == home / "state" / "journal"
    assert journal.RUN_ID_RE.match(result.run_id)
    assert header["type"] == "header" and header["command"] == "cull" and header["dry_run"] is False
    assert header["argv"] == ["cull", str(root)] and header["cwd"] == "/somewhere" and header["roots"] == [str(root)]
    ops = [x for x in lines if x["type"] == "op"]
    first_intent = ops[0]
    assert first_intent["phase"] == "intent" and ops[1]["phase"] == "done" and ops[1]["index"] == 0
    assert first_intent["sha256"] == fileops.sha256_file(ops[1]["destination"])
    assert {"size", "mtime_ns", "source", "destination", "time", "action"} <= set(first_intent)
    assert lines[-1]["type"] == "end"


def test_collisions_are_numbered_with_their_siblings(shoot, home):
    root, _ = shoot
    write(root / "_rejected/a/IMG_1.jpg", b"an older reject")
    plan = cull(shoot)
    dests = {op.source.name: op.destination.name for op in plan}
    assert dests["IMG_1.jpg"] == "IMG_1 (1).jpg"
    assert dests["IMG_1.xmp"] == "IMG_1 (1).xmp" and dests["IMG_1.CR2.xmp"] == "IMG_1 (1).CR2.xmp"
    before = snapshot(root)
    run = execute(plan)
    assert (root / "_rejected/a/IMG_1.jpg").read_bytes() == b"an older reject"
    undo(run.run_id)
    assert snapshot(root) == before


def test_refuse_mode_skips_at_plan_time_and_fails_at_run_time(shoot, home):
    root, _ = shoot
    write(root / "_rejected/a/IMG_1.jpg", b"an older reject")
    plan = cull(shoot, on_collision="refuse")
    assert root / "a/IMG_1.jpg" in [s.photo for s in plan.skipped]
    assert all(op.source.parent != root / "a" for op in plan)  # its siblings stay too
    # a destination that appears after planning: the operation fails, nothing is overwritten
    write(root / "_rejected/b/IMG_3.jpg", b"appeared")
    result = execute(plan)
    failed = {o.operation.source.name for o in result.failures}
    skipped = {o.operation.source.name for o in result.outcomes if o.status == "skipped"}
    assert failed == {"IMG_3.jpg"} and skipped == {"IMG_3.jpg.xmp"}
    assert (root / "_rejected/b/IMG_3.jpg").read_bytes() == b"appeared"
    assert (root / "b/IMG_3.jpg").exists() and (root / "b/IMG_3.jpg.xmp").exists()


def test_destination_taken_after_planning_gets_a_new_number(shoot, home):
    root, _ = shoot
    plan = cull(shoot)
    write(root / "_rejected/IMG_5.jpg", b"appeared")
    result = execute(plan)
    (moved,) = [o for o in result.outcomes if o.operation.source.name == "IMG_5.jpg"]
    assert moved.destination.name == "IMG_5 (1).jpg"
    assert (root / "_rejected/IMG_5.jpg").read_bytes() == b"appeared"


def test_cross_filesystem_run_and_undo(shoot, home, monkeypatch):
    root, _ = shoot
    monkeypatch.setattr(fileops, "same_filesystem", lambda a, b: False)
    used = []
    real = fileops._copy_verified
    monkeypatch.setattr(fileops, "_copy_verified", lambda *a: (used.append(a[0]), real(*a))[1])
    before = snapshot(root, include_dirs=True)
    run = execute(cull(shoot))
    assert len(used) == run.counts()["done"] > 0
    undo(run.run_id)
    assert len(used) == 2 * run.counts()["done"]  # undo went through the verified copy too
    assert snapshot(root, include_dirs=True) == before


def test_copy_quarantine_and_undo(shoot, home, tmp_path):
    root, _ = shoot
    before = snapshot(root)
    run = execute(cull(shoot, action="copy", quarantine_dir=tmp_path / "q"))
    assert (tmp_path / "q/a/IMG_1.CR2").read_bytes() == (root / "a/IMG_1.CR2").read_bytes()
    assert snapshot(root) == before
    (root / "b/IMG_4.png").write_bytes(b"edited original")  # its copy is then the only old version
    report = undo(run.run_id)
    assert [i.path for i in report.problems] == [str(root / "b/IMG_4.png")]
    assert (tmp_path / "q/b/IMG_4.png").exists()
    assert sorted(str(p.relative_to(tmp_path / "q")) for p in (tmp_path / "q").rglob("*") if p.is_file()) == [
        "b/IMG_4.png"]
    assert journal.read_run(run.run_id).undone == "partial"


def test_undo_reports_an_occupied_source_and_can_be_rerun(shoot, home):
    root, _ = shoot
    run = execute(cull(shoot))
    write(root / "IMG_5.jpg", b"a new file with the old name")
    report = undo(run.run_id)
    assert [i.path for i in report.problems] == [str(root / "IMG_5.jpg")]
    assert (root / "_rejected/IMG_5.jpg").exists()
    assert (root / "IMG_5.jpg").read_bytes() == b"a new file with the old name"
    assert journal.latest_run_id() == run.run_id  # partially undone runs are still offered
    (root / "IMG_5.jpg").rename(root / "elsewhere.jpg")
    assert undo(run.run_id).complete
    assert (root / "IMG_5.jpg").exists() and not (root / "_rejected").exists()


def test_sibling_stays_when_its_photo_fails(shoot, home, monkeypatch):
    root, _ = shoot
    real = fileops.move_file

    def flaky(src, *a, **k):
        if os.path.basename(src) == "IMG_1.jpg":
            raise CurationError(f"{src}: simulated failure")
        return real(src, *a, **k)

    monkeypatch.setattr(fileops, "move_file", flaky)
    result = execute(cull(shoot))
    status = {o.operation.source.name: o.status for o in result.outcomes}
    assert status["IMG_1.jpg"] == "failed"
    assert status["IMG_1.xmp"] == status["IMG_1.CR2"] == status["IMG_1.CR2.xmp"] == "skipped"
    assert status["IMG_5.jpg"] == "done"  # the batch went on
    assert (root / "a/IMG_1.xmp").exists()
    assert journal.read_run(result.run_id).counts()["failed"] == 1


def _die_when(func, predicate):
    def wrapper(*a, **k):
        if predicate(*a):
            raise Crash()
        return func(*a, **k)
    return wrapper


def _die_after(func, predicate):
    def wrapper(*a, **k):
        out = func(*a, **k)
        if predicate(*a):
            raise Crash()
        return out
    return wrapper


@pytest.mark.parametrize("where", ["after_link", "before_done", "cross_fs_before_remove", "cross_fs_partial"])
def test_interrupted_step_is_undone(shoot, home, monkeypatch, where):
    """Dying at each point of a move leaves an intent-only op that undo resolves by hash."""
    root, _ = shoot
    source = str(root / "b/IMG_3.jpg")
    before = snapshot(root, include_dirs=True)
    with monkeypatch.context() as m:
        if where == "after_link":  # same filesystem: new name linked, old name not yet removed
            m.setattr(fileops.os, "unlink", _die_when(os.unlink, lambda p, *a: str(p) == source))
        elif where == "before_done":  # the step finished, its "done" line was never written
            m.setattr(fileops, "move_file", _die_after(fileops.move_file, lambda src, *a: str(src) == source))
        elif where == "cross_fs_before_remove":  # verified copy in place, original not yet removed
            m.setattr(fileops, "same_filesystem", lambda a, b: False)
            m.setattr(fileops.os, "unlink", _die_when(os.unlink, lambda p, *a: str(p) == source))
        else:  # cross filesystem: partial copy written and verified, not yet renamed into place
            m.setattr(fileops, "same_filesystem", lambda a, b: False)
            m.setattr(fileops, "_copy_verified", _die_after(fileops._copy_verified, lambda src, *a: str(src) == source))
        with pytest.raises(Crash):
            execute(cull(shoot))
    (run_id,) = journal.run_ids()
    log = journal.read_run(run_id)
    assert log.end is None and log.ops[-1].phase == "intent"
    summary = journal.history()[0]
    assert summary.finished is False and summary.counts["interrupted"] == 1
    src, dst = root / "b/IMG_3.jpg", root / "_rejected/b/IMG_3.jpg"
    partials = list((root / "_rejected/b").glob(".IMG_3.jpg.*.qualiclip-partial"))
    state = (src.exists(), dst.exists(), bool(partials))
    assert state == {"after_link": (True, True, False), "before_done": (False, True, False),
                     "cross_fs_before_remove": (True, True, False), "cross_fs_partial": (True, False, True)}[where]
    if where == "after_link":
        assert os.path.samefile(src, dst)
    elif where == "cross_fs_before_remove":
        assert not os.path.samefile(src, dst)
    report = undo(run_id)
    assert report.complete, report.problems
    assert snapshot(root, include_dirs=True) == before


def test_torn_last_line_is_ignored(shoot, home):
    run = execute(cull(shoot))
    with open(run.journal_path, "ab") as f:
        f.write(b'{"type": "op", "index": 99, "pha')
    assert journal.read_run(run.run_id).counts()["done"] == run.counts()["done"]
    assert undo(run.run_id).complete
    assert journal.read_run(run.run_id).undone == "complete"


def test_unknown_or_bad_run_ids(home):
    with pytest.raises(JournalError):
        undo("20990101T000000.000000Z-abcdef")
    with pytest.raises(JournalError):
        journal.read_run("../../etc/passwd")
    assert journal.history() == [] and journal.latest_run_id() is None


def test_list_only_plan_is_not_journaled(shoot, home):
    plan = cull(shoot, action="list")
    assert [op.source.name for op in plan] == ["IMG_5.jpg", "IMG_1.jpg", "IMG_3.jpg", "IMG_4.png"]
    result = execute(plan)
    assert result.run_id is None and result.counts()["listed"] == 4
    assert not home.exists()


def test_sort_into_tiers_and_undo(shoot, home, tmp_path):
    root, records = shoot
    before = snapshot(root, include_dirs=True)
    run = execute(plan_sort_into(records, tmp_path / "sorted", mode="move"))
    sorted_files = sorted(str(p.relative_to(tmp_path / "sorted")) for p in (tmp_path / "sorted").rglob("*.*"))
    assert "1-poor/IMG_1.jpg" in sorted_files and "1-poor/IMG_1.CR2.xmp" in sorted_files
    assert "5-excellent/IMG_2.jpg" in sorted_files and "2-fair/IMG_3.jpg.xmp" in sorted_files
    assert "2-fair/IMG_4.png" in sorted_files
    assert (root / "c/broken.jpg").exists()
    undo(run.run_id)
    assert snapshot(root, include_dirs=True) == before and not (tmp_path / "sorted").exists()


def test_rank_prefix_renames_in_place_and_undo(shoot, home):
    root, records = shoot
    before = snapshot(root)
    run = execute(plan_rank_prefix(records))
    names = sorted(p.name for p in (root / "a").iterdir())
    assert names == ["0001_IMG_2.jpg", "0004_IMG_1.CR2", "0004_IMG_1.CR2.xmp", "0004_IMG_1.jpg", "0004_IMG_1.xmp"]
    assert (root / "0005_IMG_5.jpg").exists()
    undo(run.run_id)
    assert snapshot(root) == before


TRASH_SCRIPT = """
import json, sys
from qualiclip_cli.core.curation.execute import execute
from qualiclip_cli.core.curation.plan import plan_cull, plan_rank_prefix, plan_sort_into, plan_tag
from qualiclip_cli.core.curation.undo import undo
from qualiclip_cli.core.records import ScoreRecord
from qualiclip_cli.core.curation.selection import CullCriteria
recs = [ScoreRecord(path=p, score=s) for p, s in json.loads(sys.argv[1])]
plan = plan_cull(recs, CullCriteria(below=0.4), action="trash", roots=[sys.argv[2]])
print(execute(plan, command="cull").run_id)
"""


def run_trash_script(script, shoot, home, tmp_path, *extra):
    """Run `script` (records as JSON, the shoot's root, then `extra`) in a child process whose freedesktop trash
    lies under tmp_path (send2trash reads XDG_DATA_HOME and HOME at import). Returns the process and the
    data_home and user_home it was given."""
    root, records = shoot
    data_home, user_home = tmp_path / "xdg-data", tmp_path / "user-home"
    user_home.mkdir()
    env = dict(os.environ, XDG_DATA_HOME=str(data_home), HOME=str(user_home), QUALICLIP_HOME=str(home),
               PYTHONPATH=str(REPO_ROOT))
    args = json.dumps([(r.path, r.score) for r in records if r.ok])
    proc = subprocess.run([sys.executable, "-c", script, args, str(root), *extra], env=env, capture_output=True,
                          text=True, timeout=60)
    return proc, data_home, user_home


def test_trash_and_undo_restores_from_the_freedesktop_trash(shoot, home, tmp_path, monkeypatch):
    root, records = shoot
    before = snapshot(root, include_dirs=True)
    proc, data_home, user_home = run_trash_script(TRASH_SCRIPT, shoot, home, tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    trash = data_home / "Trash"
    assert (trash / "files/IMG_1.jpg").is_file() and (trash / "files/IMG_1.CR2").is_file()
    assert "Path=" in (trash / "info/IMG_1.jpg.trashinfo").read_text()
    assert not (root / "a/IMG_1.jpg").exists()
    log = journal.read_run(run_id)
    assert all(op.outcome.get("trash_file") for op in log.ops)

    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    monkeypatch.setenv("HOME", str(user_home))
    report = undo(run_id)
    assert report.complete, report.problems
    assert snapshot(root, include_dirs=True) == before
    assert list((trash / "files").iterdir()) == [] and list((trash / "info").iterdir()) == []


def test_history_lists_an_unreadable_run_instead_of_failing(shoot, home):
    run = execute(cull(shoot))
    broken = run.journal_path.with_name("20000101T000000.000000Z-000000.jsonl")
    broken.write_text('{"type": "op"}\nnot json\n{"type": "end"}\n')
    summaries = journal.history()
    assert [s.run_id for s in summaries] == [run.run_id, "20000101T000000.000000Z-000000"]
    assert summaries[1].problem and summaries[0].problem is None
    assert journal.latest_run_id() == run.run_id


def test_killed_after_reserving_a_name_without_hard_links(shoot, home, monkeypatch):
    """On filesystems without hard links the destination name is reserved by an empty file first; a kill right
    after leaves that empty file, which undo removes."""
    root, _ = shoot
    source = str(root / "b/IMG_3.jpg")
    before = snapshot(root, include_dirs=True)
    with monkeypatch.context() as m:
        m.setattr(fileops, "rename_no_clobber",
                  _die_when(fileops.rename_no_clobber, lambda old, *a: str(old) == source))
        with pytest.raises(Crash):
            execute(cull(shoot))
    (root / "_rejected/b/IMG_3.jpg").write_bytes(b"")  # the reservation the kill left behind
    report = undo(journal.run_ids()[0])
    assert report.complete, report.problems
    assert snapshot(root, include_dirs=True) == before


def test_undo_leaves_a_file_edited_in_quarantine(shoot, home):
    root, _ = shoot
    run = execute(cull(shoot))
    (root / "_rejected/b/IMG_4.png").write_bytes(b"retouched after the cull")
    report = undo(run.run_id)
    assert [(i.path, "changed since the run" in i.message) for i in report.problems] == [
        (str(root / "b/IMG_4.png"), True)]
    assert (root / "_rejected/b/IMG_4.png").read_bytes() == b"retouched after the cull"
    assert not (root / "b/IMG_4.png").exists() and (root / "b/IMG_3.jpg").exists()


# --------------------------------------------------------------------------- a photo and its siblings: one unit

# The second member of two units: a/IMG_1.jpg's RAW (IMG_1.CR2 sorts first) and b/IMG_3.jpg's sidecar.
SECOND_MEMBERS = ("a/IMG_1.CR2", "b/IMG_3.jpg.xmp")


def _failing_on_second_members(real, root, err):
    failing = {str(root / rel) for rel in SECOND_MEMBERS}

    def primitive(src, *a, **k):
        if str(src) in failing:
            raise OSError(err, os.strerror(err))
        return real(src, *a, **k)
    return primitive


def _assert_units_whole(plan, result):
    """Every member of each unit is where it began, or all of them are at their destinations."""
    outcome = {o.index: o for o in result.outcomes}
    members: dict = {}
    for i, op in enumerate(plan.operations):
        members.setdefault(op.sibling_of or op.source, []).append(i)
    for unit in members.values():
        ops = [plan.operations[i] for i in unit]
        statuses = [outcome[i].status for i in unit]
        if statuses == ["done"] * len(unit):
            assert all(outcome[i].destination.is_file() for i in unit), ops[0].source
            assert all(op.source.is_file() == (op.action == "copy") for op in ops), ops[0].source
        else:
            assert all(op.source.is_file() for op in ops), ops[0].source
            assert not any(op.destination is not None and op.destination.exists() for op in ops), ops[0].source
            assert statuses.count("failed") == 1, statuses
    return outcome


PLANS = {
    "cull move": lambda shoot, tmp: cull(shoot),
    "cull copy": lambda shoot, tmp: cull(shoot, action="copy", quarantine_dir=tmp / "q"),
    "sort move": lambda shoot, tmp: plan_sort_into(shoot[1], tmp / "sorted", mode="move"),
    "sort copy": lambda shoot, tmp: plan_sort_into(shoot[1], tmp / "sorted", mode="copy"),
    "rank prefix": lambda shoot, tmp: plan_rank_prefix(shoot[1]),
}


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES], ids=["ENOSPC", "EACCES"])
@pytest.mark.parametrize("kind", list(PLANS))
def test_a_unit_whose_member_cannot_move_is_put_back_whole(shoot, home, tmp_path, monkeypatch, kind, err):
    root, _ = shoot
    before = snapshot(root, include_dirs=True)
    plan = PLANS[kind](shoot, tmp_path)
    primitive = "copy_file" if plan.operations[0].action == "copy" else "move_file"
    with monkeypatch.context() as m:
        m.setattr(fileops, primitive, _failing_on_second_members(getattr(fileops, primitive), root, err))
        result = execute(plan)
    outcome = _assert_units_whole(plan, result)
    by_source = {str(o.operation.source.relative_to(root)): o for o in outcome.values()}
    for rel in SECOND_MEMBERS:  # one failure row per unit, naming the member and the reason
        failed = by_source[rel]
        assert failed.status == "failed"
        assert failed.error.startswith(f"{root / rel}: {os.strerror(err)}"), failed.error
        assert "left where it was" in failed.error
    assert [o.status for o in result.failures] == ["failed", "failed"]
    assert by_source["a/IMG_1.jpg"].status == by_source["b/IMG_3.jpg"].status == "rolled_back"
    assert by_source["a/IMG_1.xmp"].status == by_source["a/IMG_1.CR2.xmp"].status == "skipped"
    assert by_source["IMG_5.jpg"].status == "done"  # the batch went on
    assert [o.status for o in result.outcomes].count("rolled_back") == 2

    log = journal.read_run(result.run_id)  # the journal reads back, rollbacks recorded
    photo_op = next(op for op in log.ops if op.intent["source"] == str(root / "a/IMG_1.jpg"))
    assert photo_op.phase == "failed" and photo_op.outcome["rollback"] == "done"
    report = undo(result.run_id)
    assert report.complete, [i.message for i in report.problems]
    assert snapshot(root, include_dirs=True) == before
    assert not (tmp_path / "q").exists() and not (tmp_path / "sorted").exists()


def test_a_unit_is_put_back_when_a_member_is_unreadable(shoot, home):
    """A real EACCES: the RAW cannot be read (hashed) once its photo has moved."""
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    root, _ = shoot
    raw = root / "a/IMG_1.CR2"
    before = snapshot(root, include_dirs=True)
    raw.chmod(0)
    try:
        result = execute(cull(shoot))
    finally:
        raw.chmod(0o644)
    _assert_units_whole(cull(shoot), result)
    assert (root / "a/IMG_1.jpg").is_file() and not (root / "_rejected/a/IMG_1.jpg").exists()
    assert undo(result.run_id).complete
    assert snapshot(root, include_dirs=True) == before


@pytest.mark.parametrize("where", ["rollback_started", "rollback_after_link", "rollback_before_done",
                                   "cross_fs_rollback_partial"])
def test_killed_while_putting_a_unit_back_undo_restores_everything(shoot, home, monkeypatch, where):
    root, _ = shoot
    before = snapshot(root, include_dirs=True)
    moved = str(root / "_rejected/a/IMG_1.jpg")  # the photo, moved before its RAW failed
    with monkeypatch.context() as m:
        if where == "cross_fs_rollback_partial":
            m.setattr(fileops, "same_filesystem", lambda a, b: False)
        m.setattr(fileops, "move_file", _failing_on_second_members(fileops.move_file, root, errno.ENOSPC))
        if where == "rollback_started":  # the rollback is journaled, the file not yet touched
            m.setattr(fileops, "move_file", _die_when(fileops.move_file, lambda src, *a: str(src) == moved))
        elif where == "rollback_after_link":  # the source name linked again, the quarantine name not removed
            m.setattr(fileops.os, "unlink", _die_when(os.unlink, lambda p, *a: str(p) == moved))
        elif where == "rollback_before_done":  # back at its source, the "done" of the rollback not written
            m.setattr(fileops, "move_file", _die_after(fileops.move_file, lambda src, *a: str(src) == moved))
        else:  # back across filesystems: the verified partial copy written beside the source, not renamed
            m.setattr(fileops, "_copy_verified", _die_after(fileops._copy_verified, lambda src, *a: str(src) == moved))
        with pytest.raises(Crash):
            execute(cull(shoot))
    (run_id,) = journal.run_ids()
    log = journal.read_run(run_id)
    assert log.end is None
    photo_op = next(op for op in log.ops if op.intent["source"] == str(root / "a/IMG_1.jpg"))
    assert photo_op.outcome["rollback"] == "started"
    report = undo(run_id)
    assert report.complete, [i.message for i in report.problems]
    assert snapshot(root, include_dirs=True) == before  # no second name, no partial copy left behind


TRASH_FAILING_SCRIPT = TRASH_SCRIPT.replace("recs = ", """
import errno, os
from qualiclip_cli.core.curation import trash
real_trash_file = trash.trash_file
failing = set(json.loads(sys.argv[3]))

def flaky(path, *a, **k):
    if str(path) in failing:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_trash_file(path, *a, **k)

trash.trash_file = flaky
recs = """)


def test_a_unit_that_cannot_go_to_the_trash_whole_comes_back_from_it(shoot, home, tmp_path, monkeypatch):
    root, records = shoot
    before = snapshot(root, include_dirs=True)
    failing = json.dumps([str(root / rel) for rel in SECOND_MEMBERS])
    proc, data_home, user_home = run_trash_script(TRASH_FAILING_SCRIPT, shoot, home, tmp_path, failing)
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip()
    for rel in ("a/IMG_1.jpg", "a/IMG_1.CR2", "a/IMG_1.xmp", "b/IMG_3.jpg", "b/IMG_3.jpg.xmp"):
        assert (root / rel).is_file(), rel  # the failed units stay whole, in the shoot
    assert not (root / "IMG_5.jpg").exists() and not (root / "b/IMG_4.png").exists()  # the others went
    trash = data_home / "Trash"
    assert sorted(p.name for p in (trash / "files").iterdir()) == ["IMG_4.png", "IMG_5.jpg"]
    assert sorted(p.name for p in (trash / "info").iterdir()) == ["IMG_4.png.trashinfo", "IMG_5.jpg.trashinfo"]
    log = journal.read_run(run_id)
    rolled = [op for op in log.ops if op.outcome.get("rollback")]
    assert [(os.path.basename(op.intent["source"]), op.outcome["rollback"]) for op in rolled] == [
        ("IMG_1.jpg", "done"), ("IMG_3.jpg", "done")]

    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))
    monkeypatch.setenv("HOME", str(user_home))
    report = undo(run_id)
    assert report.complete, report.problems
    assert snapshot(root, include_dirs=True) == before
    assert list((trash / "files").iterdir()) == []


def test_a_name_taken_after_planning_numbers_the_whole_unit(shoot, home):
    root, _ = shoot
    before = snapshot(root)
    plan = cull(shoot)
    write(root / "_rejected/a/IMG_1.jpg", b"appeared")
    result = execute(plan)
    dests = {o.operation.source.name: o.destination.name for o in result.outcomes if o.operation.source.parent.name == "a"}
    assert dests == {"IMG_1.jpg": "IMG_1 (1).jpg", "IMG_1.CR2": "IMG_1 (1).CR2", "IMG_1.CR2.xmp": "IMG_1 (1).CR2.xmp",
                     "IMG_1.xmp": "IMG_1 (1).xmp"}
    assert (root / "_rejected/a/IMG_1.jpg").read_bytes() == b"appeared"
    assert undo(result.run_id).complete
    (root / "_rejected/a/IMG_1.jpg").unlink()
    assert snapshot(root) == before


# --------------------------------------------------------------------------------------- paths and symlinks


def test_a_symlinked_quarantine_is_refused_unless_named(shoot, home, tmp_path):
    root, records = shoot
    elsewhere = tmp_path / "other-disk"
    elsewhere.mkdir()
    (root / "_rejected").symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(root, include_dirs=True)
    for action in ("move", "copy"):
        with pytest.raises(CurationError, match=r"_rejected: is a symbolic link .*refusing"):
            cull(shoot, action=action)
    from qualiclip_cli.core.curation.plan import refuse_linked_quarantine

    with pytest.raises(CurationError, match="_rejected: is a symbolic link"):
        refuse_linked_quarantine([root])
    assert snapshot(root, include_dirs=True) == before and list(elsewhere.iterdir()) == []
    # named explicitly as the quarantine folder, the link is followed
    run = execute(cull(shoot, quarantine_dir=root / "_rejected"))
    assert not run.failures and (elsewhere / "a/IMG_1.jpg").is_file() and (elsewhere / "a/IMG_1.CR2").is_file()
    assert undo(run.run_id).complete and snapshot(root, include_dirs=True) == before


def test_a_symlinked_folder_below_the_destination_is_refused(shoot, home, tmp_path):
    root, records = shoot
    elsewhere = tmp_path / "other-disk"
    elsewhere.mkdir()
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "b").symlink_to(elsewhere, target_is_directory=True)  # where b/ photos would go
    with pytest.raises(CurationError, match=r"q/b: is a symbolic link"):
        cull(shoot, quarantine_dir=tmp_path / "q")
    (tmp_path / "sorted").mkdir()
    (tmp_path / "sorted" / "1-poor").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(CurationError, match=r"sorted/1-poor: is a symbolic link"):
        plan_sort_into(records, tmp_path / "sorted")
    assert list(elsewhere.iterdir()) == []


def test_dotdot_after_a_symlinked_folder_acts_on_the_files_that_were_found(tmp_path, home):
    """`dd/shoot/link/..` is the folder above the link's target for the kernel, not dd/shoot: the walk, the
    plan and the moves all agree on that."""
    from qualiclip_cli.core.images.discovery import find_images

    dd = tmp_path / "dd"
    write(dd / "elsewhere/inner/keep.txt", b"")
    write(dd / "elsewhere/IMG_9.jpg", b"the photo that is scored")
    write(dd / "elsewhere/IMG_9.xmp", b"its sidecar")
    write(dd / "shoot/IMG_9.jpg", b"a different photo, same name")
    (dd / "shoot/link").symlink_to(dd / "elsewhere/inner", target_is_directory=True)
    arg = dd / "shoot/link/.."
    found = [f.path for f in find_images([arg])]
    assert found == [dd / "elsewhere/IMG_9.jpg"]
    plan = plan_cull([record(p, 0.1) for p in found], CullCriteria(below=0.5), roots=[arg])
    assert [(op.source, op.destination) for op in plan] == [
        (dd / "elsewhere/IMG_9.jpg", dd / "elsewhere/_rejected/IMG_9.jpg"),
        (dd / "elsewhere/IMG_9.xmp", dd / "elsewhere/_rejected/IMG_9.xmp")]
    run = execute(plan)
    assert not run.failures
    assert (dd / "elsewhere/_rejected/IMG_9.jpg").read_bytes() == b"the photo that is scored"
    assert (dd / "shoot/IMG_9.jpg").read_bytes() == b"a different photo, same name"
    assert not (dd / "shoot/_rejected").exists()
    # records spelled with the ".." themselves (a library caller) are read the same way
    spelled = plan_cull([record(arg / "_rejected/IMG_9.jpg", 0.1)], CullCriteria(below=0.5), roots=[arg],
                        quarantine_dir=arg / "q")
    assert [(op.source, op.destination) for op in spelled][0] == (
        dd / "elsewhere/_rejected/IMG_9.jpg", dd / "elsewhere/q/_rejected/IMG_9.jpg")


@pytest.mark.parametrize("kind", ["cull move", "cull copy", "sort copy", "rank prefix"])
def test_a_symlinked_photo_is_left_in_place_and_reported(shoot, home, tmp_path, kind):
    root, records = shoot
    link = root / "b/LINK_6.jpg"
    link.symlink_to(root / "a/IMG_2.jpg")
    write(root / "b/LINK_6.xmp", b"the link's sidecar")
    records = [*records, record(link, 0.01)]
    plan = PLANS[kind]((root, records), tmp_path)
    (skip,) = [s for s in plan.skipped if s.photo == link]
    assert skip.kind is SkipKind.SYMLINK and skip.kind.problem and skip.reason == "is a symbolic link; left in place"
    assert not any(op.source.name.startswith("LINK_6") for op in plan)
    before = snapshot(root, include_dirs=True)
    run = execute(plan)
    assert not run.failures
    assert link.is_symlink() and os.readlink(link) == str(root / "a/IMG_2.jpg")
    assert (root / "b/LINK_6.xmp").read_bytes() == b"the link's sidecar"
    assert undo(run.run_id).complete
    assert snapshot(root, include_dirs=True) == before
    assert os.readlink(link) == str(root / "a/IMG_2.jpg")


# ------------------------------------------------------- issue 12: sub-folders in tiers, rank prefix replaced


def test_sort_into_keeps_sub_folders_relative_to_the_root_and_undo(shoot, home, tmp_path):
    root, records = shoot
    before = snapshot(root, include_dirs=True)
    into = tmp_path / "sorted"
    run = execute(plan_sort_into(records, into, mode="move", roots=[root]))
    sorted_files = sorted(str(p.relative_to(into)) for p in into.rglob("*.*"))
    assert sorted_files == sorted([
        "1-poor/a/IMG_1.jpg", "1-poor/a/IMG_1.xmp", "1-poor/a/IMG_1.CR2", "1-poor/a/IMG_1.CR2.xmp",
        "5-excellent/a/IMG_2.jpg", "2-fair/b/IMG_3.jpg", "2-fair/b/IMG_3.jpg.xmp", "2-fair/b/IMG_4.png",
        "1-poor/IMG_5.jpg",
    ])
    undo(run.run_id)
    assert snapshot(root, include_dirs=True) == before and not into.exists()


def test_sort_into_by_a_sub_score_tiers_on_it(tmp_path, home):
    from qualiclip_cli.core.records import PAIR_NAMES, ScoreRecord

    photo = write(tmp_path / "shoot" / "a.jpg", b"a")
    pairs = dict.fromkeys(PAIR_NAMES, 0.5) | {"sharpness": 0.95}
    rec = ScoreRecord(path=str(photo), score=0.1, pairs=pairs)
    plan = plan_sort_into([rec], tmp_path / "sorted", roots=[tmp_path / "shoot"], by="sharpness")
    assert [op.destination for op in plan] == [tmp_path / "sorted" / "5-excellent" / "a.jpg"]
    assert plan.operations[0].reason == "tier 5, sharpness 0.9500"


def _rank_names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_rank_prefix_run_twice_replaces_its_own_prefix_and_keeps_a_users_digits(tmp_path, home):
    root = tmp_path / "shoot"
    a, b = write(root / "IMG_1.jpg", b"one"), write(root / "IMG_2.jpg", b"two")
    side = write(root / "IMG_2.xmp", b"<x/>")
    user = write(root / "2024_trip.jpg", b"the user's own digits")
    records = [record(a, 0.9), record(b, 0.5), record(user, 0.1)]
    first = execute(plan_rank_prefix(records))
    assert _rank_names(root) == ["0001_IMG_1.jpg", "0002_IMG_2.jpg", "0002_IMG_2.xmp", "0003_2024_trip.jpg"]
    assert side.exists() is False

    # The scores changed: IMG_2 is now the best. Our prefixes are replaced; the user's "2024_" stays.
    records = [record(root / "0001_IMG_1.jpg", 0.2), record(root / "0002_IMG_2.jpg", 0.8),
               record(root / "0003_2024_trip.jpg", 0.5)]
    plan = plan_rank_prefix(records)
    second = execute(plan)
    assert _rank_names(root) == ["0001_IMG_2.jpg", "0001_IMG_2.xmp", "0002_2024_trip.jpg", "0003_IMG_1.jpg"]

    # A third ranking in the same order changes nothing and says so.
    records = [record(root / "0001_IMG_2.jpg", 0.8), record(root / "0002_2024_trip.jpg", 0.5),
               record(root / "0003_IMG_1.jpg", 0.2)]
    again = plan_rank_prefix(records)
    assert len(again) == 0 and {s.kind for s in again.skipped} == {SkipKind.UNCHANGED}
    assert not any(s.kind.problem for s in again.skipped)

    undo(second.run_id)
    undo(first.run_id)
    assert _rank_names(root) == ["2024_trip.jpg", "IMG_1.jpg", "IMG_2.jpg", "IMG_2.xmp"]


def test_a_prefix_we_did_not_write_is_never_stripped(tmp_path, home):
    root = tmp_path / "shoot"
    mine = write(root / "0007_IMG_9.jpg", b"named so by the photographer")
    plan = plan_rank_prefix([record(mine, 0.5)])
    assert [op.destination.name for op in plan] == ["0001_0007_IMG_9.jpg"]


def test_a_file_replaced_under_our_name_keeps_its_name(tmp_path, home):
    root = tmp_path / "shoot"
    photo = write(root / "IMG_1.jpg", b"one")
    execute(plan_rank_prefix([record(photo, 0.5)]))
    (root / "0001_IMG_1.jpg").unlink()
    other = write(root / "0001_IMG_1.jpg", b"another file, of another size")
    plan = plan_rank_prefix([record(other, 0.5), record(write(root / "b.jpg", b"b"), 0.9)])
    assert sorted(op.destination.name for op in plan) == ["0001_b.jpg", "0002_0001_IMG_1.jpg"]


def test_cull_unreadable_quarantines_broken_files_with_siblings_and_undo_restores(tmp_path, home):
    from qualiclip_cli.core.records import ScoreRecord

    root = tmp_path / "shoot"
    empty = write(root / "a" / "IMG_1.jpg", b"")
    write(root / "a" / "IMG_1.xmp", b"<x/>")
    write(root / "a" / "IMG_1.CR2", b"raw data")
    trunc = write(root / "IMG_2.jpg", b"\xff\xd8\xff half a jpeg")
    missing = ScoreRecord.failure(str(root / "gone.jpg"), "no such file or directory")
    nan = write(root / "IMG_3.jpg", b"fine, but the model said NaN")
    good = write(root / "IMG_4.jpg", b"good")
    records = [ScoreRecord.failure(str(empty), "empty file (0 bytes)", damaged=True),
               ScoreRecord.failure(str(trunc), "truncated or damaged file", damaged=True), missing,
               ScoreRecord.failure(str(nan), "the model produced NaN"), record(good, 0.1)]
    before = snapshot(root, include_dirs=True)
    plan = plan_cull(records, CullCriteria(unreadable=True), action="move", roots=[root])
    assert [(op.source.name, op.destination.relative_to(root).as_posix()) for op in plan] == [
        ("IMG_2.jpg", "_rejected/IMG_2.jpg"), ("IMG_1.jpg", "_rejected/a/IMG_1.jpg"),
        ("IMG_1.CR2", "_rejected/a/IMG_1.CR2"), ("IMG_1.xmp", "_rejected/a/IMG_1.xmp"),
    ]
    assert plan.operations[0].reason.startswith("unreadable: ")
    run = execute(plan)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "IMG_3.jpg", "IMG_4.jpg", "_rejected/IMG_2.jpg", "_rejected/a/IMG_1.CR2", "_rejected/a/IMG_1.jpg",
        "_rejected/a/IMG_1.xmp"]
    undo(run.run_id)
    assert snapshot(root, include_dirs=True) == before
