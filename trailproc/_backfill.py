"""Backfill / replay: run log files already in a bucket through the same pipeline.

    trailproc backfill --bucket my-trail-bucket --start-time 2024-01-01 --end-time 2024-02-01 \\
        --account-id 111122223333 --region us-east-1 --handler myapp.handlers:handlers

Keys come from `trailproc._roads.s3_listing` (date folders of the range only, never a
whole-bucket scan). Each file goes through `FilePipeline`, with the daemon's checkpoint
store by default: files the daemon (or an earlier backfill) completed are skipped, and an
interrupted backfill resumes where it stopped, inside a file too. `force=True` ignores
earlier progress by recording this run under a fresh checkpoint *namespace*; a named
`namespace` keeps a replay's progress apart from the live daemon's while staying
resumable (run again with the same name).

With `verify_digests` the digest files that can list the selected log files (same
accounts and regions, digest end time from the start to `DIGEST_LAG` past the end) are
listed too and go through the pipeline's digest check, exactly as digests named by SQS
notifications do: log files are hashed as they are processed, and a mismatch is
reported through `on_error`, `trailproc_errors_total{reason="digest_mismatch"}`,
`trailproc_digest_checks_total` and an error log line. Files skipped as done before
are not read again, so they are not checked; `force` (or a new namespace) checks all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ._app import RunResult
from ._config import Config, load_config
from ._enqueue import EnqueueResult, enqueue_refs
from ._observe import Metrics, ensure_logging, get_logger
from ._pipeline.keys import FileRef
from ._pipeline.processor import EventProcessor
from ._ports.objects import ObjectPort, S3Objects
from ._progress import Progress
from ._restore import RestoreSettings, restored_refs
from ._roads.s3_listing import (
    DIGEST_LAG,
    FolderCache,
    ListingQuery,
    iter_digest_refs,
    iter_log_refs,
)
from ._runtime import open_config_store
from .checkpoint import CheckpointStore, Claim, FileId, KeyValueStore

__all__ = [
    "DIGEST_LAG",
    "BackfillJob",
    "BackfillResult",
    "NamespacedStore",
    "backfill",
    "backfill_async",
    "enqueue_backfill_async",
    "iter_digest_refs",
    "range_query",
]

log = get_logger("trailproc.backfill")


class NamespacedStore:
    """A view of a checkpoint store in which every file id carries a namespace.

    Progress recorded through it never marks the plain file done (and vice versa), so a
    replay can re-process files the daemon finished, and still resume after a crash.
    The expiring values (pending digest checks) are namespaced too, so a replay's checks
    never consume the daemon's pending hashes, nor the other way round.
    """

    never_suspends = False  # a view: its commits take the general, shielded path

    def __init__(self, store: CheckpointStore, namespace: str) -> None:
        self.store = store
        self.namespace = namespace

    def _id(self, file: FileId) -> FileId:
        return FileId(file.bucket, file.key, f"{file.etag}|{self.namespace}")

    async def claim(self, file: FileId, owner: str, lease_seconds: float) -> Claim:
        return await self.store.claim(self._id(file), owner, lease_seconds)

    async def commit(self, file: FileId, owner: str, position: int) -> None:
        await self.store.commit(self._id(file), owner, position)

    async def complete(self, file: FileId, owner: str, records: int) -> None:
        await self.store.complete(self._id(file), owner, records)

    async def release(self, file: FileId, owner: str) -> None:
        await self.store.release(self._id(file), owner)

    async def is_done(self, file: FileId) -> bool:
        return await self.store.is_done(self._id(file))

    # KeyValueStore (for verify_digests): every trailproc store is one; with a store that
    # is not, these fail as the digest check would without a namespace.
    def _key(self, key: str) -> str:
        return f"{key}|{self.namespace}"

    @property
    def _kv(self) -> KeyValueStore:
        return cast(KeyValueStore, self.store)

    async def remember(
        self, key: str, value: str, ttl_seconds: float, *, only_new: bool = False
    ) -> bool:
        return await self._kv.remember(self._key(key), value, ttl_seconds, only_new=only_new)

    async def recall(self, key: str) -> str | None:
        return await self._kv.recall(self._key(key))

    async def forget(self, key: str) -> str | None:
        return await self._kv.forget(self._key(key))

    async def close(self) -> None:
        await self.store.close()


@dataclass
class BackfillResult(RunResult):
    """What a backfill did (files/records/bytes from the metrics, like `RunResult`)."""

    listed: int = 0
    namespace: str | None = None
    interrupted: bool = False
    seconds: float = 0.0
    digests_listed: int = 0  # of `listed`, the digest files (verify_digests)
    unrestored: list[FileRef] = dataclasses.field(default_factory=list)  # still archived

    @property
    def files_failed(self) -> int:
        """Files that failed (or were busy in another worker) in this run."""
        return len(self.failed_files)

    @property
    def digest_matches(self) -> int:
        """Log files found identical to their digest's hash in this run."""
        return int(self.metrics.value("trailproc_digest_checks_total", outcome="match"))

    @property
    def digest_mismatches(self) -> int:
        """Log files whose content differs from their digest's hash (tampered)."""
        return int(self.metrics.value("trailproc_digest_checks_total", outcome="mismatch"))

    @property
    def ok(self) -> bool:
        """No failed file, no interruption, and no log file contradicting its digest."""
        return (not self.files_failed and not self.interrupted and not self.digest_mismatches
                and not self.unrestored)  # fmt: skip


