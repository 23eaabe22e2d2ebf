"""The SQS daemon end to end on moto: FIFO queues, deliveries, a user processor that
records order, and proxies that record or fail SQS calls."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from helpers import run_in_process

import trailproc
from trailproc._sandbox import TrailSandbox, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import NO_FAULTS, FaultProxy


def fifo_queue(sandbox: TrailSandbox, name: str, visibility: int = 30, **extra: str) -> str:
    attributes = {"FifoQueue": "true", "VisibilityTimeout": str(visibility), **extra}
    return str(
        sandbox.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    )


def send_fifo(sandbox: TrailSandbox, queue_url: str, key: str, group: str, n: int) -> None:
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


class FailingDeleteEntries(FaultProxy):
    """Forwards everything, except that the first `times` DeleteMessageBatch calls have
    their first entry taken out before they reach SQS (moto) and reported back in
    `Failed`, as SQS reports an entry it could not delete: `code`, with `sender_fault`."""

    def __init__(self, upstream: str, *, code: str, sender_fault: bool, times: int = 1) -> None:
        super().__init__(upstream, faults=NO_FAULTS)
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


def deliver(sandbox: TrailSandbox, files: int) -> None:
    """`files` small log files, each announced the way CloudTrail does."""
    for n in range(files):
        sandbox.deliver(make_records(5, seed=n))


def drain_through(
    proxy: FaultProxy,
    sandbox: TrailSandbox,
    tmp_path: Path,
    collected: Any = None,
    **overrides: Any,
) -> tuple[Any, float]:
    """Drain the queue through `proxy`: the run's result and how long it took."""
    started = time.monotonic()
    result = run_in_process(sandbox, tmp_path, collected or KeysInOrder(sleep=0),
                            endpoint_url=proxy.url, **overrides)  # fmt: skip
    return result, time.monotonic() - started


class SqsRecorder(FaultProxy):
    """Forwards everything, recording each ReceiveMessage (its WaitTimeSeconds and how
    many messages it brought) and the span of each DeleteMessageBatch, which it holds
    `delete_delay` seconds before forwarding (a slow delete)."""

    def __init__(self, upstream: str, *, delete_delay: float = 0.0) -> None:
        super().__init__(upstream, faults=NO_FAULTS)
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


class FinishesInTurn(trailproc.EventProcessor):
    """Each file takes as many 0.15 s batches as it has batches: with files of 1, 2, 3...
    batches in flight together, they finish one after another, 0.15 s apart."""

    async def process(self, events: list[trailproc.Event]) -> None:
        await asyncio.sleep(0.15)
