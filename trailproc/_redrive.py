"""Redrive: move dead-lettered messages back to the queue the daemon reads.

    trailproc redrive --from https://sqs.../trail-dlq [--to https://sqs.../trail-queue] [--max N]

Two ways, chosen by `method`:

* ``move-task``: SQS's own message-move task (StartMessageMoveTask, then
  ListMessageMoveTasks until it finished). SQS moves every message itself, without a
  copy through this process. It cannot stop after N messages, so `--max` uses the
  other way.
* ``copy``: receive up to ten messages, send them to the destination with
  SendMessageBatch (body and message attributes kept, FIFO group and deduplication ids
  too), and delete them from the dead-letter queue only once that send succeeded.

``auto`` (the default) tries the move task and copies when SQS refuses it (an older
endpoint, a missing ``sqs:StartMessageMoveTask`` permission).

Failures never lose a message: a message is deleted from the dead-letter queue only
after the destination accepted it. A crash (or a lost reply) between the send and the
delete leaves the message in both queues: once visible again in the dead-letter queue it
is moved a second time. Delivery is therefore at least once, with the same body; for
trailproc that repeat is harmless, because its checkpoints hand each log file over once
whatever number of notifications name it. A SendMessageBatch whose reply was lost is
retried by the SDK and can likewise enqueue a message twice (on a FIFO queue the kept
deduplication id drops the copy within SQS's five-minute window).
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import Any

from ._config import Config
from ._errors import error_code, retry_transient
from ._observe import ensure_logging, get_logger

__all__ = ["RedriveResult", "redrive_async"]

log = get_logger("trailproc.redrive")

_METHODS = ("auto", "move-task", "copy")
_DONE_STATES = ("COMPLETED", "CANCELLED", "FAILED")


@dataclass
class RedriveResult:
    """What a redrive moved, and how."""

    source: str
    destination: str | None  # None: the move task returned messages to their sources
    method: str = ""
    moved: int = 0
    status: str = "COMPLETED"  # the move task's final state; COMPLETED for a copy
    task_handle: str | None = None
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "COMPLETED" and not self.failure

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "destination": self.destination, "method": self.method,
                "moved": self.moved, "status": self.status, "task_handle": self.task_handle,
                "failure": self.failure}  # fmt: skip


async def _arn(sqs: Any, queue_url: str) -> str:
    attributes = await retry_transient(
        lambda: sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    )
    return str(attributes["Attributes"]["QueueArn"])


async def _source_queue(sqs: Any, dlq_url: str) -> str:
    """The one queue whose dead letters land in `dlq_url` (ValueError if not exactly one)."""
    response = await retry_transient(lambda: sqs.list_dead_letter_source_queues(QueueUrl=dlq_url))
    urls = list(response.get("queueUrls") or [])
    if len(urls) != 1:
        found = ", ".join(urls) if urls else "none"
        raise ValueError(f"cannot tell where to move {dlq_url}'s messages (source queues: "
                         f"{found}); give the destination queue (--to)")  # fmt: skip
    return str(urls[0])


# --- SQS's message-move task ----------------------------------------------------------


async def _move_task(
    sqs: Any, result: RedriveResult, dest_url: str | None, wait_seconds: float, poll: float
) -> None:
    source_arn = await _arn(sqs, result.source)
    kwargs: dict[str, Any] = {"SourceArn": source_arn}
    if dest_url:
        kwargs["DestinationArn"] = await _arn(sqs, dest_url)
    started = await sqs.start_message_move_task(**kwargs)
    result.method = "move-task"
    result.task_handle = started.get("TaskHandle")
    log.info("message move task started", source=result.source, task_handle=result.task_handle)
    deadline = time.monotonic() + wait_seconds
    while True:
        task = await _task(sqs, source_arn, result.task_handle)
        result.moved = int(task.get("ApproximateNumberOfMessagesMoved") or 0)
        result.status = str(task.get("Status") or "RUNNING")
        if result.status in _DONE_STATES:
            result.failure = task.get("FailureReason")
            return
        if time.monotonic() >= deadline:
            return  # still RUNNING: SQS goes on without us; reported as such
        await asyncio.sleep(poll)


async def _task(sqs: Any, source_arn: str, handle: str | None) -> dict[str, Any]:
    response = await retry_transient(
        lambda: sqs.list_message_move_tasks(SourceArn=source_arn, MaxResults=10)
    )
    tasks = list(response.get("Results") or [])
    for task in tasks:
        if handle is None or task.get("TaskHandle") in (handle, None):
            return dict(task)
    # The most recent task first; a handle only the running task carries.
    return dict(tasks[0]) if tasks else {"Status": "RUNNING"}


# --- receive → send → delete ------------------------------------------------------------


async def send_batch(sqs: Any, queue_url: str, entries: list[dict[str, Any]]) -> None:
    """SendMessageBatch of up to 10 entries; entries SQS refuses are sent again (transient
    refusals) until none is left, or an error names the ones refused for good."""
    remaining = entries
    for attempt in range(5):
        response = await retry_transient(
            functools.partial(sqs.send_message_batch, QueueUrl=queue_url, Entries=remaining)
        )
        failed = response.get("Failed") or []
        if not failed:
            return
        permanent = [f for f in failed if f.get("SenderFault")]
        if permanent:
            reasons = "; ".join(f"{f.get('Id')}: {f.get('Code')} {f.get('Message')}"
                                for f in permanent)  # fmt: skip
            raise RuntimeError(f"SQS refused messages for {queue_url}: {reasons}")
        again = {f.get("Id") for f in failed}
        remaining = [e for e in remaining if e["Id"] in again]
        await asyncio.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"SQS kept failing {len(remaining)} message(s) for {queue_url}")


def _entry(index: int, message: dict[str, Any]) -> dict[str, Any]:
    """The SendMessageBatch entry that re-sends `message` unchanged."""
    entry: dict[str, Any] = {"Id": str(index), "MessageBody": message["Body"]}
    if message.get("MessageAttributes"):
        entry["MessageAttributes"] = message["MessageAttributes"]
    system = message.get("Attributes") or {}
    for name in ("MessageGroupId", "MessageDeduplicationId"):
        if system.get(name):
            entry[name] = system[name]
    return entry


async def _copy(sqs: Any, result: RedriveResult, dest_url: str, limit: int | None) -> None:
    result.method = "copy"
    while limit is None or result.moved < limit:
        want = 10 if limit is None else min(10, limit - result.moved)
        response = await retry_transient(
            functools.partial(
                sqs.receive_message, QueueUrl=result.source, MaxNumberOfMessages=want,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
            )
        )  # fmt: skip
        messages = list(response.get("Messages") or [])
        if not messages:
            return
        # Send first: until SQS accepted the copies, the originals stay in the DLQ (they
        # become visible there again after their visibility timeout if we stop here).
        await send_batch(sqs, dest_url, [_entry(i, m) for i, m in enumerate(messages)])
        deletes = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                   for i, m in enumerate(messages)]  # fmt: skip
        answer = await retry_transient(
            functools.partial(sqs.delete_message_batch, QueueUrl=result.source, Entries=deletes)
        )
        if answer.get("Failed"):
            # Already sent: they will be moved again (at least once, see module doc).
            log.warning("some moved messages stay in the dead-letter queue too",
                        source=result.source, failed=len(answer["Failed"]))  # fmt: skip
        result.moved += len(messages)
        log.info("messages moved", source=result.source, destination=dest_url,
                 moved=result.moved)  # fmt: skip


async def redrive_async(
    dlq_url: str,
    config: Config,
    *,
    to: str | None = None,
    max_messages: int | None = None,
    method: str = "auto",
    wait_seconds: float = 600.0,
    poll_seconds: float = 1.0,
) -> RedriveResult:
    """Move messages from `dlq_url` to `to` (default: the queue that dead-letters into it).

    `method`: "auto", "move-task" or "copy" (see the module doc); `max_messages` (copy
    only) stops after that many. A move task still running after `wait_seconds` is
    reported with status RUNNING (SQS finishes it on its own).
    """
    from ._aws import AwsClients

    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, not {method!r}")
    if max_messages is not None and max_messages < 1:
        raise ValueError("max must be at least 1")
    if max_messages is not None and method == "move-task":
        raise ValueError("SQS's move task moves every message; --max needs the copy method")
    ensure_logging(config.log_level, config.log_format)
    result = RedriveResult(dlq_url, to)
    async with AwsClients(config) as clients:
        sqs = await clients.client("sqs")
        if method == "move-task" or (method == "auto" and max_messages is None):
            try:
                await _move_task(sqs, result, to, wait_seconds, poll_seconds)
                return _finished(result)
            except Exception as exc:
                if method == "move-task" or not error_code(exc):
                    raise
                log.warning("SQS message move task refused; moving by receive, send, delete",
                            source=dlq_url, error=f"{error_code(exc)}: {exc}")  # fmt: skip
        result.destination = to or await _source_queue(sqs, dlq_url)
        await _copy(sqs, result, result.destination, max_messages)
    return _finished(result)


def _finished(result: RedriveResult) -> RedriveResult:
    log.info("redrive finished", **result.as_dict())
    return result
