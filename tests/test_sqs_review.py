"""The SQS daemon's acknowledgement edges: FIFO queues (order within a message group,
a failed message holding its group back, the move to a FIFO DLQ, stopping), entries of
DeleteMessageBatch that SQS failed or refused, and reading a notified object version
with the documented IAM policy.

Everything runs against moto's server on 127.0.0.1 through the daemon's own code path;
faults come from a `FaultProxy` (tests/faultproxy.py) in front of it.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import iam_user, run_in_process

import trailproc
from trailproc.app import run_async
from trailproc.observe import Metrics
from trailproc.sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import FaultProxy


# --- FIFO queues ---------------------------------------------------------------------------
def _fifo_queue(sandbox: TrailSandbox, name: str, visibility: int = 30, **extra: str) -> str:
    attributes = {"FifoQueue": "true", "VisibilityTimeout": str(visibility), **extra}
    return str(
        sandbox.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    )


def _send_fifo(sandbox: TrailSandbox, queue_url: str, key: str, group: str, n: int) -> None:
    """CloudTrail's notification for `key`, sent to a FIFO queue in `group`."""
    body = json.dumps({"s3Bucket": sandbox.bucket, "s3ObjectKey": [key]})
    sandbox.client("sqs").send_message(
        QueueUrl=queue_url, MessageBody=body, MessageGroupId=group,
        MessageDeduplicationId=f"{group}-{n}",
    )  # fmt: skip


class KeysInOrder(trailproc.EventProcessor):
    """Remembers the key of every record handed over, in order; slow enough per batch
    that messages processed concurrently would interleave."""

    def __init__(self, sleep: float = 0.01) -> None:
        self.keys: list[str] = []
        self.sleep = sleep

    async def process(self, events: list[trailproc.Event]) -> None:
        await asyncio.sleep(self.sleep)
        self.keys += [e.delivery.key for e in events]


@pytest.mark.timeout(60)
def test_fifo_group_is_handed_over_in_order(sandbox: TrailSandbox, tmp_path: Path) -> None:
    queue = _fifo_queue(sandbox, "trail-ordered.fifo")
    keys = [log_key(unique=f"fifoorder{i:07d}") for i in range(4)]
    for n, key in enumerate(keys):
        sandbox.put(key, encode_log(make_records(30, seed=n)))
        _send_fifo(sandbox, queue, key, "one-group", n)
    collected = KeysInOrder()
    sandbox.queue_url = queue
    run_in_process(sandbox, tmp_path, collected, max_events_per_emit=5)
    # Every record of message 1, then every record of message 2, ...: never interleaved.
    assert collected.keys == [k for k in keys for _ in range(30)]
    assert sandbox.queue_depth(queue) == 0


@pytest.mark.timeout(60)
def test_fifo_failed_message_holds_its_group_back(sandbox: TrailSandbox, tmp_path: Path) -> None:
    queue = _fifo_queue(sandbox, "trail-held.fifo")
    missing = log_key(unique="fifomissing00001")
    later = log_key(unique="fifolater0000001")
    other = log_key(unique="fifoother0000001")
    sandbox.put(later, encode_log(make_records(5, seed=1)))
    sandbox.put(other, encode_log(make_records(5, seed=2)))
    _send_fifo(sandbox, queue, missing, "held", 0)
    _send_fifo(sandbox, queue, later, "held", 1)
    _send_fifo(sandbox, queue, other, "free", 2)
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
    queue = _fifo_queue(sandbox, "trail-poison.fifo")
    dlq = _fifo_queue(sandbox, "trail-poison-dlq.fifo")
    missing = log_key(unique="fifopoison000001")
    later = log_key(unique="fifoafter0000001")
    sandbox.put(later, encode_log(make_records(5, seed=3)))
    _send_fifo(sandbox, queue, missing, "poisoned", 0)
    _send_fifo(sandbox, queue, later, "poisoned", 1)
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
    queue = _fifo_queue(sandbox, "trail-waiting.fifo", visibility=2)
    slow = log_key(unique="fifoslow00000001")
    after = log_key(unique="fifowaits0000001")
    sandbox.put(slow, encode_log(make_records(40, seed=4)))
    sandbox.put(after, encode_log(make_records(5, seed=5)))
    _send_fifo(sandbox, queue, slow, "waiting", 0)
    _send_fifo(sandbox, queue, after, "waiting", 1)
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
    queue = _fifo_queue(sandbox, "trail-stop.fifo", visibility=60)
    keys = [log_key(unique=f"fifostop{i:08d}") for i in range(3)]
    for n, key in enumerate(keys):
        sandbox.put(key, encode_log(make_records(20, seed=n)))
        _send_fifo(sandbox, queue, key, "stopped", n)
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


