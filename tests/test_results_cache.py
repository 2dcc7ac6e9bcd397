"""The results cache: two runs opening a new database at the same moment both work."""

import sqlite3
import subprocess
import sys
import time

_OPEN_AND_STORE = """
import sys, time
from qualiclip_cli.core.records import ScoreRecord
from qualiclip_cli.core.pipeline.cache import FileIdentity, ResultsCache
start = float(sys.argv[2])
while time.time() < start:
    pass
cache = ResultsCache(sys.argv[1], "weights", "identity")
for i in range(6):
    cache.store(FileIdentity(f"/p{i}", 1, 1), ScoreRecord(path=f"p{i}", score=0.5, pairs={}, width=1, height=1))
cache.close()
"""


def test_two_runs_creating_the_cache_together(tmp_path):
    # Switching a new database to WAL fails at once ("database is locked", no busy wait) while the other
    # connection holds the lock: before ResultsCache waited for it, about half of such pairs failed.
    for round_ in range(8):
        db = tmp_path / f"results{round_}.sqlite3"
        start = time.time() + 0.5  # both processes past their imports, then released together
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AND_STORE, str(db), str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 6
        conn.close()
