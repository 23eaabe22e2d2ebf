"""Checkpoint schema versions: stores written before versions were recorded keep working,
a store of a newer incompatible schema is refused before anything is read, and a newer
compatible one (an added item kind) is shared.

SQLite files are written here with trailproc 0.1's own statements; DynamoDB items with
plain boto3 calls against moto's server, as trailproc 0.1 wrote them.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

import trailproc
from trailproc._errors import CheckpointError
from trailproc._sandbox import MotoServer
from trailproc.checkpoint import (
    CheckpointStore,
    Claim,
    ClaimState,
    DynamoDBStore,
    FileId,
    KeyValueStore,
    SchemaTooNew,
    SqliteStore,
)
from trailproc.checkpoint._schema import (
    COMPATIBLE_FROM,
    SCHEMA_VERSION,
    StoredSchema,
    merged_schema,
)

TABLE = "trailproc-checkpoints"
BUCKET = "trail-bucket"
DONE = FileId(BUCKET, "AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/01/done.json.gz", "e1")
PARTIAL = FileId(BUCKET, "AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/01/part.json.gz", "e2")
FRESH = FileId(BUCKET, "AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/01/new.json.gz", "e3")
PENDING_KEY = "s3://trail-bucket/AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/01/x.json.gz"
NEWER = SCHEMA_VERSION + 1

# trailproc 0.1's SQLite layout, statement for statement, and its PRAGMA user_version.
V01_SQLITE = """
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
CREATE INDEX checkpoints_done_at ON checkpoints (done_at) WHERE done_at IS NOT NULL;
PRAGMA user_version = 1;
"""


def run(store: CheckpointStore, body: Any) -> None:
    async def main() -> None:
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


def kv(store: CheckpointStore) -> KeyValueStore:
    assert isinstance(store, KeyValueStore)
    return store


async def _reads_previous_progress(store: CheckpointStore) -> None:
    """What trailproc 0.1 left behind reads as it meant: done, resume at 5, a pending value."""
    assert await store.is_done(DONE)
    assert await store.claim(DONE, "new-worker", 60) == Claim(ClaimState.DONE)
    assert await store.claim(PARTIAL, "new-worker", 60) == Claim(ClaimState.RESUME, 5)
    assert await store.claim(FRESH, "new-worker", 60) == Claim(ClaimState.NEW, 0)
    assert await kv(store).recall(PENDING_KEY) == "pending hash"


# --- the merge rule -------------------------------------------------------------------


def test_merged_schema_only_grows_and_refuses_what_it_cannot_read() -> None:
    store = "sqlite:///x"
    assert merged_schema(store, StoredSchema(0, 0)) == StoredSchema.current()
    assert merged_schema(store, StoredSchema.current()) is None
    # A newer additive release recorded more: nothing to write, nothing lowered.
    assert merged_schema(store, StoredSchema(NEWER, COMPATIBLE_FROM)) is None
    with pytest.raises(SchemaTooNew) as info:
        merged_schema(store, StoredSchema(NEWER, NEWER, "9.0.0"))
    message = str(info.value)
    assert f"schema version {NEWER}" in message and f"schema {SCHEMA_VERSION}" in message
    assert "9.0.0" in message and trailproc.__version__ in message
    assert "Upgrade trailproc" in message and store in message
    assert isinstance(info.value, CheckpointError)


# --- SQLite ---------------------------------------------------------------------------


def _v01_sqlite(path: Path, *, user_version: int = 1) -> None:
    """A database as trailproc 0.1 wrote it, with a done file, a partial one and a value."""
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    conn = sqlite3.connect(path)
    conn.executescript(V01_SQLITE.replace("user_version = 1", f"user_version = {user_version}"))
    conn.executemany(
        "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (DONE.bucket, DONE.key, DONE.etag, 9, 9, now - 60, None, None, now - 60),
            (PARTIAL.bucket, PARTIAL.key, PARTIAL.etag, 5, None, None, "old", now - 1, now - 60),
        ],
    )
    conn.execute("INSERT INTO kv VALUES (?, ?, ?)", (PENDING_KEY, "pending hash", now + 3600))
    conn.commit()
    conn.close()


def _sqlite_meta(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT name, value FROM trailproc_meta").fetchall())
    finally:
        conn.close()


def _set_sqlite_meta(path: Path, version: int, compatible_from: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("UPDATE trailproc_meta SET value = ? WHERE name = 'schema_version'", (version,))
    conn.execute(
        "UPDATE trailproc_meta SET value = ? WHERE name = 'compatible_from'", (compatible_from,)
    )
    conn.execute("UPDATE trailproc_meta SET value = '9.0.0' WHERE name = 'written_by'")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


def test_sqlite_written_by_the_previous_schema_is_read_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "state" / "checkpoints.sqlite3"
    _v01_sqlite(path)
    run(SqliteStore(path), _reads_previous_progress)
    assert _sqlite_meta(path) == {
        "schema_version": str(SCHEMA_VERSION),
        "compatible_from": str(COMPATIBLE_FROM),
        "written_by": trailproc.__version__,
    }


def test_sqlite_new_file_records_this_release(tmp_path: Path) -> None:
    path = tmp_path / "cp.sqlite3"

    async def body(store: CheckpointStore) -> None:
        assert await store.claim(FRESH, "A", 60) == Claim(ClaimState.NEW, 0)

    run(SqliteStore(path), body)
    assert _sqlite_meta(path) == {
        "schema_version": str(SCHEMA_VERSION),
        "compatible_from": str(COMPATIBLE_FROM),
        "written_by": trailproc.__version__,
    }


def test_sqlite_of_a_newer_incompatible_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "cp.sqlite3"
    _v01_sqlite(path)
    run(SqliteStore(path), _reads_previous_progress)
    _set_sqlite_meta(path, NEWER, NEWER)
    before = path.read_bytes()

    async def body(store: CheckpointStore) -> None:
        for call in (store.is_done(DONE), store.claim(FRESH, "A", 60), kv(store).recall("k")):
            with pytest.raises(SchemaTooNew) as info:
                await call
            assert f"schema version {NEWER}" in str(info.value)
            assert f"knows schema {SCHEMA_VERSION}" in str(info.value)
            assert str(path) in str(info.value)

    run(SqliteStore(path), body)
    assert path.read_bytes() == before  # no claim, no lease, no migration written
    assert _sqlite_meta(path)["schema_version"] == str(NEWER)


def test_sqlite_of_a_newer_compatible_schema_is_shared(tmp_path: Path) -> None:
    """A newer release that only added a kind of row: this one keeps working with it
    and does not lower the recorded versions."""
    path = tmp_path / "cp.sqlite3"
    _v01_sqlite(path)
    run(SqliteStore(path), _reads_previous_progress)
    _set_sqlite_meta(path, NEWER, COMPATIBLE_FROM)

    async def body(store: CheckpointStore) -> None:
        assert await store.is_done(DONE)
        await store.complete(PARTIAL, "new-worker", 8)
        assert await store.is_done(PARTIAL)

    run(SqliteStore(path), body)
    assert _sqlite_meta(path) == {
        "schema_version": str(NEWER),
        "compatible_from": str(COMPATIBLE_FROM),
        "written_by": "9.0.0",
    }


def test_sqlite_unknown_user_version_without_meta_is_refused(tmp_path: Path) -> None:
    """No meta table and a PRAGMA user_version this code never wrote: not guessed at."""
    path = tmp_path / "cp.sqlite3"
    _v01_sqlite(path, user_version=NEWER)

    async def body(store: CheckpointStore) -> None:
        with pytest.raises(SchemaTooNew):
            await store.is_done(DONE)

    run(SqliteStore(path), body)


def test_refused_sqlite_store_hands_nothing_over(tmp_path: Path) -> None:
    """Through the whole pipeline: the run stops at start-up with the refusal, no record
    reaches the processor, and nothing is written to the store."""
    path = tmp_path / "cp.sqlite3"
    _v01_sqlite(path)
    run(SqliteStore(path), _reads_previous_progress)
    _set_sqlite_meta(path, NEWER, NEWER)
    before = path.read_bytes()
    log = tmp_path / "logs" / "123456789012_CloudTrail_us-east-1_20261101T0000Z_abc.json.gz"
    log.parent.mkdir()
    log.write_bytes(gzip.compress(json.dumps({"Records": [{"eventID": "1"}]}).encode()))
    seen: list[Any] = []

    class Collect(trailproc.EventProcessor):
        def process(self, events: Any) -> None:
            seen.extend(events)

    with pytest.raises(SchemaTooNew, match=f"schema version {NEWER}"):
        trailproc.process_paths([log], Collect(), checkpoint=f"sqlite://{path}")
    assert seen == []
    assert path.read_bytes() == before


# --- DynamoDB -------------------------------------------------------------------------


def _create_table(ddb: Any) -> None:
    ddb.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _v01_items(ddb: Any) -> None:
    """Items as trailproc 0.1 wrote them: one per file, one per value, no schema item."""
    now = time.time()

    def file_item(file: FileId, **attrs: Any) -> dict[str, Any]:
        return {
            "pk": {"S": str(file)},
            "bucket": {"S": file.bucket},
            "key": {"S": file.key},
            "etag": {"S": file.etag},
            "updated_at": {"N": str(int(now))},
            **attrs,
        }

    ddb.put_item(TableName=TABLE, Item=file_item(DONE, position={"N": "9"}, records={"N": "9"},
                 done={"BOOL": True}, expires_at={"N": str(int(now + 86400))}))  # fmt: skip
    ddb.put_item(TableName=TABLE, Item=file_item(PARTIAL, position={"N": "5"},
                 done={"BOOL": False}, lease_owner={"S": "old"},
                 lease_expires={"N": str(int(now - 1))}))  # fmt: skip
    ddb.put_item(TableName=TABLE, Item={
        "pk": {"S": "kv:" + PENDING_KEY}, "value": {"S": "pending hash"},
        "value_expires": {"N": str(int(now + 3600))}, "expires_at": {"N": str(int(now + 3601))},
        "updated_at": {"N": str(int(now))},
    })  # fmt: skip


def _schema_item(ddb: Any) -> dict[str, Any] | None:
    item: dict[str, Any] | None = ddb.get_item(
        TableName=TABLE, Key={"pk": {"S": "meta:schema"}}, ConsistentRead=True
    ).get("Item")
    return item


def _set_schema_item(ddb: Any, version: int, compatible_from: int) -> None:
    ddb.put_item(TableName=TABLE, Item={
        "pk": {"S": "meta:schema"}, "schema_version": {"N": str(version)},
        "compatible_from": {"N": str(compatible_from)}, "written_by": {"S": "9.0.0"},
    })  # fmt: skip


def test_dynamodb_written_by_the_previous_schema_is_read_and_versioned(
    aws_env: MotoServer,
) -> None:
    ddb = boto3.client("dynamodb")
    _create_table(ddb)
    _v01_items(ddb)
    run(DynamoDBStore(TABLE), _reads_previous_progress)
    item = _schema_item(ddb)
    assert item is not None
    assert item["schema_version"] == {"N": str(SCHEMA_VERSION)}
    assert item["compatible_from"] == {"N": str(COMPATIBLE_FROM)}
    assert "expires_at" not in item  # the table's TTL never forgets it


def test_dynamodb_workers_racing_on_a_new_table_record_one_schema(aws_env: MotoServer) -> None:
    """Four workers' first calls at once on a table without the schema item: each
    records it or finds it recorded (conditional writes), and every call goes through.

    Each worker claims its own file: that only one of four racing claims of one file wins
    rests on the server applying conditional writes atomically, which DynamoDB does and
    moto's threaded server does not promise (this test failed now and then under load)."""
    _create_table(boto3.client("dynamodb"))
    files = [FileId(BUCKET, FRESH.key.replace("new", f"new-{i}"), f"e{i}") for i in range(4)]

    async def main() -> None:
        stores = [DynamoDBStore(TABLE) for _ in range(4)]
        try:
            claims = await asyncio.gather(
                *(s.claim(files[i], f"w{i}", 60) for i, s in enumerate(stores))
            )
            assert [c.state for c in claims] == [ClaimState.NEW] * 4
        finally:
            for s in stores:
                await s.close()

    asyncio.run(main())
    item = _schema_item(boto3.client("dynamodb"))
    assert item is not None and item["schema_version"] == {"N": str(SCHEMA_VERSION)}
    assert item["written_by"] == {"S": trailproc.__version__}