# --- DeleteMessageBatch entries failed ------------------------------------------------------
class FailingDeleteEntries(FaultProxy):
    """Forwards everything, except that the first `times` DeleteMessageBatch calls have
    their first entry taken out before they reach SQS (moto) and reported back in
    `Failed`, as SQS reports an entry it could not delete: `code`, with `sender_fault`."""

    def __init__(self, upstream: str, *, code: str, sender_fault: bool, times: int = 1) -> None:
        super().__init__(upstream, error_rate=0, drop_rate=0, truncate_rate=0, latency=0,
                         slow_rate=0)  # fmt: skip
        self.code = code
        self.sender_fault = sender_fault
        self.times = times
        self.batches: list[list[str]] = []  # receipt handles of every DeleteMessageBatch

    def forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        if not str(headers.get("X-Amz-Target") or "").endswith(".DeleteMessageBatch"):
            return super().forward(method, path, headers, body)
        request = json.loads(body)
        with self._lock:
            self.batches.append([e["ReceiptHandle"] for e in request["Entries"]])
            fail = self.times > 0
            self.times -= fail
        if not fail:
            return super().forward(method, path, headers, body)
        first, rest = request["Entries"][0], request["Entries"][1:]
        answer: dict[str, Any] = {"Successful": [], "Failed": []}
        status, reason = 200, "OK"
        out_headers = [("Content-Type", "application/x-amz-json-1.0"),
                       ("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")]  # fmt: skip
        if rest:
            request["Entries"] = rest
            status, reason, out_headers, payload = super().forward(
                method, path, headers, json.dumps(request).encode()
            )
            answer = json.loads(payload)
            answer.setdefault("Failed", [])
        answer["Failed"].append({"Id": first["Id"], "SenderFault": self.sender_fault,
                                 "Code": self.code, "Message": "injected"})  # fmt: skip
        return status, reason, out_headers, json.dumps(answer).encode()


def _deliver(sandbox: TrailSandbox, files: int) -> None:
    """`files` small log files, each announced the way CloudTrail does."""
    for n in range(files):
        sandbox.deliver(make_records(5, seed=n))


def _drain_through(
    proxy: FaultProxy, sandbox: TrailSandbox, tmp_path: Path, collected: Any = None,
    **overrides: Any,
) -> tuple[Any, float]:
    """Drain the queue through `proxy`: the run's result and how long it took."""
    started = time.monotonic()
    result = run_in_process(sandbox, tmp_path, collected or KeysInOrder(sleep=0),
                            endpoint_url=proxy.url, **overrides)  # fmt: skip
    return result, time.monotonic() - started


