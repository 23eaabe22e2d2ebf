"""Quarantine one record, not the file: isolate the records a handler cannot take.

With `quarantine` configured, a batch whose handler raises a non-transient error is
handed over again one record at a time. Records that pass are handed over; each record
that raises again is written to the quarantine (its error, where it came from, and its
exact bytes) before the batch's progress is committed, so the file completes and its
message is deleted. Records the handler had already acted on before the batch raised are
handed over a second time: that is the cost of finding the poison record (see
docs/guarantees.md).

Not quarantined (the file fails and its message is kept, as without a quarantine): a
transient error (a retry may cure it), more than `max_per_file` failing records in one
file (a broken handler must not empty a whole trail into the quarantine), and any
failure to write the quarantine itself.

A quarantine is a local folder or an S3 prefix holding one JSON document per record,
named after its file (bucket, key, ETag) and its index there, so quarantining the same
record again (a retried file) replaces the entry instead of adding one.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import tempfile
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from .._errors import HandlerError, QuarantineError, is_transient, retry_transient
from .._observe import Metrics, get_logger
from .events import Event

__all__ = [
    "LocalQuarantine",
    "QuarantineError",
    "QuarantineStore",
    "QuarantinedRecord",
    "RecordQuarantine",
    "S3Quarantine",
    "open_quarantine",
]

log = get_logger("trailproc.quarantine")

SUFFIX = ".json"
# Distinct `reason` label values (exception type names) before the rest count as "other".
MAX_REASONS = 32
# An entry larger than this is not a CloudTrail record trailproc decoded: refused when read.
MAX_ENTRY_BYTES = 64 << 20


@dataclass(frozen=True)
class QuarantinedRecord:
    """One record a handler could not take: why, where from, and its exact bytes."""

    bucket: str
    key: str
    etag: str | None
    message_id: str | None
    index: int
    event_id: str | None
    error_type: str
    error_message: str
    traceback: str
    quarantined_at: str
    raw: bytes

    @property
    def name(self) -> str:
        return entry_name(self.bucket, self.key, self.etag, self.index)

    def to_json(self) -> bytes:
        fields = asdict(self)
        fields["raw"] = base64.b64encode(self.raw).decode("ascii")
        return json.dumps(fields, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> QuarantinedRecord:
        if len(data) > MAX_ENTRY_BYTES:
            raise ValueError(f"quarantine entry of {len(data)} bytes is over {MAX_ENTRY_BYTES}")
        fields = json.loads(data)
        if not isinstance(fields, dict):
            raise ValueError("quarantine entry is not a JSON object")
        fields["raw"] = base64.b64decode(fields["raw"], validate=True)
        return cls(**fields)

    @classmethod
    def of(cls, event: Event, error: BaseException) -> QuarantinedRecord:
        delivery = event.delivery
        return cls(
            bucket=delivery.bucket,
            key=delivery.key,
            etag=delivery.etag,
            message_id=delivery.message_id,
            index=event.index,
            event_id=_event_id(event),
            error_type=type(error).__name__,
            error_message=str(error),
            traceback="".join(traceback.format_exception(error)),
            quarantined_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            raw=event.raw,
        )


def _event_id(event: Event) -> str | None:
    try:
        return event.event_id
    except Exception:  # a record too broken to read its header is still quarantined
        return None


def file_prefix(bucket: str, key: str, etag: str | None) -> str:
    """The start of every entry name of one file (names stay short and safe whatever the key)."""
    digest = hashlib.sha256(f"{bucket}\0{key}\0{etag or ''}".encode()).hexdigest()
    return digest[:32] + "-"


def entry_name(bucket: str, key: str, etag: str | None, index: int) -> str:
    return f"{file_prefix(bucket, key, etag)}{index:09d}{SUFFIX}"


class QuarantineStore(Protocol):
    """Where quarantined records are kept; every method is blocking (run in a thread)."""

    location: str

    def put(self, name: str, data: bytes) -> None: ...
    def names(self, prefix: str = "") -> list[str]: ...
    def get(self, name: str) -> bytes: ...
    def remove(self, name: str) -> None: ...


class LocalQuarantine:
    """A folder: each entry written to a temporary file, fsynced, renamed, folder fsynced."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.location = str(self.folder)

    def put(self, name: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.folder, prefix=".incoming-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.folder / name)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        _fsync_folder(self.folder)

    def names(self, prefix: str = "") -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.name for p in self.folder.glob(f"{prefix}*{SUFFIX}") if p.is_file())

    def get(self, name: str) -> bytes:
        path = self.folder / name
        if path.stat().st_size > MAX_ENTRY_BYTES:
            raise ValueError(f"{path} is larger than a quarantine entry can be")
        return path.read_bytes()

    def remove(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)
        _fsync_folder(self.folder)


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":  # pragma: no cover - folders cannot be opened elsewhere
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class S3Quarantine:
    """An S3 prefix (`s3://bucket/prefix/`); each entry is one PutObject, durable once
    S3 answered. `client` is a boto3 S3 client (thread-safe)."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = client
        self.location = f"s3://{bucket}/{prefix}"

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.prefix + name, Body=data,
                               ContentType="application/json")  # fmt: skip

    def names(self, prefix: str = "") -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        found: list[str] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                name = item["Key"][len(self.prefix) :]
                if "/" not in name and name.endswith(SUFFIX):
                    found.append(name)
        return sorted(found)

    def get(self, name: str) -> bytes:
        response = self.client.get_object(Bucket=self.bucket, Key=self.prefix + name)
        if int(response.get("ContentLength") or 0) > MAX_ENTRY_BYTES:
            response["Body"].close()
            raise ValueError(f"{self.location}{name} is larger than a quarantine entry can be")
        return bytes(response["Body"].read(MAX_ENTRY_BYTES + 1))

    def remove(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.prefix + name)


def open_quarantine(location: str, s3_client: Callable[[], Any]) -> QuarantineStore:
    """A folder path, or `s3://bucket/prefix/` (the client is made only then)."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"quarantine {location!r}: no bucket (s3://bucket/prefix/)")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return S3Quarantine(bucket, prefix, s3_client())
    if "://" in location:
        raise ValueError(f"quarantine {location!r}: a folder path or s3://bucket/prefix/")
    return LocalQuarantine(location)


Dispatch = Callable[[list[Event]], Awaitable[None]]


class RecordQuarantine:
    """The pipeline's hook: isolates the failing records of a batch that raised."""

    def __init__(self, store: QuarantineStore, metrics: Metrics, *, max_per_file: int) -> None:
        self.store = store
        self.metrics = metrics
        self.max_per_file = max_per_file
        self._reasons: set[str] = set()

    async def isolate(self, batch: list[Event], dispatch: Dispatch, error: Exception) -> bool:
        """After `dispatch(batch)` raised `error`: hand the batch over record by record
        and quarantine the records that still raise. True when the batch is settled
        (its progress may be committed); False when the error is not for the quarantine
        (transient), and HandlerError or QuarantineError when the file must fail."""
        if is_transient(error):
            return False
        failed = await self._one_by_one(batch, dispatch)
        if not failed:
            log.warning("batch failed as a whole but every record passed alone",
                        **_where(batch[0]), error=repr(error))  # fmt: skip
            return True
        entries = [QuarantinedRecord.of(event, exc) for event, exc in failed]
        for entry in entries:
            await self._write(entry)
        for entry in entries:
            self._count(entry.error_type)
            log.error("record quarantined", bucket=entry.bucket, key=entry.key,
                      message_id=entry.message_id, index=entry.index, event_id=entry.event_id,
                      error_type=entry.error_type, error=entry.error_message,
                      quarantine=self.store.location)  # fmt: skip
        return True

    async def _one_by_one(
        self, batch: list[Event], dispatch: Dispatch
    ) -> list[tuple[Event, Exception]]:
        """Each record alone; the ones that raise. Stops (HandlerError) at a transient
        error, or as soon as the file would go over the cap, so that a broken handler is
        not called for the rest of the batch."""
        failed: list[tuple[Event, Exception]] = []
        allowed: int | None = None
        for event in batch:
            try:
                await dispatch([event])
            except Exception as exc:
                if is_transient(exc):
                    raise HandlerError(
                        f"handler raised {type(exc).__name__}: {exc} (record {event.index}, "
                        "transient: the file is retried, not quarantined)"
                    ) from exc
                failed.append((event, exc))
                if allowed is None:
                    allowed = self.max_per_file - await self._quarantined_before(batch)
                if len(failed) > allowed:
                    raise HandlerError(
                        f"more than {self.max_per_file} records of this file raised in the "
                        "handler (quarantine_max_records_per_file): failing the file instead "
                        f"of quarantining them; last: record {event.index}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
        return failed

    async def _quarantined_before(self, batch: list[Event]) -> int:
        """Records of this file already in the quarantine from earlier batches or
        attempts (this batch's own, from an attempt cut short, not counted)."""
        delivery = batch[0].delivery
        bucket, key, etag = delivery.bucket, delivery.key, delivery.etag
        prefix = file_prefix(bucket, key, etag)
        mine = {entry_name(bucket, key, etag, event.index) for event in batch}
        names = await self._call("list", lambda: self.store.names(prefix))
        return len(set(names) - mine)

    async def _write(self, entry: QuarantinedRecord) -> None:
        data = entry.to_json()
        await self._call("write", lambda: self.store.put(entry.name, data))

    async def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return await retry_transient(lambda: asyncio.to_thread(call), attempts=5)
        except Exception as exc:
            raise QuarantineError(
                f"quarantine {what} at {self.store.location} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _count(self, error_type: str) -> None:
        if error_type not in self._reasons and len(self._reasons) >= MAX_REASONS:
            error_type = "other"
        self._reasons.add(error_type)
        self.metrics.records_quarantined.labels(error_type).inc()


def _where(event: Event) -> dict[str, Any]:
    delivery = event.delivery
    return {"bucket": delivery.bucket, "key": delivery.key,
            "message_id": delivery.message_id}  # fmt: skip
