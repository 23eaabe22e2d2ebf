"""Deletes are batched: collected for the linger, sent 10 at a time, at once when no
other delete can join; refusals are per entry. In-memory queue and a hand-moved clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError

from trailproc._config import Config
from trailproc._observe import Metrics
from trailproc._pipeline.observer import PipelineObserver
from trailproc._pipeline.processor import EventProcessor
from trailproc._ports import ManualClock, MemoryQueue
from trailproc._ports.clock import settle
from trailproc._roads.sqs.acks import AckPolicy
from trailproc._roads.sqs.deletes import DeleteBatcher
from trailproc._roads.sqs.slots import InFlight
from trailproc._roads.sqs.visibility import VisibilityKeeper

# A hang is a failure here, not a wait.
pytestmark = pytest.mark.timeout(20)


def deletes(batcher: DeleteBatcher, *handles: str) -> list[asyncio.Future[bool]]:
    return [asyncio.ensure_future(batcher.delete(h, f"id-{h}")) for h in handles]


def test_deletes_within_the_linger_go_out_as_one_batch_after_it() -> None:
    async def scenario() -> tuple[list[Any], list[Any], list[bool]]:
        clock = ManualClock()
        queue = MemoryQueue()
        batcher = DeleteBatcher(queue, linger=0.05, clock=clock)
        waiting = deletes(batcher, "a", "b", "c")
        await settle()
        before = queue.made("delete_batch")
        await clock.advance(0.05)
        return before, queue.made("delete_batch"), list(await asyncio.gather(*waiting))

    before, after, results = asyncio.run(scenario())
    assert before == []
    assert after == [["a", "b", "c"]]
    assert results == [True, True, True]


def test_ten_deletes_go_out_at_once_and_the_eleventh_waits_for_the_next_batch() -> None:
    async def scenario() -> tuple[list[Any], list[Any]]:
        clock = ManualClock()
        queue = MemoryQueue()
        batcher = DeleteBatcher(queue, linger=0.05, clock=clock)
        handles = [f"h{i}" for i in range(11)]
        waiting = deletes(batcher, *handles)
        await settle()
        at_once = queue.made("delete_batch")
        await clock.advance(0.05)
        await asyncio.gather(*waiting)
        return at_once, queue.made("delete_batch")

    at_once, every = asyncio.run(scenario())
    assert at_once == [[f"h{i}" for i in range(10)]]
    assert every[1:] == [["h10"]]


def test_the_last_delete_skips_the_linger() -> None:
    async def scenario() -> list[Any]:
        clock = ManualClock()
        queue = MemoryQueue()
        batcher = DeleteBatcher(queue, linger=0.05, clock=clock)
        first = deletes(batcher, "a")
        last = asyncio.ensure_future(batcher.delete("b", "id-b", last=True))
        await settle()
        assert await asyncio.gather(*first, last) == [True, True]
        return queue.made("delete_batch")

    assert asyncio.run(scenario()) == [["a", "b"]]


def test_a_refused_entry_fails_alone_and_is_not_sent_again() -> None:
    async def scenario() -> tuple[list[bool], list[Any]]:
        clock = ManualClock()
        queue = MemoryQueue(refuse={"b": "ReceiptHandleIsInvalid"})
        batcher = DeleteBatcher(queue, linger=0.05, clock=clock)
        waiting = deletes(batcher, "a", "b", "c")
        await settle()
        await clock.advance(0.05)
        return list(await asyncio.gather(*waiting)), queue.made("delete_batch")

    results, batches = asyncio.run(scenario())
    assert results == [True, False, True]
    assert batches == [["a", "b", "c"]]


def test_a_failed_request_fails_every_delete_of_its_batch() -> None:
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "DeleteMessageBatch")

    async def scenario() -> list[Any]:
        clock = ManualClock()
        queue = MemoryQueue(faults={"delete_batch": [denied]})
        batcher = DeleteBatcher(queue, linger=0.05, clock=clock)
        waiting = deletes(batcher, "a", "b")
        await settle()
        await clock.advance(0.05)
        return list(await asyncio.gather(*waiting, return_exceptions=True))

    assert asyncio.run(scenario()) == [denied, denied]


def ack_policy(queue: MemoryQueue, clock: ManualClock, in_flight: InFlight) -> AckPolicy:
    config = Config(queue_url="https://sqs.us-east-1.amazonaws.com/1/q")
    metrics = Metrics()
    return AckPolicy(config, observer=PipelineObserver(EventProcessor(), metrics),
                     deleter=DeleteBatcher(queue, linger=0.05, clock=clock),
                     keeper=VisibilityKeeper(queue, clock, 30, metrics), dlq=None,
                     in_flight=in_flight, clock=clock, metrics=metrics)  # fmt: skip


@pytest.mark.parametrize(("held", "queued_in_groups", "waits"), [
    (1, 0, False),  # the only message held: nothing else can join its batch
    (3, 2, False),  # the others wait for their FIFO group's turn behind this one
    (2, 0, True),  # another message is being worked on: its delete may join
])  # fmt: skip
def test_a_delete_waits_for_others_only_while_other_messages_are_in_progress(
    held: int, queued_in_groups: int, waits: bool
) -> None:
    async def scenario() -> bool:
        clock = ManualClock()
        queue = MemoryQueue()
        in_flight = InFlight(10, clock)
        in_flight.held, in_flight.queued_in_groups = held, queued_in_groups
        policy = ack_policy(queue, clock, in_flight)
        message = queue.put()
        deleting = asyncio.ensure_future(policy.delete(message, "processed"))
        await settle()
        sent_at_once = bool(queue.made("delete_batch"))
        await clock.advance(0.05)
        await deleting
        return not sent_at_once

    assert asyncio.run(scenario()) is waits


def test_a_message_waiting_only_for_its_delete_frees_its_slot() -> None:
    async def scenario() -> tuple[int, int]:
        clock = ManualClock()
        queue = MemoryQueue()
        in_flight = InFlight(2, clock)
        in_flight.held = 2
        policy = ack_policy(queue, clock, in_flight)
        deleting = asyncio.ensure_future(policy.delete(queue.put(), "processed"))
        await settle()
        during = in_flight.free()
        await clock.advance(0.05)
        await deleting
        return during, in_flight.free()

    assert asyncio.run(scenario()) == (1, 0)
