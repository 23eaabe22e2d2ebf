"""The SQS daemon's acknowledgements: the shared rules (`trailproc._roads.acking`)
applied to an SQS queue.

- delete → a DeleteMessageBatch entry (`DeleteBatcher`);
- release (shutdown, progress committed) → visible again at once;
- keep → hidden for a backoff that grows per receive, and after `max_receive_count`
  receives moved to `dlq_url` if one is configured (else the queue's own redrive policy
  takes it); busy (the file is worked on elsewhere) → back soon, never to the DLQ
  because of it.
"""

from __future__ import annotations

from typing import Any

from ..._config import Config
from ..._errors import retry_transient
from ..._observe import Metrics, get_logger
from ..._pipeline.observer import PipelineObserver
from ..._pipeline.processor import ProgressInfo, ProgressState
from ..._ports.clock import Clock
from ..._ports.queue import QueuePort
from ..acking import Acknowledger
from .deletes import DeleteBatcher
from .slots import InFlight
from .visibility import VisibilityKeeper

__all__ = ["AckPolicy", "group_id", "receive_count"]

log = get_logger("trailproc.sqs")


def receive_count(message: dict[str, Any]) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))


def group_id(message: dict[str, Any]) -> str | None:
    """The FIFO message group, None on a standard queue."""
    group = message.get("Attributes", {}).get("MessageGroupId")
    return str(group) if group is not None else None


class AckPolicy(Acknowledger[dict[str, Any]]):
    """Deletes, keeps or moves messages to the DLQ, and remembers the ones it parked."""

    def __init__(
        self,
        config: Config,
        *,
        observer: PipelineObserver,
        deleter: DeleteBatcher,
        keeper: VisibilityKeeper,
        dlq: QueuePort | None,
        in_flight: InFlight,
        clock: Clock,
        metrics: Metrics,
    ) -> None:
        super().__init__(delete_on_failure=config.delete_on_failure)
        self.config = config
        self.observer = observer
        self.deleter = deleter
        self.keeper = keeper
        self.dlq = dlq
        self.in_flight = in_flight
        self.clock = clock
        self.metrics = metrics
        # Messages this process kept after a failure (message id → time it is due back).
        # With exit_when_idle they are "accounted for": the run may end while they wait.
        self.parked: dict[str, float] = {}

    def message_id(self, message: dict[str, Any]) -> str | None:
        return message.get("MessageId")

    async def release(self, message: dict[str, Any], reason: str) -> None:
        """Shutdown: progress is committed; let the next receiver start right away."""
        self.metrics.messages_kept.labels(reason).inc()
        await self.keeper.hide(message, 0)

    async def delete(self, message: dict[str, Any], reason: str) -> None:
        """Finished with even if the delete fails: the message comes back, and is skipped
        by its checkpoint."""
        info = ProgressInfo(True, message.get("MessageId"))
        # Java's deleteFilteredMessage: a delete of a message filter_source declined.
        state = ProgressState.DELETE_FILTERED if reason == "filtered" else ProgressState.DELETE
        token = self.observer.report_start(state, info)
        self.in_flight.acking += 1
        self.in_flight.freed.set()
        try:
            last = self.in_flight.only_acks_left()
            deleted = await self.deleter.delete(
                message["ReceiptHandle"], info.message_id, last=last
            )
        except Exception as exc:
            deleted = False
            log.warning(
                "delete failed; the message will come back and be skipped by its checkpoint",
                message_id=message.get("MessageId"),
                error=repr(exc),
            )
        finally:
            self.in_flight.acking -= 1
        self.observer.report_end(state, ProgressInfo(deleted, info.message_id), token)
        if deleted:
            self.metrics.messages_deleted.labels(reason).inc()

    async def keep(self, message: dict[str, Any], reason: str, received: float) -> bool:
        """Leave a message on the queue, hidden for a backoff that grows per receive.

        `failed` (and refused/bad messages) back off `failure_visibility_base * 2^(n-1)`
        up to `failure_visibility_max`, and after `max_receive_count` receives go to the
        DLQ when one is configured. Every wait ends within SQS's 12 hours from the
        receive (`received`), which SQS would otherwise refuse. Returns True if the
        message was moved to the DLQ instead (it left this queue).
        """
        self.metrics.messages_kept.labels(reason).inc()
        cfg = self.config
        message_id = str(message.get("MessageId"))
        count = receive_count(message)
        left = max(0, self.keeper.left(received))
        if reason == "busy":
            soon = max(1, min(cfg.visibility_timeout // 2, 30))
            await self.keeper.hide(message, min(left, soon))
            return False
        poison = bool(cfg.max_receive_count and count >= cfg.max_receive_count)
        if self.dlq is not None and poison and await self.move_to_dlq(message, reason):
            return True
        backoff = min(
            cfg.failure_visibility_max,
            cfg.failure_visibility_base * 2 ** min(max(0, count - 1), 20),
            left,
        )
        self.parked[message_id] = self.clock.monotonic() + backoff
        log.info("message kept for retry", message_id=message_id, reason=reason,
                 receive_count=count, visible_in=backoff)  # fmt: skip
        await self.keeper.hide(message, backoff)
        return False

    async def move_to_dlq(self, message: dict[str, Any], reason: str) -> bool:
        """Copy to the DLQ, then delete here. A lost send response may leave two copies
        in the DLQ; never zero. Returns False if the message stays here.

        A FIFO DLQ needs a message group: the message's own (or "trailproc"), and the
        source message id as deduplication id, so that a send repeated after a lost
        response is dropped by SQS (within its 5-minute deduplication window)."""
        dlq = self.dlq
        assert dlq is not None
        message_id = str(message.get("MessageId"))
        fifo: dict[str, str] = {}
        if str(self.config.dlq_url).endswith(".fifo"):
            fifo = {"MessageGroupId": group_id(message) or "trailproc",
                    "MessageDeduplicationId": message_id[:128]}  # fmt: skip
        attributes = {"trailproc-reason": reason, "trailproc-source-message-id": message_id}
        try:
            await retry_transient(lambda: dlq.send(message.get("Body", ""), attributes, fifo))
        except Exception as exc:
            log.error("could not move message to DLQ; it stays on the queue",
                      message_id=message.get("MessageId"), error=repr(exc))  # fmt: skip
            return False
        log.warning("moved message to DLQ", message_id=message.get("MessageId"), reason=reason,
                    dlq_url=self.config.dlq_url)  # fmt: skip
        await self.delete(message, "moved_to_dlq")
        return True
