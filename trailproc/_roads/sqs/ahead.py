"""Receives that run while the loop goes on, to hide the round trip of a busy queue.

One ReceiveMessage at a time leaves the slots idle for a whole round trip after every
receive (20-50 ms against a region, plus the service's own time). While the queue is
busy (the last receive brought at least half of what it asked for), the loop asks for
the next messages before the last receive has come back: up to `limit` receives at
once, each reserving the slots its messages will take, so the in-flight limit holds as
before. As soon as a receive comes back with less than half, the loop goes back to one
receive at a time, so an idle queue costs no more requests than before and
`exit_when_idle` sees every result in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..._ports.clock import Clock, first_of
from .receive import Receiver
from .slots import InFlight

__all__ = ["ReceiveAhead"]

Landed = Callable[[list[dict[str, Any]], int, float], None]


class ReceiveAhead:
    """Background receives and the slots they reserve."""

    def __init__(self, receiver: Receiver, in_flight: InFlight, clock: Clock, limit: int,
                 batch: int) -> None:  # fmt: skip
        self.receiver = receiver
        self.in_flight = in_flight
        self.clock = clock
        self.limit = limit
        self.batch = batch
        self.tasks: set[asyncio.Task[None]] = set()
        self.reserved = 0
        self.busy = False  # the last receive looked like a busy queue's (`full`)
        self._error: BaseException | None = None

    @staticmethod
    def full(got: int, asked: int) -> bool:
        """Whether a receive looks like a busy queue's: SQS answers with fewer messages
        than asked for even when more are waiting (it samples its servers), so half
        of them counts."""
        return got >= max(1, asked // 2)

    def room(self) -> int:
        """Messages that may be asked for now: free slots less those reserved."""
        return self.in_flight.free() - self.reserved

    def can_start(self, count: int, plain: bool) -> bool:
        """Whether a receive of `count` may go out without waiting for the others.

        `plain`: the idle policy asks for no wait before this receive. Half a batch at
        least, so a trickle of freed slots does not turn into many small receives.
        """
        return (plain and self.busy and len(self.tasks) < self.limit
                and count >= max(1, self.batch // 2))  # fmt: skip

    def should_wait(self) -> bool:
        """Receives are out and no other may start: wait for one of them (or a slot)."""
        return bool(self.tasks)

    def start(self, count: int, stopping: asyncio.Event, wait: int | None, landed: Landed) -> None:
        """Send a receive of `count` now; `landed(messages, count, sent)` on its answer."""
        self.reserved += count
        sent = self.clock.monotonic()

        async def receive() -> None:
            try:
                messages = await self.receiver.receive(count, stopping, wait=wait)
            finally:
                self.reserved -= count
                self.in_flight.freed.set()
            self.busy = messages is not None and self.full(len(messages), count)
            if messages:
                landed(messages, count, sent)

        task = asyncio.create_task(receive())
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._error is None:
            self._error = task.exception()

    def raise_failure(self) -> None:
        """Re-raise, in the loop, what failed in a background receive."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    async def wait_for_change(self, stopping: asyncio.Event) -> None:
        """Until a receive comes back, a slot frees up, or `stopping` is set."""
        self.in_flight.freed.clear()
        await first_of(self.clock, None, self.in_flight.freed.wait(), stopping.wait())

    async def settle(self) -> None:
        """Until every background receive has come back (and its messages started)."""
        while self.tasks:
            await asyncio.wait(set(self.tasks))
        self.raise_failure()
