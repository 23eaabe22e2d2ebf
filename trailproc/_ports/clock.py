"""An injectable clock: monotonic time and sleeping.

`SystemClock` is the real one. `ManualClock` only moves when a test calls `advance`, so
timers, pauses and backoffs are tested in microseconds and without flakiness.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable
from typing import Any, Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "first_of"]


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    async def sleep(self, seconds: float) -> None:
        """Return after `seconds` on this clock."""


class SystemClock:
    """The process's own monotonic clock and asyncio's sleep."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that stands still until `advance` moves it; sleepers wake in time order."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), future))
        await future

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting (cancelled ones excluded)."""
        return sum(not f.done() for _, _, f in self._sleepers)

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper due by then, and let the woken run."""
        target = self.now + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            due, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, due)
            if not future.done():
                future.set_result(None)
                await settle()
        self.now = target
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let every ready task run until the loop has nothing quick left to do (tests)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def first_of(clock: Clock, timeout: float | None, *waits: Awaitable[Any]) -> None:
    """Until the first of `waits` finishes or `timeout` passes on `clock`."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    if timeout is not None:
        tasks.append(asyncio.ensure_future(clock.sleep(timeout)))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
