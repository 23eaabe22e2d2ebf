"""exit_when_idle end to end on moto: parked messages the redrive took, short polls
while our messages are in flight, no receive per finished message, and following a
message held elsewhere without long polls."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import run_in_process

from trailproc._sandbox import MotoServer, TrailSandbox, log_key, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqs_daemon import (
    FinishesInTurn,
    KeysInOrder,
    SqsRecorder,
    deliver,
    drain_through,
)


@pytest.mark.timeout(60)
def test_exit_when_idle_stops_counting_a_parked_message_the_redrive_took(
    aws_env: MotoServer, tmp_path: Path
) -> None:
    """A message parked after failures no longer stands in for another message once the
    queue's redrive policy moved it to the DLQ: the run waits for the message a crashed
    consumer holds, instead of exiting with it unprocessed."""
    box = TrailSandbox(aws_env.url, bucket="redrive-bucket", topic_name="redrive-topic",
                       queue_name="redrive-queue", max_receive_count=2).create()  # fmt: skip
    good = box.deliver(make_records(5, seed=4))
    held = box.client("sqs").receive_message(QueueUrl=box.queue_url, VisibilityTimeout=6)
    assert len(held["Messages"]) == 1  # invisible for 6 s, as if its consumer had crashed
    box.notify([log_key(unique="redrivemissing01")])  # names no object: fails, is parked
    collected = KeysInOrder(sleep=0)
    run_in_process(box, tmp_path, collected, failure_visibility_base=1)
    assert collected.keys == [good] * 5
    assert box.queue_depth() == 0
    assert box.queue_depth(box.dlq_url) == 1  # the failing one, moved by the redrive


@pytest.mark.timeout(60)
def test_exit_when_idle_does_not_long_poll_while_its_messages_are_in_flight(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """Each receive here gets exactly what it asks for, so none looks like the end of the
    queue; still, once messages are in hand no receive waits: on the drained queue a
    20 s long poll would hold the exit up for 20 s."""
    deliver(sandbox, 2)
    with SqsRecorder(sandbox.endpoint_url) as proxy:
        result, _took = drain_through(proxy, sandbox, tmp_path, max_in_flight_messages=1,
                                       wait_time_seconds=20)  # fmt: skip
    assert result.metrics.value("trailproc_messages_deleted_total", reason="processed") == 2
    first, *later = proxy.receives
    assert first == (20, 1)  # nothing in hand yet: a long poll, as a daemon does
    assert later and all(wait == 0 for wait, _got in later), proxy.receives
    assert sum(got for _wait, got in later) == 1
    assert sandbox.queue_depth() == 0


@pytest.mark.timeout(60)
def test_exit_when_idle_does_not_poll_for_every_finished_message(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """Once the queue came back empty with messages in flight, the run receives again
    when all of them are done or after pauses that double (0.1 s, 0.2 s, ...), not once
    per finished message: each ReceiveMessage is a billed request."""
    for n in range(10):
        sandbox.deliver(make_records(5 * (n + 1), seed=n))  # 1..10 batches of 5
    with SqsRecorder(sandbox.endpoint_url) as proxy:
        result, _took = drain_through(proxy, sandbox, tmp_path, FinishesInTurn(),
                                       max_events_per_emit=5)  # fmt: skip
    assert result.metrics.value("trailproc_messages_deleted_total", reason="processed") == 10
    assert sum(got for _wait, got in proxy.receives) == 10
    empty = [wait for wait, got in proxy.receives if got == 0]
    # The files finish over ~1.4 s: pauses of 0.1, 0.2, 0.4, 0.8 s cover it, plus the
    # receive that finds everything done (one per finished message would be 10 or more).
    assert len(empty) <= 7, proxy.receives
    assert sandbox.queue_depth() == 0


@pytest.mark.timeout(60)
def test_exit_when_idle_follows_a_message_held_elsewhere_without_a_long_poll(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """Another consumer (another worker finishing its last file) holds a message when
    this run is done with its own: the run asks again after short, growing pauses and
    exits soon after that message is deleted, not a 20 s long poll later."""
    keys = {sandbox.deliver(make_records(5, seed=1)), sandbox.deliver(make_records(5, seed=2))}
    sqs = sandbox.client("sqs")
    held = sqs.receive_message(QueueUrl=sandbox.queue_url, MaxNumberOfMessages=1,
                               VisibilityTimeout=60)["Messages"][0]  # fmt: skip
    collected = KeysInOrder(sleep=0)
    deleted_at: list[float] = []

    def finish_elsewhere() -> None:  # the other consumer is done 2 s from now
        time.sleep(2)
        sqs.delete_message(QueueUrl=sandbox.queue_url, ReceiptHandle=held["ReceiptHandle"])
        deleted_at.append(time.monotonic())

    finisher = threading.Thread(target=finish_elsewhere)
    finisher.start()
    try:
        with SqsRecorder(sandbox.endpoint_url) as proxy:
            run_in_process(sandbox, tmp_path, collected, endpoint_url=proxy.url,
                           wait_time_seconds=20)  # fmt: skip
        ended = time.monotonic()
    finally:
        finisher.join()
    elsewhere = {key for key in keys if key in held["Body"]}
    assert len(elsewhere) == 1 and set(collected.keys) == keys - elsewhere
    first, *later = proxy.receives
    assert first[0] == 20  # nothing known yet: a long poll, as a daemon does
    assert later and max(wait for wait, _got in later) <= 2, proxy.receives
    assert ended - deleted_at[0] < 5
    assert sandbox.queue_depth() == 0
