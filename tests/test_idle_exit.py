"""exit_when_idle: the named states of the idle-exit policy and the loop that follows
them, on the in-memory queue and a hand-moved clock (no sleeps, no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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
from trailproc._roads.sqs.idle import IdleExit, IdleState, QueueSettled, ReceivePlan
from trailproc.checkpoint._memory import MemoryStore

# A hang is a failure here, not a wait.
pytestmark = pytest.mark.timeout(20)

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/trail"


def answers(*results: bool) -> Callable[[], Awaitable[bool]]:
    """A settled check answering `results` in turn."""
    pending = list(results)

    async def settled() -> bool:
        return pending.pop(0)

    return settled


def empty(policy: IdleExit, in_flight: bool, settled: bool = False) -> bool:
    return asyncio.run(policy.empty(in_flight, answers(settled)))


def test_without_exit_when_idle_every_receive_is_a_long_poll() -> None:
    policy = IdleExit(enabled=False, wait_time_seconds=20)
    policy.received(1, 10)
    assert policy.plan(in_flight=True) == ReceivePlan()
    assert not empty(policy, in_flight=False, settled=True)
    assert policy.state is IdleState.POLLING


def test_full_receives_long_poll_unless_own_messages_are_in_flight() -> None:
    policy = IdleExit(enabled=True, wait_time_seconds=20)
    assert policy.plan(in_flight=False) == ReceivePlan(receive_wait=None)
    policy.received(10, 10)
    assert policy.state is IdleState.POLLING
    assert policy.plan(in_flight=True) == ReceivePlan(receive_wait=0)


def test_a_short_receive_waits_for_one_own_message_then_short_polls() -> None:
    policy = IdleExit(enabled=True, wait_time_seconds=20)
    policy.received(3, 10)
    assert policy.state is IdleState.DRAINED
    assert policy.plan(in_flight=True) == ReceivePlan("one", timeout=20, receive_wait=0)
    assert policy.plan(in_flight=False) == ReceivePlan(receive_wait=0)


def test_empty_receives_with_own_messages_in_flight_wait_for_all_a_growing_pause() -> None:
    policy = IdleExit(enabled=True, wait_time_seconds=2)
    policy.received(3, 10)
    timeouts = []
    for _ in range(6):
        assert not empty(policy, in_flight=True)
        assert policy.state is IdleState.EMPTY_IN_FLIGHT
        plan = policy.plan(in_flight=True)
        assert (plan.wait_for, plan.receive_wait) == ("all", 0)
        timeouts.append(plan.timeout)
    assert timeouts == [0.1, 0.2, 0.4, 0.8, 1.6, 2]


def test_empty_and_settled_with_nothing_in_flight_ends_the_run() -> None:
    policy = IdleExit(enabled=True, wait_time_seconds=20)
    assert empty(policy, in_flight=False, settled=True)
    assert policy.state is IdleState.IDLE


def test_not_settled_pauses_grow_to_a_long_poll_of_wait_time_seconds() -> None:
    policy = IdleExit(enabled=True, wait_time_seconds=4)
    plans = []
    for _ in range(7):
        assert not empty(policy, in_flight=False, settled=False)
        assert policy.state is IdleState.UNSETTLED
        plans.append(policy.plan(in_flight=False))
    assert plans[:4] == [ReceivePlan(pause=p, receive_wait=0) for p in (0.1, 0.2, 0.4, 0.8)]
    assert [p.receive_wait for p in plans[4:]] == [1, 3, 4]
    assert all(p.pause == 0 for p in plans[4:])


def test_messages_arriving_restart_both_pause_series() -> None:
    policy = IdleExit(enabled=True, wait_time_seconds=20)
    empty(policy, in_flight=True)
    empty(policy, in_flight=True)
    empty(policy, in_flight=False, settled=False)
    empty(policy, in_flight=False, settled=False)
    policy.received(1, 10)
    assert (policy.empty_pause, policy.settle_pause) == (0, 0)
    empty(policy, in_flight=True)
    assert policy.plan(in_flight=True).timeout == 0.1
    empty(policy, in_flight=False, settled=False)
    assert policy.plan(in_flight=False).pause == 0.1


def test_queue_settles_when_only_parked_messages_are_left() -> None:
    async def scenario() -> list[bool]:
        clock = ManualClock()
        queue = MemoryQueue(hidden=2)
        parked = {"kept": clock.now + 30}
        settled = QueueSettled(queue, clock, parked, grace=1000)
        first = await settled()  # two invisible, one of them ours
        queue.hidden = 1
        second = await settled()  # the one left is ours
        await clock.advance(31)
        third = await settled()  # ours is due back: no longer accounted for
        return [first, second, third, "kept" in parked]

    assert asyncio.run(scenario()) == [False, True, False, False]


def test_queue_counts_messages_held_elsewhere_only_for_a_grace_period() -> None:
    async def scenario() -> list[bool]:
        clock = ManualClock()
        settled = QueueSettled(MemoryQueue(hidden=1), clock, {}, grace=50)
        seen = [await settled()]
        await clock.advance(49)
        seen.append(await settled())
        settled.busy()  # messages came: the grace starts again
        await clock.advance(10)
        seen.append(await settled())
        await clock.advance(51)
        seen.append(await settled())
        return seen

    assert asyncio.run(scenario()) == [False, False, False, True]


def sqs_source(queue: MemoryQueue, clock: ManualClock, **settings: Any) -> SqsSource:
    config = Config(queue_url=QUEUE, exit_when_idle=True, **settings)
    pipeline = FilePipeline(
        processor=EventProcessor(),
        store=MemoryStore(),
        fetcher=LocalFetcher(),
        observer=PipelineObserver(EventProcessor(), Metrics()),
        settings=PipelineSettings(owner="test"),
    )
    return SqsSource(config, pipeline, None, queue=queue, clock=clock)


def test_run_on_an_empty_settled_queue_ends_after_one_receive() -> None:
    queue = MemoryQueue()
    source = sqs_source(queue, ManualClock(), wait_time_seconds=20)
    asyncio.run(asyncio.wait_for(source.run(asyncio.Event()), 5))
    assert queue.calls == [("receive", 20), ("counts", None)]


def test_run_follows_a_message_held_elsewhere_with_growing_pauses() -> None:
    async def scenario() -> tuple[list[Any], int]:
        clock = ManualClock()
        queue = MemoryQueue(hidden=1, clock=clock)  # another worker holds one message
        run = asyncio.ensure_future(sqs_source(queue, clock, wait_time_seconds=1)
                                    .run(asyncio.Event()))  # fmt: skip
        for seconds in (1, 0.1, 0.2, 0.4, 0.8):
            await settle()
            await clock.advance(seconds)
        queue.hidden = 0  # the other worker deleted it
        await clock.advance(1)
        await asyncio.wait_for(run, 5)
        return queue.made("receive"), len(queue.made("counts"))

    waits, checks = asyncio.run(scenario())
    # A long poll first; then short polls after pauses of 0.1, 0.2, 0.4 and 0.8 s; then
    # the pause reaches a second: a long poll of 1 s, which ends the run once settled.
    assert waits == [1, 0, 0, 0, 0, 1]
    assert checks == 6


@pytest.mark.parametrize("pause", [0.1, 0.8])
def test_stopping_during_a_settle_pause_ends_the_run_at_once(pause: float) -> None:
    async def scenario() -> list[Any]:
        clock = ManualClock()
        queue = MemoryQueue(hidden=1)
        source = sqs_source(queue, clock, wait_time_seconds=20)
        source.idle.settle_pause = pause / 2  # the next not-settled answer doubles it
        stopping = asyncio.Event()
        run = asyncio.ensure_future(source.run(stopping))
        await settle()
        stopping.set()
        await asyncio.wait_for(run, 5)
        return queue.made("receive")

    assert asyncio.run(scenario()) == [20]