def range_query(
    config: Config,
    bucket: str,
    *,
    prefix: str | None,
    account_ids: Iterable[str],
    regions: Iterable[str],
    start: dt.datetime | dt.date | str | None,
    end: dt.datetime | dt.date | str | None,
    insights: bool,
) -> ListingQuery:
    """The listing for an event-time range: files delivered from `start` until
    `late_delivery_minutes` after `end`, since CloudTrail delivers an event up to about
    15 minutes after it happened (those later files can hold events of the range)."""
    query = ListingQuery.build(
        bucket, prefix=prefix, account_ids=account_ids, regions=regions,
        start=start, end=end, insights=insights,
    )  # fmt: skip
    if query.end is None or not config.late_delivery_minutes:
        return query
    return dataclasses.replace(
        query, end=query.end + dt.timedelta(minutes=config.late_delivery_minutes)
    )


async def _counted(refs: AsyncIterator[FileRef], result: BackfillResult) -> AsyncIterator[FileRef]:
    async for ref in refs:
        result.listed += 1
        yield ref


def _namespace(force: bool, namespace: str | None) -> str | None:
    if force and namespace:
        raise ValueError("force starts a fresh checkpoint namespace; do not also name one")
    if force:
        return "force-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return namespace or None


@dataclass(frozen=True)
class BackfillJob:
    """What a backfill reads (the bucket and the selection in it) and how it keeps its
    progress (see the module docstring for `force` and `namespace`)."""

    bucket: str
    prefix: str | None = None
    account_ids: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    start_time: dt.datetime | dt.date | str | None = None
    end_time: dt.datetime | dt.date | str | None = None
    insights: bool = False
    force: bool = False
    namespace: str | None = None
    concurrency: int | None = None  # files in flight (default: download_concurrency)
    restore: RestoreSettings | None = None  # archived files: restored, then processed

    def query(self, config: Config) -> ListingQuery:
        return range_query(
            config, self.bucket, prefix=self.prefix, account_ids=self.account_ids,
            regions=self.regions, start=self.start_time, end=self.end_time,
            insights=self.insights,
        )  # fmt: skip


@dataclass
class _Listing:
    """The files of one backfill in the order they are handed over: the log files (held
    back until restored, where archived), then with verify_digests the digests that can
    list them, each counted in `result`."""

    objects: ObjectPort  # the bucket's objects
    query: ListingQuery
    workers: int
    result: BackfillResult
    with_digests: bool
    restore: Callable[[AsyncIterator[FileRef]], AsyncIterator[FileRef]] | None = None

    async def refs(self) -> AsyncIterator[FileRef]:
        folders: FolderCache = {}  # the digest walk reuses the log walk's folders
        refs = _counted(iter_log_refs(self.objects, self.query, concurrency=self.workers,
                                      folder_cache=folders), self.result)  # fmt: skip
        if self.restore is not None:
            refs = self.restore(refs)
        async for ref in refs:
            yield ref
        if not self.with_digests:
            return
        # After the log files, so most comparisons happen as each digest arrives
        # (either order works: the first side waits in the store).
        digests = iter_digest_refs(self.objects, self.query, concurrency=self.workers,
                                   folder_cache=folders)  # fmt: skip
        async for ref in digests:
            self.result.listed += 1
            self.result.digests_listed += 1
            yield ref


