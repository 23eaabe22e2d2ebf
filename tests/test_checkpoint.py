"""Checkpoint stores: one contract suite run against memory, SQLite and DynamoDB (moto).

pytest-asyncio is not used: each test is a plain function running one coroutine with
`asyncio.run`, and the store's client lives and dies inside that one event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import boto3
import pytest

from trailproc._sandbox import MotoServer
from trailproc.checkpoint import (
    CheckpointStore,
    Claim,
    ClaimState,
    DynamoDBStore,
    FileId,
    KeyValueStore,
    LeaseLost,
    MemoryStore,
    SqliteStore,
    open_store,
)

REPO = Path(__file__).resolve().parent.parent
TABLE = "trailproc-checkpoints"
BUCKET = "trail-bucket"
KEY = "AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/01/file_20261101T0000Z_abc.json.gz"
FILE = FileId(BUCKET, KEY, "etag-1")

Body = Callable[[CheckpointStore], Awaitable[None]]


def run(store: CheckpointStore, body: Body) -> None:
    async def main() -> None:
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


@pytest.fixture(params=["memory", "sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    if request.param == "memory":
        return MemoryStore()
    if request.param == "sqlite":
        return SqliteStore(tmp_path / "state" / "checkpoints.sqlite3")
    request.getfixturevalue("aws_env")
    return DynamoDBStore(TABLE, create_table=True)


# --- the contract ---------------------------------------------------------------------


def test_implements_protocol(store: CheckpointStore) -> None:
    assert isinstance(store, CheckpointStore)


def test_new_commit_resume(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.NEW, 0)
        await s.commit(FILE, "A", 5)
        # The same owner claiming again is a heartbeat and learns the position.
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.RESUME, 5)
        await s.commit(FILE, "A", 9)
        await s.release(FILE, "A")
        assert await s.claim(FILE, "B", 30) == Claim(ClaimState.RESUME, 9)
        assert not await s.is_done(FILE)

    run(store, body)


def test_claim_without_commit_stays_new(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.NEW, 0)
        await s.release(FILE, "A")
        assert await s.claim(FILE, "B", 30) == Claim(ClaimState.NEW, 0)

    run(store, body)


def test_commit_is_monotonic(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        await s.claim(FILE, "A", 30)
        await s.commit(FILE, "A", 10)
        await s.commit(FILE, "A", 4)  # late or duplicate: ignored, not an error
        await s.commit(FILE, "A", 10)
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.RESUME, 10)
        await s.commit(FILE, "A", 11)
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.RESUME, 11)

    run(store, body)


def test_complete_is_done_for_everyone(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        assert not await s.is_done(FILE)
        await s.claim(FILE, "A", 30)
        await s.commit(FILE, "A", 3)
        await s.complete(FILE, "A", 7)
        assert await s.is_done(FILE)
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.DONE)
        assert await s.claim(FILE, "B", 30) == Claim(ClaimState.DONE)
        with pytest.raises(LeaseLost):  # the lease ended with completion
            await s.commit(FILE, "A", 7)
        await s.release(FILE, "A")  # harmless
        assert await s.is_done(FILE)

    run(store, body)


def test_complete_without_claim(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        await s.complete(FILE, "A", 0)
        assert await s.is_done(FILE)
        assert await s.claim(FILE, "B", 30) == Claim(ClaimState.DONE)

    run(store, body)


def test_lease_makes_others_busy(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.NEW, 0)
        assert await s.claim(FILE, "B", 30) == Claim(ClaimState.BUSY, 0)
        await s.commit(FILE, "A", 3)
        assert await s.claim(FILE, "B", 30) == Claim(ClaimState.BUSY, 3)
        with pytest.raises(LeaseLost):
            await s.commit(FILE, "B", 4)
        await s.release(FILE, "B")  # not B's lease: must not drop A's
        assert await s.claim(FILE, "B", 30) == Claim(ClaimState.BUSY, 3)
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.RESUME, 3)
        await s.commit(FILE, "A", 4)

    run(store, body)


def test_expired_lease_is_taken_over(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        assert await s.claim(FILE, "A", 0.2) == Claim(ClaimState.NEW, 0)
        await s.commit(FILE, "A", 2)
        await asyncio.sleep(0.3)
        assert await s.claim(FILE, "B", 30) == Claim(ClaimState.RESUME, 2)
        with pytest.raises(LeaseLost):
            await s.commit(FILE, "A", 5)
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.BUSY, 2)
        await s.commit(FILE, "B", 5)
        await s.complete(FILE, "B", 5)
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.DONE)

    run(store, body)


def test_expired_lease_still_commits_until_taken(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        await s.claim(FILE, "A", 0.2)
        await asyncio.sleep(0.3)
        await s.commit(FILE, "A", 4)  # nobody took it: progress is still A's to record
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.RESUME, 4)

    run(store, body)


def test_heartbeat_renews_lease(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        # Margins of 0.5 s either way, so a loaded machine cannot flip the outcome.
        await s.claim(FILE, "A", 1.5)
        await asyncio.sleep(1.0)
        await s.claim(FILE, "A", 1.5)
        await asyncio.sleep(1.0)  # 2.0 s after the first claim, 1.0 s after the renewal
        assert (await s.claim(FILE, "B", 30)).state is ClaimState.BUSY
        await s.commit(FILE, "A", 1)

    run(store, body)


def test_release_keeps_position(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        await s.claim(FILE, "A", 30)
        await s.commit(FILE, "A", 7)
        await s.release(FILE, "A")
        with pytest.raises(LeaseLost):
            await s.commit(FILE, "A", 8)
        assert not await s.is_done(FILE)
        assert await s.claim(FILE, "B", 30) == Claim(ClaimState.RESUME, 7)

    run(store, body)


def test_commit_without_claim_is_lease_lost(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        with pytest.raises(LeaseLost):
            await s.commit(FILE, "A", 1)
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.NEW, 0)

    run(store, body)


def test_different_etag_is_a_different_file(store: CheckpointStore) -> None:
    other = FileId(BUCKET, KEY, "etag-2")
    no_etag = FileId(BUCKET, KEY)

    async def body(s: CheckpointStore) -> None:
        await s.claim(FILE, "A", 30)
        await s.commit(FILE, "A", 3)
        await s.complete(FILE, "A", 3)
        assert not await s.is_done(other)
        assert await s.claim(other, "B", 30) == Claim(ClaimState.NEW, 0)
        assert await s.claim(no_etag, "C", 30) == Claim(ClaimState.NEW, 0)
        assert await s.claim(FileId("other-bucket", KEY, "etag-1"), "D", 30) == Claim(
            ClaimState.NEW, 0
        )
        assert await s.claim(FILE, "B", 30) == Claim(ClaimState.DONE)

    run(store, body)


def test_keys_with_spaces_and_unicode(store: CheckpointStore) -> None:
    files = [
        FileId(BUCKET, "AWSLogs/with space/and  two.json.gz", '"d41d8cd98f00b204"'),
        FileId(BUCKET, "AWSLogs/ünïcödé/日本語/ファイル.json.gz", "e1"),
        FileId(BUCKET, "AWSLogs/emoji 🚀/a#b?c&d=e%20f'g\"h.json.gz", "e1"),
        FileId(BUCKET, "AWSLogs/ünïcödé/日本語/ファイル.json", "e1"),  # a prefix of another
    ]

    async def body(s: CheckpointStore) -> None:
        for i, f in enumerate(files):
            assert await s.claim(f, "A", 30) == Claim(ClaimState.NEW, 0)
            await s.commit(f, "A", i + 1)
        await s.complete(files[1], "A", 2)
        for i, f in enumerate(files):
            await s.release(f, "A")
            want = Claim(ClaimState.DONE) if i == 1 else Claim(ClaimState.RESUME, i + 1)
            assert await s.claim(f, "B", 30) == want, f
            assert await s.is_done(f) == (i == 1)

    run(store, body)


# --- the key/value contract (pending digest checks) ----------------------------------

LOG_URI = f"digest-check:s3://{BUCKET}/{KEY}"


def kv(s: CheckpointStore) -> KeyValueStore:
    assert isinstance(s, KeyValueStore)
    return s


def test_kv_implements_protocol(store: CheckpointStore) -> None:
    assert isinstance(store, KeyValueStore)


def test_kv_remember_recall_forget(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        k = kv(s)
        assert await k.recall(LOG_URI) is None
        assert await k.forget(LOG_URI) is None
        assert await k.remember(LOG_URI, '{"sha256": "aa"}', 3600) is True
        assert await k.recall(LOG_URI) == '{"sha256": "aa"}'
        assert await k.remember(LOG_URI, "bb", 3600) is True  # plain remember replaces
        assert await k.recall(LOG_URI) == "bb"
        # Values never touch file progress, and file ids never touch values.
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.NEW, 0)
        assert await k.recall(str(FILE)) is None
        assert await k.forget(LOG_URI) == "bb"
        assert await k.recall(LOG_URI) is None
        assert await k.forget(LOG_URI) is None  # taken once only
        assert await s.claim(FILE, "A", 30) == Claim(ClaimState.NEW, 0)

    run(store, body)


def test_kv_only_new_does_not_overwrite(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        k = kv(s)
        assert await k.remember(LOG_URI, "first", 3600, only_new=True) is True
        assert await k.remember(LOG_URI, "second", 3600, only_new=True) is False
        assert await k.recall(LOG_URI) == "first"
        assert await k.forget(LOG_URI) == "first"
        assert await k.remember(LOG_URI, "third", 3600, only_new=True) is True
        assert await k.recall(LOG_URI) == "third"

    run(store, body)


def test_kv_values_expire(store: CheckpointStore) -> None:
    async def body(s: CheckpointStore) -> None:
        k = kv(s)
        await k.remember("short", "gone soon", 1.0)
        await k.remember("long", "stays", 3600)
        await k.remember("taken", "expired before taken", 1.0)
        assert await k.recall("short") == "gone soon"
        await asyncio.sleep(1.2)
        assert await k.recall("short") is None
        assert await k.forget("taken") is None  # an expired value is not handed out
        assert await k.recall("long") == "stays"
        # An expired value counts as absent for only_new.
        assert await k.remember("short", "new", 3600, only_new=True) is True
        assert await k.recall("short") == "new"

    run(store, body)


def test_kv_keys_with_spaces_and_unicode(store: CheckpointStore) -> None:
    keys = [f"digest-check:s3://{BUCKET}/AWSLogs/ünï cödé/日本語 🚀'\"%20.json.gz", "a", "a b"]

    async def body(s: CheckpointStore) -> None:
        k = kv(s)
        for i, key in enumerate(keys):
            await k.remember(key, f"v{i} ✓", 3600)
        for i, key in enumerate(keys):
            assert await k.recall(key) == f"v{i} ✓"

    run(store, body)


def test_kv_only_one_taker_across_processes(tmp_path: Path) -> None:
    """Two SQLite stores on one file (two workers): a value is taken by exactly one."""
    path = tmp_path / "cp.sqlite3"

    async def main() -> None:
        a, b = SqliteStore(path), SqliteStore(path)
        try:
            for i in range(20):
                assert await a.remember(f"k{i}", f"v{i}", 3600, only_new=True)
                assert not await b.remember(f"k{i}", "other", 3600, only_new=True)
            got = [await (a if i % 2 else b).forget(f"k{i}") for i in range(20)]
            again = [await (b if i % 2 else a).forget(f"k{i}") for i in range(20)]
            assert got == [f"v{i}" for i in range(20)] and again == [None] * 20
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_sqlite_purges_expired_values_lazily(tmp_path: Path) -> None:
    path = tmp_path / "cp.sqlite3"

    async def main() -> None:
        s = SqliteStore(path)
        try:
            await s.remember("old", "x", 0.01)
            await asyncio.sleep(0.05)
            s._housekeeping_due = 0.0  # the next write purges (normally every 10 min)
            await s.remember("new", "y", 3600)
        finally:
            await s.close()

    asyncio.run(main())
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT key FROM kv").fetchall() == [("new",)]
    finally:
        conn.close()


def test_dynamodb_values_carry_ttl(aws_env: MotoServer) -> None:
    async def main() -> None:
        s = DynamoDBStore(TABLE, create_table=True)
        try:
            await s.remember(LOG_URI, "v", 7 * 86400)
        finally:
            await s.close()

    before = time.time()
    asyncio.run(main())
    item = boto3.client("dynamodb").get_item(
        TableName=TABLE, Key={"pk": {"S": "kv:" + LOG_URI}}, ConsistentRead=True
    )["Item"]
    assert item["value"] == {"S": "v"}
    ttl = int(item["expires_at"]["N"])
    assert before + 7 * 86400 <= ttl <= time.time() + 7 * 86400 + 2


# --- SQLite ---------------------------------------------------------------------------


def test_sqlite_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "cp.sqlite3"
    done = FileId(BUCKET, "done.json.gz", "e")

    async def first(s: CheckpointStore) -> None:
        await s.claim(FILE, "A", 60)
        await s.commit(FILE, "A", 4)
        await s.claim(done, "A", 60)
        await s.complete(done, "A", 12)

    async def second(s: CheckpointStore) -> None:
        assert await s.is_done(done)
        assert await s.claim(done, "B", 60) == Claim(ClaimState.DONE)
        assert await s.claim(FILE, "B", 60) == Claim(ClaimState.BUSY, 4)  # A's lease lives on
        assert await s.claim(FILE, "A", 60) == Claim(ClaimState.RESUME, 4)

    run(SqliteStore(path), first)
    assert path.is_file()
    store = SqliteStore(path)
    run(store, second)
    assert store.stats() == {"files": 2, "done": 1, "in_progress": 1, "leased": 1}


def test_sqlite_settings(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "cp.sqlite3"

    async def body(s: CheckpointStore) -> None:
        await s.claim(FILE, "A", 60)

    run(SqliteStore(path), body)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = [r[1] for r in conn.execute("PRAGMA table_info(checkpoints)")]
        assert cols == [
            "bucket", "key", "etag", "position", "records", "done_at",
            "lease_owner", "lease_expires", "updated_at",
        ]  # fmt: skip
    finally:
        conn.close()


def test_sqlite_stats_empty_and_counts(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "cp.sqlite3")
    assert store.stats() == {"files": 0, "done": 0, "in_progress": 0, "leased": 0}

    async def body(s: CheckpointStore) -> None:
        await s.claim(FileId(BUCKET, "a", "1"), "A", 60)
        await s.claim(FileId(BUCKET, "b", "1"), "A", 60)
        await s.release(FileId(BUCKET, "b", "1"), "A")
        await s.complete(FileId(BUCKET, "c", "1"), "A", 1)

    run(store, body)
    assert store.stats() == {"files": 3, "done": 1, "in_progress": 2, "leased": 1}


# --- SQLite retention (done rows expire like DynamoDB's TTL) ---------------------------

OLD = [FileId(BUCKET, f"old-{i}.json.gz", "e") for i in range(3)]
LEASED = FileId(BUCKET, "leased.json.gz", "e")  # in progress, lease held by A
PARTIAL = FileId(BUCKET, "partial.json.gz", "e")  # in progress, 5 records, no lease
RECENT = FileId(BUCKET, "recent.json.gz", "e")


async def _old_and_in_progress(s: CheckpointStore) -> None:
    for f in OLD:
        await s.claim(f, "A", 60)
        await s.complete(f, "A", 7)
    await s.claim(LEASED, "A", 3600)
    await s.commit(LEASED, "A", 2)
    await s.claim(PARTIAL, "A", 60)
    await s.commit(PARTIAL, "A", 5)
    await s.release(PARTIAL, "A")  # a failure: progress kept, lease given up


async def _only_recent_and_in_progress_left(s: CheckpointStore) -> None:
    assert isinstance(s, SqliteStore)
    # LEASED, PARTIAL and RECENT: the old done rows are gone, not merely hidden.
    assert s.stats() == {"files": 3, "done": 1, "in_progress": 2, "leased": 1}
    assert await s.is_done(RECENT)
    assert await s.claim(RECENT, "B", 60) == Claim(ClaimState.DONE)
    assert await s.claim(LEASED, "B", 60) == Claim(ClaimState.BUSY, 2)  # A still holds it
    assert await s.claim(PARTIAL, "B", 60) == Claim(ClaimState.RESUME, 5)
    for f in OLD:  # forgotten: announced again now, it would be processed again
        assert not await s.is_done(f)
        assert await s.claim(f, "B", 60) == Claim(ClaimState.NEW, 0)


def test_sqlite_retention_prunes_old_done_rows_across_reopen(tmp_path: Path) -> None:
    """open_store's ttl_days: done rows older than it are deleted when the store is
    opened again; rows of files in progress (leased or partial) and recent ones stay."""
    spec = f"sqlite:///{tmp_path / 'cp.sqlite3'}?ttl_days={3 / 86400}"  # 3 seconds
    first = open_store(spec, tmp_path)
    assert isinstance(first, SqliteStore) and first.ttl_days == 3 / 86400
    run(first, _old_and_in_progress)
    time.sleep(2.0)

    async def recent(s: CheckpointStore) -> None:
        await s.claim(RECENT, "A", 60)
        await s.complete(RECENT, "A", 3)
        assert await s.is_done(OLD[0])  # 2 s old: still remembered

    run(open_store(spec, tmp_path), recent)
    time.sleep(1.5)  # OLD are now 3.5 s old, RECENT 1.5 s
    run(open_store(spec, tmp_path), _only_recent_and_in_progress_left)


def test_sqlite_retention_pass_repeats_while_open(tmp_path: Path) -> None:
    """A long-running store prunes again (at most every `prune_every` s, on completion),
    not only when opened."""
    store = SqliteStore(tmp_path / "cp.sqlite3", ttl_days=1.0 / 86400, prune_every=0.2)

    async def body(s: CheckpointStore) -> None:
        await _old_and_in_progress(s)
        assert await s.is_done(OLD[0])  # younger than the retention: remembered
        await asyncio.sleep(1.3)
        assert isinstance(s, SqliteStore)
        assert s.stats()["done"] == len(OLD)  # expired, but no pass has run since
        await s.claim(RECENT, "A", 60)
        await s.complete(RECENT, "A", 3)  # the pass is due: it runs here
        await _only_recent_and_in_progress_left(s)

    run(store, body)


def test_sqlite_existing_database_is_migrated_and_pruned(tmp_path: Path) -> None:
    """A database written by the previous schema (no done_at index, user_version 0) gets
    the index once, and its done rows older than 30 days (the default) go; in-progress
    rows, recent done rows and the key-value part (pending digest hashes) stay."""
    import sqlite3

    path = tmp_path / "state" / "checkpoints.sqlite3"
    path.parent.mkdir()
    now = time.time()
    day = 86400.0
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE checkpoints (
            bucket TEXT NOT NULL, key TEXT NOT NULL, etag TEXT NOT NULL,
            position INTEGER NOT NULL DEFAULT 0, records INTEGER, done_at REAL,
            lease_owner TEXT, lease_expires REAL, updated_at REAL NOT NULL,
            PRIMARY KEY (bucket, key, etag)
        ) WITHOUT ROWID;
        CREATE TABLE kv (
            key TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL, expires_at REAL NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX kv_expires ON kv (expires_at);
        """
    )
    rows = [  # bucket, key, etag, position, records, done_at, lease_owner, lease_expires
        (*_ident_of(OLD[0]), 7, 7, now - 45 * day, None, None),
        (*_ident_of(OLD[1]), 7, 7, now - 31 * day, None, None),
        (*_ident_of(RECENT), 3, 3, now - 29 * day, None, None),
        (*_ident_of(PARTIAL), 5, None, None, None, None),  # failed 90 days ago
        (*_ident_of(LEASED), 2, None, None, "A", now + 3600),
    ]
    conn.executemany(
        "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(*r, now - 90 * day) for r in rows],
    )
    conn.execute("INSERT INTO kv VALUES (?, ?, ?)", (LOG_URI, "pending hash", now + 3600))
    conn.commit()
    conn.close()

    async def body(s: CheckpointStore) -> None:
        assert isinstance(s, SqliteStore)
        assert s.stats() == {"files": 3, "done": 1, "in_progress": 2, "leased": 1}
        assert not await s.is_done(OLD[0]) and not await s.is_done(OLD[1])
        assert await s.is_done(RECENT)
        assert await s.claim(PARTIAL, "B", 60) == Claim(ClaimState.RESUME, 5)
        assert await kv(s).recall(LOG_URI) == "pending hash"

    run(open_store(None, path.parent), body)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        index = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'checkpoints'"
        ).fetchall()
        assert index == [
            ("CREATE INDEX checkpoints_done_at ON checkpoints (done_at) WHERE done_at IS NOT NULL",)
        ]
        plan = " ".join(
            str(r[-1])
            for r in conn.execute(
                "EXPLAIN QUERY PLAN SELECT bucket FROM checkpoints"
                " WHERE done_at IS NOT NULL AND done_at < 1 ORDER BY done_at LIMIT 5"
            )
        )
        assert "checkpoints_done_at" in plan  # the pass reads the index, not the table
    finally:
        conn.close()


