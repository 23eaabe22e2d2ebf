"""A checkpoint store in one SQLite file, shared safely by processes on one machine.

Every call is a single short statement or one `BEGIN IMMEDIATE` transaction on a local
file, so it runs synchronously inside the async methods instead of hopping to a thread.
The connection is opened on first use, and again in a forked child, because an SQLite
connection must never be used on both sides of a fork.

Retention mirrors the DynamoDB store's TTL: a completed file's row is deleted `ttl_days`
(default 30) after completion, so the file does not grow forever. Rows of files not
completed (leased, or with partial progress) are never deleted. One housekeeping pass
does all deleting: expired key-value rows, then done rows past the retention in bounded
DELETEs on an index over the completion time. It runs when the connection opens and
then at most every `prune_every` seconds, from the writes that grow the file (`complete`
and `remember`); it stops after a short time budget and, if rows are left, comes back
sooner instead of holding the write lock.
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

import structlog

from ._base import Claim, ClaimState, FileId, LeaseLost, StateLost
from ._schema import StoredSchema, merged_schema

__all__ = ["DEFAULT_TTL_DAYS", "SqliteStore"]

log = structlog.get_logger("trailproc.checkpoint")

DEFAULT_TTL_DAYS = 30.0  # the DynamoDB store's default too

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
# deleted by the next housekeeping pass.
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

# Finds expired done rows without a scan. Partial: rows in progress (done_at NULL), the
# ones claims look up all day, are not in it.
_DONE_INDEX = (
    "CREATE INDEX IF NOT EXISTS checkpoints_done_at ON checkpoints (done_at)"
    " WHERE done_at IS NOT NULL"
)
# The statements that bring a database to each schema version, oldest first; each is
# idempotent, so a step half done by an older release is simply done again. A new kind
# of row (leases, listing cursors, audit state) is a new table in a new step.
_STEPS: tuple[tuple[int, tuple[str, ...]], ...] = ((1, (_SCHEMA, *_KV_SCHEMA, _DONE_INDEX)),)

# The recorded schema versions (see `schema`); PRAGMA user_version mirrors the version
# for tools that read only that.
_META_SCHEMA = """
CREATE TABLE IF NOT EXISTS trailproc_meta (
    name  TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID
"""

_PRUNE_EVERY = 600.0  # seconds between housekeeping passes
_PRUNE_BATCH = 500  # rows per DELETE (one short write transaction each)
_PRUNE_BUDGET = 0.05  # seconds of deleting per pass, so callers are never held up long
_PRUNE_BACKLOG_RETRY = 5.0  # seconds to the next pass when a pass left rows behind

_WHERE = "bucket = ? AND key = ? AND etag = ?"


def _ident(file: FileId) -> tuple[str, str, str]:
    return (file.bucket, file.key, file.etag)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
    return "locked" in str(error) or "busy" in str(error)


def _read_schema(conn: sqlite3.Connection) -> StoredSchema | None:
    """The versions the database records; None when it has no meta table (new, or
    written before versions were recorded)."""
    if not conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'trailproc_meta'"
    ).fetchall():
        return None
    meta = dict(conn.execute("SELECT name, value FROM trailproc_meta").fetchall())
    version = int(meta.get("schema_version", 0))
    return StoredSchema(
        version, int(meta.get("compatible_from", version)), str(meta.get("written_by", ""))
    )


def _legacy_schema(conn: sqlite3.Connection) -> StoredSchema:
    """A database without a meta table: trailproc 0.1 wrote schema 1's tables and PRAGMA
    user_version 1 (0: before the done_at index, or a brand new file). Any other number
    is not ours to guess at: it counts as usable only by that schema."""
    user_version = int(conn.execute("PRAGMA user_version").fetchall()[0][0])
    return StoredSchema(user_version, user_version)


def _migrate(conn: sqlite3.Connection, name: str) -> None:
    """Check the database's schema and bring it up to this code's, once, in one
    transaction (processes opening it at the same moment wait for each other; the
    second finds it done). Raises `SchemaTooNew` before changing anything."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        recorded = _read_schema(conn)
        stored = recorded or _legacy_schema(conn)
        target = merged_schema(name, stored)
        if target is not None or recorded is None:
            for version, statements in _STEPS:
                if version > stored.version:
                    for statement in statements:
                        conn.execute(statement)
            _write_schema(conn, target or stored.recorded_here())
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _write_schema(conn: sqlite3.Connection, schema: StoredSchema) -> None:
    conn.execute(_META_SCHEMA)
    conn.executemany(
        "INSERT INTO trailproc_meta (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [
            ("schema_version", str(schema.version)),
            ("compatible_from", str(schema.compatible_from)),
            ("written_by", schema.written_by),
        ],
    )
    conn.execute(f"PRAGMA user_version = {int(schema.version)}")


