"""The queue port: what trailproc asks of one SQS queue, and nothing more.

Messages travel as SQS shapes them (`MessageId`, `ReceiptHandle`, `Body`, `Attributes`),
so the policy code reads one format whichever side is plugged in. `AwsQueue` is the
production side (an aiobotocore SQS client); `MemoryQueue` keeps messages in a dict for
fast tests of the state machines, with the failures a test asks for.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .clock import Clock

__all__ = ["AwsQueue", "DeleteEntry", "MemoryQueue", "QueueCounts", "QueuePort"]

DeleteEntry = tuple[str, str]  # entry id, receipt handle
COUNT_NAMES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass(frozen=True, slots=True)
class QueueCounts:
    visible: int
    invisible: int
    delayed: int

    @property
    def total(self) -> int:
        return self.visible + self.invisible + self.delayed


class QueuePort(Protocol):
    async def receive(
        self, count: int, wait_seconds: int, visibility_timeout: int
    ) -> list[dict[str, Any]]:
        """Up to `count` messages, waiting up to `wait_seconds` for the first."""

    async def delete_batch(self, entries: list[DeleteEntry]) -> list[dict[str, Any]]:
        """Delete up to 10 messages; returns the failed entries (`Id`, `Code`,
        `SenderFault`, `Message`), as DeleteMessageBatch reports them."""

    async def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        """Hide a received message for `seconds` more (0: visible now)."""

    async def send(self, body: str, attributes: Mapping[str, str], fifo: Mapping[str, str]) -> None:
        """Send a message with string attributes (and FIFO group/deduplication ids)."""

    async def counts(self) -> QueueCounts:
        """The queue's approximate message counts."""


class AwsQueue:
    """The queue port over an aiobotocore SQS client and one queue URL."""

    def __init__(self, sqs: Any, queue_url: str) -> None:
        self.sqs = sqs
        self.queue_url = queue_url

    async def receive(
        self, count: int, wait_seconds: int, visibility_timeout: int
    ) -> list[dict[str, Any]]:
        response = await self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait_seconds,
            VisibilityTimeout=visibility_timeout,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    async def delete_batch(self, entries: list[DeleteEntry]) -> list[dict[str, Any]]:
        response = await self.sqs.delete_message_batch(
            QueueUrl=self.queue_url,
            Entries=[{"Id": entry_id, "ReceiptHandle": handle} for entry_id, handle in entries],
        )
        failed: list[dict[str, Any]] = response.get("Failed", [])
        return failed

    async def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        await self.sqs.change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=receipt_handle, VisibilityTimeout=seconds
        )

    async def send(self, body: str, attributes: Mapping[str, str], fifo: Mapping[str, str]) -> None:
        await self.sqs.send_message(
            QueueUrl=self.queue_url,
            MessageBody=body,
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value}
                for name, value in attributes.items()
            },
            **fifo,
        )

    async def counts(self) -> QueueCounts:
        response = await self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=list(COUNT_NAMES)
        )
        attrs = response.get("Attributes", {})
        visible, invisible, delayed = (int(attrs.get(name, 0)) for name in COUNT_NAMES)
        return QueueCounts(visible, invisible, delayed)


@dataclass
class MemoryQueue:
    """A queue in a dict, for tests: every call is recorded in `calls`.

    `refuse` maps receipt handles to the error code a delete of them fails with
    (a sender fault); `faults` maps an operation's name to the exceptions its next
    calls raise, one each; `hidden` is how many messages are invisible (received and
    not deleted, or held by someone else). With a `clock`, a receive on an empty queue
    waits out its long poll on it.
    """

    messages: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    sent: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    visibility: dict[str, int] = field(default_factory=dict)
    refuse: dict[str, str] = field(default_factory=dict)
    faults: dict[str, list[BaseException]] = field(default_factory=dict)
    hidden: int = 0
    clock: Clock | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def put(self, body: str = "{}", **attributes: str) -> dict[str, Any]:
        number = next(self._ids)
        message = {"MessageId": f"m{number}", "ReceiptHandle": f"rh{number}", "Body": body,
                   "Attributes": {"ApproximateReceiveCount": "1", **attributes}}  # fmt: skip
        self.messages.append(message)
        return message

    def _call(self, operation: str, detail: Any) -> None:
        self.calls.append((operation, detail))
        if self.faults.get(operation):
            raise self.faults[operation].pop(0)

    def made(self, operation: str) -> list[Any]:
        """The details of every call of `operation` so far."""
        return [detail for name, detail in self.calls if name == operation]

    async def receive(
        self, count: int, wait_seconds: int, visibility_timeout: int
    ) -> list[dict[str, Any]]:
        self._call("receive", wait_seconds)
        if not self.messages and wait_seconds and self.clock is not None:
            await self.clock.sleep(wait_seconds)
        taken, self.messages = self.messages[:count], self.messages[count:]
        self.hidden += len(taken)
        return taken

    async def delete_batch(self, entries: list[DeleteEntry]) -> list[dict[str, Any]]:
        self._call("delete_batch", [handle for _, handle in entries])
        failed = []
        for entry_id, handle in entries:
            if handle in self.refuse:
                failed.append({"Id": entry_id, "Code": self.refuse[handle], "SenderFault": True,
                               "Message": "refused by the test"})  # fmt: skip
            else:
                self.hidden = max(0, self.hidden - 1)
        return failed

    async def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self._call("change_visibility", (receipt_handle, seconds))
        self.visibility[receipt_handle] = seconds

    async def send(self, body: str, attributes: Mapping[str, str], fifo: Mapping[str, str]) -> None:
        self._call("send", body)
        self.sent.append((body, dict(attributes), dict(fifo)))

    async def counts(self) -> QueueCounts:
        self._call("counts", None)
        return QueueCounts(len(self.messages), self.hidden, 0)
