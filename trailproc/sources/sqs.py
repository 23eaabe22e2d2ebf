"""The SQS source: long-poll, run each message's files through the pipeline, then ack.

Acknowledgement policy, in one place:
- every file of the message done (or done before)  → delete (batched);
- test/validation messages, all objects skipped by policy, filter_source False → delete;
- anything failed → keep: visibility set to a growing backoff so it returns later, and
  after `max_receive_count` receives it is moved to `dlq_url` if one is configured
  (else the queue's own redrive policy takes it). Deleted on failure only when
  `delete_on_failure` is set.
While a message is being worked on, its visibility is extended (heartbeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from ..config import Config
from ..errors import BadMessage, Refused, TrailprocError, is_transient, retry_transient
from ..observe import Metrics, get_logger, short_handle
from ..pipeline.engine import FileOutcome, FilePipeline
from ..pipeline.keys import ObjectKind
from ..pipeline.notifications import BadNotification, Notification, parse_notification
from ..processor import ProgressInfo, ProgressState, Source

__all__ = ["SqsSource"]

log = get_logger("trailproc.sqs")

_GONE_CODES = {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight",
               "AWS.SimpleQueueService.MessageNotInflight"}  # fmt: skip
_MAX_VISIBILITY = 43200  # SQS's limit: 12 hours from the receive


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


class _DeleteBatcher:
    """Collects deletes for a moment and sends them 10 at a time (DeleteMessageBatch)."""

    def __init__(self, sqs: Any, queue_url: str, linger: float = 0.05) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.linger = linger
        self._pending: list[tuple[str, asyncio.Future[bool]]] = []
        self._timer: asyncio.TimerHandle | None = None

    async def delete(self, receipt_handle: str) -> bool:
        """Resolve True once SQS confirmed the delete, False if it refused."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((receipt_handle, future))
        if len(self._pending) >= 10:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.linger, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending[:10], self._pending[10:]
        if batch:
            asyncio.ensure_future(self._send(batch))
        if self._pending:
            self._timer = asyncio.get_running_loop().call_later(0, self._flush)

    async def _send(self, batch: list[tuple[str, asyncio.Future[bool]]]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": rh} for i, (rh, _f) in enumerate(batch)]
        try:
            response = await retry_transient(
                lambda: self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            )
        except Exception as exc:
            for _rh, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        failed = {f["Id"]: f for f in response.get("Failed", [])}
        for i, (_rh, future) in enumerate(batch):
            if future.done():
                continue
            if str(i) in failed:
                log.warning(
                    "delete refused by SQS",
                    code=failed[str(i)].get("Code"),
                    detail=failed[str(i)].get("Message"),
                )
            future.set_result(str(i) not in failed)


class SqsSource:
    """Polls one queue and acknowledges according to each message's outcome."""

    def __init__(
        self, config: Config, pipeline: FilePipeline, sqs: Any, metrics: Metrics
    ) -> None:
        if not config.queue_url:
            raise ValueError("queue_url is required to poll SQS (--queue-url or TRAILPROC_QUEUE_URL)")
        self.config = config
        self.queue_url = config.queue_url
        self.pipeline = pipeline
        self.processor = pipeline.processor
        self.sqs = sqs
        self.metrics = metrics
        self.kinds = frozenset(ObjectKind(k) for k in config.process_kinds)
        self.deleter = _DeleteBatcher(sqs, self.queue_url)
        self.tasks: set[asyncio.Task[None]] = set()
        self.ready = False  # the queue answered at least once (readiness probe)

    # --- the loop ------------------------------------------------------------------------
    async def run(self, stopping: asyncio.Event) -> None:
        """Receive and process until `stopping` is set (or idle, with exit_when_idle)."""
        cfg = self.config
        try:
            while not stopping.is_set():
                free = cfg.max_in_flight_messages - len(self.tasks)
                if free <= 0:
                    await asyncio.wait(
                        [*self.tasks, asyncio.ensure_future(stopping.wait())],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    continue
                messages = await self._receive(min(free, cfg.max_messages_per_receive), stopping)
                if messages is None:  # stopping while waiting
                    break
                if not messages:
                    if cfg.exit_when_idle and not self.tasks:
                        log.info("queue is empty and nothing is in flight; exiting")
                        break
                    continue
                for message in messages:
                    task = asyncio.create_task(self._handle(message))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)
        finally:
            await self._drain()

    async def _receive(
        self, count: int, stopping: asyncio.Event
    ) -> list[dict[str, Any]] | None:
        info = ProgressInfo(True)
        token = self.pipeline.report_start(ProgressState.POLL, info)
        call = asyncio.ensure_future(
            retry_transient(
                lambda: self.sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=count,
                    WaitTimeSeconds=self.config.wait_time_seconds,
                    VisibilityTimeout=self.config.visibility_timeout,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ),
                attempts=8,
                max_wait=20,
            )
        )
        stop = asyncio.ensure_future(stopping.wait())
        # Wait for whichever comes first, so SIGTERM does not wait out a 20 s long poll.
        done, _ = await asyncio.wait({call, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if call not in done:
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await call
            self.pipeline.report_end(ProgressState.POLL, info, token)
            return None
        try:
            response = call.result()
        except Exception as exc:
            self.pipeline.report_end(ProgressState.POLL, ProgressInfo(False), token)
            if is_transient(exc):
                log.warning("receive failed; retrying", error=repr(exc))
                await asyncio.sleep(1)
                return []
            raise
        self.ready = True
        self.metrics.last_poll.set(time.time())
        messages: list[dict[str, Any]] = response.get("Messages", [])
        self.metrics.messages_received.inc(len(messages))
        self.pipeline.report_end(
            ProgressState.POLL, ProgressInfo(True, detail={"messages": len(messages)}), token
        )
        return messages

    async def _drain(self) -> None:
        """Let in-flight work finish up to shutdown_timeout; release what did not."""
        if not self.tasks:
            return
        log.info("finishing in-flight messages", count=len(self.tasks),
                 timeout=self.config.shutdown_timeout)  # fmt: skip
        _done, pending = await asyncio.wait(set(self.tasks), timeout=self.config.shutdown_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # --- one message ---------------------------------------------------------------------
    async def _handle(self, message: dict[str, Any]) -> None:
        self.metrics.in_flight_messages.inc()
        try:
            await self._handle_inner(message)
        except asyncio.CancelledError:
            # Shutdown timed out while this message was being worked on: make it visible
            # again now; its checkpoints say where the next receiver resumes.
            await asyncio.shield(self._set_visibility(message, 0))
            raise
        except Exception as exc:  # a bug must not kill the daemon or lose the message
            log.exception("unexpected error handling message", message_id=message.get("MessageId"))
            self.pipeline.fail(
                TrailprocError(f"internal error: {exc!r}", message_id=message.get("MessageId"))
            )
        finally:
            self.metrics.in_flight_messages.dec()

    async def _handle_inner(self, message: dict[str, Any]) -> None:
        message_id = message.get("MessageId")
        attributes: dict[str, str] = message.get("Attributes", {})
        receive_count = int(attributes.get("ApproximateReceiveCount", "1"))
        sent_at = int(attributes.get("SentTimestamp", "0")) / 1000 or None
        if sent_at:
            self.metrics.queue_lag.observe(max(0.0, time.time() - sent_at))

        info = ProgressInfo(True, message_id)
        token = self.pipeline.report_start(ProgressState.PARSE_MESSAGE, info)
        try:
            note = parse_notification(message.get("Body", ""), process_kinds=self.kinds)
            self._check_trust(note, message_id)
        except (BadNotification, Refused) as exc:
            self.pipeline.report_end(ProgressState.PARSE_MESSAGE, ProgressInfo(False, message_id), token)
            error = exc if isinstance(exc, Refused) else BadMessage(str(exc), message_id=message_id)
            self.pipeline.fail(error)
            await self._keep(message, receive_count, error.reason)
            return
        self.pipeline.report_end(ProgressState.PARSE_MESSAGE, info, token)

        for ref, reason in note.skipped:
            log.info("object skipped", message_id=message_id, bucket=ref.bucket, key=ref.key,
                     reason=reason)  # fmt: skip
        if note.is_ack_only:
            log.info("message needs no processing; deleting", message_id=message_id,
                     kind=note.kind.value, skipped=len(note.skipped))  # fmt: skip
            await self._delete(message, note.kind.value if not note.skipped else "all_skipped")
            return

        source = Source(
            message_id=message_id,
            refs=note.refs,
            receive_count=receive_count,
            sent_at=sent_at,
            topic_arn=note.topic_arn,
            attributes=attributes,
        )
        if not self.processor.filter_source(source):
            log.info("filter_source declined the message; deleting", message_id=message_id)
            await self._delete(message, "filtered")
            return

        token = self.pipeline.report_start(ProgressState.PROCESS_SOURCE, info)
        heartbeat = asyncio.create_task(self._heartbeat(message))
        try:
            outcomes = await self._run_files(note, message_id)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        ok = all(o.ok for o in outcomes)
        self.pipeline.report_end(
            ProgressState.PROCESS_SOURCE, ProgressInfo(ok, message_id), token
        )
        if ok:
            await self._delete(message, "processed")
        elif self.config.delete_on_failure:
            log.warning("deleting failed message (delete_on_failure is set)", message_id=message_id)
            await self._delete(message, "failed_deleted")
        else:
            busy_only = all(o.ok or o.status == "busy" for o in outcomes)
            await self._keep(message, receive_count, "busy" if busy_only else "failed")

    async def _run_files(self, note: Notification, message_id: str | None) -> list[FileOutcome]:
        return list(await asyncio.gather(*(self.pipeline.run(r, message_id) for r in note.refs)))

    def _check_trust(self, note: Notification, message_id: str | None) -> None:
        cfg = self.config
        if cfg.allowed_topic_arns and note.topic_arn not in cfg.allowed_topic_arns:
            raise Refused(
                f"notification from SNS topic {note.topic_arn!r}, not in allowed_topic_arns",
                message_id=message_id,
            )
        for ref in note.refs:
            if cfg.allowed_buckets and ref.bucket not in cfg.allowed_buckets:
                raise Refused("bucket not in allowed_buckets", message_id=message_id,
                              bucket=ref.bucket, key=ref.key)  # fmt: skip
            if cfg.allowed_accounts and ref.info.account_id not in cfg.allowed_accounts:
                raise Refused(
                    f"account {ref.info.account_id!r} not in allowed_accounts",
                    message_id=message_id, bucket=ref.bucket, key=ref.key,
                )  # fmt: skip

    # --- acknowledging -------------------------------------------------------------------
    async def _delete(self, message: dict[str, Any], reason: str) -> None:
        info = ProgressInfo(True, message.get("MessageId"))
        token = self.pipeline.report_start(ProgressState.DELETE, info)
        try:
            deleted = await self.deleter.delete(message["ReceiptHandle"])
        except Exception as exc:
            deleted = False
            log.warning("delete failed; the message will come back and be skipped by its "
                        "checkpoint", message_id=message.get("MessageId"), error=repr(exc))  # fmt: skip
        self.pipeline.report_end(ProgressState.DELETE, ProgressInfo(deleted, info.message_id), token)
        if deleted:
            self.metrics.messages_deleted.labels(reason).inc()

    async def _keep(self, message: dict[str, Any], receive_count: int, reason: str) -> None:
        self.metrics.messages_kept.labels(reason).inc()
        cfg = self.config
        if cfg.dlq_url and cfg.max_receive_count and receive_count >= cfg.max_receive_count:
            await self._move_to_dlq(message, reason)
            return
        backoff = min(
            cfg.failure_visibility_max,
            cfg.failure_visibility_base * 2 ** max(0, receive_count - 1),
        )
        if reason == "busy":
            backoff = min(backoff, max(1, cfg.visibility_timeout // 2))
        await self._set_visibility(message, backoff)

    async def _move_to_dlq(self, message: dict[str, Any], reason: str) -> None:
        assert self.config.dlq_url
        try:
            await retry_transient(
                lambda: self.sqs.send_message(
                    QueueUrl=self.config.dlq_url,
                    MessageBody=message.get("Body", ""),
                    MessageAttributes={
                        "trailproc-reason": {"DataType": "String", "StringValue": reason},
                        "trailproc-source-message-id": {
                            "DataType": "String",
                            "StringValue": str(message.get("MessageId")),
                        },
                    },
                )
            )
        except Exception as exc:
            log.error("could not move message to DLQ; it stays on the queue",
                      message_id=message.get("MessageId"), error=repr(exc))  # fmt: skip
            return
        log.warning("moved message to DLQ", message_id=message.get("MessageId"), reason=reason)
        await self._delete(message, "moved_to_dlq")

    async def _set_visibility(self, message: dict[str, Any], seconds: int) -> bool:
        try:
            await retry_transient(
                lambda: self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=int(seconds),
                ),
                attempts=3,
            )
            return True
        except Exception as exc:
            log.info("visibility change not applied", message_id=message.get("MessageId"),
                     handle=short_handle(message.get("ReceiptHandle")),
                     code=_error_code(exc) or repr(exc))  # fmt: skip
            return False

    async def _heartbeat(self, message: dict[str, Any]) -> None:
        """Extend visibility at half the timeout until the message's work ends."""
        timeout = self.config.visibility_timeout
        if timeout <= 1:
            return
        received = time.monotonic()
        while True:
            await asyncio.sleep(timeout / 2)
            if time.monotonic() - received + timeout > _MAX_VISIBILITY:
                log.warning("visibility extension cap reached", message_id=message.get("MessageId"))
                return
            try:
                await self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=timeout,
                )
                self.metrics.visibility_extensions.inc()
            except Exception as exc:
                if _error_code(exc) in _GONE_CODES:
                    log.warning("receipt handle no longer valid; heartbeat stops",
                                message_id=message.get("MessageId"))  # fmt: skip
                    return
                log.warning("heartbeat failed; will retry", message_id=message.get("MessageId"),
                            error=repr(exc))  # fmt: skip

