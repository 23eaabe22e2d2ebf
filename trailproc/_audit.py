"""Audit: prove that every log file of a time range was handed over, and fill the gaps.

    trailproc audit --bucket my-trail-bucket --start-time 2024-05-01 --end-time 2024-05-02

What should exist comes from two independent sources:

* the bucket listing of the range (`trailproc._roads.s3_listing`: date folders only,
  never a whole-bucket scan);
* the ``logFiles`` lists of the range's digest files, where digests exist. A digest
  names every log file CloudTrail delivered in its hour, so a file a digest lists but
  the bucket no longer holds (deleted, or moved by a lifecycle rule) is found too.

What was handed over comes from the checkpoint store: a file counts as handed over when
the store has it done under its bucket, key and ETag, exactly as the daemon and backfill
record it. Every other file is *missing* and reported with its account, region and
delivery time.

`fix_missing_async` hands the missing files over through the same pipeline as backfill
(`trailproc._app.run_refs`), so a second audit finds nothing missing;
`enqueue_missing_async` instead puts one S3-event-shaped message per file on a queue, for
the running daemon to pick up. Files only a digest lists cannot be fixed: there is
nothing left to read.

Bounds: the audit keeps the keys of the range in memory (about 150 bytes each; a month
of one account in every region is roughly 150,000 keys). A digest is read with the
`max_decompressed_bytes` limit, and only its entries for the audited bucket, its own
account and region and the audited time range are considered, so a forged or oversized
digest cannot make the audit fetch arbitrary objects.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._config import Config
from ._errors import error_code, retry_transient
from ._observe import Metrics, _LogStream, ensure_logging, get_logger
from ._pipeline.gunzip import decompress
from ._pipeline.keys import FileRef, ObjectKind
from ._pipeline.processor import EventProcessor
from ._ports.objects import S3Objects
from ._roads.s3_listing import FolderCache, ListingQuery, iter_digest_refs, iter_log_refs
from ._runtime import open_config_store
from .checkpoint import CheckpointStore, FileId

__all__ = [
    "AuditResult",
    "MissingFile",
    "audit_async",
    "enqueue_missing_async",
    "fix_missing_async",
]

log = get_logger("trailproc.audit")

# Store reads in flight at once (one GetItem each with DynamoDB; SQLite is local).
_CHECKS_AT_ONCE = 32


@dataclass(frozen=True)
class MissingFile:
    """A log file that should have been handed over and was not."""

    bucket: str
    key: str
    account_id: str | None
    region: str | None
    delivered_at: dt.datetime | None
    in_bucket: bool = True  # False: a digest lists it, the bucket does not hold it
    etag: str | None = None
    size: int | None = None

    @property
    def ref(self) -> FileRef:
        return FileRef.of(self.bucket, self.key, etag=self.etag, size=self.size)

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "account_id": self.account_id,
            "region": self.region,
            "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
            "in_bucket": self.in_bucket,
        }


@dataclass
class AuditResult:
    """What an audit found. `ok` when nothing is missing."""

    bucket: str
    expected: int = 0  # log files that should have been handed over
    handed_over: int = 0
    digests_read: int = 0
    digest_errors: list[str] = field(default_factory=list)  # "key: why" per unreadable digest
    missing: list[MissingFile] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "expected": self.expected,
            "handed_over": self.handed_over,
            "digests_read": self.digests_read,
            "digest_errors": list(self.digest_errors),
            "missing": [m.as_dict() for m in self.missing],
        }


class _Meter:
    """A tqdm bar of checked files (on a terminal only, or when asked)."""

    def __init__(self, bar: bool | None) -> None:
        self.bar: Any = None
        if sys.stderr.isatty() if bar is None else bar:
            from tqdm import tqdm

            self.bar = tqdm(total=None, unit="file", desc="audit", file=sys.stderr,
                            dynamic_ncols=True)  # fmt: skip
            _LogStream.bars += 1

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            _LogStream.bars -= 1


class _Checker:
    """Asks the store about expected files, a chunk at a time, and records the answers."""

    def __init__(self, store: CheckpointStore, result: AuditResult, meter: _Meter) -> None:
        self.store = store
        self.result = result
        self.meter = meter
        self.waiting: list[MissingFile] = []

    async def add(self, candidate: MissingFile) -> None:
        self.waiting.append(candidate)
        if len(self.waiting) >= _CHECKS_AT_ONCE:
            await self.flush()

    async def _done(self, candidate: MissingFile) -> bool:
        if not candidate.in_bucket or not candidate.etag:
            return False
        file = FileId(candidate.bucket, candidate.key, candidate.etag)
        return bool(await retry_transient(lambda: self.store.is_done(file)))

    async def flush(self) -> None:
        chunk, self.waiting = self.waiting, []
        answers = await asyncio.gather(*(self._done(c) for c in chunk))
        for candidate, done in zip(chunk, answers, strict=True):
            self.result.expected += 1
            if done:
                self.result.handed_over += 1
            else:
                self.result.missing.append(candidate)
        self.meter.advance(len(chunk))


def _candidate(ref: FileRef, *, in_bucket: bool = True) -> MissingFile:
    info = ref.info
    return MissingFile(ref.bucket, ref.key, info.account_id, info.region, info.delivered_at,
                       in_bucket, ref.etag, ref.size)  # fmt: skip


def _in_range(ref: FileRef, query: ListingQuery) -> bool:
    when = ref.info.delivered_at
    if when is None:
        return False
    if query.start is not None and when < query.start.replace(second=0, microsecond=0):
        return False
    return query.end is None or when < query.end


def _listed_by_digest(
    digest: FileRef, data: bytes, query: ListingQuery, max_bytes: int
) -> list[FileRef]:
    """The in-range log files of the audited bucket a digest lists (its own account and
    region only: a digest never lists another's files, so such entries are ignored)."""
    from ._pipeline.digests import parse_digest

    listing = parse_digest(decompress(data, max_bytes=max_bytes))
    refs = []
    for bucket, key, _sha in listing.log_files:
        if bucket != query.bucket:
            continue
        ref = FileRef.of(bucket, key)
        same_origin = (ref.info.account_id, ref.info.region) == (
            digest.info.account_id,
            digest.info.region,
        )
        if ref.kind is ObjectKind.LOG and same_origin and _in_range(ref, query):
            refs.append(ref)
    return refs


async def _head(s3: Any, ref: FileRef) -> FileRef | None:
    """`ref` with its ETag and size if the object exists, else None."""
    try:
        head = await retry_transient(lambda: s3.head_object(Bucket=ref.bucket, Key=ref.key))
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return FileRef.of(ref.bucket, ref.key, etag=head.get("ETag"), size=head.get("ContentLength"))


async def _digest_only(
    s3: Any, query: ListingQuery, config: Config, *, listed: set[str], folders: FolderCache,
    result: AuditResult,
) -> list[FileRef]:  # fmt: skip
    """Log files that digests list but the bucket listing did not return."""
    from ._pipeline.fetch import ObjectFetcher

    objects = S3Objects(s3)
    fetcher = ObjectFetcher(objects, max_bytes=config.max_decompressed_bytes)
    extra: dict[str, FileRef] = {}
    async for digest in iter_digest_refs(objects, query, folder_cache=folders):
        try:
            fetched = await fetcher.fetch(digest)
            refs = _listed_by_digest(digest, fetched.data, query, config.max_decompressed_bytes)
        except Exception as exc:  # unreadable, too large, or gone: said, never silent
            why = f"{type(exc).__name__}: {exc}"
            result.digest_errors.append(f"{digest.key}: {why}")
            log.warning("digest not readable; its list is not used", bucket=digest.bucket,
                        key=digest.key, error=why)  # fmt: skip
            continue
        result.digests_read += 1
        for ref in refs:
            if ref.key not in listed:
                extra.setdefault(ref.key, ref)
    return list(extra.values())


async def audit_async(
    query: ListingQuery, config: Config, *, digests: bool = True, progress: bool | None = None
) -> AuditResult:
    """Compare what should exist in the range of `query` (`ListingQuery.build`) with what
    the checkpoint store handed over.

    `digests`: also read the range's digest files and expect every log file they list.
    """
    from ._aws import AwsClients

    ensure_logging(config.log_level, config.log_format)
    bucket = query.bucket
    result = AuditResult(bucket)
    store = open_config_store(config)
    meter = _Meter(progress)
    try:
        async with AwsClients(config) as clients:
            s3 = await clients.client("s3")
            checker = _Checker(store, result, meter)
            listed: set[str] = set()
            folders: FolderCache = {}
            async for ref in iter_log_refs(S3Objects(s3), query, folder_cache=folders):
                listed.add(ref.key)
                await checker.add(_candidate(ref))
            if digests:
                for ref in await _digest_only(
                    s3, query, config, listed=listed, folders=folders, result=result
                ):
                    found = await _head(s3, ref)
                    await checker.add(_candidate(found or ref, in_bucket=found is not None))
            await checker.flush()
    finally:
        meter.close()
        await store.close()
    result.missing.sort(key=lambda m: (m.account_id or "", m.region or "", m.key))
    log.info("audit finished", bucket=bucket, expected=result.expected,
             handed_over=result.handed_over, missing=len(result.missing),
             digests_read=result.digests_read,
             digest_errors=len(result.digest_errors))  # fmt: skip
    return result


async def fix_missing_async(
    missing: Sequence[MissingFile],
    config: Config,
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    progress: bool | None = None,
    metrics: Metrics | None = None,
) -> Any:
    """Hand the missing files that are still in the bucket over through the pipeline
    (the handlers, output and checkpoint store of `config`). Returns a `RunResult`."""
    from ._app import RunResult, run_refs
    from ._progress import Progress
    from ._runtime import open_runtime

    metrics = metrics or Metrics()
    result = RunResult(metrics)
    refs = [m.ref for m in missing if m.in_bucket]
    async with open_runtime(config, processor, metrics=metrics,
                            objects="s3-default-client") as runtime:  # fmt: skip
        meter = Progress(metrics, desc="audit --fix", bar=progress)
        downloads = runtime.config.limits().download_concurrency
        try:
            await run_refs(runtime.pipeline, refs, concurrency=downloads,
                           failed=result.failed_files, progress=meter,
                           trust=runtime.trust)  # fmt: skip
        finally:
            meter.close()
    log.info("missing files handed over", files=len(refs), done=result.files_done,
             failed=result.files_failed, records=result.records)  # fmt: skip
    return result


async def enqueue_missing_async(
    missing: Sequence[MissingFile], queue_url: str, config: Config
) -> int:
    """Put one S3-event message per missing file (still in the bucket) on `queue_url`
    (`trailproc._enqueue`: ten per SendMessageBatch). Returns how many were sent;
    RuntimeError naming the keys SQS would not take."""
    from ._aws import AwsClients
    from ._enqueue import enqueue_refs

    async def refs() -> AsyncIterator[FileRef]:
        for m in missing:
            if m.in_bucket:
                yield m.ref

    async with AwsClients(config) as clients:
        sqs = await clients.client("sqs")
        result = await enqueue_refs(refs(), sqs, queue_url, None)
    if result.unsent:
        raise RuntimeError(f"{len(result.unsent)} message(s) could not be queued on "
                           f"{queue_url}: {', '.join(result.unsent[:5])}")  # fmt: skip
    log.info("missing files enqueued", queue_url=queue_url, files=result.sent)
    return result.sent
