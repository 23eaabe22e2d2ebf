"""A file whose checkpoint lease was taken over stops at once and counts as busy; the
pipeline recognises the store's `LeaseLost` by its class, on both commit paths."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from trailproc._errors import CheckpointError
from trailproc._observe import Metrics
from trailproc._pipeline.engine import FileOutcome, FilePipeline, PipelineSettings
from trailproc._pipeline.events import Event
from trailproc._pipeline.fetch import LocalFetcher
from trailproc._pipeline.keys import FileRef, KeyInfo, ObjectKind
from trailproc._pipeline.observer import PipelineObserver
from trailproc._pipeline.processor import EventProcessor
from trailproc.checkpoint import LeaseLost
from trailproc.checkpoint._base import FileId
from trailproc.checkpoint._memory import MemoryStore

pytestmark = pytest.mark.timeout(30)


class NotTheLeaseLost(Exception):
    """Another error that happens to bear the name."""


NotTheLeaseLost.__name__ = "LeaseLost"


class TakenOver(MemoryStore):
    """A store in which another worker takes the file over after the first batch."""

    def __init__(self, error: type[Exception], never_suspends: bool) -> None:
        super().__init__()
        self.error = error
        self.never_suspends = never_suspends

    async def commit(self, file: FileId, owner: str, position: int) -> None:
        raise self.error(f"{owner} does not hold the lease on {file}")


class Collect(EventProcessor):
    def __init__(self) -> None:
        self.batches: list[int] = []

    def process(self, events: list[Event]) -> None:
        self.batches.append(len(events))


def run_file(tmp_path: Path, store: MemoryStore) -> tuple[FileOutcome, list[int]]:
    path = tmp_path / "log.json.gz"
    records = [{"eventID": str(i), "eventName": "GetObject"} for i in range(5)]
    path.write_bytes(gzip.compress(json.dumps({"Records": records}).encode()))
    user = Collect()
    pipeline = FilePipeline(
        processor=user,
        store=store,
        fetcher=LocalFetcher(),
        observer=PipelineObserver(user, Metrics()),
        settings=PipelineSettings(owner="me", max_events_per_emit=2, handlers_in_thread=False),
    )
    ref = FileRef(bucket="", key=str(path), info=KeyInfo(ObjectKind.LOG))
    return asyncio.run(pipeline.run(ref)), user.batches


@pytest.mark.parametrize("never_suspends", [True, False])
def test_lease_lost_stops_the_file_as_busy(tmp_path: Path, never_suspends: bool) -> None:
    outcome, batches = run_file(tmp_path, TakenOver(LeaseLost, never_suspends))
    assert outcome.status == "busy"
    assert outcome.error is None
    assert batches == [2]  # no batch after the one whose commit found the lease gone


@pytest.mark.parametrize("never_suspends", [True, False])
def test_another_error_named_lease_lost_is_a_store_failure(
    tmp_path: Path, never_suspends: bool
) -> None:
    outcome, batches = run_file(tmp_path, TakenOver(NotTheLeaseLost, never_suspends))
    assert outcome.status == "failed"
    assert isinstance(outcome.error, CheckpointError)
    assert batches == [2]
