"""The core on in-memory ports: the SQS daemon's loop and the file pipeline, reading
notifications from a `MemoryQueue` and objects from `MemoryObjects`, on a hand-moved
clock and an in-memory checkpoint store. No sleeps, no network, no SDK."""

from __future__ import annotations

import asyncio
import gzip
import json
from dataclasses import dataclass, field
from typing import Any

from trailproc._config import Config
from trailproc._errors import TrailprocError
from trailproc._observe import Metrics
from trailproc._pipeline.engine import FilePipeline, PipelineSettings
from trailproc._pipeline.fetch import ObjectFetcher
from trailproc._pipeline.processor import EventProcessor
from trailproc._ports import ManualClock, MemoryQueue
from trailproc._ports.objects import MemoryObjects
from trailproc._roads.sqs import SqsSource
from trailproc._runtime import build_observer
from trailproc._sandbox import log_key, make_records
from trailproc.checkpoint._memory import MemoryStore

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/trail"
BUCKET = "trail-bucket"


class Collect(EventProcessor):
    """Keeps each event id handed over, and each error reported."""

    def __init__(self) -> None:
        self.event_ids: list[str] = []
        self.batches = 0
        self.errors: list[TrailprocError] = []

    def process(self, events: list[Any]) -> None:
        self.batches += 1
        self.event_ids.extend(e.event_id for e in events)

    def on_error(self, error: TrailprocError) -> None:
        self.errors.append(error)


def log_file(count: int, seed: int = 0) -> bytes:
    """A CloudTrail log file of `count` records, gzipped as CloudTrail delivers it."""
    return gzip.compress(json.dumps({"Records": make_records(count, seed=seed)}).encode())


def notification(*keys: str, bucket: str = BUCKET) -> str:
    """A CloudTrail notification body (as delivered without the SNS envelope)."""
    return json.dumps({"s3Bucket": bucket, "s3ObjectKey": list(keys)})


@dataclass
class Core:
    """One daemon on in-memory ports; `run()` polls until the queue is settled."""

    settings: dict[str, Any] = field(default_factory=dict)
    objects: MemoryObjects = field(default_factory=MemoryObjects)
    queue: MemoryQueue = field(default_factory=MemoryQueue)
    clock: ManualClock = field(default_factory=ManualClock)
    store: MemoryStore = field(default_factory=MemoryStore)
    user: Collect = field(default_factory=Collect)
    metrics: Metrics = field(default_factory=Metrics)

    def put_log(self, count: int, seed: int = 0) -> str:
        """A log file of `count` records in the bucket; returns its key."""
        key = log_key(unique=f"{seed:016d}")
        self.objects.put(BUCKET, key, log_file(count, seed))
        return key

    def notify(self, *keys: str) -> dict[str, Any]:
        return self.queue.put(notification(*keys))

    def source(self) -> SqsSource:
        config = Config(queue_url=QUEUE, exit_when_idle=True, wait_time_seconds=20,
                        **self.settings)  # fmt: skip
        fetcher = ObjectFetcher(self.objects, attempts=1,
                                max_bytes=config.max_decompressed_bytes)  # fmt: skip
        pipeline = FilePipeline(
            processor=self.user,
            store=self.store,
            fetcher=fetcher,
            # As the runtime builds it: digest checks when the config asks for them.
            observer=build_observer(config, self.user, self.store, self.metrics),
            settings=PipelineSettings(
                owner="test",
                max_events_per_emit=config.max_events_per_emit,
                max_decompressed_bytes=config.max_decompressed_bytes,
                handlers_in_thread=False,
            ),
        )
        return SqsSource(config, pipeline, None, queue=self.queue, clock=self.clock)

    def run(self) -> None:
        """Poll until every message is deleted or parked (`exit_when_idle`)."""
        asyncio.run(asyncio.wait_for(self.source().run(asyncio.Event()), 10))

    def deleted(self) -> list[str]:
        """The receipt handles deleted so far."""
        return [handle for batch in self.queue.made("delete_batch") for handle in batch]

    def hidden_for(self) -> dict[str, int]:
        """The last visibility change per receipt handle (kept messages)."""
        return dict(self.queue.visibility)
