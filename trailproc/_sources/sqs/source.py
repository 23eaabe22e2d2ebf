"""The SQS source: receive, run each message's files through the pipeline, acknowledge.

The parts, one job each: `receive` (one ReceiveMessage), `idle` (when exit_when_idle
ends the run, and how to poll meanwhile), `slots` (in-flight accounting), `fifo`
(message groups in order), `acks` (delete, keep, DLQ), `deletes` (batched deletes) and
`visibility` (heartbeats and backoffs). This module wires them into the receive loop.

With `verify_digests`, digest objects named by notifications are no longer skipped: they
go to the pipeline's digest check (never to user code, `filter_source` included), and a
digest whose listed files mismatch is still deleted once the result is recorded: a
mismatch is an integrity finding reported through `on_error`, not a processing failure
that retrying could cure.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..._config import Config
from ..._errors import InternalError, TrailprocError
from ..._observe import get_logger
from ..._pipeline.engine import FilePipeline
from ..._ports.clock import Clock, SystemClock, first_of
from ..._ports.queue import AwsQueue, QueuePort
from ..messages import MessageRunner, Verdict
from .acks import AckPolicy, receive_count
from .ahead import ReceiveAhead
from .deletes import DeleteBatcher
from .fifo import GroupRunner, units
from .idle import IdleExit, QueueSettled, ReceivePlan
from .receive import Receiver
from .slots import InFlight
from .visibility import VisibilityKeeper, stop

__all__ = ["SqsSource"]

log = get_logger("trailproc.sqs")

# Seconds cancelled work gets, at the shutdown deadline, to release its files and make
# its messages visible again.
_CANCEL_WAIT = 1.5


class SqsSource:
    """Polls one queue and acknowledges according to each message's outcome.

    `queue`, `dlq` and `clock` default to the AWS queues behind `sqs` and the system
    clock; tests may pass the in-memory ones instead. Everything it reports goes through
    the pipeline's observer; its own counts (receives, deletes, visibility) are kept on
    `observer.metrics`, once per message or receive, never per record.
    """

    def __init__(
        self,
        config: Config,
        pipeline: FilePipeline,
        sqs: Any,
        *,
        queue: QueuePort | None = None,
        dlq: QueuePort | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not config.queue_url:
            raise ValueError(
                "queue_url is required to poll SQS (--queue-url or TRAILPROC_QUEUE_URL)"
            )
        self.config = config
        self.queue_url = config.queue_url
        self.pipeline = pipeline
        self.processor = pipeline.processor
        self.sqs = sqs
        self.metrics = metrics = pipeline.observer.metrics
        self.clock = clock = clock or SystemClock()
        self.queue = queue = queue or AwsQueue(sqs, config.queue_url)
        if dlq is None and config.dlq_url:
            dlq = AwsQueue(sqs, config.dlq_url)
        self.runner = MessageRunner(config, pipeline)
        self.in_flight = InFlight(config.max_in_flight_messages, clock)
        self.deleter = DeleteBatcher(queue, linger=config.delete_linger_seconds, clock=clock)
        self.keeper = VisibilityKeeper(queue, clock, config.visibility_timeout, metrics)
        self.acks = AckPolicy(config, observer=pipeline.observer, deleter=self.deleter,
                              keeper=self.keeper, dlq=dlq, in_flight=self.in_flight,
                              clock=clock, metrics=metrics)  # fmt: skip
        self._stopping = asyncio.Event()
        # Messages whose work ignored cancellation at the shutdown deadline (user code
        # catching CancelledError): left behind, never waited for.
        self.left_running = 0
        self._working: dict[int, dict[str, Any]] = {}  # messages in `_handle`, by id()
        self.groups = GroupRunner(self._handle, in_flight=self.in_flight, keeper=self.keeper,
                                  parked=self.acks.parked, metrics=metrics,
                                  stopping=self._stopping_is_set)  # fmt: skip
        self.receiver = Receiver(queue, clock, wait_time_seconds=config.wait_time_seconds,
                                 visibility_timeout=config.visibility_timeout,
                                 observer=pipeline.observer, metrics=metrics)  # fmt: skip
        self.idle = IdleExit(config.exit_when_idle, config.wait_time_seconds)
        batch = config.max_messages_per_receive
        # As many receives at once as half batches fit in the in-flight limit (16: 3).
        at_once = max(1, config.max_in_flight_messages // max(1, batch // 2))
        self.ahead = ReceiveAhead(self.receiver, self.in_flight, clock, limit=at_once,
                                  batch=batch)  # fmt: skip
        grace = 2 * config.visibility_timeout + config.wait_time_seconds + 10
        self.settled = QueueSettled(queue, clock, self.acks.parked, grace)

    @property
    def tasks(self) -> set[asyncio.Task[Any]]:
        return self.in_flight.tasks

    @property
    def ready(self) -> bool:
        """The queue answered at least once (readiness probe)."""
        return self.receiver.ready

    @property
    def parked(self) -> dict[str, float]:
        return self.acks.parked

    def _stopping_is_set(self) -> bool:
        return self._stopping.is_set()

    # --- the loop ------------------------------------------------------------------------
    async def run(self, stopping: asyncio.Event) -> None:
        """Receive and process until `stopping` is set (or idle, with exit_when_idle)."""
        self._stopping = stopping
        try:
            while not stopping.is_set():
                if await self._turn(stopping):
                    break
        finally:
            # Receives still out come back at once on `stopping`, their messages started
            # and drained like the others; after an error they are not waited for.
            if not stopping.is_set():
                for task in self.ahead.tasks:
                    task.cancel()
            await asyncio.gather(*self.ahead.tasks, return_exceptions=True)
            await self._drain()

    async def _turn(self, stopping: asyncio.Event) -> bool:
        """One turn of the loop: wait as the idle policy says, receive, start the work.
        True when the loop should end."""
        self.ahead.raise_failure()
        room = self.ahead.room()
        if room <= 0:
            await self.ahead.wait_for_change(stopping)
            return False
        plan = self.idle.plan(in_flight=bool(self.tasks))
        count = min(room, self.config.max_messages_per_receive)
        if self.ahead.can_start(count, plan.wait_for == "nothing" and not plan.pause):
            self.ahead.start(count, stopping, plan.receive_wait, self._landed)
            return False
        if self.ahead.should_wait():
            if self.ahead.busy:
                await self.ahead.wait_for_change(stopping)
            else:  # back to one receive at a time, after the last ones' results
                await self.ahead.settle()
            return False
        return await self._receive_in_turn(stopping, plan)

    async def _receive_in_turn(self, stopping: asyncio.Event, plan: ReceivePlan) -> bool:
        """One receive, waited for, with the idle policy's waits before it."""
        if plan.wait_for != "nothing":
            if plan.wait_for == "all":
                await self.in_flight.wait_for_all(stopping, plan.timeout)
            else:
                await self.in_flight.wait_for_a_slot(stopping, plan.timeout)
            if stopping.is_set() or self.in_flight.free() <= 0:
                return stopping.is_set()
        if plan.pause:
            await first_of(self.clock, plan.pause, stopping.wait())
            if stopping.is_set():
                return True
        count = min(self.in_flight.free(), self.config.max_messages_per_receive)
        messages = await self.receiver.receive(count, stopping, wait=plan.receive_wait)
        if messages is None:  # stopping while waiting
            return True
        self.ahead.busy = self.ahead.full(len(messages), count)
        if not messages:
            if await self.idle.empty(bool(self.tasks), self.settled):
                log.info("queue is empty and nothing is in flight; exiting")
                return True
            return False
        self._landed(messages, count, self.receiver.sent)
        return False

    def _landed(self, messages: list[dict[str, Any]], count: int, received: float) -> None:
        self.idle.received(len(messages), count)
        self.settled.busy()
        self._start(messages, received)

    def _start(self, messages: list[dict[str, Any]], received: float) -> None:
        for message in messages:
            self.parked.pop(str(message.get("MessageId")), None)
        for group, unit in units(messages):
            if group is None:
                self.in_flight.start(self._handle(unit[0], received), [1])
            else:
                # The group task gives each message's slot back as it finishes.
                slots = [len(unit)]
                self.in_flight.start(self.groups.run(group, unit, received, slots), slots)

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
            left = list(self._working.values())
            log.error("work ignored cancellation at shutdown; leaving it behind, its "
                      "messages made visible again", count=len(stuck),
                      message_ids=[m.get("MessageId") for m in left])  # fmt: skip
            await asyncio.gather(*(self.keeper.hide(m, 0) for m in left),
                                 return_exceptions=True)  # fmt: skip

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
        self._working[id(message)] = message
        try:
            return await self._work(message, received, heartbeat)
        except asyncio.CancelledError:
            # Shutdown timed out while this message was being worked on: make it visible
            # again now; its checkpoints say where the next receiver resumes.
            await asyncio.shield(self.keeper.hide(message, 0))
            raise
        except Exception as exc:  # a bug must not kill the daemon or lose the message
            self.pipeline.observer.fail(InternalError.of(exc, message_id=message.get("MessageId")))
            # Kept like any failure: backoff, then the DLQ, instead of returning every
            # visibility timeout forever.
            try:
                return await self.acks.keep(message, "error", received)
            except Exception as keep_exc:  # the visibility timeout brings it back anyway
                log.warning("could not keep the failed message", error=repr(keep_exc),
                            message_id=message.get("MessageId"))  # fmt: skip
                return False
        finally:
            self._working.pop(id(message), None)
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