def _restoring(
    job: BackfillJob, runtime: Any, stopping: asyncio.Event, result: BackfillResult
) -> Callable[[AsyncIterator[FileRef]], AsyncIterator[FileRef]] | None:
    """With `job.restore`, a wrapper of the listing that restores archived files before
    handing them on (`trailproc._restore`); those still restoring at a stop are kept in
    `result.unrestored`."""
    settings = job.restore
    if settings is None:
        return None
    objects, store = runtime.objects, runtime.store
    assert objects is not None  # backfill reads S3

    async def client_for(ref: FileRef) -> Any:
        return await objects.client_for(ref.bucket, ref.info.account_id)

    def restore(refs: AsyncIterator[FileRef]) -> AsyncIterator[FileRef]:
        return restored_refs(refs, client_for, store, settings=settings,
                             access_args=objects.access_args, stopping=stopping,
                             unrestored=result.unrestored)  # fmt: skip

    return restore


def _log_start(job: BackfillJob, query: ListingQuery, config: Config, namespace: str | None,
               workers: int) -> None:  # fmt: skip
    log.info("backfill starting", bucket=job.bucket, root=query.root,
             accounts=list(query.account_ids) or "all", regions=list(query.regions) or "all",
             start=query.start.isoformat() if query.start else None,
             end=query.end.isoformat() if query.end else None,
             namespace=namespace, concurrency=workers,
             verify_digests=config.verify_digests)  # fmt: skip


def _log_finish(result: BackfillResult, config: Config) -> None:
    digests = {}
    if config.verify_digests:
        digests = {"digests_listed": result.digests_listed,
                   "digest_matches": result.digest_matches,
                   "digest_mismatches": result.digest_mismatches}  # fmt: skip
    log.info("backfill finished", listed=result.listed, done=result.files_done,
             skipped=result.files_skipped, failed=result.files_failed, records=result.records,
             bytes=result.bytes, seconds=round(result.seconds, 3), namespace=result.namespace,
             interrupted=result.interrupted, **digests)  # fmt: skip


async def backfill_async(
    job: BackfillJob,
    config: Config,
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    progress: bool | None = None,
    log_interval: float = 10.0,
    stopping: asyncio.Event | None = None,
    metrics: Metrics | None = None,
) -> BackfillResult:
    """List the files `job` selects and run each through the pipeline (see module doc).

    With `job.restore`, archived files (Glacier classes) get a RestoreObject request and
    are processed once readable (see `trailproc._restore`). `job.concurrency` files are
    in flight at once (default: `config.limits().download_concurrency`).
    Setting `stopping` stops starting new files; files in flight finish.
    `progress`: True for a tqdm bar, False for log lines, None: a bar on a terminal.
    With `config.verify_digests` the matching digests follow the log files (see the
    module docstring).
    """
    from ._app import run_refs
    from ._runtime import StoreOptions, open_runtime

    ensure_logging(config.log_level, config.log_format)
    query = job.query(config)
    ns = _namespace(job.force, job.namespace)
    workers = max(1, job.concurrency or config.limits().download_concurrency)
    metrics = metrics or Metrics()
    stopping = stopping or asyncio.Event()
    result = BackfillResult(metrics, namespace=ns)
    started = time.monotonic()
    _log_start(job, query, config, ns, workers)

    def namespaced(store: CheckpointStore) -> CheckpointStore:
        return NamespacedStore(store, ns) if ns else store

    namespace = StoreOptions(wrap=namespaced)
    # --concurrency sets the downloads too; without it both follow the memory budget.
    if job.concurrency:
        config = config.replace(download_concurrency=workers)
    async with open_runtime(config, processor, metrics=metrics,
                            store=namespace) as runtime:  # fmt: skip
        objects = S3Objects(await runtime.s3().for_object(job.bucket))
        listing = _Listing(objects, query, workers, result, with_digests=config.verify_digests,
                           restore=_restoring(job, runtime, stopping, result))  # fmt: skip
        meter = Progress(metrics, desc="backfill", bar=progress, interval=log_interval)
        try:
            await run_refs(
                runtime.pipeline, listing.refs(), concurrency=workers,
                failed=result.failed_files, progress=meter, stopping=stopping,
                trust=runtime.trust,
            )  # fmt: skip
        finally:
            meter.close()
    result.interrupted = stopping.is_set()
    result.seconds = time.monotonic() - started
    _log_finish(result, config)
    return result


