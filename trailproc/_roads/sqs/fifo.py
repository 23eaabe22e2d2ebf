"""FIFO message groups: one after the other, in the order SQS gave them.

The rule is the shared `InOrder` (`trailproc._roads.acking`), per group: a message
that stays on the queue (failed, busy, released at shutdown) holds back the rest of its
group: they are not started but made visible again at once, and SQS hands them out again
only after it, since it gives out no message of a group while an earlier one is in
flight. A message moved to the DLQ no longer holds its group. On a standard queue every
message is a unit of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..._observe import Metrics, get_logger
from ..acking import InOrder
from .acks import group_id
from .slots import InFlight
from .visibility import VisibilityKeeper, stop

__all__ = ["GroupRunner", "units"]

log = get_logger("trailproc.sqs")

Message = dict[str, Any]
# Work on one message (with its heartbeat task): True if it is finished with.
Handle = Callable[[Message, float, "asyncio.Task[None] | None"], Awaitable[bool]]


def units(messages: list[Message]) -> list[tuple[str | None, list[Message]]]:
    """One receive's messages as units of work: each standard message alone, the messages
    of one FIFO group together, in the order received."""
    found: list[tuple[str | None, list[Message]]] = []
    groups: dict[str, list[Message]] = {}
    for message in messages:
        group = group_id(message)
        if group is None:
            found.append((None, [message]))
        elif group in groups:
            groups[group].append(message)
        else:
            groups[group] = [message]
            found.append((group, groups[group]))
    return found


class GroupRunner:
    """Runs each FIFO group's messages in order, after the group's earlier receives."""

    def __init__(
        self,
        handle: Handle,
        *,
        in_flight: InFlight,
        keeper: VisibilityKeeper,
        parked: dict[str, float],
        metrics: Metrics,
        stopping: Callable[[], bool],
    ) -> None:
        self.handle = handle
        self.in_flight = in_flight
        self.keeper = keeper
        self.parked = parked
        self.metrics = metrics
        self.stopping = stopping
        # The task working on each message group, so that a later receive's messages of
        # the group wait for it.
        self.groups: dict[str, asyncio.Task[Any]] = {}

    async def run(
        self, group: str, messages: list[Message], received: float, slots: list[int]
    ) -> bool:
        """A group's messages of one receive, one after the other, in order.

        True if every one of them is finished with (done, or moved to the DLQ): only
        then may the group's next messages go on. Messages waiting for their turn get
        heartbeats too, so none becomes visible to another consumer meanwhile.
        """
        previous = self.groups.get(group)
        me = asyncio.current_task()
        assert me is not None
        self.groups[group] = me
        heartbeats = {id(m): self.keeper.start_heartbeat(m, received) for m in messages}
        pending = list(messages)
        self.in_flight.queued_in_groups += len(pending)
        order = InOrder(by_group=False)  # one group: its first message that stays stops it
        try:
            order.finished(group, await self._turn(previous))
            before = None
            while pending and order.may_start(group) and not self.stopping():
                message = pending.pop(0)
                self.in_flight.queued_in_groups -= 1
                before = str(message.get("MessageId"))
                try:
                    done = await self.handle(message, received, heartbeats[id(message)])
                finally:
                    self.in_flight.give_back(slots)
                order.finished(group, done)
            if pending:
                await self._hold_back(group, pending, heartbeats, before)
            return order.may_start(group) and not pending
        except asyncio.CancelledError:
            await asyncio.shield(self._hold_back(group, pending, heartbeats, None))
            raise
        finally:
            self.in_flight.queued_in_groups -= len(pending)
            for heartbeat in heartbeats.values():
                await stop(heartbeat)
            if self.groups.get(group) is me:
                del self.groups[group]

    @staticmethod
    async def _turn(previous: asyncio.Task[Any] | None) -> bool:
        """Wait for the group's earlier messages (an earlier receive) still in hand; True
        if they were all finished with."""
        if previous is None:
            return True
        await asyncio.wait({previous})
        return (not previous.cancelled() and previous.exception() is None
                and previous.result() is True)  # fmt: skip

    async def _hold_back(
        self,
        group: str,
        messages: list[Message],
        heartbeats: dict[int, asyncio.Task[None]],
        behind: str | None,
    ) -> None:
        """Leave messages unprocessed: visible again now, so that SQS hands them out again
        after the group's earlier message still on the queue. Waiting behind a message
        parked after a failure, they are accounted for like it."""
        if not messages:
            return
        due = self.parked.get(behind) if behind is not None else None
        log.info("message group held back: later messages not started", group=group,
                 behind=behind, message_ids=[m.get("MessageId") for m in messages])  # fmt: skip
        for message in messages:
            await stop(heartbeats[id(message)])
            self.metrics.messages_kept.labels("held_back").inc()
            if due is not None:
                self.parked[str(message.get("MessageId"))] = due
            await self.keeper.hide(message, 0)
