"""Checkpoint writes per file: a batch's end is committed when it returns, except the
last one, which the file's `complete` records right after. A one-batch file costs a
claim and a complete (two DynamoDB writes, not three)."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from trailproc._observe import Metrics
from trailproc._pipeline.engine import FilePipeline, PipelineSettings
from trailproc._pipeline.events import Event
from trailproc._pipeline.fetch import LocalFetcher
from trailproc._pipeline.keys import FileRef, KeyInfo, ObjectKind
from trailproc._pipeline.observer import PipelineObserver
from trailproc._pipeline.processor import EventProcessor
from trailproc.checkpoint._base import Claim, FileId
from trailproc.checkpoint._memory import MemoryStore

pytestmark = pytest.mark.timeout(30)


class Recording(MemoryStore):
    """The in-process store, recording each write; `never_suspends` as a remote store's
    when False (commits then go through the task + shield path)."""

    def __init__(self, never_suspends: bool) -> None:
        super().__init__()
        self.never_suspends = never_suspends
        self.writes: list[tuple[str, int]] = []

    async def claim(self, file: FileId, owner: str, lease_seconds: float) -> Claim:
        self.writes.append(("claim", 0))
        return await super().claim(file, owner, lease_seconds)

    async def commit(self, file: FileId, owner: str, position: int) -> None:
        self.writes.append(("commit", position))
        await super().commit(file, owner, position)

    async def complete(self, file: FileId, owner: str, records: int) -> None:
        self.writes.append(("complete", records))
        await super().complete(file, owner, records)


class Collect(EventProcessor):
    def __init__(self) -> None:
        self.seen: list[int] = []

    def process(self, events: list[Event]) -> None:
        self.seen.extend(e.index for e in events)


def run_file(tmp_path: Path, store: Recording, records: int, *, twice: bool = False) -> list[int]:
    path = tmp_path / "log.json.gz"
    body = {"Records": [{"eventID": str(i), "eventName": "GetObject"} for i in range(records)]}
    path.write_bytes(gzip.compress(json.dumps(body).encode()))
    user = Collect()
    pipeline = FilePipeline(
        processor=user,
        store=store,
        fetcher=LocalFetcher(),
        observer=PipelineObserver(user, Metrics()),
        settings=PipelineSettings(owner="me", max_events_per_emit=100, handlers_in_thread=False),
    )
    ref = FileRef(bucket="", key=str(path), info=KeyInfo(ObjectKind.LOG))

    async def scenario() -> None:
        assert (await pipeline.run(ref)).status == "done"
        if twice:  # a repeated notification: done, nothing handed over again
            assert (await pipeline.run(ref)).status == "already_done"

    asyncio.run(scenario())
    return user.seen


@pytest.mark.parametrize("never_suspends", [True, False])
def test_a_one_batch_file_is_a_claim_and_a_complete(tmp_path: Path, never_suspends: bool) -> None:
    store = Recording(never_suspends)
    seen = run_file(tmp_path, store, 100, twice=True)
    assert seen == list(range(100))
    assert store.writes[:2] == [("claim", 0), ("complete", 100)]
    assert ("commit", 100) not in store.writes


@pytest.mark.parametrize("never_suspends", [True, False])
def test_every_batch_but_the_last_is_committed(tmp_path: Path, never_suspends: bool) -> None:
    store = Recording(never_suspends)
    seen = run_file(tmp_path, store, 250)
    assert seen == list(range(250))
    assert store.writes == [("claim", 0), ("commit", 100), ("commit", 200), ("complete", 250)]
