"""The Lambda source: one invocation's event → files through the pipeline → Lambda's answer.

Triggers and what Lambda is told:

* **SQS** (event source mapping with ``ReportBatchItemFailures``): every message is
  processed and the partial batch response names exactly the failed ones,
  ``{"batchItemFailures": [{"itemIdentifier": messageId}, ...]}``; Lambda deletes the rest.
  FIFO queues (ARN ending ``.fifo``) are processed in order and stop at the first failure:
  it and every later record are reported (``fifo_mode="batch"``), or only the later
  records of its message group (``fifo_mode="group"``), so ordering within a group holds.
  With ``delete_on_failure`` a message whose files failed is not reported (as the daemon
  deletes it); an unreadable body still is.
* **SNS**, **S3** and **EventBridge** (S3 "Object Created", or CloudTrail records routed
  as "AWS API Call via CloudTrail", handed over inline): everything is processed and the
  invocation raises `InvocationFailed` if anything failed, so Lambda retries the event;
  its message names each failed notification and why.
* **CloudWatch Logs** subscription (``{"awslogs": {"data": base64(gzip(payload))}}``):
  the records of the payload are handed over unchanged; the invocation raises
  `InvocationFailed` if the payload is bad, refused or failed (Lambda retries, then its
  on-failure destination keeps it). ``CONTROL_MESSAGE`` payloads are acknowledged.
* **Kinesis Data Streams** (each record's data is a CloudWatch Logs payload): records
  of a shard are handed over in order; the partial batch response names by sequence
  number each record that failed and every later record of its shard, which is not
  started, so Lambda retries from the first failure and nothing overtakes it.
* **Firehose data transformation**: every record is answered by `recordId` with
  ``Ok`` (handed over, or filtered), ``Dropped`` (a control message) or
  ``ProcessingFailed`` (a bad or refused payload: Firehose writes it to the stream's
  error output), and the original ``data`` unchanged, so the stream delivers what it
  received. If a record failed for another reason (handler, checkpoint store, deadline)
  the invocation raises instead, so Firehose retries it; records done already are not
  handed over again.
* Payloads carried by the last three are *records in messages*: refused unless
  ``accept_records_in_messages`` is set, and subject to ``allowed_accounts``,
  ``allowed_log_groups`` and ``allowed_log_streams`` (see docs/security.md).
* Anything else is taken as a notification itself; another service's event (DynamoDB
  Streams, Kafka...) or one that is not a JSON object raises `BadNotification`.

The deadline is watched through ``context.get_remaining_time_in_millis()``: below the
*safety margin* no new message is started (unstarted ones are reported as failures, or
make the invocation raise), and below the *abort margin* work still running is cancelled
and reported, so the function answers instead of timing out with the whole batch. A
batch cancelled in the handler is not committed (it is handed over again on the retry);
user code that swallows its cancellation is left behind, not waited for.

State that survives warm invocations: the event loop, the aioboto3 clients bound to it,
the checkpoint store (in-memory by default; ``dynamodb://TABLE`` makes retries idempotent
across sandboxes), the pipeline and the user's processor (started once).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import os
import tempfile
import time
import weakref
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import structlog

from .._config import Config
from .._errors import InternalError, TrailprocError
from .._observe import Metrics, get_logger
from .._pipeline.engine import FilePipeline
from .._pipeline.notifications import (
    BadNotification,
)
from .._pipeline.processor import EventProcessor
from .acking import Acknowledger, InOrder
from .messages import MessageRunner, Verdict
from .subscriptions import DocumentResult, SubscriptionRunner

__all__ = ["InvocationFailed", "LambdaOptions", "LambdaRuntime", "trigger_of"]

log = get_logger("trailproc.lambda")

T = TypeVar("T")

FifoMode = Literal["batch", "group"]


class InvocationFailed(Exception):
    """Raised for SNS/S3/EventBridge triggers when anything failed, so Lambda retries."""

    def __init__(self, message: str, failed: Sequence[str]) -> None:
        super().__init__(message)
        self.failed = list(failed)


@dataclass(frozen=True)
class LambdaOptions:
    """How the handler treats deadlines, FIFO queues and concurrency."""

    # Stop starting new messages when fewer seconds than this remain. None: 10% of the
    # time remaining when the invocation starts, at most 10 s.
    safety_margin: float | None = None
    # Cancel work still running when fewer seconds remain. None: a third of the safety
    # margin. Cancelled messages are reported failed; their checkpoints say where to resume.
    abort_margin: float | None = None
    fifo_mode: FifoMode = "batch"
    # Messages of a standard queue (or SNS records) worked on at once. None: the config's
    # max_in_flight_messages (set, or from the memory budget).
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if self.fifo_mode not in ("batch", "group"):
            raise ValueError(f"fifo_mode must be 'batch' or 'group', not {self.fifo_mode!r}")
        for name in ("safety_margin", "abort_margin"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value!r}")


class _Deadline:
    def __init__(self, context: Any, options: LambdaOptions) -> None:
        self._get = getattr(context, "get_remaining_time_in_millis", None)
        first = self.remaining()
        if options.safety_margin is not None:
            self.safety = options.safety_margin
        else:
            self.safety = min(10.0, 0.1 * first) if first is not None else 0.0
        self.abort = options.abort_margin if options.abort_margin is not None else self.safety / 3

    def remaining(self) -> float | None:
        if self._get is None:
            return None
        return float(self._get()) / 1000.0

    def may_start(self) -> bool:
        left = self.remaining()
        return left is None or left > self.safety

    def until_abort(self) -> float | None:
        left = self.remaining()
        return None if left is None else max(0.0, left - self.abort)


async def _settle_cancelled(tasks: set[asyncio.Task[Any]], clock: _Deadline) -> None:
    """Give cancelled work a moment to release its files, but not the invocation's last
    second: user code that swallows its cancellation is left behind (reported aborted),
    so the function still answers before its timeout."""
    left = clock.remaining()
    timeout = None if left is None else max(0.0, left - _ANSWER_RESERVE)
    _done, stuck = await asyncio.wait(tasks, timeout=timeout)
    if stuck:
        log.error("work ignored cancellation at the deadline; answering without it",
                  messages=len(stuck))  # fmt: skip


_ANSWER_RESERVE = 0.3  # seconds kept to build and return the answer

_RECORD_SOURCES = {"aws:sqs": "sqs", "aws:sns": "sns", "aws:s3": "s3", "aws:kinesis": "kinesis"}


def trigger_of(event: Any) -> str:
    """'sqs', 'sns', 's3', 'kinesis', 'cloudwatch_logs', 'firehose', 'eventbridge' or
    'direct' (a notification payload itself)."""
    if not isinstance(event, Mapping):
        raise BadNotification(f"Lambda event is a {type(event).__name__}, not a JSON object")
    if isinstance(event.get("awslogs"), Mapping):
        return "cloudwatch_logs"
    if "deliveryStreamArn" in event and isinstance(event.get("records"), list):
        return "firehose"
    records = event.get("Records")
    source: Any = event.get("eventSource")  # Kafka and Amazon MQ events name it here
    if isinstance(records, list) and records and isinstance(records[0], Mapping):
        source = records[0].get("eventSource") or records[0].get("EventSource")
        if source in _RECORD_SOURCES:
            return _RECORD_SOURCES[source]
    if isinstance(source, str) and source.startswith("aws:"):
        # Another service's Lambda event (Kinesis, DynamoDB Streams, Kafka, MQ...): the
        # function is wired to the wrong trigger. (A CloudTrail record's eventSource is
        # "<service>.amazonaws.com", never "aws:...".)
        raise BadNotification(
            f"Lambda event from {source} is not supported; trailproc takes SQS, SNS, S3, "
            "EventBridge, CloudWatch Logs, Kinesis and Firehose trigger events (or a "
            "notification itself)"
        )
    if "detail-type" in event:
        return "eventbridge"
    return "direct"


@dataclass
class _Unit:
    """One message (SQS record, SNS record, or the whole event) and its outcome."""

    ident: str
    status: str = "unstarted"  # → ok | failed | aborted
    group: str | None = None
    record: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None  # why it failed, for the error Lambda records
    result: DocumentResult | None = None  # for units holding a CloudWatch Logs payload

    def describe(self) -> str:
        why = f": {self.error}" if self.error else ""
        return f"{self.ident} ({self.status}{why})"


def _why(error: TrailprocError) -> str:
    """An error's message and object (the message id is named beside it already)."""
    return f"{error.message} ({error.location})" if error.location else error.message


