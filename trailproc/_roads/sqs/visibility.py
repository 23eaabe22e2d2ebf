"""The visibility keeper: hides messages while they are worked on, and for backoffs.

SQS allows a message at most 12 hours of visibility, counted from its receive; every
change here stays within what is left of them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..._errors import error_code, is_transient, retry_transient
from ..._observe import Metrics, get_logger, short_handle
from ..._ports.clock import Clock
from ..._ports.queue import QueuePort
from .deletes import GONE_CODES

__all__ = ["VisibilityKeeper"]

log = get_logger("trailproc.sqs")

MAX_VISIBILITY = 43200  # SQS's limit: 12 hours from the receive
# SQS counts those 12 hours from when it handled the receive, and a change from when it
# handles the change; our clock starts earlier and stops earlier than its by a request's
# latency each, so a few seconds are left aside.
VISIBILITY_MARGIN = 5


class VisibilityKeeper:
    """Visibility changes for one queue: one-off (`hide`) and periodic (`heartbeat`)."""

    def __init__(
        self, queue: QueuePort, clock: Clock, visibility_timeout: int, metrics: Metrics
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.timeout = visibility_timeout
        self.metrics = metrics

    def left(self, received: float) -> int:
        """Seconds of visibility SQS still allows a message received at `received`
        (this clock's time when the receive request went out)."""
        return int(MAX_VISIBILITY - VISIBILITY_MARGIN - (self.clock.monotonic() - received))

    async def hide(self, message: dict[str, Any], seconds: int) -> bool:
        """Set the message's visibility to `seconds` from now (0: visible at once)."""
        try:
            await retry_transient(
                lambda: self.queue.change_visibility(message["ReceiptHandle"], int(seconds)),
                attempts=3,
            )
            return True
        except Exception as exc:
            log.info("visibility change not applied", message_id=message.get("MessageId"),
                     handle=short_handle(message.get("ReceiptHandle")),
                     code=error_code(exc) or repr(exc))  # fmt: skip
            return False

    def start_heartbeat(self, message: dict[str, Any], received: float) -> asyncio.Task[None]:
        return asyncio.create_task(self.heartbeat(message, received))

    async def heartbeat(self, message: dict[str, Any], received: float) -> None:
        """Extend visibility at half the timeout until the message's work ends.

        A transient failure is retried soon (not half a timeout later, when the message
        may already be visible to others), a permanent one (AccessDenied) at the usual
        interval; an invalid receipt handle (the message was deleted, or received again
        elsewhere) ends the heartbeat; so does SQS's 12-hour cap on a message's total
        visibility, counted from `received`.
        """
        if self.timeout <= 1:
            return
        interval = self.timeout / 2
        delay = interval
        while True:
            await self.clock.sleep(delay)
            remaining = self.left(received)
            if remaining < 1:
                log.warning("visibility extension cap reached", message_id=message.get("MessageId"))
                return
            try:
                await self.queue.change_visibility(
                    message["ReceiptHandle"], min(self.timeout, remaining)
                )
                self.metrics.visibility_extensions.inc()
                delay = interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                retry_in = self._after_failure(message, exc, interval)
                if retry_in is None:
                    return
                delay = retry_in

    @staticmethod
    def _after_failure(message: dict[str, Any], exc: Exception, interval: float) -> float | None:
        """The next heartbeat's delay after a failed extension; None: stop."""
        message_id = message.get("MessageId")
        if error_code(exc) in GONE_CODES:
            log.warning("receipt handle no longer valid; heartbeat stops", message_id=message_id)
            return None
        if is_transient(exc):
            log.warning("heartbeat failed; will retry", message_id=message_id, error=repr(exc))
            return min(1.0, interval / 4)
        # Permanent (e.g. AccessDenied): retrying within a second would only repeat the
        # warning; try again at the usual interval.
        log.warning("heartbeat refused; visibility is not being extended",
                    message_id=message_id, code=error_code(exc) or repr(exc))  # fmt: skip
        return interval


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it ended."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
