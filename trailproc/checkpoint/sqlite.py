"""A checkpoint store in one SQLite file, shared safely by processes on one machine.

Every call is a single short statement or one `BEGIN IMMEDIATE` transaction on a local
file, so it runs synchronously inside the async methods instead of hopping to a thread.
The connection is opened on first use, and again in a forked child, because an SQLite
connection must never be used on both sides of a fork.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .base import Claim, ClaimState, FileId, LeaseLost

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    bucket        TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    etag          TEXT    NOT NULL,
    position      INTEGER NOT NULL DEFAULT 0,
    records       INTEGER,
    done_at       REAL,
    lease_owner   TEXT,
    lease_expires REAL,
    updated_at    REAL    NOT NULL,
    PRIMARY KEY (bucket, key, etag)
) WITHOUT ROWID
"""

# Small expiring values (KeyValueStore). Expired rows read as absent at once and are
# deleted lazily, at most every `_PURGE_EVERY` seconds, by whichever call comes next.
_KV_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS kv (
    key        TEXT NOT NULL PRIMARY KEY,
    value      TEXT NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID
""",
    "CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires_at)",
)
_PURGE_EVERY = 600.0

_WHERE = "bucket = ? AND key = ? AND etag = ?"


def _ident(file: FileId) -> tuple[str, str, str]:
    return (file.bucket, file.key, file.etag)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    return "locked" in str(error) or "busy" in str(error)


class SqliteStore:
    """`CheckpointStore` in an SQLite database (WAL journal, `synchronous=NORMAL`)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()
        # Connections inherited over fork: kept referenced (never used or closed here),
        # since closing them in the child could disturb the parent's locks and WAL.
        self._inherited: list[sqlite3.Connection] = []
        self._purged_at = 0.0  # last lazy purge of expired values (time.time())

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._conn is not None and self._pid == pid:
            return self._conn
        if self._conn is not None:
            self._inherited.append(self._conn)
        conn = self._open()
        self._conn, self._pid = conn, pid
        return conn

    def _open(self) -> sqlite3.Connection:
        """Connect and prepare the file: WAL journal, NORMAL sync, the table.

        When several processes open a new file at once, switching it to WAL can fail with
        "database is locked" at once, without waiting in the busy handler; a fresh
        connection a moment later then finds the file already converted.
        """
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            # isolation_level=None: autocommit; the only transactions are the explicit ones.
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                if conn.execute("PRAGMA journal_mode").fetchall()[0][0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL").fetchall()
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute(_SCHEMA)
                for statement in _KV_SCHEMA:
                    conn.execute(statement)
                return conn
            except sqlite3.OperationalError as e:
                conn.close()
                if not _is_busy(e) or time.monotonic() + delay > deadline:
                    raise
            except BaseException:
                conn.close()
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    @contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: the write lock is taken at BEGIN, so the reads inside
        it see exactly the state the following write acts on."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _execute(self, sql: str, params: tuple[Any, ...]) -> tuple[int, list[tuple[Any, ...]]]:
        """One statement in its own (implicit) transaction: (rows changed, rows read).

        Rows are read to the end here so no statement is left open holding a snapshot.
        """
        with self._lock:
            cur = self._connection().execute(sql, params)
            rows = cur.fetchall()
            return cur.rowcount, rows

    async def claim(self, file: FileId, owner: str, lease_seconds: float) -> Claim:
        with self._immediate() as conn:
            now = time.time()
            row = conn.execute(
                f"SELECT position, done_at, lease_owner, lease_expires FROM checkpoints"
                f" WHERE {_WHERE}",
                _ident(file),
            ).fetchall()
            position = 0
            if row:
                position, done_at, lease_owner, lease_expires = row[0]
                if done_at is not None:
                    return Claim(ClaimState.DONE)
                if lease_owner is not None and lease_owner != owner and lease_expires >= now:
                    return Claim(ClaimState.BUSY, position)
            conn.execute(
                "INSERT INTO checkpoints (bucket, key, etag, lease_owner, lease_expires,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (bucket, key, etag) DO UPDATE SET"
                " lease_owner = excluded.lease_owner, lease_expires = excluded.lease_expires,"
                " updated_at = excluded.updated_at",
                (*_ident(file), owner, now + lease_seconds, now),
            )
        if position > 0:
            return Claim(ClaimState.RESUME, position)
        return Claim(ClaimState.NEW, 0)

    async def commit(self, file: FileId, owner: str, position: int) -> None:
        changed, _ = self._execute(
            "UPDATE checkpoints SET position = MAX(position, ?), updated_at = ?"
            f" WHERE {_WHERE} AND lease_owner = ?",
            (position, time.time(), *_ident(file), owner),
        )
        if changed != 1:
            raise LeaseLost(f"{owner} does not hold the lease on {file}")

    async def complete(self, file: FileId, owner: str, records: int) -> None:
        now = time.time()
        self._execute(
            "INSERT INTO checkpoints (bucket, key, etag, position, records, done_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (bucket, key, etag) DO UPDATE SET"
            " position = MAX(position, excluded.position), records = excluded.records,"
            " done_at = COALESCE(done_at, excluded.done_at),"
            " lease_owner = NULL, lease_expires = NULL, updated_at = excluded.updated_at",
            (*_ident(file), records, records, now, now),
        )

    async def release(self, file: FileId, owner: str) -> None:
        self._execute(
            "UPDATE checkpoints SET lease_owner = NULL, lease_expires = NULL, updated_at = ?"
            f" WHERE {_WHERE} AND lease_owner = ?",
            (time.time(), *_ident(file), owner),
        )

    async def is_done(self, file: FileId) -> bool:
        _, rows = self._execute(
            f"SELECT done_at IS NOT NULL FROM checkpoints WHERE {_WHERE}", _ident(file)
        )
        return bool(rows and rows[0][0])

    # --- KeyValueStore ----------------------------------------------------------------
    def _purge(self, now: float) -> None:
        if now - self._purged_at < _PURGE_EVERY:
            return
        self._purged_at = now
        self._execute("DELETE FROM kv WHERE expires_at <= ?", (now,))

    async def remember(
        self, key: str, value: str, ttl_seconds: float, *, only_new: bool = False
    ) -> bool:
        now = time.time()
        self._purge(now)
        # An expired row counts as absent: only_new may replace it.
        condition = " WHERE kv.expires_at <= ?" if only_new else ""
        params: tuple[Any, ...] = (key, value, now + ttl_seconds) + ((now,) if only_new else ())
        changed, _ = self._execute(
            "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " expires_at = excluded.expires_at" + condition,
            params,
        )
        return changed == 1

    async def recall(self, key: str) -> str | None:
        _, rows = self._execute(
            "SELECT value FROM kv WHERE key = ? AND expires_at > ?", (key, time.time())
        )
        return str(rows[0][0]) if rows else None

    async def forget(self, key: str) -> str | None:
        # One write transaction: of two processes taking the same key, one gets it.
        with self._immediate() as conn:
            rows = conn.execute("SELECT value, expires_at FROM kv WHERE key = ?", (key,)).fetchall()
            if not rows:
                return None
            conn.execute("DELETE FROM kv WHERE key = ?", (key,))
        value, expires_at = rows[0]
        return str(value) if expires_at > time.time() else None

    def stats(self) -> dict[str, int]:
        """Counts for diagnostics: files known, done, in progress, and currently leased."""
        _, rows = self._execute(
            "SELECT COUNT(*),"
            " COUNT(done_at),"
            " COALESCE(SUM(done_at IS NULL AND lease_owner IS NOT NULL AND lease_expires >= ?), 0)"
            " FROM checkpoints",
            (time.time(),),
        )
        files, done, leased = (int(v) for v in rows[0])
        return {"files": files, "done": done, "in_progress": files - done, "leased": leased}

    async def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()
