"""The stop: in-flight messages get `shutdown_timeout`, then are stopped cleanly.

Work still running near the end of the timeout is interrupted at its next batch
boundary (the batch in the handler finishes and is committed) and its messages are made
visible again at once; whatever is still running at the timeout is cancelled and
released the same way. User code that ignores cancellation is left behind, never waited
for, and counted (`left_running`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..._observe import get_logger
from ..._pipeline.engine import FilePipeline
from .visibility import VisibilityKeeper

__all__ = ["Drain"]

log = get_logger("trailproc.sqs")

# Seconds cancelled work gets, at the shutdown deadline, to release its files and make
# its messages visible again.
_CANCEL_WAIT = 1.5


class Drain:
    """Finishes or stops the source's in-flight work at shutdown."""

    def __init__(self, pipeline: FilePipeline, keeper: VisibilityKeeper, timeout: float) -> None:
        self.pipeline = pipeline
        self.keeper = keeper
        self.timeout = timeout
        # Messages being worked on, by id(): made visible again if their work is stuck.
        self.working: dict[int, dict[str, Any]] = {}
        self.left_running = 0

    async def run(self, tasks: set[asyncio.Task[Any]]) -> None:
        """Let `tasks` finish up to the timeout, interrupting them near its end."""
        if not tasks:
            return
        timeout = self.timeout
        log.info("finishing in-flight messages", count=len(tasks), timeout=timeout)
        grace = min(5.0, timeout * 0.25)
        _done, pending = await asyncio.wait(set(tasks), timeout=timeout - grace)
        if pending:
            log.info("shutdown timeout near: stopping files at the next batch",
                     count=len(pending))  # fmt: skip
            self.pipeline.interrupt()
            _done, pending = await asyncio.wait(pending, timeout=grace)
        if pending:
            await self._cancel(pending)

    async def _cancel(self, pending: set[asyncio.Task[Any]]) -> None:
        """The shutdown deadline: cancel what is still running. A handler still busy
        has its batch abandoned (not committed) and its message made visible again; a
        synchronous handler's call runs on in its thread, never waited for."""
        log.warning("shutdown timeout reached: cancelling unfinished work",
                    count=len(pending))  # fmt: skip
        for task in pending:
            task.cancel()
        # Cancelled work releases its files and messages (a few quick calls); user code
        # that ignores cancellation is not waited for beyond this.
        _done, stuck = await asyncio.wait(pending, timeout=_CANCEL_WAIT)
        self.left_running = len(stuck)
        if stuck:
            # Their messages would come back only after the visibility timeout (or never
            # while a heartbeat goes on): make them visible again now.
            left = list(self.working.values())
            log.error("work ignored cancellation at shutdown; leaving it behind, its "
                      "messages made visible again", count=len(stuck),
                      message_ids=[m.get("MessageId") for m in left])  # fmt: skip
            await asyncio.gather(*(self.keeper.hide(m, 0) for m in left),
                                 return_exceptions=True)  # fmt: skip
