"""The SQS source: long-poll, run each message's files through the pipeline, then ack.

Acknowledgement policy, in one place:
- every file of the message done (or done before)  → delete (batched);
- test/validation messages, all objects skipped by policy, filter_source False → delete;
- anything failed → keep: visibility set to a growing backoff so it returns later, and
  after `max_receive_count` receives it is moved to `dlq_url` if one is configured
  (else the queue's own redrive policy takes it). Deleted on failure only when
  `delete_on_failure` is set.
While a message is being worked on, its visibility is extended (heartbeat).

FIFO queues: the messages of one message group are worked on one after the other, in
the order SQS gave them. One that stays on the queue (failed, busy, released at shutdown)
holds back the rest of its group: they are not started but made visible again at once,
and SQS hands them out again only after it, since it gives out no message of a group
while an earlier one is in flight. A message moved to the DLQ no longer holds its group.

With `verify_digests`, digest objects named by notifications are no longer skipped: they
go to the pipeline's digest check (never to user code, `filter_source` included), and a
digest whose listed files mismatch is still deleted once the result is recorded: a
mismatch is an integrity finding reported through `on_error`, not a processing failure
that retrying could cure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from typing import Any

from ..config import Config
from ..errors import (
    InternalError,
    RetryAgain,
    TrailprocError,
    error_code,
    is_transient,
    retry_transient,
)
from ..observe import Metrics, get_logger, short_handle
from ..pipeline.engine import FilePipeline
from ..processor import ProgressInfo, ProgressState
from .messages import MessageRunner

__all__ = ["SqsSource"]

log = get_logger("trailproc.sqs")

_GONE_CODES = {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight",
               "AWS.SimpleQueueService.MessageNotInflight"}  # fmt: skip
_MAX_VISIBILITY = 43200  # SQS's limit: 12 hours from the receive
# SQS counts those 12 hours from when it handled the receive, and a change from when it
# handles the change; our clock starts earlier and stops earlier than its by a request's
# latency each, so a few seconds are left aside.
_VISIBILITY_MARGIN = 5


def _grown(pause: float, config: Config) -> float:
    """The next of a series of pauses (exit_when_idle): 0.1 s first, then doubling up to
    a long poll's wait."""
    return min(2 * pause, max(1, config.wait_time_seconds)) if pause else 0.1


def _visibility_left(received: float) -> int:
    """Seconds of visibility SQS still allows a message received at `received`
    (monotonic time the receive request went out)."""
    return int(_MAX_VISIBILITY - _VISIBILITY_MARGIN - (time.monotonic() - received))


def _receive_count(message: dict[str, Any]) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))


def _group_id(message: dict[str, Any]) -> str | None:
    """The FIFO message group, None on a standard queue."""
    group = message.get("Attributes", {}).get("MessageGroupId")
    return str(group) if group is not None else None


def _units(messages: list[dict[str, Any]]) -> list[tuple[str | None, list[dict[str, Any]]]]:
    """One receive's messages as units of work: each standard message alone, the messages
    of one FIFO group together, in the order received."""
    units: list[tuple[str | None, list[dict[str, Any]]]] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        group = _group_id(message)
        if group is None:
            units.append((None, [message]))
        elif group in groups:
            groups[group].append(message)
        else:
            groups[group] = [message]
            units.append((group, groups[group]))
    return units


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


_Entry = tuple[str, str | None, "asyncio.Future[bool]"]  # receipt handle, message id, result


