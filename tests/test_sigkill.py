"""A cull killed by a real SIGKILL in the middle of the run loses nothing, and undo restores every file."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from qualiclip_cli.core.curation import journal
from qualiclip_cli.core.curation.undo import undo

from curation_support import REPO_ROOT, snapshot, write

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

# The child runs the real core. Only the test slows each move down (a sleep either side of the real
# primitive, so the kill lands before, during or after a step); production code has no such hook.
CHILD = """
import sys, time
from pathlib import Path
from qualiclip_cli.core.curation import fileops
from qualiclip_cli.core.curation.execute import execute
from qualiclip_cli.core.curation.plan import plan_cull, plan_rank_prefix, plan_sort_into, plan_tag
from qualiclip_cli.core.curation.undo import undo
from qualiclip_cli.core.records import ScoreRecord
from qualiclip_cli.core.curation.selection import CullCriteria

real_move = fileops.move_file

def slow_move(*args, **kwargs):
    time.sleep(0.006)
    final = real_move(*args, **kwargs)
    time.sleep(0.006)
    return final

fileops.move_file = slow_move
root = Path(sys.argv[1])
records = [ScoreRecord(path=str(p), score=0.1 + (i % 7) / 100) for i, p in enumerate(sorted(root.rglob("*.jpg")))]
plan = plan_cull(records, CullCriteria(below=0.5), roots=[root])
execute(plan, command="cull", argv=["cull", str(root), "--below", "0.5"])
"""


def done_lines(folder):
    runs = list(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not runs:
        return 0
    return sum(1 for line in runs[0].read_bytes().splitlines() if b'"phase": "done"' in line)


def test_sigkill_mid_cull_then_undo_restores_everything(tmp_path, monkeypatch):
    home = tmp_path / "qhome"
    monkeypatch.setenv("QUALICLIP_HOME", str(home))
    root = tmp_path / "shoot"
    for i in range(160):
        photo = write(root / f"d{i % 4}" / f"IMG_{i:04d}.jpg", f"jpeg {i} ".encode() * (1 + i % 13), 1_400_000_000 + i)
        if i % 4 == 0:
            write(photo.with_suffix(".xmp"), f"<xmp for {i}/>".encode(), 1_400_000_000 + i)
    before = snapshot(root, include_dirs=True)
    assert len(before) == 200 + 4

    env = dict(os.environ, QUALICLIP_HOME=str(home), PYTHONPATH=str(REPO_ROOT))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root)], env=env, stderr=subprocess.PIPE)
    folder = home / "state" / "journal"
    deadline = time.monotonic() + 30
    while done_lines(folder) < 40:
        assert child.poll() is None, f"the run ended before it could be killed: {child.stderr.read().decode()}"
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    child.stderr.close()

    (run_id,) = journal.run_ids()
    log = journal.read_run(run_id)
    assert log.end is None
    assert 40 <= log.counts()["done"] < 200

    # nothing lost: every file is at its source or at its quarantine destination, with its content
    moved = 0
    for rel, (digest, size, mtime) in before.items():
        if rel.endswith("/"):
            continue
        places = [p for p in (root / rel, root / "_rejected" / rel) if p.is_file()]
        assert places, f"{rel} is nowhere"
        assert all(snapshot(p.parent).get(p.name) == (digest, size, mtime) for p in places), rel
        moved += (root / "_rejected" / rel).is_file()
    assert moved >= 40

    report = undo(run_id)
    assert report.complete, [i.message for i in report.problems]
    assert snapshot(root, include_dirs=True) == before
    summary = journal.history()[0]
    assert summary.run_id == run_id and summary.undone == "complete" and not summary.finished
    assert json.loads(log.path.read_text().splitlines()[-1])["type"] == "undo"