def _prune(conn: sqlite3.Connection, cutoff: float) -> tuple[int, bool]:
    """Delete rows completed before `cutoff`, oldest first, in batches until none are left
    or the time budget is spent: (rows deleted, whether some were left)."""
    deadline = time.monotonic() + _PRUNE_BUDGET
    deleted = 0
    while True:
        # Each DELETE is its own short transaction (autocommit), so other processes'
        # claims and commits get the write lock between batches.
        cur = conn.execute(
            "DELETE FROM checkpoints WHERE (bucket, key, etag) IN ("
            " SELECT bucket, key, etag FROM checkpoints"
            " WHERE done_at IS NOT NULL AND done_at < ? ORDER BY done_at LIMIT ?)",
            (cutoff, _PRUNE_BATCH),
        )
        deleted += max(cur.rowcount, 0)
        if cur.rowcount < _PRUNE_BATCH:
            return deleted, False
        if time.monotonic() >= deadline:
            return deleted, True


class SqliteStore:
    """`CheckpointStore` in an SQLite database (WAL journal, `synchronous=NORMAL`).

    Done rows are deleted `ttl_days` after completion (see the module docstring); a file
    announced again after that is processed again, as with DynamoDB's TTL.
    """

    # Every call runs synchronously (see the module docstring); lock waits happen inside
    # SQLite's busy handler, not on the event loop's clock.
    never_suspends = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        ttl_days: float = DEFAULT_TTL_DAYS,
        prune_every: float = _PRUNE_EVERY,
    ) -> None:
        if not ttl_days > 0:
            raise ValueError(f"ttl_days must be positive, got {ttl_days!r}")
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.ttl_days = ttl_days
        self.prune_every = prune_every
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()
        # Connections inherited over fork: kept referenced (never used or closed here),
        # since closing them in the child could disturb the parent's locks and WAL.
        self._inherited: list[sqlite3.Connection] = []
        self._housekeeping_due = 0.0  # next pass (time.time()); 0: when first opened
        # (st_dev, st_ino) of the file the connection has open: a connection keeps
        # writing to a deleted file without an error, so each call checks the path
        # still names it (one stat) before going on.
        self._identity: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        pid = os.getpid()
        if self._conn is not None and self._pid == pid:
            self._check_file()
            return self._conn
        if self._conn is not None:
            self._inherited.append(self._conn)
        conn = self._open()
        self._conn, self._pid = conn, pid
        self._identity = self._file_identity()
        self._housekeeping(conn, time.time())
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
                self._check_schema(conn)
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

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (stat.st_dev, stat.st_ino)

    def _check_file(self) -> None:
        """Raise `StateLost` if the database file was deleted, moved or replaced since it
        was opened: SQLite would go on writing to the unlinked file, and every commit
        from then on would vanish with the process."""
        if self._identity is None:  # no file on disk to watch (":memory:")
            return
        identity = self._file_identity()
        if identity == self._identity:
            return
        what = "deleted or moved away" if identity is None else "replaced by another file"
        raise StateLost(
            f"checkpoint database {self.path} was {what} while trailproc was running "
            "(was the state directory removed?); refusing to record progress where no "
            "one will find it. Restore the state directory and restart: unfinished "
            "messages stay on the queue"
        )

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        """Refuse a database from a newer, incompatible schema; upgrade an older one."""
        stored = _read_schema(conn)
        if stored is None or merged_schema(str(self.path), stored) is not None:
            _migrate(conn, str(self.path))

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
        self._housekeeping_if_due(now)

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

    # --- housekeeping -----------------------------------------------------------------
    def _housekeeping_if_due(self, now: float) -> None:
        # Called by the writes that grow the file (completions, remembered values).
        if now >= self._housekeeping_due:
            with self._lock:
                self._housekeeping(self._connection(), now)

    def _housekeeping(self, conn: sqlite3.Connection, now: float) -> None:
        """If a pass is due (caller holds the lock): delete expired key-value rows, then
        done rows older than the retention, within `_PRUNE_BUDGET`. A failure (e.g. the
        write lock stayed busy) is logged and retried at the next pass, never raised into
        the caller's operation."""
        if now < self._housekeeping_due:
            return
        self._housekeeping_due = now + self.prune_every
        try:
            conn.execute("DELETE FROM kv WHERE expires_at <= ?", (now,))
            deleted, left = _prune(conn, now - self.ttl_days * 86400.0)
        except sqlite3.OperationalError as exc:
            log.warning("checkpoint housekeeping failed; trying again later",
                        path=str(self.path), error=str(exc))  # fmt: skip
            return
        if left:  # a backlog (e.g. an old database's first pass): keep each pass short
            self._housekeeping_due = now + min(self.prune_every, _PRUNE_BACKLOG_RETRY)
        if deleted:
            log.debug("checkpoint retention pass", path=str(self.path), deleted=deleted,
                      more_left=left)  # fmt: skip

    # --- KeyValueStore ----------------------------------------------------------------

    async def remember(
        self, key: str, value: str, ttl_seconds: float, *, only_new: bool = False
    ) -> bool:
        now = time.time()
        self._housekeeping_if_due(now)
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

    async def hold(self, key: str, owner: str, ttl_seconds: float) -> bool:
        """Take or renew the lease `key` for `owner` (see `LeaseStore`)."""
        now = time.time()
        self._housekeeping_if_due(now)
        changed, _ = self._execute(
            "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " expires_at = excluded.expires_at"
            " WHERE kv.expires_at <= ? OR kv.value = excluded.value",
            (key, owner, now + ttl_seconds, now),
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
            self._identity = None
            if conn is not None and self._pid == os.getpid():
                conn.close()
