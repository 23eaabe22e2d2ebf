"""FIFO queues end to end on moto: order within a message group, a failed message
holding its group back, the move to a FIFO DLQ, hidden messages waiting for their turn,
and a stop releasing the messages not started."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import run_in_process

import trailproc
from trailproc._app import run_async
from trailproc._observe import Metrics
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqs_daemon import (
    KeysInOrder,
    fifo_queue,
    send_fifo,
)


@pytest.mark.timeout(60)
def test_fifo_group_is_handed_over_in_order(sandbox: TrailSandbox, tmp_path: Path) -> None:
    queue = fifo_queue(sandbox, "trail-ordered.fifo")
    keys = [log_key(unique=f"fifoorder{i:07d}") for i in range(4)]
    for n, key in enumerate(keys):
        sandbox.put(key, encode_log(make_records(30, seed=n)))
        send_fifo(sandbox, queue, key, "one-group", n)
    collected = KeysInOrder()
    sandbox.queue_url = queue
    run_in_process(sandbox, tmp_path, collected, max_events_per_emit=5)
    # Every record of message 1, then every record of message 2, ...: never interleaved.
    assert collected.keys == [k for k in keys for _ in range(30)]
    assert sandbox.queue_depth(queue) == 0


@pytest.mark.timeout(60)
def test_fifo_failed_message_holds_its_group_back(sandbox: TrailSandbox, tmp_path: Path) -> None:
    queue = fifo_queue(sandbox, "trail-held.fifo")
    missing = log_key(unique="fifomissing00001")
    later = log_key(unique="fifolater0000001")
    other = log_key(unique="fifoother0000001")
    sandbox.put(later, encode_log(make_records(5, seed=1)))
    sandbox.put(other, encode_log(make_records(5, seed=2)))
    send_fifo(sandbox, queue, missing, "held", 0)
    send_fifo(sandbox, queue, later, "held", 1)
    send_fifo(sandbox, queue, other, "free", 2)
    collected = KeysInOrder(sleep=0)
    sandbox.queue_url = queue
    started = time.monotonic()
    result = run_in_process(sandbox, tmp_path, collected)
    # The group's later message waits for the failed one; another group goes on.
    assert set(collected.keys) == {other}
    assert result.metrics.value("trailproc_messages_kept_total", reason="failed") == 1
    assert result.metrics.value("trailproc_messages_kept_total", reason="held_back") >= 1
    assert result.metrics.value("trailproc_messages_deleted_total", reason="processed") == 1
    assert sandbox.queue_depth(queue) == 2  # both of the held group kept, none deleted
    assert time.monotonic() - started < 30  # the held message counts as accounted for


@pytest.mark.timeout(60)
def test_fifo_message_moves_to_a_fifo_dlq_and_its_group_goes_on(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    queue = fifo_queue(sandbox, "trail-poison.fifo")
    dlq = fifo_queue(sandbox, "trail-poison-dlq.fifo")
    missing = log_key(unique="fifopoison000001")
    later = log_key(unique="fifoafter0000001")
    sandbox.put(later, encode_log(make_records(5, seed=3)))
    send_fifo(sandbox, queue, missing, "poisoned", 0)
    send_fifo(sandbox, queue, later, "poisoned", 1)
    collected = KeysInOrder(sleep=0)
    sandbox.queue_url = queue
    result = run_in_process(sandbox, tmp_path, collected, dlq_url=dlq, max_receive_count=1)
    assert result.metrics.value("trailproc_messages_deleted_total", reason="moved_to_dlq") == 1
    moved = sandbox.client("sqs").receive_message(
        QueueUrl=dlq, AttributeNames=["All"], MessageAttributeNames=["All"]
    )["Messages"]
    assert len(moved) == 1 and missing in moved[0]["Body"]
    assert moved[0]["Attributes"]["MessageGroupId"] == "poisoned"  # the group is kept
    # The poison message is out of the way: the rest of its group was processed.
    assert set(collected.keys) == {later}
    assert sandbox.queue_depth(queue) == 0


@pytest.mark.timeout(60)
def test_fifo_messages_waiting_for_their_turn_stay_hidden(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """A group's later message waits while an earlier one is worked on for longer than
    the visibility timeout: it is kept hidden meanwhile (heartbeats), so no other
    consumer can receive it while this one still has it in hand."""
    queue = fifo_queue(sandbox, "trail-waiting.fifo", visibility=2)
    slow = log_key(unique="fifoslow00000001")
    after = log_key(unique="fifowaits0000001")
    sandbox.put(slow, encode_log(make_records(40, seed=4)))
    sandbox.put(after, encode_log(make_records(5, seed=5)))
    send_fifo(sandbox, queue, slow, "waiting", 0)
    send_fifo(sandbox, queue, after, "waiting", 1)
    visible: list[int] = []
    finished = threading.Event()

    def watch() -> None:
        import boto3

        sqs = boto3.client("sqs", endpoint_url=sandbox.endpoint_url, region_name="us-east-1")
        while not finished.is_set():
            attrs = sqs.get_queue_attributes(
                QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            visible.append(int(attrs["ApproximateNumberOfMessages"]))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)

    class Watched(KeysInOrder):
        async def process(self, events: list[trailproc.Event]) -> None:
            if not watcher.is_alive() and not finished.is_set():
                watcher.start()  # both messages are in hand from here on
            await super().process(events)

    collected = Watched(sleep=0.5)  # 8 batches of 5: about 4 s for the slow file
    sandbox.queue_url = queue
    try:
        run_in_process(sandbox, tmp_path, collected, max_events_per_emit=5, visibility_timeout=2)
    finally:
        finished.set()
    watcher.join(10)
    assert collected.keys == [slow] * 40 + [after] * 5
    assert len(visible) >= 10 and max(visible) == 0, visible
    assert sandbox.queue_depth(queue) == 0


@pytest.mark.timeout(60)
def test_fifo_stop_releases_the_group_messages_not_started(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """On a stop (SIGTERM sets the same event), the message being worked on finishes; the
    group's later messages are not started and are visible again at once, for the next
    worker, instead of being worked through or left hidden."""
    queue = fifo_queue(sandbox, "trail-stop.fifo", visibility=60)
    keys = [log_key(unique=f"fifostop{i:08d}") for i in range(3)]
    for n, key in enumerate(keys):
        sandbox.put(key, encode_log(make_records(20, seed=n)))
        send_fifo(sandbox, queue, key, "stopped", n)
    stopping = asyncio.Event()

    class StopAtFirstBatch(KeysInOrder):
        async def process(self, events: list[trailproc.Event]) -> None:
            stopping.set()
            await super().process(events)

    collected = StopAtFirstBatch(sleep=0.05)
    config = trailproc.load_config(
        env={}, queue_url=queue, wait_time_seconds=1, state_dir=str(tmp_path / "state"),
        stats_interval=0, max_events_per_emit=5, visibility_timeout=60, shutdown_timeout=20,
    )  # fmt: skip
    started = time.monotonic()
    result = asyncio.run(run_async(config, collected, stopping=stopping, metrics=Metrics()))
    assert time.monotonic() - started < 15
    assert collected.keys == [keys[0]] * 20  # finished; the others never started
    assert result.metrics.value("trailproc_messages_deleted_total", reason="processed") == 1
    attrs = sandbox.client("sqs").get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert attrs["ApproximateNumberOfMessages"] == "2"
