"""Incremental results cache: an embedded SQLite database (WAL) of scores already computed.

A row is valid for a file while its absolute path, size and modification time are unchanged, and only for
the weights (SHA-256) and scoring identity (preprocessing policy + precision; for a RAW file also the rule that
picks its preview or development, `policy.RAW_RULE`) it was computed with. Each row keeps where its pixels came
from (`source`). Paths are
stored as the bytes the file system uses (`os.fsencode`), so any file name is a key, UTF-8 or not. Writes
are committed in small batches, so an interrupted run keeps what it finished; WAL and a busy timeout let two
runs share the database without corrupting it.

The cache never takes a run down: it only ever saves work.

- A damaged database (not a database, malformed, a folder in its place, not our schema) is set aside as
  ``results.sqlite3.damaged-<time>`` and a new one is started, at open or when the damage shows mid-run.
- A database locked by another process is waited for once, up to `BUSY_SECONDS`; the run then goes on without
  waiting again, keeps its new rows in memory, and stores them at the end (one more wait of up to
  `BUSY_SECONDS`). Rows that still cannot be stored are reported, never an error: the run's records are intact.
- Any other failure (disk full, read-only folder, a database of a newer qualiclip) turns the cache off for the
  rest of the run.

What happened is said through ``warn(message)`` (one line, naming the files), never printed here.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qualiclip_cli.core.filetypes import is_raw_name
from qualiclip_cli.core.model.prompts import GROUPING_EMBEDDING
from qualiclip_cli.core.records import TIME_SOURCES, ScoreRecord, Signals

#: 3: `source` (where the scored pixels came from: the file, a RAW's preview or its development) and the grouping
#: signals (`signals` JSON, `embedding` float16 BLOB; NULL in rows migrated from 2, whose source is the file).
#: 2: paths as BLOBs (os.fsencode). 1: paths as TEXT (could not hold names that are not UTF-8). Both migrated.
SCHEMA_VERSION = 3

_V2_COLUMNS = ("path", "weights", "identity", "size", "mtime_ns", "score", "pairs", "width", "height", "scored_at")
#: Added by schema 3 (see `_migrate_from_v2`).
_SIGNAL_COLUMNS = ("signals", "embedding")
_COLUMNS = _V2_COLUMNS + ("source",) + _SIGNAL_COLUMNS

_INSERT = "INSERT OR REPLACE INTO {name} VALUES (" + ", ".join("?" * len(_COLUMNS)) + ")"

_TABLE = """
CREATE TABLE {name} (
    path      BLOB    NOT NULL,
    weights   TEXT    NOT NULL,
    identity  TEXT    NOT NULL,
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    score     REAL    NOT NULL,
    pairs     TEXT    NOT NULL,
    width     INTEGER NOT NULL,
    height    INTEGER NOT NULL,
    scored_at REAL    NOT NULL,
    source    TEXT    NOT NULL,
    signals   TEXT,
    embedding BLOB,
    PRIMARY KEY (path, weights, identity)
)
"""

#: Longest single wait for another process's lock (opening, a store, the last store at the end of a run).
BUSY_SECONDS = 20.0

Warn = Callable[[str], None]


@dataclass(frozen=True)
class FileIdentity:
    path: str  # absolute, as a string (os.fsdecode: a name that is not UTF-8 holds lone surrogates)
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        st = os.stat(path)
        return cls(str(Path(path).absolute()), st.st_size, st.st_mtime_ns)

    @property
    def key(self) -> bytes:
        """The path as the file system's bytes: lossless for any name."""
        return os.fsencode(self.path)


class _Damaged(Exception):
    """The database file is not a usable results cache; the text says why."""


class _NewerSchema(Exception):
    """A database of a newer qualiclip: left alone (not ours to rewrite), the cache is off for the run."""


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _error_name(exc: sqlite3.Error) -> str:
    return getattr(exc, "sqlite_errorname", "") or ""


