"""Incremental results cache: an embedded SQLite database (WAL) of scores already computed.

A row is valid for a file while its absolute path, size and modification time are unchanged, and only for
the weights (SHA-256) and scoring identity (preprocessing policy + precision) it was computed with. Writes
are committed in small batches, so an interrupted run keeps what it finished; WAL and a busy timeout let two
runs share the database without corrupting it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from qualiclip_cli.core.records import ScoreRecord

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    path      TEXT    NOT NULL,
    weights   TEXT    NOT NULL,
    identity  TEXT    NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    score     REAL    NOT NULL,
    pairs     TEXT    NOT NULL,
    width     INTEGER NOT NULL,
    height    INTEGER NOT NULL,
    scored_at REAL    NOT NULL,
    PRIMARY KEY (path, weights, identity)
);
"""


@dataclass(frozen=True)
class FileIdentity:
    path: str  # absolute, as a string
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        st = os.stat(path)
        return cls(str(Path(path).absolute()), st.st_size, st.st_mtime_ns)


def _key(path: str) -> str | bytes:
    """The path column: the text, or for a name that is not valid UTF-8 (which SQLite cannot take as text) its
    bytes, a key that never equals any text key."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path)


_BUSY_SECONDS = 60.0


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the database to WAL. SQLite answers "database is locked" at once, without waiting for the busy
    timeout, while another connection holds the lock this needs (two runs opening a new cache together:
    about half of such starts failed), so wait for it here, up to the same timeout."""
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class ResultsCache:
    """One connection per instance; use as a context manager. Not shared across threads."""

    def __init__(self, db_path: Path, weights_sha: str, identity: str, commit_every: int = 64, commit_seconds: float = 2.0):
        self.db_path = Path(db_path)
        self.weights_sha = weights_sha
        self.identity = identity
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self._rows: list[tuple] = []
        self._last_flush = time.monotonic()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.db_path, timeout=_BUSY_SECONDS, isolation_level=None)
        self._conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_SECONDS * 1000)}")
        _enable_wal(self._conn)
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.executescript(_SCHEMA)
        self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def __enter__(self) -> ResultsCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def lookup(self, file: FileIdentity, display_path: str) -> ScoreRecord | None:
        row = self._conn.execute(
            "SELECT size, mtime_ns, score, pairs, width, height FROM results "
            "WHERE path = ? AND weights = ? AND identity = ?",
            (_key(file.path), self.weights_sha, self.identity),
        ).fetchone()
        if row is None or row[0] != file.size or row[1] != file.mtime_ns:
            return None
        return ScoreRecord(
            path=display_path, score=row[2], pairs=json.loads(row[3]), width=row[4], height=row[5], cached=True
        )

    def store(self, file: FileIdentity, record: ScoreRecord) -> None:
        """Queue a result; queued rows are written in one short transaction every few rows or seconds."""
        if not record.ok or record.score is None:
            return  # failures are not cached: the file may be fixed without changing size or mtime
        self._rows.append((
            _key(file.path), self.weights_sha, self.identity, file.size, file.mtime_ns, float(record.score),
            json.dumps(record.pairs or {}), int(record.width or 0), int(record.height or 0), time.time(),
        ))
        if len(self._rows) >= self.commit_every or time.monotonic() - self._last_flush > self.commit_seconds:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        with self._conn:  # one transaction; the write lock is held only for these inserts
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self._rows)
        self._rows.clear()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._conn.close()
