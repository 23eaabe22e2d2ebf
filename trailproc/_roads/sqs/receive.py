"""One ReceiveMessage, raced against shutdown, with progress hooks and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ..._errors import is_transient, retry_transient
from ..._observe import Metrics, get_logger
from ..._pipeline.observer import PipelineObserver
from ..._pipeline.processor import ProgressInfo, ProgressState
from ..._ports.clock import Clock
from ..._ports.queue import QueuePort

__all__ = ["Receiver"]

log = get_logger("trailproc.sqs")


class Receiver:
    """Receives from one queue; remembers when the last request went out (`sent`)."""

    def __init__(
        self,
        queue: QueuePort,
        clock: Clock,
        *,
        wait_time_seconds: int,
        visibility_timeout: int,
        observer: PipelineObserver,
        metrics: Metrics,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.wait_time_seconds = wait_time_seconds
        self.visibility_timeout = visibility_timeout
        self.observer = observer
        self.metrics = metrics
        # When the last ReceiveMessage was sent: SQS's 12-hour visibility limit counts
        # from the receive, so from when the request went out, to be on the safe side.
        self.sent = clock.monotonic()
        self.ready = False  # the queue answered at least once (readiness probe)

    async def receive(
        self, count: int, stopping: asyncio.Event, wait: int | None = None
    ) -> list[dict[str, Any]] | None:
        """Up to `count` messages (long poll of wait_time_seconds unless `wait` is given);
        None if `stopping` was set first."""
        wait_seconds = self.wait_time_seconds if wait is None else wait
        info = ProgressInfo(True)
        token = self.observer.report_start(ProgressState.POLL, info)

        def receive() -> Any:
            self.sent = self.clock.monotonic()
            return self.queue.receive(count, wait_seconds, self.visibility_timeout)

        call = asyncio.ensure_future(retry_transient(receive, attempts=8, max_wait=20))
        stop = asyncio.ensure_future(stopping.wait())
        # Wait for whichever comes first, so SIGTERM does not wait out a 20 s long poll.
        done, _ = await asyncio.wait({call, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if call not in done:
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await call
            self.observer.report_end(ProgressState.POLL, info, token)
            return None
        try:
            messages: list[dict[str, Any]] = call.result()
        except Exception as exc:
            self.observer.report_end(ProgressState.POLL, ProgressInfo(False), token)
            if is_transient(exc):
                log.warning("receive failed; retrying", error=repr(exc))
                await self.clock.sleep(1)
                return []
            raise
        self.ready = True
        self.metrics.last_poll.set(time.time())
        self.metrics.messages_received.inc(len(messages))
        self.observer.report_end(
            ProgressState.POLL, ProgressInfo(True, detail={"messages": len(messages)}), token
        )
        return messages
