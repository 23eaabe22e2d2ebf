"""In-flight accounting: how many messages this process holds, and waiting for room."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from ..._ports.clock import Clock, first_of

__all__ = ["InFlight"]


class InFlight:
    """Messages received and not yet finished with, and the tasks that hold them.

    Of those, some wait only for their delete (`acking`) or, on a FIFO queue, for their
    group's turn (`queued_in_groups`). When they are all there is, no other delete can
    come before a receive, so pending deletes go out at once instead of after the
    batching linger.
    """

    def __init__(self, limit: int, clock: Clock) -> None:
        self.limit = limit
        self.clock = clock
        self.tasks: set[asyncio.Task[Any]] = set()
        self.held = 0
        self.acking = 0
        self.queued_in_groups = 0
        # Set whenever a slot may have freed up: a task ended, a FIFO group gave one back,
        # or a message's work is done and only its delete is outstanding.
        self.freed = asyncio.Event()

    def start(self, work: Coroutine[Any, Any, Any], slots: list[int]) -> None:
        """Run `work` as a task holding `slots[0]` slots; the task may give some back
        early (`give_back`), the rest are given back when it ends, even if it was
        cancelled before it started."""
        task = asyncio.create_task(work)
        self.tasks.add(task)
        self.held += slots[0]

        def done(task: asyncio.Task[Any]) -> None:
            self.tasks.discard(task)
            self.held -= slots[0]
            self.freed.set()

        task.add_done_callback(done)

    def give_back(self, slots: list[int]) -> None:
        """One message of a multi-message task is finished with."""
        slots[0] -= 1
        self.held -= 1
        self.freed.set()

    def free(self) -> int:
        """How many more messages may be received now.

        A message whose work is done and whose delete is all that is outstanding holds
        no file and no handler, so it stops counting against the limit (up to as many
        again): otherwise the delete batching linger and round trip would keep the next
        files waiting, and the slots would refill in waves.
        """
        return self.limit - self.held + min(self.acking, self.limit)

    def only_acks_left(self) -> bool:
        """True when every held message waits for its delete or its group's turn."""
        return self.acking + self.queued_in_groups >= self.held

    async def wait_for_a_slot(self, stopping: asyncio.Event, timeout: float | None) -> None:
        """Until a slot may have freed up, `stopping` is set, or `timeout`."""
        self.freed.clear()
        if self.free() > 0 and timeout is None:
            return
        await first_of(self.clock, timeout, self.freed.wait(), stopping.wait())

    async def wait_for_all(self, stopping: asyncio.Event, timeout: float) -> None:
        """Until every in-flight message is finished, `stopping` is set, or `timeout`."""
        deadline = self.clock.monotonic() + timeout
        while self.tasks and not stopping.is_set():
            left = deadline - self.clock.monotonic()
            if left <= 0:
                return
            await self.wait_for_a_slot(stopping, left)
