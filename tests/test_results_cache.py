"""The results cache: shared by concurrent runs, and never what takes a run down (damaged, locked, old schema,
any file name, NaN)."""

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from qualiclip_cli.core.pipeline import cache as cache_module
from qualiclip_cli.core.pipeline.cache import SCHEMA_VERSION, FileIdentity, ResultsCache
from qualiclip_cli.core.records import ScoreRecord

from cli_support import make_photo_dir, run_cli

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


# ------------------------------------------------------------------ a damaged, locked or old cache never stops a run

def _rows(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _record(i=0, score=0.5):
    return ScoreRecord(path=f"p{i}", score=score, pairs={"overall": score}, width=64, height=48)


def _count(db):
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    finally:
        conn.close()


def _good_db_bytes(tmp_path):
    db = tmp_path / "good.sqlite3"
    with ResultsCache(db, "w", "i") as cache:
        for i in range(2000):
            cache.store(FileIdentity(f"/photos/{i}.jpg", 1, 1), _record(i))
    return db.read_bytes()


def _damage(kind, db, tmp_path):
    db.parent.mkdir(parents=True, exist_ok=True)
    if kind == "random bytes":
        db.write_bytes(os.urandom(100_000))
    elif kind == "truncated":
        good = _good_db_bytes(tmp_path)
        db.write_bytes(good[: len(good) // 2])
    elif kind == "folder":
        db.mkdir()
        (db / "something").write_text("not ours to lose")


@pytest.mark.parametrize("kind", ["random bytes", "truncated", "folder"])
def test_damaged_cache_is_set_aside_and_rebuilt(tmp_path, tiny_weights_file, isolated_home, kind):
    make_photo_dir(tmp_path / "p")
    db = isolated_home / "results.sqlite3"
    _damage(kind, db, tmp_path)
    result = run_cli("score", tmp_path / "p", "--format", "jsonl", "--weights", tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    assert [r["status"] for r in _rows(result.stdout)] == ["ok"] * 4
    aside = [p for p in isolated_home.iterdir() if p.name.startswith("results.sqlite3.damaged-")]
    assert len(aside) == 1  # set aside, not deleted
    if kind == "folder":
        assert (aside[0] / "something").read_text() == "not ours to lose"
    one = " ".join(result.stderr.split())  # Rich may wrap a long line on a narrow terminal
    assert one.count("warning:") == 1, result.stderr
    assert f"results cache {db} is damaged" in one and f"set aside as {aside[0]}" in one
    assert _count(db) == 4  # rebuilt with this run's scores
    again = run_cli("score", tmp_path / "p", "--format", "jsonl", "--weights", tiny_weights_file)
    assert again.exit_code == 0 and "4 from cache" in again.stderr and "warning" not in again.stderr


@pytest.mark.parametrize("command", [("cull", "--below", "0.9", "--dry-run"), ("sort",), ("tag", "--dry-run")])
def test_curation_commands_survive_a_damaged_cache(tmp_path, tiny_weights_file, isolated_home, command):
    make_photo_dir(tmp_path / "p")
    _damage("random bytes", isolated_home / "results.sqlite3", tmp_path)
    result = run_cli(command[0], tmp_path / "p", *command[1:], "--weights", tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    assert "internal error" not in result.stderr and "is damaged" in result.stderr
    assert "4 scored" in result.stderr


def test_damage_found_mid_run_is_set_aside_and_the_rows_kept(tmp_path):
    db = tmp_path / "results.sqlite3"
    with ResultsCache(db, "w", "i") as cache:
        for i in range(300):
            cache.store(FileIdentity(f"/p{i}", 1, 1), _record(i))
    warnings = []
    cache = ResultsCache(db, "w", "i", warn=warnings.append)
    assert cache.lookup(FileIdentity("/p1", 1, 1), "p1") is not None
    with open(db, "r+b") as f:  # the file goes bad under the open connection (a disk error, another program)
        f.seek(4096)
        f.write(os.urandom(db.stat().st_size - 4096))
    for i in range(300, 400):
        cache.store(FileIdentity(f"/p{i}", 1, 1), _record(i))
    for i in range(300):
        cache.lookup(FileIdentity(f"/p{i}", 1, 1), f"p{i}")  # never raises
    cache.close()
    assert len(warnings) == 1 and "is damaged" in warnings[0], warnings
    assert len(list(tmp_path.glob("results.sqlite3.damaged-*"))) == 1
    assert _count(db) == 100  # this run's new rows, in the new database


def test_old_schema_is_migrated(tmp_path):
    db = tmp_path / "results.sqlite3"
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE results (path TEXT NOT NULL, weights TEXT NOT NULL, identity TEXT NOT NULL,
            size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, score REAL NOT NULL, pairs TEXT NOT NULL,
            width INTEGER NOT NULL, height INTEGER NOT NULL, scored_at REAL NOT NULL,
            PRIMARY KEY (path, weights, identity));
        PRAGMA user_version = 1;
    """)
    conn.execute("INSERT INTO results VALUES ('/photos/café.jpg', 'w', 'i', 10, 20, 0.25, '{\"overall\": 0.25}',"
                 " 64, 48, 0)")
    conn.commit()
    conn.close()
    warnings = []
    with ResultsCache(db, "w", "i", warn=warnings.append) as cache:
        hit = cache.lookup(FileIdentity("/photos/café.jpg", 10, 20), "café.jpg")
    assert hit is not None and hit.score == 0.25 and hit.pairs == {"overall": 0.25} and hit.cached
    assert warnings == []
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT typeof(path), path FROM results").fetchall() == [("blob", "/photos/café.jpg".encode())]
    conn.close()


def test_a_database_that_is_not_ours_is_set_aside(tmp_path):
    db = tmp_path / "results.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    warnings = []
    with ResultsCache(db, "w", "i", warn=warnings.append) as cache:
        cache.store(FileIdentity("/a", 1, 1), _record())
    assert len(warnings) == 1 and "not a qualiclip results cache" in warnings[0]
    assert _count(db) == 1
    (aside,) = tmp_path.glob("results.sqlite3.damaged-*")
    assert sqlite3.connect(aside).execute("SELECT name FROM sqlite_master").fetchall() == [("notes",)]


def test_a_newer_schema_is_left_alone(tmp_path):
    db = tmp_path / "results.sqlite3"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.execute("CREATE TABLE results (anything)")
    conn.commit()
    conn.close()
    warnings = []
    with ResultsCache(db, "w", "i", warn=warnings.append) as cache:
        assert cache.lookup(FileIdentity("/a", 1, 1), "a") is None
        cache.store(FileIdentity("/a", 1, 1), _record())
    assert len(warnings) == 1 and "newer qualiclip" in warnings[0]
    assert not list(tmp_path.glob("*.damaged-*"))
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert conn.execute("SELECT sql FROM sqlite_master").fetchall() == [("CREATE TABLE results (anything)",)]
    assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 0


def test_nan_is_never_cached(tmp_path):
    db = tmp_path / "results.sqlite3"
    with ResultsCache(db, "w", "i") as cache:
        cache.store(FileIdentity("/nan", 1, 1), _record(score=float("nan")))
        cache.store(FileIdentity("/inf", 1, 1), ScoreRecord(path="inf", score=0.5, pairs={"overall": float("inf")}))
    assert _count(db) == 0


_HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("held", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


class _LockHolder:
    """Another process holding the cache's write lock (BEGIN EXCLUSIVE) until `release`."""

    def __init__(self, db):
        self.proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(db)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def release(self):
        if self.proc.poll() is None:
            self.proc.communicate("\n", timeout=30)


@pytest.fixture
def small_busy_timeout(monkeypatch):
    monkeypatch.setattr(cache_module, "BUSY_SECONDS", 0.3)


def test_locked_cache_the_run_finishes_with_its_results_and_one_warning(
        tmp_path, tiny_weights_file, isolated_home, small_busy_timeout):
    make_photo_dir(tmp_path / "p")
    reference = run_cli("score", tmp_path / "p", "--format", "jsonl", "--weights", tiny_weights_file, "--no-cache")
    with ResultsCache(isolated_home / "results.sqlite3", "w", "i"):
        pass  # an existing cache (WAL), as a previous run leaves it
    holder = _LockHolder(isolated_home / "results.sqlite3")
    try:
        start = time.monotonic()
        result = run_cli("score", tmp_path / "p", "--format", "jsonl", "--weights", tiny_weights_file)
        elapsed = time.monotonic() - start
    finally:
        holder.release()
    assert result.exit_code == 0, result.stderr
    assert _rows(result.stdout) == _rows(reference.stdout)  # every score of the run is there
    one = " ".join(result.stderr.split())
    assert one.count("warning:") == 1 and "is locked by another process" in one
    assert elapsed < 30  # waited about twice the busy timeout, not once per batch
    assert _count(isolated_home / "results.sqlite3") == 0


def test_locked_cache_stores_the_run_once_the_lock_is_released(
        tmp_path, tiny_weights_file, isolated_home, small_busy_timeout, monkeypatch):
    make_photo_dir(tmp_path / "p")
    db = isolated_home / "results.sqlite3"
    with ResultsCache(db, "w", "i"):
        pass
    holder = _LockHolder(db)
    real_close = ResultsCache.close

    def close_after_release(self):  # the other process lets go while this run is finishing
        holder.release()
        real_close(self)

    monkeypatch.setattr(ResultsCache, "close", close_after_release)
    try:
        result = run_cli("score", tmp_path / "p", "--format", "jsonl", "--weights", tiny_weights_file)
    finally:
        holder.release()
    assert result.exit_code == 0, result.stderr
    assert "warning" not in result.stderr
    assert _count(db) == 4
    again = run_cli("score", tmp_path / "p", "--format", "jsonl", "--weights", tiny_weights_file)
    assert "4 from cache" in again.stderr


def test_lock_met_by_the_stores_waits_once(tmp_path, small_busy_timeout):
    db = tmp_path / "results.sqlite3"
    with ResultsCache(db, "w", "i"):
        pass
    warnings = []
    cache = ResultsCache(db, "w", "i", commit_every=1, warn=warnings.append)
    holder = _LockHolder(db)
    try:
        start = time.monotonic()
        for i in range(50):  # 50 commits, each of which meets the lock
            cache.store(FileIdentity(f"/p{i}", 1, 1), _record(i))
        assert time.monotonic() - start < 5 * cache_module.BUSY_SECONDS
        holder.release()
        cache.close()
    finally:
        holder.release()
    assert warnings == []
    assert _count(db) == 50


def _score_process(photos, weights):
    """A real `qualiclip score` (its stdout writes such a name back as the same bytes; CliRunner's refuses it)."""
    proc = subprocess.run([sys.executable, "-m", "qualiclip_cli", "score", str(photos), "--format", "jsonl",
                           "--weights", str(weights)], capture_output=True, timeout=120)
    decode = lambda b: b.decode("utf-8", "surrogateescape")
    return subprocess.CompletedProcess(proc.args, proc.returncode, decode(proc.stdout), decode(proc.stderr))


def test_name_that_is_not_utf8_is_cached_and_found(tmp_path, tiny_weights_file, isolated_home):
    photos = tmp_path / "p"
    (source,) = make_photo_dir(photos, names=("astronaut",))
    name = os.path.join(os.fsencode(photos), b"caf\xe9.jpg")
    os.rename(source, name)
    first = _score_process(photos, tiny_weights_file)
    assert first.returncode == 0, first.stderr
    assert [r["status"] for r in _rows(first.stdout)] == ["ok"]
    conn = sqlite3.connect(isolated_home / "results.sqlite3")
    assert conn.execute("SELECT path FROM results").fetchall() == [(os.path.abspath(name),)]
    conn.close()
    second = _score_process(photos, tiny_weights_file)
    assert second.returncode == 0 and "1 from cache" in second.stderr
    assert _rows(second.stdout) == _rows(first.stdout)