def _is_locked(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    name = _error_name(exc)
    if name:
        return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
    return "locked" in str(exc) or "busy" in str(exc)


def _is_damage(exc: BaseException) -> bool:
    """SQLITE_CORRUPT / SQLITE_NOTADB: the file itself is bad (not a lock, a full disk or a permission)."""
    if isinstance(exc, _Damaged):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = _error_name(exc)
    if name:
        return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
    return type(exc) is sqlite3.DatabaseError  # Python < 3.11: what these two raise


def _enable_wal(conn: sqlite3.Connection, busy_seconds: float) -> None:
    """Switch the database to WAL. SQLite answers "database is locked" at once, without waiting for the busy
    timeout, while another connection holds the lock this needs (two runs opening a new cache together:
    about half of such starts failed), so wait for it here, up to the same timeout."""
    deadline = time.monotonic() + busy_seconds
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if not _is_locked(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class ResultsCache:
    """One connection per instance; use as a context manager. Not shared across threads.

    ``warn(message)`` receives the one-line warnings (damage set aside, a lock that kept rows out, a cache
    turned off); without it they are dropped.
    """

    def __init__(self, db_path: Path, weights_sha: str, identity: str, commit_every: int = 64,
                 commit_seconds: float = 2.0, warn: Warn | None = None, raw_identity: str | None = None):
        self.db_path = Path(db_path)
        self.weights_sha = weights_sha
        self.identity = identity
        self.raw_identity = raw_identity or identity  # the identity of a RAW file's rows (`policy.raw_scoring_identity`)
        self.commit_every = commit_every
        self.commit_seconds = commit_seconds
        self._warn = warn
        self._rows: list[tuple] = []
        self._last_flush = time.monotonic()
        self._conn: sqlite3.Connection | None = None
        self._off = False  # given up for this run (a warning said why)
        self._locked = False  # another process held the lock: no more waiting until the end of the run
        self._set_aside_once = False
        self._file: tuple[int, int] | None = None  # (device, inode) of the database file this run opened
        self._open()

    def __enter__(self) -> ResultsCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def usable(self) -> bool:
        """False once the cache is off for this run (lookups miss, stores are dropped)."""
        return not self._off

    # ------------------------------------------------------------------ opening

    def _open(self) -> None:
        """Connect, or leave `_conn` None: locked (retried at the end), off, or set aside and opened anew."""
        try:
            self._conn = self._connect(BUSY_SECONDS)
        except Exception as exc:
            self._conn = None
            self._failed(exc)

    def _connect(self, busy_seconds: float) -> sqlite3.Connection:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._file = _file_id(self.db_path)
        if self._file is not None and not self.db_path.is_file():
            raise _Damaged("not a file")
        conn = sqlite3.connect(self.db_path, timeout=busy_seconds, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_seconds * 1000)}")
            _enable_wal(conn, busy_seconds)
            self._file = _file_id(self.db_path)
            conn.execute("PRAGMA synchronous = NORMAL")
            self._prepare_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare_schema(self, conn: sqlite3.Connection) -> None:
        """Create the table in a new database, migrate an old one, refuse a file that is not ours."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            self._check_columns(conn)
            return
        if version > SCHEMA_VERSION:
            raise _NewerSchema(f"it was written by a newer qualiclip (schema {version}, this one reads {SCHEMA_VERSION})")
        conn.execute("BEGIN IMMEDIATE")  # one process creates or migrates; the others see the result
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version == 0 and not tables:
                conn.execute(_TABLE.format(name="results"))
            elif version == 1 and tables == {"results"}:
                _migrate_from_v1(conn)
            elif version == 2 and tables == {"results"}:
                _migrate_from_v2(conn)
            elif version != SCHEMA_VERSION:
                raise _Damaged(f"not a qualiclip results cache (schema {version}, tables {sorted(tables)})")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._check_columns(conn)

    @staticmethod
    def _check_columns(conn: sqlite3.Connection) -> None:
        columns = tuple(row[1] for row in conn.execute("PRAGMA table_info(results)"))
        if columns != _COLUMNS:
            raise _Damaged(f"not a qualiclip results cache (columns {list(columns)})")

    # ------------------------------------------------------------------ failures

    def _failed(self, exc: BaseException) -> None:
        """Decide what a failure means for the rest of the run; never raises for a database problem."""
        if not isinstance(exc, (sqlite3.Error, OSError, _Damaged, _NewerSchema)):
            raise exc
        if _is_locked(exc):
            self._locked = True
            self._drop_connection_timeout()
        elif _is_damage(exc) and not self._set_aside_once:
            self._set_aside_once = True
            self._set_aside(exc)
        else:
            self._turn_off(exc)

    def _drop_connection_timeout(self) -> None:
        """After one full wait, try the lock without waiting until the end of the run."""
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA busy_timeout = 0")
            except sqlite3.Error:
                pass

    def _close_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def _set_aside(self, exc: BaseException) -> None:
        """Rename the damaged database (and its -wal/-shm files) out of the way and start a new one."""
        self._close_connection()
        if self._file is not None and _file_id(self.db_path) != self._file:
            self._open()  # another run set it aside already and started a new one: use that
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.db_path.with_name(f"{self.db_path.name}.damaged-{stamp}")
        n = 1
        while os.path.lexists(aside):
            n += 1
            aside = self.db_path.with_name(f"{self.db_path.name}.damaged-{stamp}-{n}")
        try:
            os.replace(self.db_path, aside)
            for suffix in ("-wal", "-shm", "-journal"):
                companion = self.db_path.with_name(self.db_path.name + suffix)
                if os.path.lexists(companion):
                    os.replace(companion, aside.with_name(aside.name + suffix))
        except OSError as move_exc:
            self._turn_off(exc, f"; it could not be set aside ({move_exc.strerror or move_exc})")
            return
        self._say(f"results cache {self.db_path} is damaged ({_reason(exc)}); set aside as {aside}, "
                  "starting a new one")
        self._open()

    def _turn_off(self, exc: BaseException, extra: str = "") -> None:
        self._close_connection()
        if not self._off:
            self._off = True
            self._say(f"results cache {self.db_path} not used for this run: {_reason(exc)}{extra}")
        self._rows.clear()

    def _say(self, message: str) -> None:
        if self._warn is not None:
            self._warn(message)

    # ------------------------------------------------------------------ rows

    def identity_of(self, file: FileIdentity) -> str:
        """The scoring identity a file's row is kept under: the RAW identity for a RAW file."""
        return self.raw_identity if is_raw_name(os.path.basename(file.path)) else self.identity

    def lookup(self, file: FileIdentity, display_path: str, need_signals: bool = False) -> ScoreRecord | None:
        """The cached record of ``file``, None on a miss. With ``need_signals`` a row without grouping signals
        (one stored before schema 3, or of another embedding kind) is a miss too: scored again, it gets them."""
        if self._conn is None:
            return None
        try:
            row = self._conn.execute(
                "SELECT size, mtime_ns, score, pairs, width, height, source, signals, embedding FROM results "
                "WHERE path = ? AND weights = ? AND identity = ?",
                (file.key, self.weights_sha, self.identity_of(file)),
            ).fetchone()
        except sqlite3.Error as exc:
            self._failed(exc)
            return None
        if row is None or row[0] != file.size or row[1] != file.mtime_ns:
            return None
        try:
            pairs = json.loads(row[3])
            score = float(row[2])
        except (TypeError, ValueError):
            return None  # an unreadable row is a miss: the file is scored again and the row replaced
        if not math.isfinite(score):
            return None
        signals = _signals_of(row[7], row[8])
        if signals is None and need_signals:
            return None
        return ScoreRecord(path=display_path, score=score, pairs=pairs, width=row[4], height=row[5], source=row[6],
                           cached=True, signals=signals)

    def store(self, file: FileIdentity, record: ScoreRecord) -> None:
        """Queue a result; queued rows are written in one short transaction every few rows or seconds."""
        if not record.ok or record.score is None or self._off:
            return  # failures are not cached: the file may be fixed without changing size or mtime
        if not _finite(record.score, record.pairs):
            return  # never cache a NaN: the scorer reports it as an error row
        self._rows.append((
            file.key, self.weights_sha, self.identity_of(file), file.size, file.mtime_ns, float(record.score),
            json.dumps(record.pairs or {}), int(record.width or 0), int(record.height or 0), time.time(),
            record.source or "file", *_signal_values(record.signals),
        ))
        if len(self._rows) >= self.commit_every or time.monotonic() - self._last_flush > self.commit_seconds:
            self.flush()

    def flush(self) -> None:
        """Write the queued rows. While another process holds the lock, they stay queued (no waiting)."""
        self._last_flush = time.monotonic()
        if not self._rows or self._off:
            return
        if self._conn is None:
            return  # locked at open: tried again at the end of the run
        for _attempt in range(2):  # a second time only on the new database after damage was set aside
            try:
                self._write_rows()
                return
            except sqlite3.Error as exc:
                self._failed(exc)
                if self._conn is None or self._locked or self._off:
                    return

    def _write_rows(self) -> None:
        assert self._conn is not None
        self._conn.execute("BEGIN IMMEDIATE")  # the write lock is held only for these inserts
        try:
            self._conn.executemany(_INSERT.format(name="results"), self._rows)
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise
        self._rows.clear()
        if self._locked:  # the other process let go
            self._locked = False
            self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")

    def close(self) -> None:
        """Store what is queued (waiting once more for a lock, up to `BUSY_SECONDS`) and close."""
        try:
            if self._rows and not self._off and self._locked:
                self._locked = False
                if self._conn is None:
                    self._open()
                else:
                    self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")
            self.flush()
            if self._rows and self._locked:
                self._say(f"results cache {self.db_path} is locked by another process: {len(self._rows)} new "
                          "score(s) of this run were not cached (they are in this run's results)")
                self._rows.clear()
        finally:
            self._close_connection()


def _finite(score: float, pairs: dict | None) -> bool:
    return math.isfinite(score) and all(math.isfinite(v) for v in (pairs or {}).values())




def _migrate_from_v1(conn: sqlite3.Connection) -> None:
    """Schema 1 kept paths as TEXT; rewrite its rows with the paths as file-system bytes (in the caller's
    transaction). Every schema-1 path was valid UTF-8 text (the others could not be stored), so none is lost."""
    conn.execute(_TABLE.format(name="results_v2"))
    rows = conn.execute(f"SELECT {', '.join(_V2_COLUMNS)} FROM results").fetchall()
    missing = ("file",) + (None,) * len(_SIGNAL_COLUMNS)
    conn.executemany(_INSERT.format(name="results_v2"),
                     [(os.fsencode(row[0]) if isinstance(row[0], str) else row[0], *row[1:], *missing) for row in rows])
    conn.execute("DROP TABLE results")
    conn.execute("ALTER TABLE results_v2 RENAME TO results")


def _migrate_from_v2(conn: sqlite3.Connection) -> None:
    """Schema 3 adds the source and the grouping signals. Schema-2 rows came from the files themselves (RAW files
    were not walked, and a RAW named on the command line was read by Pillow: such rows are never served for a RAW,
    whose identity names the RAW rule); they keep their scores and lack the signals (NULL): a run that groups
    scores those files again, which stores them (in the caller's transaction)."""
    conn.execute("ALTER TABLE results ADD COLUMN source TEXT NOT NULL DEFAULT 'file'")
    conn.execute("ALTER TABLE results ADD COLUMN signals TEXT")
    conn.execute("ALTER TABLE results ADD COLUMN embedding BLOB")


def _signal_values(signals: Signals | None) -> tuple[str | None, bytes | None]:
    """The two signal columns of a row: JSON of the capture fields (with the embedding kind), the embedding."""
    if signals is None:
        return None, None
    return json.dumps({
        "capture_time": signals.capture_time, "capture_text": signals.capture_text,
        "time_source": signals.time_source, "camera": signals.camera, "exposure_bias": signals.exposure_bias,
        "embedding_kind": GROUPING_EMBEDDING,
    }), bytes(signals.embedding)


def _signals_of(text: str | None, embedding: bytes | None) -> Signals | None:
    """The signals of a row; None when it has none, of another embedding kind, or they cannot be read."""
    if text is None or embedding is None or len(embedding) % 2:
        return None
    try:
        values = json.loads(text)
        if values.get("embedding_kind") != GROUPING_EMBEDDING or values.get("time_source") not in TIME_SOURCES:
            return None
        bias = values.get("exposure_bias")
        signals = Signals(float(values["capture_time"]), str(values["capture_text"]), values["time_source"],
                          str(values["camera"]), None if bias is None else float(bias), bytes(embedding))
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
    return signals if math.isfinite(signals.capture_time) else None