def test_dynamodb_of_a_newer_incompatible_schema_is_refused_untouched(
    aws_env: MotoServer,
) -> None:
    ddb = boto3.client("dynamodb")
    _create_table(ddb)
    _v01_items(ddb)
    _set_schema_item(ddb, NEWER, NEWER)
    before = ddb.scan(TableName=TABLE, ConsistentRead=True)["Items"]

    async def body(store: CheckpointStore) -> None:
        for call in (store.claim(PARTIAL, "A", 60), store.is_done(DONE), kv(store).forget("k")):
            with pytest.raises(SchemaTooNew) as info:
                await call
            assert f"schema version {NEWER}" in str(info.value)
            assert "9.0.0" in str(info.value) and f"dynamodb://{TABLE}" in str(info.value)

    run(DynamoDBStore(TABLE), body)
    after = ddb.scan(TableName=TABLE, ConsistentRead=True)["Items"]
    key = lambda item: item["pk"]["S"]  # noqa: E731
    assert sorted(after, key=key) == sorted(before, key=key)


def test_dynamodb_of_a_newer_compatible_schema_is_shared(aws_env: MotoServer) -> None:
    ddb = boto3.client("dynamodb")
    _create_table(ddb)
    _v01_items(ddb)
    _set_schema_item(ddb, NEWER, COMPATIBLE_FROM)
    ddb.put_item(TableName=TABLE, Item={"pk": {"S": "cursor:some-future-kind"}})
    run(DynamoDBStore(TABLE), _reads_previous_progress)
    item = _schema_item(ddb)
    assert item is not None
    assert item["schema_version"] == {"N": str(NEWER)}  # not lowered
    assert item["written_by"] == {"S": "9.0.0"}
