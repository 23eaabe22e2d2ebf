"""What becomes of a message once its work has a verdict: delete, release, keep with a
growing backoff, or move to the DLQ. In-memory queues and a hand-moved clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from trailproc._config import Config
from trailproc._observe import Metrics
from trailproc._pipeline.observer import PipelineObserver
from trailproc._pipeline.processor import EventProcessor
from trailproc._ports import ManualClock, MemoryQueue
from trailproc._roads.messages import Verdict
from trailproc._roads.sqs.acks import AckPolicy
from trailproc._roads.sqs.deletes import DeleteBatcher
from trailproc._roads.sqs.slots import InFlight
from trailproc._roads.sqs.visibility import VisibilityKeeper

pytestmark = pytest.mark.timeout(20)  # a hang is a failure here, not a wait
DLQ = "https://sqs.us-east-1.amazonaws.com/1/d"


def settle_one(
    verdict: Verdict, receives: int = 1, dlq_url: str | None = None, **settings: Any
) -> tuple[bool, MemoryQueue, MemoryQueue, dict[str, float]]:
    """Acknowledge one message received `receives` times; (finished with, queue, DLQ,
    parked)."""

    async def scenario() -> tuple[bool, MemoryQueue, MemoryQueue, dict[str, float]]:
        clock = ManualClock()
        queue, dlq = MemoryQueue(), MemoryQueue()
        config = Config(queue_url="https://sqs.us-east-1.amazonaws.com/1/q", dlq_url=dlq_url,
                        failure_visibility_base=10, failure_visibility_max=300,
                        **settings)  # fmt: skip
        metrics = Metrics()
        in_flight = InFlight(10, clock)
        in_flight.held = 1
        policy = AckPolicy(config, observer=PipelineObserver(EventProcessor(), metrics),
                           deleter=DeleteBatcher(queue, clock=clock),
                           keeper=VisibilityKeeper(queue, clock, 30, metrics),
                           dlq=dlq if dlq_url else None, in_flight=in_flight, clock=clock,
                           metrics=metrics)  # fmt: skip
        message = queue.put(ApproximateReceiveCount=str(receives), MessageGroupId="g1")
        done = await policy.settle(message, verdict, clock.now)
        return done, queue, dlq, {k: v - clock.now for k, v in policy.parked.items()}

    return asyncio.run(scenario())


def test_ack_deletes() -> None:
    done, queue, _, parked = settle_one(Verdict("ack", "processed"))
    assert done and queue.made("delete_batch") == [["rh1"]] and parked == {}


def test_release_makes_the_message_visible_at_once() -> None:
    done, queue, _, parked = settle_one(Verdict("release", "interrupted"))
    assert not done and queue.made("change_visibility") == [("rh1", 0)] and parked == {}


@pytest.mark.parametrize(("receives", "backoff"), [(1, 10), (2, 20), (4, 80), (9, 300)])
def test_a_failure_is_kept_with_a_backoff_growing_per_receive(receives: int, backoff: int) -> None:
    done, queue, _, parked = settle_one(Verdict("retry", "failed"), receives)
    assert not done
    assert queue.made("change_visibility") == [("rh1", backoff)]
    assert parked == {"m1": backoff}  # accounted for by exit_when_idle


def test_busy_comes_back_soon_and_is_not_parked() -> None:
    done, queue, _, parked = settle_one(Verdict("retry", "busy"), 50, max_receive_count=3,
                                        visibility_timeout=30,
                                        dlq_url=DLQ)  # fmt: skip
    assert not done and queue.made("change_visibility") == [("rh1", 15)] and parked == {}


def test_delete_on_failure_deletes_a_failed_message() -> None:
    done, queue, _, _ = settle_one(Verdict("retry", "failed"), delete_on_failure=True)
    assert done and queue.made("delete_batch") == [["rh1"]]


def test_after_max_receive_count_a_failure_moves_to_the_dlq() -> None:
    done, queue, dlq, parked = settle_one(Verdict("retry", "failed"), 3, max_receive_count=3,
                                          dlq_url=DLQ)  # fmt: skip
    assert done and parked == {}
    assert dlq.sent == [("{}", {"trailproc-reason": "failed", "trailproc-source-message-id": "m1"},
                         {})]  # fmt: skip
    assert queue.made("delete_batch") == [["rh1"]]


def test_a_fifo_dlq_gets_the_message_group_and_a_deduplication_id() -> None:
    _, _, dlq, _ = settle_one(Verdict("retry", "failed"), 3, max_receive_count=3,
                              dlq_url=DLQ + ".fifo")  # fmt: skip
    assert dlq.sent[0][2] == {"MessageGroupId": "g1", "MessageDeduplicationId": "m1"}


def test_before_max_receive_count_a_failure_stays() -> None:
    done, _, dlq, _ = settle_one(Verdict("retry", "failed"), 2, max_receive_count=3,
                                 dlq_url=DLQ)  # fmt: skip
    assert not done and dlq.sent == []