async def enqueue_backfill_async(
    job: BackfillJob,
    config: Config,
    queue_url: str,
    *,
    progress: bool | None = None,
    stopping: asyncio.Event | None = None,
) -> EnqueueResult:
    """List the files `job` selects and queue one S3-event message per file for a fleet
    of `trailproc run` workers (or Lambda functions) sharing `config.checkpoint`.

    Files the checkpoint store records as done are not queued unless `job.force`; the
    job's namespace, concurrency and restore settings are the workers' business.
    """
    from tqdm import tqdm

    from ._aws import AwsClients, S3Router, queue_region

    ensure_logging(config.log_level, config.log_format)
    query = job.query(config)
    bucket, force = job.bucket, job.force
    store = None if force else open_config_store(config)
    bar = tqdm(total=0, unit="file", desc="enqueue", file=sys.stderr, dynamic_ncols=True,
               disable=not (sys.stderr.isatty() if progress is None else progress))  # fmt: skip
    log.info("enqueue starting", bucket=bucket, queue_url=queue_url, force=force,
             start=query.start.isoformat() if query.start else None,
             end=query.end.isoformat() if query.end else None)  # fmt: skip
    try:
        async with AwsClients(config) as clients:
            s3 = await S3Router(clients).for_object(bucket)
            sqs = await clients.client("sqs", region=config.sqs_region or queue_region(queue_url))
            downloads = config.limits().download_concurrency
            refs = iter_log_refs(S3Objects(s3), query, concurrency=downloads)
            result = await enqueue_refs(refs, sqs, queue_url, store, progress=bar,
                                        stopping=stopping)  # fmt: skip
    finally:
        bar.close()
        if store is not None:
            await store.close()
    log.info("enqueue finished", listed=result.listed, sent=result.sent,
             already_done=result.skipped_done, unsent=len(result.unsent))  # fmt: skip
    return result


def backfill(  # noqa: PLR0913 - public API: the options are documented keywords, one per setting
    bucket: str,
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    config: Config | None = None,
    prefix: str | None = None,
    account_ids: Iterable[str] = (),
    regions: Iterable[str] = (),
    start_time: dt.datetime | dt.date | str | None = None,
    end_time: dt.datetime | dt.date | str | None = None,
    insights: bool = False,
    force: bool = False,
    namespace: str | None = None,
    concurrency: int | None = None,
    progress: bool | None = None,
    restore_days: int | None = None,
    restore_poll_seconds: float = 300.0,
    **overrides: Any,
) -> BackfillResult:
    """Blocking `backfill_async`; `overrides` are configuration keys (handlers, checkpoint...).

    >>> backfill("trail-bucket", MyProcessor(), start_time="2024-01-01")  # doctest: +SKIP
    """
    config = config.replace(**overrides) if config else load_config(**overrides)
    restore = (
        RestoreSettings(restore_days, poll_seconds=restore_poll_seconds) if restore_days else None
    )
    job = BackfillJob(
        bucket, prefix=prefix, account_ids=tuple(account_ids), regions=tuple(regions),
        start_time=start_time, end_time=end_time, insights=insights, force=force,
        namespace=namespace, concurrency=concurrency, restore=restore,
    )  # fmt: skip
    return asyncio.run(backfill_async(job, config, processor, progress=progress))


if __name__ == "__main__":  # pragma: no cover - `python -m trailproc._backfill`
    import runpy

    # The command lives in the CLI module (click is imported by CLI modules only).
    runpy.run_module("trailproc._backfill_cli", run_name="__main__")
