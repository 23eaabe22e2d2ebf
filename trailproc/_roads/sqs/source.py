"""The SQS source: receive, run each message's files through the pipeline, acknowledge.

The parts, one job each: `receive` (one ReceiveMessage), `idle` (when exit_when_idle
ends the run, and how to poll meanwhile), `slots` (in-flight accounting), `fifo`
(message groups in order), `acks` (delete, keep, DLQ), `deletes` (batched deletes),
`visibility` (heartbeats and backoffs), `worker` (one message) and `drain` (the stop).
This module wires them into the receive loop.

With `verify_digests`, digest objects named by notifications are no longer skipped: they
go to the pipeline's digest check (never to user code, `filter_source` included), and a
digest whose listed files mismatch is still deleted once the result is recorded: a
mismatch is an integrity finding reported through `on_error`, not a processing failure
that retrying could cure.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..._config import Config
from ..._observe import get_logger
from ..._pipeline.engine import FilePipeline
from ..._ports.clock import Clock, SystemClock, first_of
from ..._ports.queue import AwsQueue, QueuePort
from ..messages import MessageRunner
from .acks import AckPolicy
from .ahead import ReceiveAhead
from .deletes import DeleteBatcher
from .drain import Drain
from .fifo import GroupRunner, units
from .idle import IdleExit, QueueSettled, ReceivePlan
from .receive import Receiver
from .slots import InFlight
from .visibility import VisibilityKeeper
from .worker import MessageWorker

__all__ = ["SqsSource"]

log = get_logger("trailproc.sqs")


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
        in_flight = config.limits().max_in_flight_messages  # set, or from the memory budget
        self.in_flight = InFlight(in_flight, clock)
        self.deleter = DeleteBatcher(queue, linger=config.delete_linger_seconds, clock=clock)
        self.keeper = VisibilityKeeper(queue, clock, config.visibility_timeout, metrics)
        self.acks = AckPolicy(config, observer=pipeline.observer, deleter=self.deleter,
                              keeper=self.keeper, dlq=dlq, in_flight=self.in_flight,
                              clock=clock, metrics=metrics)  # fmt: skip
        self._stopping = asyncio.Event()
        self.drain = Drain(pipeline, self.keeper, config.shutdown_timeout)
        self.worker = MessageWorker(self.runner, self.acks, self.keeper, self.drain,
                                    pipeline.observer)  # fmt: skip
        self._handle = self.worker.handle
        self.groups = GroupRunner(self._handle, in_flight=self.in_flight, keeper=self.keeper,
                                  parked=self.acks.parked, metrics=metrics,
                                  stopping=self._stopping_is_set)  # fmt: skip
        self.receiver = Receiver(queue, clock, wait_time_seconds=config.wait_time_seconds,
                                 visibility_timeout=config.visibility_timeout,
                                 observer=pipeline.observer, metrics=metrics)  # fmt: skip
        self.idle = IdleExit(config.exit_when_idle, config.wait_time_seconds)
        batch = config.max_messages_per_receive
        # As many receives at once as half batches fit in the in-flight limit (16: 3).
        at_once = max(1, in_flight // max(1, batch // 2))
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

    @property
    def left_running(self) -> int:
        """Messages whose work ignored cancellation at the shutdown deadline."""
        return self.drain.left_running

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
            await self.drain.run(self.tasks)

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