@pytest.mark.timeout(60)
def test_delete_entry_failed_on_the_sqs_side_is_retried(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    _deliver(sandbox, 3)
    with FailingDeleteEntries(sandbox.endpoint_url, code="InternalError",
                              sender_fault=False) as proxy:  # fmt: skip
        result, took = _drain_through(proxy, sandbox, tmp_path, visibility_timeout=15)
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
    _deliver(sandbox, 3)
    with SqsRecorder(sandbox.endpoint_url) as proxy:
        result, took = _drain_through(proxy, sandbox, tmp_path, delete_linger_seconds=10)
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
    queue = _fifo_queue(sandbox, "trail-linger.fifo")
    keys = [log_key(unique=f"fifolinger{i:06d}") for i in range(3)]
    for n, key in enumerate(keys):
        sandbox.put(key, encode_log(make_records(5, seed=n)))
        _send_fifo(sandbox, queue, key, "one-group", n)
    collected = KeysInOrder(sleep=0)
    sandbox.queue_url = queue
    with SqsRecorder(sandbox.endpoint_url) as proxy:
        _result, took = _drain_through(proxy, sandbox, tmp_path, collected,
                                       delete_linger_seconds=10)  # fmt: skip
    # Each message of the group waits for its predecessor's delete; with the rest of
    # the group queued behind it, no other delete could share the call, so each went
    # at once (three calls of one), in order, and nobody waited 10 s.
    assert collected.keys == [k for k in keys for _ in range(5)]
    assert [len(batch) for batch in proxy.batches] == [1, 1, 1]
    assert sandbox.queue_depth(queue) == 0
    assert took < 10


class SqsRecorder(FaultProxy):
    """Forwards everything, recording each ReceiveMessage (its WaitTimeSeconds and how
    many messages it brought) and the span of each DeleteMessageBatch, which it holds
    `delete_delay` seconds before forwarding (a slow delete)."""

    def __init__(self, upstream: str, *, delete_delay: float = 0.0) -> None:
        super().__init__(upstream, error_rate=0, drop_rate=0, truncate_rate=0, latency=0,
                         slow_rate=0)  # fmt: skip
        self.delete_delay = delete_delay
        self.receives: list[tuple[int, int]] = []  # (WaitTimeSeconds, messages), in order
        self.deletes: list[tuple[float, float]] = []  # (arrived, answered), monotonic
        self.batches: list[list[str]] = []  # receipt handles of every DeleteMessageBatch
        self.calls: list[tuple[str, float, Any]] = []  # (action, arrived, request body)

    def forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        action = str(headers.get("X-Amz-Target") or "").rpartition(".")[2]
        arrived = time.monotonic()
        if action == "DeleteMessageBatch":
            time.sleep(self.delete_delay)
        answer = super().forward(method, path, headers, body)
        with self._lock:
            self.calls.append((action, arrived, json.loads(body or b"null")))
            if action == "ReceiveMessage":
                got = len(json.loads(answer[3]).get("Messages", []))
                self.receives.append((int(json.loads(body).get("WaitTimeSeconds", -1)), got))
            elif action == "DeleteMessageBatch":
                self.deletes.append((arrived, time.monotonic()))
                self.batches.append([e["ReceiptHandle"] for e in json.loads(body)["Entries"]])
        return answer


class ProcessedAt(trailproc.EventProcessor):
    """Remembers when each file's first batch was handed over (monotonic)."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def process(self, events: list[trailproc.Event]) -> None:
        for event in events:
            self.times.setdefault(event.delivery.key, time.monotonic())


@pytest.mark.timeout(60)
def test_a_message_waiting_only_for_its_delete_frees_its_slot(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """With one slot and slow deletes, the next file is worked on while the previous
    message's delete is still outstanding: waiting for a delete holds no file."""
    _deliver(sandbox, 3)
    collected = ProcessedAt()
    with SqsRecorder(sandbox.endpoint_url, delete_delay=1.5) as proxy:
        result, _took = _drain_through(proxy, sandbox, tmp_path, collected,
                                       max_in_flight_messages=1)  # fmt: skip
    assert len(collected.times) == 3
    overlapping = [t for t in collected.times.values()
                   if any(start < t < end for start, end in proxy.deletes)]  # fmt: skip
    assert overlapping, (sorted(collected.times.values()), proxy.deletes)
    # The bound still holds: never more than one message received ahead of its delete.
    assert max(got for _wait, got in proxy.receives) == 1
    assert result.metrics.value("trailproc_messages_deleted_total", reason="processed") == 3
    assert sandbox.queue_depth() == 0


@pytest.mark.timeout(60)
def test_exit_when_idle_does_not_long_poll_while_its_messages_are_in_flight(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """Each receive here gets exactly what it asks for, so none looks like the end of the
    queue; still, once messages are in hand no receive waits: on the drained queue a
    20 s long poll would hold the exit up for 20 s."""
    _deliver(sandbox, 2)
    with SqsRecorder(sandbox.endpoint_url) as proxy:
        result, _took = _drain_through(proxy, sandbox, tmp_path, max_in_flight_messages=1,
                                       wait_time_seconds=20)  # fmt: skip
    assert result.metrics.value("trailproc_messages_deleted_total", reason="processed") == 2
    first, *later = proxy.receives
    assert first == (20, 1)  # nothing in hand yet: a long poll, as a daemon does
    assert later and all(wait == 0 for wait, _got in later), proxy.receives
    assert sum(got for _wait, got in later) == 1
    assert sandbox.queue_depth() == 0


class FinishesInTurn(trailproc.EventProcessor):
    """Each file takes as many 0.15 s batches as it has batches: with files of 1, 2, 3...
    batches in flight together, they finish one after another, 0.15 s apart."""

    async def process(self, events: list[trailproc.Event]) -> None:
        await asyncio.sleep(0.15)


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
        result, _took = _drain_through(proxy, sandbox, tmp_path, FinishesInTurn(),
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


@pytest.mark.timeout(60)
def test_failure_backoff_ends_within_twelve_hours_of_the_receive(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """SQS refuses a visibility change that would end more than 12 hours after the
    receive; a backoff as long as that is cut to what is left of those 12 hours."""
    sandbox.notify([log_key(unique="twelvehours0001")])  # names no object: it fails
    with SqsRecorder(sandbox.endpoint_url) as proxy:
        result, _took = _drain_through(proxy, sandbox, tmp_path,
                                       failure_visibility_base=43200,
                                       failure_visibility_max=43200)  # fmt: skip
    assert result.metrics.value("trailproc_messages_kept_total", reason="failed") == 1
    received = next(t for action, t, _ in proxy.calls if action == "ReceiveMessage")
    changes = [(t, body["VisibilityTimeout"]) for action, t, body in proxy.calls
               if action == "ChangeMessageVisibility"]  # fmt: skip
    assert changes, proxy.calls
    for sent, seconds in changes:
        assert seconds > 0 and seconds + (sent - received) <= 43200, (sent - received, seconds)
    assert sandbox.queue_depth() == 1  # kept, hidden for the rest of the 12 hours


# --- GetObject of a versioned object -----------------------------------------------------


def _s3_event(bucket: str, key: str, version_id: str, etag: str) -> str:
    obj = {"key": key, "versionId": version_id, "eTag": etag}
    record = {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
              "eventName": "ObjectCreated:Put",
              "s3": {"bucket": {"name": bucket}, "object": obj}}  # fmt: skip
    return json.dumps({"Records": [record]})


class NoVersionReads(FaultProxy):
    """Forwards everything, except that a GetObject naming a `versionId` is answered with
    S3's 403 AccessDenied, as S3 answers a reader without s3:GetObjectVersion (the
    permission docs/iam.md does not grant). The refusal comes from here, not from the
    emulator's policy engine, so the test holds whatever moto enforces."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, error_rate=0, drop_rate=0, truncate_rate=0, latency=0,
                         slow_rate=0)  # fmt: skip
        self.refused = 0

    def forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        if method == "GET" and "versionId=" in path:
            with self._lock:
                self.refused += 1
            payload = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied'
                       b"</Code><Message>Access Denied</Message></Error>")  # fmt: skip
            return 403, "Forbidden", [("Content-Type", "application/xml")], payload
        return super().forward(method, path, headers, body)


@pytest.mark.timeout(60)
def test_versioned_object_is_read_with_the_documented_policy(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """S3 event notifications of a versioned bucket name the object's version. Reading a
    version by id needs s3:GetObjectVersion, which docs/iam.md does not grant: the
    worker must still read the object while that version is the current one, and an
    older version fails with an error naming the permission, its message kept."""
    s3 = sandbox.client("s3")
    s3.put_bucket_versioning(Bucket=sandbox.bucket,
                             VersioningConfiguration={"Status": "Enabled"})  # fmt: skip
    current, replaced = log_key(unique="versioned0000001"), log_key(unique="versioned0000002")
    put = s3.put_object(Bucket=sandbox.bucket, Key=current, Body=encode_log(make_records(5)))
    sandbox.send_raw(_s3_event(sandbox.bucket, current, put["VersionId"], put["ETag"].strip('"')))
    # A version that is no longer the current one cannot be read without the permission.
    old = s3.put_object(Bucket=sandbox.bucket, Key=replaced, Body=encode_log(make_records(3)))
    s3.put_object(Bucket=sandbox.bucket, Key=replaced, Body=encode_log(make_records(4, seed=9)))
    sandbox.send_raw(_s3_event(sandbox.bucket, replaced, old["VersionId"], old["ETag"].strip('"')))
    errors: list[trailproc.TrailprocError] = []

    class Recorder(KeysInOrder):
        def on_error(self, error: trailproc.TrailprocError) -> None:
            errors.append(error)

    collected = Recorder(sleep=0)
    with NoVersionReads(sandbox.endpoint_url) as proxy:
        result, _took = _drain_through(proxy, sandbox, tmp_path, collected)
    assert proxy.refused >= 1  # the worker did try the version first
    assert collected.keys == [current] * 5
    assert result.metrics.value("trailproc_messages_deleted_total", reason="processed") == 1
    (error,) = errors
    assert isinstance(error, trailproc.FetchError) and error.code == "AccessDenied"
    assert error.key == replaced and "s3:GetObjectVersion" in str(error)
    assert sandbox.queue_depth() == 1  # the old version's message is kept


@pytest.mark.timeout(60)
def test_heartbeat_refused_for_good_is_not_retried_every_second(
    enforcing: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker without sqs:ChangeMessageVisibility: the heartbeat's AccessDenied is
    permanent, so it is logged once per heartbeat interval, not every second."""
    import boto3
    import structlog

    iam = boto3.client("iam", endpoint_url=enforcing.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    admin = iam_user(iam, "admin", ["*"])
    worker = iam_user(iam, "worker", ["sqs:ReceiveMessage", "sqs:DeleteMessage",
                                      "sqs:DeleteMessageBatch", "sqs:GetQueueAttributes",
                                      "s3:GetObject"])  # fmt: skip
    sandbox = TrailSandbox(enforcing.url, access_key=admin).create(visibility_timeout=60)
    sandbox.deliver(make_records(3))
    for name, value in enforcing.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", worker[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", worker[1])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    # Heartbeats every 2 s (visibility 4 s); the handler takes ~5.5 s: two heartbeats.
    slow = KeysInOrder(sleep=5.5)
    with structlog.testing.capture_logs() as logs:
        run_in_process(sandbox, tmp_path, slow, visibility_timeout=4)
    refused = [e for e in logs if e["event"].startswith("heartbeat")]
    assert refused and all(e["event"].startswith("heartbeat refused") for e in refused)
    # SQS's JSON protocol names AccessDenied; moto's answer carries only the status.
    assert refused[0]["code"] in ("AccessDenied", "AccessDeniedException", "403")
    assert len(refused) <= 3  # every 2 s, not every second (that made 5 or more)
    assert len(slow.keys) == 3