def _verdict_error(verdict: Verdict) -> str | None:
    """What made a message fail: its first file's error, or the verdict's reason."""
    if verdict.action == "ack":
        return None
    for outcome in verdict.outcomes:
        if outcome.error is not None:
            return _why(outcome.error)
    return verdict.reason


class LambdaAcks(Acknowledger[_Unit]):
    """The shared acknowledgement rules for an SQS event source mapping: Lambda deletes
    every message of the batch that the answer does not name in `batchItemFailures`, and
    makes the named ones visible again (after the queue's visibility timeout)."""

    def message_id(self, message: _Unit) -> str | None:
        return message.ident

    async def delete(self, message: _Unit, reason: str) -> None:
        """Not named in the answer: Lambda deletes it."""

    async def release(self, message: _Unit, reason: str) -> None:
        """Named in the answer: Lambda leaves it on the queue."""

    async def keep(self, message: _Unit, reason: str, received: float) -> bool:
        return False  # named in the answer: Lambda leaves it on the queue

    @staticmethod
    def answer(failed: Sequence[_Unit]) -> dict[str, Any]:
        """The partial batch response naming each message not finished with."""
        return {"batchItemFailures": [{"itemIdentifier": u.ident} for u in failed]}


def _lambda_owner() -> str:
    # The log stream names the execution environment: unique per sandbox, stable across
    # its warm invocations (so a retry landing here resumes its own lease).
    stream = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
    if stream:
        return f"lambda:{stream}"
    # Not set with SnapStart, whose environments are all restored from one snapshot of
    # the init phase: same host name, same pid. Called on the first invocation (after
    # the restore), a fresh random part tells them apart.
    import socket
    import uuid

    return f"lambda:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class LambdaRuntime:
    """A Lambda handler (callable as ``runtime(event, context)``) with warm-start state."""

    def __init__(
        self,
        processor: EventProcessor,
        config: Config,
        options: LambdaOptions | None = None,
    ) -> None:
        if (
            config.checkpoint
            and config.checkpoint.strip().lower().startswith("sqlite")
            and ("TRAILPROC_STATE_DIR" not in os.environ and config.state_dir == ".trailproc")
        ):
            # The deployment package is read-only in Lambda; /tmp is the writable place.
            config = config.replace(state_dir=os.path.join(tempfile.gettempdir(), "trailproc"))
        self.processor = processor
        self.config = config
        self.options = options or LambdaOptions()
        self.metrics = Metrics()
        self.invocations = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parts: contextlib.AsyncExitStack | None = None
        self._pipeline: FilePipeline | None = None
        self._message_runner: MessageRunner | None = None
        self._subscription_runner: SubscriptionRunner | None = None
        self._acks = LambdaAcks(delete_on_failure=config.delete_on_failure)

    # --- the synchronous face ----------------------------------------------------------
    def __call__(self, event: Any, context: Any = None) -> dict[str, Any]:
        request_id = getattr(context, "aws_request_id", None)
        with structlog.contextvars.bound_contextvars(aws_request_id=request_id):
            return self._run(self.handle(event, context))

    def _run(self, coro: Awaitable[T]) -> T:
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        loop = self._loop
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return loop.run_until_complete(coro)
        # Called from inside a running loop (a framework, a test): our loop cannot nest
        # there, so it runs in a helper thread; its clients stay bound to it either way.
        from concurrent.futures import ThreadPoolExecutor

        ctx = contextvars.copy_context()
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(ctx.run, loop.run_until_complete, coro).result()

    def close(self) -> None:
        """Close the processor, store and clients, and the loop (tests, or a shutdown hook)."""
        if self._loop is None or self._loop.is_closed():
            return
        self._run(self._aclose())
        self._loop.close()
        self._loop = None

    async def _aclose(self) -> None:
        parts, self._parts = self._parts, None
        self._pipeline = None
        if parts is not None:
            await parts.aclose()  # pipeline, processor, clients, store

    # --- cold start ----------------------------------------------------------------------
    async def _ensure_started(self) -> FilePipeline:
        if self._pipeline is not None:
            return self._pipeline
        from .._runtime import StoreOptions, open_runtime

        started = time.monotonic()
        if not self.config.worker_id:  # here, not at init: see _lambda_owner
            self.config = self.config.replace(worker_id=_lambda_owner())
        parts = contextlib.AsyncExitStack()
        runtime = await parts.enter_async_context(open_runtime(
            self.config, self.processor, metrics=self.metrics, objects="s3-threaded",
            store=StoreOptions(default="memory"), built=True,
        ))  # fmt: skip
        self._parts, self._pipeline = parts, runtime.pipeline
        self.config = runtime.config  # its in-flight limits resolved from the memory budget
        _close_at_exit(self)
        log.info("cold start", checkpoint=self.config.checkpoint or "memory",
                 owner=self._pipeline.owner,
                 seconds=round(time.monotonic() - started, 3))  # fmt: skip
        return self._pipeline

    # --- one invocation ------------------------------------------------------------------
    async def handle(self, event: Any, context: Any = None) -> dict[str, Any]:
        """Process one invocation's event; see the module docstring for the answer."""
        trigger = trigger_of(event)  # an event it cannot take fails before the cold start
        pipeline = await self._ensure_started()
        self.invocations += 1
        clock = _Deadline(context, self.options)
        records_before = self.metrics.value("trailproc_records_total")
        started = time.monotonic()
        structlog.contextvars.bind_contextvars(trigger=trigger)
        try:
            units = await self._units(pipeline, event, trigger, clock, context)
        finally:
            structlog.contextvars.unbind_contextvars("trigger")
        failed = [u for u in units if u.status != "ok"]
        records = int(self.metrics.value("trailproc_records_total") - records_before)
        log.info(
            "invocation finished",
            trigger=trigger,
            messages=len(units),
            failed=sum(u.status == "failed" for u in failed),
            unstarted=sum(u.status == "unstarted" for u in failed),
            aborted=sum(u.status == "aborted" for u in failed),
            records=records,
            seconds=round(time.monotonic() - started, 3),
            remaining_seconds=clock.remaining(),
        )
        return self._answer(trigger, units, failed, records)

    async def _units(
        self,
        pipeline: FilePipeline,
        event: Mapping[str, Any],
        trigger: str,
        clock: _Deadline,
        context: Any,
    ) -> list[_Unit]:
        if trigger == "sqs":
            return await self._sqs(pipeline, event["Records"], clock)
        if trigger == "kinesis":
            return await self._kinesis(pipeline, event["Records"], clock)
        if trigger == "firehose":
            return await self._firehose(pipeline, event["records"], clock)
        if trigger == "cloudwatch_logs":
            return await self._awslogs(pipeline, event, clock, context)
        return await self._notifications(pipeline, event, trigger, clock)

    @staticmethod
    def _answer(
        trigger: str, units: list[_Unit], failed: list[_Unit], records: int
    ) -> dict[str, Any]:
        if trigger in ("sqs", "kinesis"):  # Kinesis answers the same way, by sequence number
            return LambdaAcks.answer(failed)
        if trigger == "firehose":
            # A payload that is bad or refused will be the same on a retry: Firehose
            # keeps it in its error output. Anything else is worth retrying (raise).
            failed = [u for u in failed if u.result is None or u.result.status == "failed"]
        if failed:
            detail = "; ".join(u.describe() for u in failed[:10])
            what = "record(s)" if trigger == "firehose" else "notification(s)"
            raise InvocationFailed(
                f"{len(failed)} of {len(units)} {what} not processed: {detail}",
                [u.ident for u in failed],
            )
        if trigger == "firehose":
            return {"records": [_firehose_result(u) for u in units]}
        return {"messages": len(units), "records": records}

    async def _sqs(
        self, pipeline: FilePipeline, records: list[Mapping[str, Any]], clock: _Deadline
    ) -> list[_Unit]:
        units = [
            _Unit(
                ident=str(r.get("messageId")),
                group=(r.get("attributes") or {}).get("MessageGroupId"),
                record=r,
            )
            for r in records
        ]
        fifo = any(str(r.get("eventSourceARN", "")).endswith(".fifo") for r in records)

        async def work(unit: _Unit) -> bool:
            return await self._sqs_message(pipeline, unit)

        if fifo:
            await self._in_order(units, work, clock, by_group=self.options.fifo_mode == "group")
        else:
            await self._concurrently(units, work, clock)
        return units

    async def _notifications(
        self, pipeline: FilePipeline, event: Mapping[str, Any], trigger: str, clock: _Deadline
    ) -> list[_Unit]:
        if trigger == "sns":
            units = [
                _Unit(ident=str((r.get("Sns") or {}).get("MessageId") or f"record-{i}"), record=r)
                for i, r in enumerate(event["Records"])
            ]

            async def work(unit: _Unit) -> bool:
                return await self._payload(pipeline, unit.record.get("Sns"), unit)

        else:
            ident = str(event.get("id") or f"{trigger}-event")
            units = [_Unit(ident=ident, record=event)]

            async def work(unit: _Unit) -> bool:
                return await self._payload(pipeline, unit.record, unit)

        await self._concurrently(units, work, clock)
        return units

    async def _kinesis(
        self, pipeline: FilePipeline, records: list[Mapping[str, Any]], clock: _Deadline
    ) -> list[_Unit]:
        units = [
            _Unit(
                ident=str((r.get("kinesis") or {}).get("sequenceNumber") or f"record-{i}"),
                # eventID is "<shard id>:<sequence number>"; order holds within a shard.
                group=str(r.get("eventID") or "").partition(":")[0],
                record=r,
            )
            for i, r in enumerate(records)
        ]

        async def work(unit: _Unit) -> bool:
            data = (unit.record.get("kinesis") or {}).get("data")
            return await self._document(pipeline, unit, data, "kinesis")

        await self._in_order(units, work, clock, by_group=True)
        return units

    async def _firehose(
        self, pipeline: FilePipeline, records: list[Mapping[str, Any]], clock: _Deadline
    ) -> list[_Unit]:
        units = []
        for i, r in enumerate(records):
            record = r if isinstance(r, Mapping) else {}
            units.append(_Unit(ident=str(record.get("recordId") or f"record-{i}"), record=record))

        async def work(unit: _Unit) -> bool:
            # A stream may decompress CloudWatch Logs data before the transformation.
            data = unit.record.get("data")
            return await self._document(pipeline, unit, data, "firehose", gzip_only=False)

        await self._concurrently(units, work, clock)
        return units

    async def _awslogs(
        self, pipeline: FilePipeline, event: Mapping[str, Any], clock: _Deadline, context: Any
    ) -> list[_Unit]:
        ident = str(getattr(context, "aws_request_id", None) or "cloudwatch-logs-event")
        units = [_Unit(ident=ident, record=event["awslogs"])]

        async def work(unit: _Unit) -> bool:
            return await self._document(pipeline, unit, unit.record.get("data"), "lambda")

        await self._concurrently(units, work, clock)
        return units

    async def _document(
        self, pipeline: FilePipeline, unit: _Unit, data: Any, via: str, gzip_only: bool = True
    ) -> bool:
        """One CloudWatch Logs payload (base64 `data`) through the pipeline."""
        if self._subscription_runner is None or self._subscription_runner.pipeline is not pipeline:
            self._subscription_runner = SubscriptionRunner(self.config, pipeline)
        runner = self._subscription_runner
        result = runner.decode(data, ident=unit.ident, via=via, gzip_only=gzip_only)
        if not isinstance(result, DocumentResult):
            result = await runner.run(result, ident=unit.ident, via=via)
        unit.result = result
        unit.error = result.error
        return result.ok

    # --- scheduling under the deadline ---------------------------------------------------
    async def _guarded(self, pipeline: FilePipeline, unit: _Unit, work: Any) -> None:
        try:
            ok = await work(unit)
        except asyncio.CancelledError:
            unit.status = "aborted"
            raise
        except Exception as exc:  # a bug must fail this message, not the whole batch
            error = InternalError.of(exc, message_id=unit.ident)
            pipeline.observer.fail(error)
            unit.error = _why(error)
            ok = False
        unit.status = "ok" if ok else "failed"

    async def _concurrently(self, units: list[_Unit], work: Any, clock: _Deadline) -> None:
        pipeline = self._pipeline
        assert pipeline is not None
        limit = asyncio.Semaphore(max(1, self.options.concurrency
                                      or self.config.limits().max_in_flight_messages))  # fmt: skip

        async def one(unit: _Unit) -> None:
            async with limit:
                if not clock.may_start():
                    return  # stays "unstarted"
                unit.status = "running"
                await self._guarded(pipeline, unit, work)

        if not units:
            return
        tasks = [asyncio.ensure_future(one(u)) for u in units]
        _done, pending = await asyncio.wait(tasks, timeout=clock.until_abort())
        if pending:
            log.warning("deadline near: cancelling work in flight", messages=len(pending),
                        remaining_seconds=clock.remaining())  # fmt: skip
            for task in pending:
                task.cancel()
            await _settle_cancelled(pending, clock)
        for unit in units:
            if unit.status == "running":
                unit.status = "aborted"
        self._log_unstarted(units)

    async def _in_order(
        self, units: list[_Unit], work: Any, clock: _Deadline, by_group: bool = False
    ) -> None:
        """One unit after the other; after a failure, stop (or with `by_group` skip the
        rest of its group only). Units not run stay "unstarted" (reported failed)."""
        pipeline = self._pipeline
        assert pipeline is not None
        order = InOrder(by_group=by_group)
        for unit in units:
            if not order.may_start(unit.group):
                continue  # reported: "unstarted"
            if not clock.may_start():
                order.stop()
                continue
            unit.status = "running"
            task = asyncio.ensure_future(self._guarded(pipeline, unit, work))
            done, _ = await asyncio.wait({task}, timeout=clock.until_abort())
            if not done:
                task.cancel()
                await _settle_cancelled({task}, clock)
                unit.status = "aborted"
                order.stop()
                continue
            order.finished(unit.group, unit.status == "ok")
        self._log_unstarted(units)

    @staticmethod
    def _log_unstarted(units: list[_Unit]) -> None:
        unstarted = [u.ident for u in units if u.status == "unstarted"]
        if unstarted:
            log.warning("messages not started; reported as failures for retry",
                        count=len(unstarted), message_ids=unstarted[:20])  # fmt: skip

    # --- one message ---------------------------------------------------------------------
    async def _sqs_message(self, pipeline: FilePipeline, unit: _Unit) -> bool:
        record = unit.record
        message_id = record.get("messageId")
        attributes: dict[str, str] = dict(record.get("attributes") or {})
        note = await self._runner(pipeline).parse(record.get("body") or "", message_id)
        if isinstance(note, TrailprocError):
            unit.error = _why(note)
            return await self._acks.settle(unit, Verdict("retry", note.reason))
        verdict = await self._runner(pipeline).run(
            note,
            message_id=message_id,
            receive_count=int(attributes.get("ApproximateReceiveCount", "1") or 1),
            sent_at=int(attributes.get("SentTimestamp", "0") or 0) / 1000 or None,
            attributes=attributes,
        )
        finished = await self._acks.settle(unit, verdict)
        if not finished:
            unit.error = _verdict_error(verdict)
        return finished

    async def _payload(self, pipeline: FilePipeline, payload: Any, unit: _Unit) -> bool:
        runner = self._runner(pipeline)
        ident = unit.ident
        note = await runner.parse(payload if isinstance(payload, Mapping) else str(payload), ident)
        if isinstance(note, TrailprocError):
            unit.error = _why(note)
            return False
        verdict = await runner.run(note, message_id=ident)
        unit.error = _verdict_error(verdict)
        return verdict.action == "ack"

    def _runner(self, pipeline: FilePipeline) -> MessageRunner:
        if self._message_runner is None or self._message_runner.pipeline is not pipeline:
            self._message_runner = MessageRunner(self.config, pipeline)
        return self._message_runner


def _close_at_exit(runtime: LambdaRuntime) -> None:
    """Close `runtime`'s warm state when the interpreter exits, if it is still open.

    The aiohttp sessions of its clients would otherwise print "Unclosed client session"
    at exit (a local run, `sam local invoke`, a test, a sandbox shutting down). A weak
    reference: a runtime nobody holds any more is not kept alive for this."""
    ref = weakref.ref(runtime)

    def close() -> None:
        alive = ref()
        if alive is not None:
            alive.close()

    atexit.register(close)


_FIREHOSE_RESULTS = {"ok": "Ok", "control": "Dropped"}


def _firehose_result(unit: _Unit) -> dict[str, Any]:
    """Firehose's answer for one record: its id, result, and the data it came with."""
    status = unit.result.status if unit.result else "failed"
    return {
        "recordId": unit.ident,
        "result": _FIREHOSE_RESULTS.get(status, "ProcessingFailed"),
        "data": unit.record.get("data") or "",
    }
