"""Receives ahead: while the queue is busy, several ReceiveMessage calls are out at once
(hiding the round trip), the in-flight limit still holds, and a short or empty receive
brings the loop back to one receive at a time. In-memory queue, hand-moved clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from trailproc._config import Config
from trailproc._observe import Metrics
from trailproc._pipeline.engine import FilePipeline, PipelineSettings
from trailproc._pipeline.fetch import LocalFetcher
from trailproc._pipeline.observer import PipelineObserver
from trailproc._pipeline.processor import EventProcessor
from trailproc._ports import ManualClock, MemoryQueue
from trailproc._ports.clock import settle
from trailproc._roads.sqs import SqsSource
from trailproc.checkpoint._memory import MemoryStore

pytestmark = pytest.mark.timeout(20)

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/trail"


@dataclass
class RoundTripQueue(MemoryQueue):
    """Every receive takes `rtt` seconds on the clock; records how many overlap and the
    room the source has left while each is out."""

    rtt: float = 0.02
    active: int = 0
    peak: int = 0
    source: Any = None
    least_room: int = 10**6

    async def receive(self, count: int, wait_seconds: int,
                      visibility_timeout: int) -> list[dict[str, Any]]:  # fmt: skip
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.least_room = min(self.least_room, self.source.ahead.room())
        try:
            assert self.clock is not None
            await self.clock.sleep(self.rtt)
            return await super().receive(count, wait_seconds, visibility_timeout)
        finally:
            self.active -= 1


def source_on(queue: RoundTripQueue, **settings: Any) -> SqsSource:
    config = Config(queue_url=QUEUE, **settings)
    pipeline = FilePipeline(
        processor=EventProcessor(),
        store=MemoryStore(),
        fetcher=LocalFetcher(),
        observer=PipelineObserver(EventProcessor(), Metrics()),
        settings=PipelineSettings(owner="test"),
    )
    assert queue.clock is not None
    source = SqsSource(config, pipeline, None, queue=queue, clock=queue.clock)
    queue.source = source
    return source


async def drive(queue: RoundTripQueue, source: SqsSource, steps: int) -> None:
    assert isinstance(queue.clock, ManualClock)
    stopping = asyncio.Event()
    run = asyncio.ensure_future(source.run(stopping))
    for _ in range(steps):
        await settle()
        await queue.clock.advance(0.005)
    stopping.set()
    await asyncio.wait_for(run, 5)


def test_a_busy_queue_has_several_receives_out_within_the_in_flight_limit() -> None:
    queue = RoundTripQueue(clock=ManualClock())
    for _ in range(200):
        queue.put("{}")  # not a notification: each is kept at once, freeing its slot
    source = source_on(queue, max_in_flight_messages=16, wait_time_seconds=1)
    asyncio.run(drive(queue, source, 100))
    assert queue.peak >= 2
    assert queue.least_room >= 0  # reservations never let more than the limit in
    asked = len(queue.made("receive"))
    received = len(queue.made("change_visibility"))
    assert received == 200 - len(queue.messages) and received > 0 and asked > 1


def test_a_short_receive_goes_back_to_one_receive_at_a_time() -> None:
    queue = RoundTripQueue(clock=ManualClock())
    for _ in range(3):
        queue.put("{}")
    source = source_on(queue, max_in_flight_messages=16, wait_time_seconds=1)
    asyncio.run(drive(queue, source, 200))
    assert queue.peak == 1
    assert not queue.messages
