"""Deletes end to end on moto: DeleteMessageBatch entries that SQS failed (sent again)
or refused (logged with the message id), the batching linger only while other messages
are in progress, and a message waiting only for its delete freeing its slot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers import run_in_process

from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqs_daemon import (
    FailingDeleteEntries,
    KeysInOrder,
    ProcessedAt,
    SqsRecorder,
    deliver,
    drain_through,
    fifo_queue,
    send_fifo,
)


@pytest.mark.timeout(60)
def test_delete_entry_failed_on_the_sqs_side_is_retried(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    deliver(sandbox, 3)
    with FailingDeleteEntries(sandbox.endpoint_url, code="InternalError",
                              sender_fault=False) as proxy:  # fmt: skip
        result, took = drain_through(proxy, sandbox, tmp_path, visibility_timeout=15)
    # The failed entry was sent again at once, not left to come back after the
    # visibility timeout (an extra receive, counted toward the redrive limit).
    failed_handle = proxy.batches[0][0]
    assert any(failed_handle in batch for batch in proxy.batches[1:]), proxy.batches
    assert result.metrics.value("trailproc_messages_received_total") == 3
    assert result.metrics.value("trailproc_messages_deleted_total", reason="processed") == 3
    assert sandbox.queue_depth() == 0
    assert took < 10


@pytest.mark.timeout(60)
def test_delete_refused_is_logged_with_its_message_id(
    sandbox: TrailSandbox, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    sandbox.deliver(make_records(5, seed=7))
    message_id = sandbox.client("sqs").receive_message(
        QueueUrl=sandbox.queue_url, VisibilityTimeout=0
    )["Messages"][0]["MessageId"]
    with FailingDeleteEntries(sandbox.endpoint_url, code="ReceiptHandleIsInvalid",
                              sender_fault=True) as proxy:  # fmt: skip
        run_in_process(sandbox, tmp_path, KeysInOrder(sleep=0), endpoint_url=proxy.url,
                       visibility_timeout=2)  # fmt: skip
    # Refused for good (a sender fault): not sent again, but the line says which message.
    assert len(proxy.batches) >= 2 and proxy.batches[0] != proxy.batches[1]
    lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    refused = [x for x in lines if "refused" in x["event"]]
    assert refused, lines
    assert refused[0]["message_id"] == message_id
    assert refused[0]["code"] == "ReceiptHandleIsInvalid"
    assert sandbox.queue_depth() == 0  # it came back, was skipped as done, and deleted


@pytest.mark.timeout(60)
def test_deletes_wait_for_each_other_only_while_other_messages_are_in_progress(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    # A long linger makes any wait for it obvious: the run would take over 10 s.
    deliver(sandbox, 3)
    with SqsRecorder(sandbox.endpoint_url) as proxy:
        result, took = drain_through(proxy, sandbox, tmp_path, delete_linger_seconds=10)
    # Received together: the first two deletes waited for the third, which, with
    # nothing else in progress, sent all three in one call without waiting further.
    assert result.metrics.value("trailproc_messages_received_total") == 3
    assert [len(batch) for batch in proxy.batches] == [3]
    assert sandbox.queue_depth() == 0
    assert took < 10


@pytest.mark.timeout(60)
def test_fifo_group_deletes_do_not_wait_out_the_linger(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    queue = fifo_queue(sandbox, "trail-linger.fifo")
    keys = [log_key(unique=f"fifolinger{i:06d}") for i in range(3)]
    for n, key in enumerate(keys):
        sandbox.put(key, encode_log(make_records(5, seed=n)))
        send_fifo(sandbox, queue, key, "one-group", n)
    collected = KeysInOrder(sleep=0)
    sandbox.queue_url = queue
    with SqsRecorder(sandbox.endpoint_url) as proxy:
        _result, took = drain_through(proxy, sandbox, tmp_path, collected,
                                       delete_linger_seconds=10)  # fmt: skip
    # Each message of the group waits for its predecessor's delete; with the rest of
    # the group queued behind it, no other delete could share the call, so each went
    # at once (three calls of one), in order, and nobody waited 10 s.
    assert collected.keys == [k for k in keys for _ in range(5)]
    assert [len(batch) for batch in proxy.batches] == [1, 1, 1]
    assert sandbox.queue_depth(queue) == 0
    assert took < 10


@pytest.mark.timeout(60)
def test_a_message_waiting_only_for_its_delete_frees_its_slot(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """With one slot and slow deletes, the next file is worked on while the previous
    message's delete is still outstanding: waiting for a delete holds no file."""
    deliver(sandbox, 3)
    collected = ProcessedAt()
    with SqsRecorder(sandbox.endpoint_url, delete_delay=1.5) as proxy:
        result, _took = drain_through(proxy, sandbox, tmp_path, collected,
                                       max_in_flight_messages=1)  # fmt: skip
    assert len(collected.times) == 3
    overlapping = [t for t in collected.times.values()
                   if any(start < t < end for start, end in proxy.deletes)]  # fmt: skip
    assert overlapping, (sorted(collected.times.values()), proxy.deletes)
    # The bound still holds: never more than one message received ahead of its delete.
    assert max(got for _wait, got in proxy.receives) == 1
    assert result.metrics.value("trailproc_messages_deleted_total", reason="processed") == 3
    assert sandbox.queue_depth() == 0
