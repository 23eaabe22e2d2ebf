"""Distributed backfill: list a range of log files and queue one message per file.

`trailproc backfill ... --enqueue QUEUE_URL` sends, for every listed log file that the
checkpoint store does not record as done, a message shaped like an S3 event
notification (the shape `trailproc run` and the Lambda entry point already read). A
fleet of workers sharing that checkpoint store then does the work: a file is handed
over once however many workers receive its message, and a rerun of the enqueue sends
only the files not done yet (all of them with `force`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

from ._errors import retry_transient
from ._observe import get_logger
from ._pipeline.keys import FileRef
from .checkpoint import CheckpointStore, FileId

__all__ = ["BATCH", "EnqueueResult", "enqueue_refs", "s3_event_body"]

log = get_logger("trailproc.enqueue")

BATCH = 10  # SendMessageBatch's limit
SEND_ATTEMPTS = 5  # rounds of re-sending the entries a batch call reported as failed


@dataclass
class EnqueueResult:
    """What an enqueue did."""

    listed: int = 0
    sent: int = 0
    skipped_done: int = 0
    unsent: list[str] = field(default_factory=list)  # keys that could not be queued

    @property
    def ok(self) -> bool:
        return not self.unsent


def s3_event_body(ref: FileRef, *, region: str | None = None) -> str:
    """An S3 "ObjectCreated" event notification for one object (keys form-encoded, as
    S3 writes them)."""
    obj: dict[str, Any] = {"key": quote_plus(ref.key, safe="/")}
    if ref.size is not None:
        obj["size"] = ref.size
    if ref.etag:
        obj["eTag"] = ref.etag
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region or ref.info.region or "us-east-1",
        "eventTime": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": ref.bucket, "arn": f"arn:aws:s3:::{ref.bucket}"},
            "object": obj,
        },
    }
    return json.dumps({"Records": [record]}, separators=(",", ":"))


async def _send_batch(sqs: Any, queue_url: str, refs: Sequence[FileRef]) -> list[str]:
    """Send up to ten messages; re-send the entries SQS reports as failed. Returns the
    keys still unsent after `SEND_ATTEMPTS` rounds (or refused as the sender's fault)."""
    entries = {str(i): ref for i, ref in enumerate(refs)}
    for attempt in range(SEND_ATTEMPTS):
        batch = [{"Id": i, "MessageBody": s3_event_body(ref)} for i, ref in entries.items()]

        async def send(batch: list[dict[str, str]] = batch) -> dict[str, Any]:
            sent: dict[str, Any] = await sqs.send_message_batch(QueueUrl=queue_url, Entries=batch)
            return sent

        response = await retry_transient(send)
        failed = response.get("Failed") or []
        permanent = [f for f in failed if f.get("SenderFault")]
        for entry in permanent:
            log.error("message refused by SQS", queue_url=queue_url,
                      key=entries[entry["Id"]].key, code=entry.get("Code"),
                      message=entry.get("Message"))  # fmt: skip
        if permanent:
            return [entries[f["Id"]].key for f in failed]
        entries = {f["Id"]: entries[f["Id"]] for f in failed}
        if not entries:
            return []
        await asyncio.sleep(min(5.0, 0.2 * 2**attempt))
    return [ref.key for ref in entries.values()]


async def _not_done(store: CheckpointStore, refs: list[FileRef]) -> list[bool]:
    return list(
        await asyncio.gather(*(store.is_done(FileId(r.bucket, r.key, r.etag or "")) for r in refs))
    )


async def enqueue_refs(
    refs: AsyncIterator[FileRef],
    sqs: Any,
    queue_url: str,
    store: CheckpointStore | None,
    *,
    progress: Any = None,
    stopping: asyncio.Event | None = None,
) -> EnqueueResult:
    """Queue one message per reference, ten per SendMessageBatch. With a `store`,
    references it records as done are not sent (None: send every one, `--force`).
    `progress`: something with `update(n)` and `total` (a tqdm bar), or None."""
    result = EnqueueResult()
    pending: list[FileRef] = []

    async def flush() -> None:
        batch = pending[:]
        pending.clear()
        done = await _not_done(store, batch) if store is not None else [False] * len(batch)
        todo = [ref for ref, is_done in zip(batch, done, strict=True) if not is_done]
        result.skipped_done += len(batch) - len(todo)
        if todo:
            unsent = await _send_batch(sqs, queue_url, todo)
            result.unsent.extend(unsent)
            result.sent += len(todo) - len(unsent)
        if progress is not None:
            progress.update(len(batch))

    async for ref in refs:
        result.listed += 1
        if progress is not None:
            progress.total = result.listed
            progress.refresh()
        pending.append(ref)
        if len(pending) == BATCH:
            await flush()
        if stopping is not None and stopping.is_set():
            break
    if pending:
        await flush()
    return result