def _ident_of(file: FileId) -> tuple[str, str, str]:
    return (file.bucket, file.key, file.etag)


def test_open_store_sqlite_ttl_days(tmp_path: Path) -> None:
    default = open_store("sqlite", tmp_path)
    assert isinstance(default, SqliteStore) and default.ttl_days == 30
    store = open_store("sqlite?ttl_days=7", tmp_path)
    assert isinstance(store, SqliteStore) and store.ttl_days == 7
    assert store.path == tmp_path / "checkpoints.sqlite3"
    store = open_store(f"SQLite:///{tmp_path / 'x.db'}?ttl_days=0.5", tmp_path)
    assert isinstance(store, SqliteStore) and store.ttl_days == 0.5
    assert store.path == tmp_path / "x.db"
    with pytest.raises(ValueError, match="ttl_days must be positive"):
        SqliteStore(tmp_path / "y.db", ttl_days=0)


_RACER = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    from trailproc.checkpoint import FileId, SqliteStore

    path, owner, flag_dir, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    async def main():
        store = SqliteStore(path)
        await store.is_done(FileId("warm-up", "x"))  # connect before the start signal
        open(os.path.join(flag_dir, "ready-" + owner), "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(flag_dir, "go")):
            if time.monotonic() > deadline:
                sys.exit("no start signal")
        states = []
        for i in range(count):
            claim = await store.claim(FileId("b", f"k/{i}", "e"), owner, 60)
            states.append(claim.state.value)
        await store.close()
        print(json.dumps(states))

    asyncio.run(main())
    """
)


def test_sqlite_two_processes_race_for_claims(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "cp.sqlite3"
    flags = tmp_path / "flags"
    flags.mkdir()
    count = 300
    pythonpath = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(path), owner, str(flags), str(count)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for owner in ("P1", "P2")
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((flags / f"ready-{o}").exists() for o in ("P1", "P2")):
            assert time.monotonic() < deadline, "racers did not start"
            if any(p.poll() is not None for p in procs):
                for p in procs:
                    p.kill()
                pytest.fail(f"a racer died early: {[p.communicate()[1] for p in procs]}")
            time.sleep(0.01)
        (flags / "go").touch()
        outputs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    first, second = (json.loads(out) for out, _ in outputs)
    assert len(first) == len(second) == count
    for i, pair in enumerate(zip(first, second, strict=True)):
        assert sorted(pair) == ["busy", "new"], (i, pair)

    async def check(s: CheckpointStore) -> None:
        assert isinstance(s, SqliteStore)
        assert s.stats()["leased"] == count

    run(SqliteStore(path), check)


# --- DynamoDB -------------------------------------------------------------------------


def test_dynamodb_complete_sets_ttl(aws_env: MotoServer) -> None:
    store = DynamoDBStore(TABLE, ttl_days=7, create_table=True)
    started = time.time()

    async def body(s: CheckpointStore) -> None:
        await s.claim(FILE, "A", 30)
        await s.commit(FILE, "A", 3)
        await s.complete(FILE, "A", 5)

    run(store, body)
    ddb = boto3.client("dynamodb")
    item = ddb.get_item(TableName=TABLE, Key={"pk": {"S": str(FILE)}}, ConsistentRead=True)["Item"]
    assert item["pk"]["S"] == f"s3://{BUCKET}/{KEY}#etag-1"
    assert item["done"] == {"BOOL": True}
    assert item["records"] == {"N": "5"}
    assert item["position"] == {"N": "5"}
    assert "lease_owner" not in item and "lease_expires" not in item
    expires_at = int(item["expires_at"]["N"])
    assert started + 7 * 86400 - 5 <= expires_at <= time.time() + 7 * 86400 + 5
    ttl = ddb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"
    assert ttl["AttributeName"] == "expires_at"
    table = ddb.describe_table(TableName=TABLE)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_dynamodb_lease_attributes_while_in_progress(aws_env: MotoServer) -> None:
    before = time.time()

    async def body(s: CheckpointStore) -> None:
        await s.claim(FILE, "worker-1", 45)
        await s.commit(FILE, "worker-1", 2)

    run(DynamoDBStore(TABLE, create_table=True), body)
    item = boto3.client("dynamodb").get_item(TableName=TABLE, Key={"pk": {"S": str(FILE)}})["Item"]
    assert item["lease_owner"] == {"S": "worker-1"}
    # Stored with millisecond precision (rounded), hence the 1 ms allowance.
    assert before + 45 - 0.001 <= float(item["lease_expires"]["N"]) <= time.time() + 45 + 0.001
    assert item["position"] == {"N": "2"}
    assert item["done"] == {"BOOL": False}
    assert "expires_at" not in item


def test_dynamodb_two_stores_share_the_table(aws_env: MotoServer) -> None:
    async def body() -> None:
        a = DynamoDBStore(TABLE, create_table=True)
        b = DynamoDBStore(TABLE, create_table=True)  # table exists already: fine
        try:
            assert await a.claim(FILE, "A", 30) == Claim(ClaimState.NEW, 0)
            await a.commit(FILE, "A", 6)
            assert await b.claim(FILE, "B", 30) == Claim(ClaimState.BUSY, 6)
            await a.release(FILE, "A")
            assert await b.claim(FILE, "B", 30) == Claim(ClaimState.RESUME, 6)
            with pytest.raises(LeaseLost):
                await a.commit(FILE, "A", 7)
        finally:
            await a.close()
            await b.close()

    asyncio.run(body())


def test_dynamodb_missing_table_without_create(aws_env: MotoServer) -> None:
    from botocore.exceptions import ClientError

    async def body(s: CheckpointStore) -> None:
        with pytest.raises(ClientError) as info:
            await s.is_done(FILE)
        assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"

    run(DynamoDBStore("no-such-table"), body)


# --- open_store -----------------------------------------------------------------------


def test_open_store_default_is_sqlite_in_state_dir(tmp_path: Path) -> None:
    for spec in (None, "sqlite", " SQLite ", ""):
        store = open_store(spec, tmp_path / "state")
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / "state" / "checkpoints.sqlite3"
    assert isinstance(open_store(None, str(tmp_path)), SqliteStore)


def test_open_store_sqlite_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = tmp_path / "abs" / "cp.db"
    for spec in (f"sqlite://{absolute}", f"sqlite:///{absolute}"):
        store = open_store(spec, tmp_path / "state")
        assert isinstance(store, SqliteStore)
        assert store.path == absolute, spec
    assert absolute.parent.is_dir()
    monkeypatch.chdir(tmp_path)
    for spec in ("sqlite://rel/cp.db", "sqlite:rel/cp.db"):
        store = open_store(spec, tmp_path / "state")
        assert isinstance(store, SqliteStore)
        assert store.path == Path("rel/cp.db")
    assert (tmp_path / "rel").is_dir()


def test_open_store_memory_and_dynamodb(tmp_path: Path) -> None:
    assert isinstance(open_store("memory", tmp_path), MemoryStore)
    store = open_store("dynamodb://trail-checkpoints", tmp_path)
    assert isinstance(store, DynamoDBStore)
    assert (store.table, store.create_table, store.ttl_days) == ("trail-checkpoints", False, 30)
    store = open_store("dynamodb://My_Table.v2?create=true&ttl_days=7", tmp_path)
    assert isinstance(store, DynamoDBStore)
    assert (store.table, store.create_table, store.ttl_days) == ("My_Table.v2", True, 7)
    store = open_store("DynamoDB://tbl?create=false", tmp_path)
    assert isinstance(store, DynamoDBStore)
    assert (store.table, store.create_table) == ("tbl", False)


@pytest.mark.parametrize(
    "spec",
    [
        "redis://localhost",
        "postgres",
        "memory://x",
        "sqlite://",
        "dynamodb",
        "dynamodb:table",
        "dynamodb://",
        "dynamodb://ab",
        "dynamodb://bad/table",
        "dynamodb://tbl?bogus=1",
        "dynamodb://tbl?create=maybe",
        "dynamodb://tbl?ttl_days=soon",
        "dynamodb://tbl?ttl_days=0",
        "sqlite?ttl_days=0",
        "sqlite?ttl_days=-1",
        "sqlite?ttl_days=forever",
        "sqlite:///tmp/cp.db?create=true",
        "sqlite?bogus=1",
    ],
)
def test_open_store_rejects_unknown_specs(spec: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        open_store(spec, tmp_path)
    message = str(info.value)
    assert repr(spec.strip()) in message
    for form in ("sqlite", "sqlite:///", "memory", "dynamodb://TABLE", "create=true", "ttl_days"):
        assert form in message
