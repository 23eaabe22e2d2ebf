"""One message: parse it, run its files through the pipeline, acknowledge the verdict.

Heartbeats keep the message hidden while its files are worked on; a bug in the work
never kills the daemon or loses the message (it is kept like any failure); a
cancellation at the shutdown deadline makes the message visible again at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..._errors import InternalError, TrailprocError
from ..._observe import Metrics, get_logger
from ..._pipeline.observer import PipelineObserver
from ..messages import MessageRunner, Verdict
from .acks import AckPolicy, receive_count
from .drain import Drain
from .visibility import VisibilityKeeper, stop

__all__ = ["MessageWorker"]

log = get_logger("trailproc.sqs")


class MessageWorker:
    """Works on one received message at a time (called once per message)."""

    def __init__(self, runner: MessageRunner, acks: AckPolicy, keeper: VisibilityKeeper,
                 drain: Drain, observer: PipelineObserver) -> None:  # fmt: skip
        self.runner = runner
        self.acks = acks
        self.keeper = keeper
        self.drain = drain
        self.observer = observer
        self.metrics: Metrics = observer.metrics

    async def handle(
        self,
        message: dict[str, Any],
        received: float,
        heartbeat: asyncio.Task[None] | None = None,
    ) -> bool:
        """Work on one message and acknowledge it. True if it is finished with (done, or
        deleted or moved to the DLQ after a failure); False if it stays on the queue."""
        self.metrics.in_flight_messages.inc()
        self.drain.working[id(message)] = message
        try:
            return await self._work(message, received, heartbeat)
        except asyncio.CancelledError:
            # Shutdown timed out while this message was being worked on: make it visible
            # again now; its checkpoints say where the next receiver resumes.
            await asyncio.shield(self.keeper.hide(message, 0))
            raise
        except Exception as exc:  # a bug must not kill the daemon or lose the message
            self.observer.fail(InternalError.of(exc, message_id=message.get("MessageId")))
            # Kept like any failure: backoff, then the DLQ, instead of returning every
            # visibility timeout forever.
            try:
                return await self.acks.keep(message, "error", received)
            except Exception as keep_exc:  # the visibility timeout brings it back anyway
                log.warning("could not keep the failed message", error=repr(keep_exc),
                            message_id=message.get("MessageId"))  # fmt: skip
                return False
        finally:
            self.drain.working.pop(id(message), None)
            if heartbeat is not None:
                await stop(heartbeat)
            self.metrics.in_flight_messages.dec()

    async def _work(
        self, message: dict[str, Any], received: float, heartbeat: asyncio.Task[None] | None
    ) -> bool:
        message_id = message.get("MessageId")
        attributes: dict[str, str] = message.get("Attributes", {})
        sent_at = int(attributes.get("SentTimestamp", "0")) / 1000 or None
        if sent_at:
            self.metrics.queue_lag.observe(max(0.0, time.time() - sent_at))

        note = await self.runner.parse(message.get("Body", ""), message_id)
        if isinstance(note, TrailprocError):
            if heartbeat is not None:
                await stop(heartbeat)
            return await self.acks.settle(message, Verdict("retry", note.reason), received)
        if heartbeat is None:
            heartbeat = self.keeper.start_heartbeat(message, received)
        try:
            verdict = await self.runner.run(
                note, message_id=message_id, receive_count=receive_count(message),
                sent_at=sent_at, attributes=attributes,
            )  # fmt: skip
        finally:
            await stop(heartbeat)
        return await self.acks.settle(message, verdict, received)