class _DeleteBatcher:
    """Collects deletes for a moment and sends them 10 at a time (DeleteMessageBatch).

    An entry SQS failed on its own side (`SenderFault` false: an internal error or
    throttling of that entry) is sent again a few times; one it refused (an invalid or
    expired receipt handle) is not.
    """

    def __init__(
        self, sqs: Any, queue_url: str, linger: float = 0.05, entry_attempts: int = 5
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.linger = linger
        self.entry_attempts = entry_attempts
        self._pending: list[_Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Future[None]] = set()

    async def delete(
        self, receipt_handle: str, message_id: str | None = None, *, last: bool = False
    ) -> bool:
        """Resolve True once SQS confirmed the delete, False if it refused.

        `last`: the caller knows no other delete can join this batch before the linger
        ends (nothing else is being worked on), so waiting would only add latency.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((receipt_handle, message_id, future))
        if len(self._pending) >= 10 or last:
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
            # Keep a reference: the loop holds tasks only weakly.
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        if self._pending:
            self._timer = asyncio.get_running_loop().call_later(0, self._flush)

    async def _send(self, batch: list[_Entry]) -> None:
        pending = list(batch)  # entries not yet confirmed or refused
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts, pending
            attempts += 1
            entries = [{"Id": str(i), "ReceiptHandle": e[0]} for i, e in enumerate(pending)]
            response = await self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
            failed = {f["Id"]: f for f in response.get("Failed", [])}
            again: list[_Entry] = []
            for i, entry in enumerate(pending):
                _rh, message_id, future = entry
                failure = failed.get(str(i))
                if future.done():
                    continue
                if failure is None:
                    future.set_result(True)
                elif failure.get("SenderFault") or failure.get("Code") in _GONE_CODES:
                    self._refused(message_id, failure, attempts)
                    future.set_result(False)
                else:  # failed on SQS's side: send it again
                    again.append(entry)
            pending = again
            if again:
                raise RetryAgain(f"{len(again)} delete entries failed on SQS's side")

        try:
            await retry_transient(attempt, attempts=self.entry_attempts)
        except RetryAgain:
            for _rh, message_id, future in pending:
                if not future.done():
                    self._refused(message_id, {"Code": "InternalError"}, attempts)
                    future.set_result(False)
        except Exception as exc:
            for _rh, _mid, future in pending:
                if not future.done():
                    future.set_exception(exc)

    @staticmethod
    def _refused(message_id: str | None, failure: dict[str, Any], attempts: int) -> None:
        log.warning("delete refused by SQS", message_id=message_id, code=failure.get("Code"),
                    detail=failure.get("Message"), attempts=attempts,
                    then="it comes back and is skipped by its checkpoint")  # fmt: skip


class SqsSource:
    """Polls one queue and acknowledges according to each message's outcome."""

    def __init__(self, config: Config, pipeline: FilePipeline, sqs: Any, metrics: Metrics) -> None:
        if not config.queue_url:
            raise ValueError(
                "queue_url is required to poll SQS (--queue-url or TRAILPROC_QUEUE_URL)"
            )
        self.config = config
        self.queue_url = config.queue_url
        self.pipeline = pipeline
        self.processor = pipeline.processor
        self.sqs = sqs
        self.metrics = metrics
        self.runner = MessageRunner(config, pipeline)
        self.deleter = _DeleteBatcher(sqs, self.queue_url, linger=config.delete_linger_seconds)
        self.tasks: set[asyncio.Task[Any]] = set()
        self._held = 0  # messages received and not yet finished with (tasks hold them)
        # Of those: waiting for their delete, and (FIFO) waiting for their group's turn.
        # When they are all there is, no other delete can come before a receive, so the
        # pending deletes go out at once instead of after the batching linger.
        self._acking = 0
        self._queued_in_groups = 0
        # Set whenever a slot may have freed up: a task ended, a FIFO group gave one back,
        # or a message's work is done and only its delete is outstanding.
        self._slot_freed = asyncio.Event()
        # FIFO: the task working on each message group, so that a later receive's
        # messages of the group wait for it.
        self._groups: dict[str, asyncio.Task[Any]] = {}
        self._stopping = asyncio.Event()
        self._receive_sent = time.monotonic()  # when the last ReceiveMessage was sent
        self.ready = False  # the queue answered at least once (readiness probe)
        # Messages this process kept after a failure (message id → time it is due back).
        # With exit_when_idle they are "accounted for": the run may end while they wait.
        self.parked: dict[str, float] = {}
        self._idle_since: float | None = None
        self._unsettled = False  # exit_when_idle: `_settled` said no since the last messages
        self._settle_pause = 0.0  # exit_when_idle: seconds before asking again (grows)
        # exit_when_idle: the queue came back empty while our messages are in flight;
        # seconds before the next receive unless they are all done first (grows).
        self._empty_pause = 0.0

    # --- the loop ------------------------------------------------------------------------
    async def run(self, stopping: asyncio.Event) -> None:
        """Receive and process until `stopping` is set (or idle, with exit_when_idle)."""
        cfg = self.config
        # exit_when_idle only: receives are short polls while our own messages are in
        # flight or the last receive brought fewer messages than asked for (the queue
        # looks drained): on an empty queue a long poll would hold the exit up to
        # wait_time_seconds after the last message is done. When the queue looks
        # drained, the next receive first waits for one of our messages to finish; once
        # it came back empty, for all of them or a pause that starts at 0.1 s and
        # doubles while it stays empty (not one receive per finished message). The
        # exit itself still needs an empty receive, nothing in flight here and
        # `_settled` (the queue's own counts). Once `_settled` said no (messages held
        # elsewhere: another worker finishing its last files), it is asked again after
        # a pause that starts short and doubles up to a long poll of wait_time_seconds,
        # so the run ends soon after the others are done without polling hard if they
        # take long.
        draining = False
        self._stopping = stopping
        try:
            while not stopping.is_set():
                free = self._free_slots()
                if free <= 0:
                    await self._wait_for_a_slot(stopping, None)
                    continue
                quick = (cfg.exit_when_idle and not self._unsettled
                         and (draining or bool(self.tasks)))  # fmt: skip
                if quick and draining and self.tasks:
                    if self._empty_pause:
                        await self._wait_for_all_tasks(stopping, self._empty_pause)
                    else:
                        await self._wait_for_a_slot(stopping, max(1, cfg.wait_time_seconds))
                    if stopping.is_set():
                        break
                    free = self._free_slots()
                    if free <= 0:
                        continue
                wait: int | None = 0 if quick else None
                if self._unsettled and not self.tasks:
                    wait = await self._pause_before_settling(stopping)
                    if stopping.is_set():
                        break
                count = min(free, cfg.max_messages_per_receive)
                messages = await self._receive(count, stopping, wait=wait)
                if messages is None:  # stopping while waiting
                    break
                if not messages:
                    if cfg.exit_when_idle:
                        draining = True
                        if not self.tasks:
                            if await self._settled():
                                log.info("queue is empty and nothing is in flight; exiting")
                                break
                            self._settle_pause = _grown(self._settle_pause, cfg)
                            self._unsettled = True
                        else:
                            self._empty_pause = _grown(self._empty_pause, cfg)
                    continue
                self._empty_pause = self._settle_pause = 0.0
                self._idle_since = None
                self._unsettled = False
                draining = len(messages) < count
                # SQS's 12-hour visibility limit counts from the receive: from when the
                # request went out, to be on the safe side.
                received = self._receive_sent
                for message in messages:
                    self.parked.pop(str(message.get("MessageId")), None)
                for group, unit in _units(messages):
                    if group is None:
                        self._start(self._handle(unit[0], received), [1])
                    else:
                        # The group task gives each message's slot back as it finishes.
                        slots = [len(unit)]
                        self._start(self._handle_group(group, unit, received, slots), slots)
        finally:
            await self._drain()

    def _start(self, work: Coroutine[Any, Any, Any], slots: list[int]) -> None:
        """Run `work` as a task holding `slots[0]` in-flight slots; the task may give
        some back early (decrementing both `slots[0]` and `_held`), the rest are given
        back when it ends, even if it was cancelled before it started."""
        task = asyncio.create_task(work)
        self.tasks.add(task)
        self._held += slots[0]

        def done(task: asyncio.Task[Any]) -> None:
            self.tasks.discard(task)
            self._held -= slots[0]
            self._slot_freed.set()

        task.add_done_callback(done)

    def _free_slots(self) -> int:
        """How many more messages may be received now.

        A message whose work is done and whose delete is all that is outstanding holds
        no file and no handler, so it stops counting against `max_in_flight_messages`
        (up to as many again): otherwise the delete batching linger and round trip
        would keep the next files waiting, and the slots would refill in waves.
        """
        limit = self.config.max_in_flight_messages
        return limit - self._held + min(self._acking, limit)

    async def _wait_for_a_slot(self, stopping: asyncio.Event, timeout: float | None) -> None:
        """Until a slot may have freed up, `stopping` is set, or `timeout`."""
        self._slot_freed.clear()
        if self._free_slots() > 0 and timeout is None:
            return
        freed = asyncio.ensure_future(self._slot_freed.wait())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({freed, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            freed.cancel()
            stop.cancel()

    async def _wait_for_all_tasks(self, stopping: asyncio.Event, timeout: float) -> None:
        """Until every in-flight message is finished, `stopping` is set, or `timeout`."""
        deadline = time.monotonic() + timeout
        while self.tasks and not stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await self._wait_for_a_slot(stopping, left)

    async def _pause_before_settling(self, stopping: asyncio.Event) -> int:
        """exit_when_idle, the queue not settled: wait `_settle_pause`, and return the
        next receive's wait. Under a second, a pause and a short poll; from a second on,
        a long poll of that many seconds, which answers at once if a message comes."""
        if self._settle_pause >= 1:
            return int(self._settle_pause)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), self._settle_pause)
        return 0

    async def _settled(self) -> bool:
        """For exit_when_idle: is every message left on the queue one we parked?

        An empty receive alone is not enough: a message whose receive response was lost,
        whose delete failed, or that a crashed or busy worker held, is invisible for a
        while and then returns. Wait for those (bounded), but not for messages this
        process deliberately kept after a failure (they wait out their backoff or go to
        the DLQ).
        """
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        grace = 2 * self.config.visibility_timeout + self.config.wait_time_seconds + 10
        if now - self._idle_since > grace:
            log.warning("messages still invisible on the queue; exiting anyway",
                        waited=round(now - self._idle_since, 1))  # fmt: skip
            return True
        try:
            response = await retry_transient(
                lambda: self.sqs.get_queue_attributes(
                    QueueUrl=self.queue_url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                        "ApproximateNumberOfMessagesDelayed",
                    ],
                ),
                attempts=3,
            )
        except Exception as exc:
            log.info("queue attributes unavailable; polling again", error=repr(exc))
            return False
        attrs = response.get("Attributes", {})
        left = sum(
            int(attrs.get(name, 0))
            for name in (
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            )
        )
        # A parked message past its due time is visible again and no longer accounted
        # for: it is received again (and parked anew if it fails again), or it left the
        # queue without us (the queue's redrive policy moved it to its DLQ on that
        # receive, or someone deleted it). Counting it for ever would let it stand in
        # for a message that is invisible for another reason.
        now = time.monotonic()
        for message_id in [m for m, due in self.parked.items() if due <= now]:
            del self.parked[message_id]
        if left <= len(self.parked):
            return True
        log.debug("queue not settled", left=left, parked=len(self.parked))
        return False

    async def _receive(
        self, count: int, stopping: asyncio.Event, wait: int | None = None
    ) -> list[dict[str, Any]] | None:
        """One ReceiveMessage (long poll of wait_time_seconds unless `wait` is given)."""
        wait_seconds = self.config.wait_time_seconds if wait is None else wait
        info = ProgressInfo(True)
        token = self.pipeline.report_start(ProgressState.POLL, info)

        def receive() -> Any:
            self._receive_sent = time.monotonic()
            return self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=self.config.visibility_timeout,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )

        call = asyncio.ensure_future(retry_transient(receive, attempts=8, max_wait=20))
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
        """Let in-flight work finish up to shutdown_timeout, then stop it cleanly.

        Work still running near the end of the timeout is interrupted at its next batch
        boundary (the batch in the handler finishes and is committed), its messages are
        made visible again at once; whatever is still running at the timeout is
        cancelled and released the same way.
        """
        if not self.tasks:
            return
        timeout = self.config.shutdown_timeout
        log.info("finishing in-flight messages", count=len(self.tasks), timeout=timeout)
        grace = min(5.0, timeout * 0.25)
        _done, pending = await asyncio.wait(set(self.tasks), timeout=timeout - grace)
        if pending:
            log.info("shutdown timeout near: stopping files at the next batch",
                     count=len(pending))  # fmt: skip
            self.pipeline.interrupt()
            _done, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # --- one FIFO message group -----------------------------------------------------------
    async def _handle_group(
        self, group: str, messages: list[dict[str, Any]], received: float, slots: list[int]
    ) -> bool:
        """A FIFO group's messages of one receive, one after the other, in order.

        True if every one of them is finished with (done, or moved to the DLQ): only
        then may the group's next messages go on. A message that stays on the queue
        holds back the rest, which are made visible again at once (SQS hands them out
        after it). Messages waiting for their turn get heartbeats too, so none becomes
        visible to another consumer meanwhile.
        """
        previous = self._groups.get(group)
        me = asyncio.current_task()
        assert me is not None
        self._groups[group] = me
        heartbeats = {id(m): asyncio.create_task(self._heartbeat(m, received)) for m in messages}
        pending = list(messages)
        go_on = True
        self._queued_in_groups += len(pending)
        try:
            if previous is not None:
                # The group's earlier messages (an earlier receive) are still in hand.
                await asyncio.wait({previous})
                go_on = (not previous.cancelled() and previous.exception() is None
                         and previous.result() is True)  # fmt: skip
            before = None
            while pending and go_on and not self._stopping.is_set():
                message = pending.pop(0)
                self._queued_in_groups -= 1
                before = str(message.get("MessageId"))
                try:
                    go_on = await self._handle(message, received, heartbeats[id(message)])
                finally:
                    slots[0] -= 1
                    self._held -= 1
                    self._slot_freed.set()
            if pending:
                await self._hold_back(group, pending, heartbeats, before)
            return go_on and not pending
        except asyncio.CancelledError:
            await asyncio.shield(self._hold_back(group, pending, heartbeats, None))
            raise
        finally:
            self._queued_in_groups -= len(pending)
            for heartbeat in heartbeats.values():
                await _stop(heartbeat)
            if self._groups.get(group) is me:
                del self._groups[group]

    async def _hold_back(
        self,
        group: str,
        messages: list[dict[str, Any]],
        heartbeats: dict[int, asyncio.Task[None]],
        behind: str | None,
    ) -> None:
        """Leave messages of a FIFO group unprocessed: visible again now, so that SQS hands
        them out again after the group's earlier message still on the queue. Waiting
        behind a message parked after a failure, they are accounted for like it."""
        if not messages:
            return
        due = self.parked.get(behind) if behind is not None else None
        log.info("message group held back: later messages not started", group=group,
                 behind=behind, message_ids=[m.get("MessageId") for m in messages])  # fmt: skip
        for message in messages:
            await _stop(heartbeats[id(message)])
            self.metrics.messages_kept.labels("held_back").inc()
            if due is not None:
                self.parked[str(message.get("MessageId"))] = due
            await self._set_visibility(message, 0)

    # --- one message ---------------------------------------------------------------------
    async def _handle(
        self,
        message: dict[str, Any],
        received: float,
        heartbeat: asyncio.Task[None] | None = None,
    ) -> bool:
        """Work on one message and acknowledge it. True if it is finished with (done, or
        deleted or moved to the DLQ after a failure); False if it stays on the queue."""
        self.metrics.in_flight_messages.inc()
        try:
            return await self._handle_inner(message, received, heartbeat)
        except asyncio.CancelledError:
            # Shutdown timed out while this message was being worked on: make it visible
            # again now; its checkpoints say where the next receiver resumes.
            await asyncio.shield(self._set_visibility(message, 0))
            raise
        except Exception as exc:  # a bug must not kill the daemon or lose the message
            self.pipeline.fail(InternalError.of(exc, message_id=message.get("MessageId")))
            # Kept like any failure: backoff, then the DLQ, instead of returning every
            # visibility timeout forever.
            try:
                return await self._keep(message, _receive_count(message), "error", received)
            except Exception as keep_exc:  # the visibility timeout brings it back anyway
                log.warning("could not keep the failed message", error=repr(keep_exc),
                            message_id=message.get("MessageId"))  # fmt: skip
                return False
        finally:
            if heartbeat is not None:
                await _stop(heartbeat)
            self.metrics.in_flight_messages.dec()

    async def _handle_inner(
        self, message: dict[str, Any], received: float, heartbeat: asyncio.Task[None] | None
    ) -> bool:
        message_id = message.get("MessageId")
        attributes: dict[str, str] = message.get("Attributes", {})
        receive_count = _receive_count(message)
        sent_at = int(attributes.get("SentTimestamp", "0")) / 1000 or None
        if sent_at:
            self.metrics.queue_lag.observe(max(0.0, time.time() - sent_at))

        note = self.runner.parse(message.get("Body", ""), message_id)
        if isinstance(note, TrailprocError):
            if heartbeat is not None:
                await _stop(heartbeat)
            return await self._keep(message, receive_count, note.reason, received)
        if heartbeat is None:
            heartbeat = asyncio.create_task(self._heartbeat(message, received))
        try:
            verdict = await self.runner.run(
                note, message_id=message_id, receive_count=receive_count, sent_at=sent_at,
                attributes=attributes,
            )  # fmt: skip
        finally:
            await _stop(heartbeat)
        if verdict.action == "ack":
            # Finished with even if the delete fails: the message comes back, and is
            # skipped by its checkpoint.
            await self._delete(message, verdict.reason)
            return True
        if verdict.action == "release":
            # Shutdown: progress is committed; let the next receiver start right away.
            self.metrics.messages_kept.labels(verdict.reason).inc()
            await self._set_visibility(message, 0)
            return False
        if verdict.reason == "failed" and self.config.delete_on_failure:
            log.warning("deleting failed message (delete_on_failure is set)", message_id=message_id)
            await self._delete(message, "failed_deleted")
            return True
        return await self._keep(message, receive_count, verdict.reason, received)

    # --- acknowledging -------------------------------------------------------------------
    async def _delete(self, message: dict[str, Any], reason: str) -> None:
        info = ProgressInfo(True, message.get("MessageId"))
        token = self.pipeline.report_start(ProgressState.DELETE, info)
        self._acking += 1
        self._slot_freed.set()
        try:
            last = self._acking + self._queued_in_groups >= self._held
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
            self._acking -= 1
        self.pipeline.report_end(
            ProgressState.DELETE, ProgressInfo(deleted, info.message_id), token
        )
        if deleted:
            self.metrics.messages_deleted.labels(reason).inc()

    async def _keep(
        self, message: dict[str, Any], receive_count: int, reason: str, received: float
    ) -> bool:
        """Leave a message on the queue, hidden for a backoff that grows per receive.

        `failed` (and refused/bad messages) back off `failure_visibility_base * 2^(n-1)`
        up to `failure_visibility_max`, and after `max_receive_count` receives go to
        `dlq_url` when one is configured (otherwise the queue's redrive policy decides).
        `busy` is not a failure: the file is being worked on elsewhere, so the message
        returns after a short wait and never goes to the DLQ because of it.
        Every wait ends within SQS's 12 hours from the receive (`received`), which SQS
        would otherwise refuse. Returns True if the message was moved to the DLQ instead
        (it left this queue).
        """
        self.metrics.messages_kept.labels(reason).inc()
        cfg = self.config
        message_id = str(message.get("MessageId"))
        left = max(0, _visibility_left(received))
        if reason == "busy":
            soon = max(1, min(cfg.visibility_timeout // 2, 30))
            await self._set_visibility(message, min(left, soon))
            return False
        poison = bool(cfg.max_receive_count and receive_count >= cfg.max_receive_count)
        if cfg.dlq_url and poison and await self._move_to_dlq(message, reason):
            return True
        backoff = min(
            cfg.failure_visibility_max,
            cfg.failure_visibility_base * 2 ** min(max(0, receive_count - 1), 20),
            left,
        )
        self.parked[message_id] = time.monotonic() + backoff
        log.info("message kept for retry", message_id=message_id, reason=reason,
                 receive_count=receive_count, visible_in=backoff)  # fmt: skip
        await self._set_visibility(message, backoff)
        return False

    async def _move_to_dlq(self, message: dict[str, Any], reason: str) -> bool:
        """Copy to `dlq_url`, then delete here. A lost send response may leave two
        copies in the DLQ; never zero. Returns False if the message stays here.

        A FIFO DLQ needs a message group: the message's own (or "trailproc"), and the
        source message id as deduplication id, so that a send repeated after a lost
        response is dropped by SQS (within its 5-minute deduplication window)."""
        dlq_url = self.config.dlq_url
        assert dlq_url
        fifo: dict[str, str] = {}
        if dlq_url.endswith(".fifo"):
            fifo = {"MessageGroupId": _group_id(message) or "trailproc",
                    "MessageDeduplicationId": str(message.get("MessageId"))[:128]}  # fmt: skip
        try:
            await retry_transient(
                lambda: self.sqs.send_message(
                    QueueUrl=dlq_url,
                    MessageBody=message.get("Body", ""),
                    MessageAttributes={
                        "trailproc-reason": {"DataType": "String", "StringValue": reason},
                        "trailproc-source-message-id": {
                            "DataType": "String",
                            "StringValue": str(message.get("MessageId")),
                        },
                    },
                    **fifo,
                )
            )
        except Exception as exc:
            log.error("could not move message to DLQ; it stays on the queue",
                      message_id=message.get("MessageId"), error=repr(exc))  # fmt: skip
            return False
        log.warning("moved message to DLQ", message_id=message.get("MessageId"), reason=reason,
                    dlq_url=self.config.dlq_url)  # fmt: skip
        await self._delete(message, "moved_to_dlq")
        return True

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
                     code=error_code(exc) or repr(exc))  # fmt: skip
            return False

    async def _heartbeat(self, message: dict[str, Any], received: float) -> None:
        """Extend visibility at half the timeout until the message's work ends.

        A transient failure is retried soon (not half a timeout later, when the message
        may already be visible to others), a permanent one (AccessDenied) at the usual
        interval; an invalid receipt handle (the message was
        deleted, or received again elsewhere) ends the heartbeat; so does SQS's 12-hour
        cap on a message's total visibility, counted from `received` (monotonic time of
        the receive request).
        """
        timeout = self.config.visibility_timeout
        if timeout <= 1:
            return
        interval = timeout / 2
        delay = interval
        while True:
            await asyncio.sleep(delay)
            remaining = _visibility_left(received)
            if remaining < 1:
                log.warning("visibility extension cap reached", message_id=message.get("MessageId"))
                return
            try:
                await self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=min(timeout, remaining),
                )
                self.metrics.visibility_extensions.inc()
                delay = interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if error_code(exc) in _GONE_CODES:
                    log.warning("receipt handle no longer valid; heartbeat stops",
                                message_id=message.get("MessageId"))  # fmt: skip
                    return
                if is_transient(exc):
                    log.warning("heartbeat failed; will retry", message_id=message.get("MessageId"),
                                error=repr(exc))  # fmt: skip
                    delay = min(1.0, interval / 4)
                else:
                    # Permanent (e.g. AccessDenied): retrying within a second would only
                    # repeat the warning; try again at the usual interval.
                    log.warning("heartbeat refused; visibility is not being extended",
                                message_id=message.get("MessageId"),
                                code=error_code(exc) or repr(exc))  # fmt: skip
                    delay = interval
