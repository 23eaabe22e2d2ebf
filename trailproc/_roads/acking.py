"""The acknowledgement rules every message-driven road shares, written once.

A message's `Verdict` becomes one of three acknowledgements (`decide`):

- **delete**: everything it names was handed over, or there was nothing to hand over,
  or it failed and `delete_on_failure` is set (parity with the Java library; off);
- **release**: shutdown stopped it with its progress committed: visible again at once;
- **keep**: it failed, was unreadable or refused, or a file is busy elsewhere: it stays
  on the queue for a later attempt (and, after enough receives, the dead-letter queue).

`Acknowledger` applies that decision through three hooks a road implements: `delete`,
`release` and `keep` (the SQS daemon deletes in batches, changes visibility and moves
poison messages to the DLQ; the Lambda road answers with `batchItemFailures`).

`InOrder` is the FIFO rule: messages run one after the other, and after one that is not
finished with, the later messages of its group (or of the whole batch) are not started,
so nothing overtakes a message that will come back.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from .._observe import get_logger
from .messages import Verdict

__all__ = ["Ack", "Acknowledger", "InOrder", "decide"]

log = get_logger("trailproc.acks")

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class Ack:
    """What to do with one message; `reason` labels the metric and the log line."""

    action: Literal["delete", "release", "keep"]
    reason: str


def decide(verdict: Verdict, *, delete_on_failure: bool = False) -> Ack:
    """The one verdict → acknowledgement rule."""
    if verdict.action == "ack":
        return Ack("delete", verdict.reason)
    if verdict.action == "release":
        return Ack("release", verdict.reason)
    if verdict.reason == "failed" and delete_on_failure:
        # Only a processing failure: an unreadable or refused message is always kept.
        return Ack("delete", "failed_deleted")
    return Ack("keep", verdict.reason)


class Acknowledger(abc.ABC, Generic[M]):
    """Turns verdicts into acknowledgements through a road's hooks.

    `settle` returns True when the message is finished with (deleted, or moved away),
    False when it stays on the queue: the FIFO rule holds back what follows it."""

    def __init__(self, *, delete_on_failure: bool = False) -> None:
        self.delete_on_failure = delete_on_failure

    async def settle(self, message: M, verdict: Verdict, received: float = 0.0) -> bool:
        ack = decide(verdict, delete_on_failure=self.delete_on_failure)
        if ack.action == "delete":
            if ack.reason == "failed_deleted":
                log.warning("deleting failed message (delete_on_failure is set)",
                            message_id=self.message_id(message))  # fmt: skip
            await self.delete(message, ack.reason)
            return True
        if ack.action == "release":
            await self.release(message, ack.reason)
            return False
        return await self.keep(message, ack.reason, received)

    @abc.abstractmethod
    def message_id(self, message: M) -> str | None:
        """How logs name the message."""

    @abc.abstractmethod
    async def delete(self, message: M, reason: str) -> None:
        """The message is done with: remove it from the queue."""

    @abc.abstractmethod
    async def release(self, message: M, reason: str) -> None:
        """Shutdown stopped it, progress committed: let it be received again at once."""

    @abc.abstractmethod
    async def keep(self, message: M, reason: str, received: float) -> bool:
        """Leave it on the queue for a later attempt (`received`: when it was received).
        True if it left the queue all the same (moved to a dead-letter queue)."""


class InOrder:
    """The FIFO rule: after a message that is not finished with, the later messages of
    its group (`by_group`) or of the whole batch are not started."""

    def __init__(self, *, by_group: bool) -> None:
        self.by_group = by_group
        self._held_groups: set[str | None] = set()
        self._stopped = False

    def may_start(self, group: str | None) -> bool:
        if self._stopped:
            return False
        return not (self.by_group and group in self._held_groups)

    def finished(self, group: str | None, ok: bool) -> None:
        """A message of `group` ended; not `ok`: it stays, and holds back what follows."""
        if ok:
            return
        if self.by_group:
            self._held_groups.add(group)
        else:
            self._stopped = True

    def stop(self) -> None:
        """Nothing more starts (a deadline, or a shutdown)."""
        self._stopped = True
