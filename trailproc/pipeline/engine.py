"""The file pipeline: every source's file references go through these same stages.

    claim (checkpoint) → fetch → decompress (capped) → split → Event → filter → batch
    → user code → commit progress → complete

It knows nothing of SQS, Lambda or S3 listings: a source hands it a `FileRef` and gets a
`FileOutcome` back, and decides itself how to acknowledge.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from ..checkpoint.base import CheckpointStore, ClaimState, FileId
from ..errors import HandlerError, TrailprocError
from ..observe import Metrics, get_logger
from ..processor import Dispatcher, EventProcessor, ProgressInfo, ProgressState
from .batches import iter_batches
from .decode import decode_log
from .events import Delivery
from .fetch import Fetcher
from .keys import FileRef

__all__ = ["FileOutcome", "FilePipeline"]

log = get_logger("trailproc.pipeline")

Status = Literal["done", "already_done", "busy", "failed"]


@dataclass(frozen=True, slots=True)
class FileOutcome:
    ref: FileRef
    status: Status
    records: int = 0  # records handed over in this attempt
    error: TrailprocError | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("done", "already_done")


class _LeaseLost(Exception):
    pass


class FilePipeline:
    """Runs one file at a time through every stage; many files may run concurrently."""

    def __init__(
        self,
        *,
        processor: EventProcessor,
        store: CheckpointStore,
        fetcher: Fetcher,
        metrics: Metrics,
        owner: str,
        max_events_per_emit: int = 100,
        max_decompressed_bytes: int = 1 << 30,
        lease_seconds: float = 60.0,
        handlers_in_thread: bool = True,
        on_decoded: Any = None,
    ) -> None:
        self.processor = processor
        self.dispatch = Dispatcher(processor, in_thread=handlers_in_thread)
        self.store = store
        self.fetcher = fetcher
        self.metrics = metrics
        self.owner = owner
        self.batch_size = max_events_per_emit
        self.max_bytes = max_decompressed_bytes
        self.lease_seconds = lease_seconds
        # Called with (ref, decompressed bytes) for inline integrity checks.
        self.on_decoded = on_decoded

    def report_start(self, state: ProgressState, info: ProgressInfo) -> Any:
        try:
            return self.processor.report_start(state, info)
        except Exception:
            log.exception("progress hook failed", hook="report_start", state=state.value)
            return None

    def report_end(self, state: ProgressState, info: ProgressInfo, token: Any) -> None:
        try:
            self.processor.report_end(state, info, token)
        except Exception:
            log.exception("progress hook failed", hook="report_end", state=state.value)

    def fail(self, error: TrailprocError) -> None:
        """Log, count and report one failure: the single place a failure is surfaced."""
        self.metrics.errors.labels(error.reason).inc()
        log.error(
            error.message,
            reason=error.reason,
            message_id=error.message_id,
            bucket=error.bucket,
            key=error.key,
            cause=repr(error.__cause__) if error.__cause__ else None,
        )
        try:
            self.processor.on_error(error)
        except Exception:
            log.exception("on_error hook failed")

    async def run(self, ref: FileRef, message_id: str | None = None) -> FileOutcome:
        kind = ref.kind.value
        self.metrics.in_flight_files.inc()
        started = time.monotonic()
        try:
            outcome = await self._run(ref, message_id)
        finally:
            self.metrics.in_flight_files.dec()
        self.metrics.files.labels(kind, outcome.status).inc()
        self.metrics.file_seconds.observe(time.monotonic() - started)
        if outcome.error is not None:
            self.fail(outcome.error)
        return outcome

    async def _run(self, ref: FileRef, message_id: str | None) -> FileOutcome:
        where = {"message_id": message_id, "bucket": ref.bucket, "key": ref.key}
        if ref.etag and await self.store.is_done(FileId(ref.bucket, ref.key, ref.etag)):
            return FileOutcome(ref, "already_done")

        info = ProgressInfo(True, message_id, ref.bucket, ref.key)
        token = self.report_start(ProgressState.DOWNLOAD, info)
        try:
            fetched = await self.fetcher.fetch(ref)
        except TrailprocError as exc:
            self.report_end(ProgressState.DOWNLOAD, replace(info, success=False), token)
            return FileOutcome(ref, "failed", error=exc.located(**where))
        self.report_end(ProgressState.DOWNLOAD, info, token)
        self.metrics.bytes_compressed.inc(len(fetched.data))

        ref = replace(ref, etag=fetched.etag or ref.etag, version_id=fetched.version_id)
        file_id = FileId(ref.bucket, ref.key, ref.etag or "")
        claim = await self.store.claim(file_id, self.owner, self.lease_seconds)
        if claim.state is ClaimState.DONE:
            return FileOutcome(ref, "already_done")
        if claim.state is ClaimState.BUSY:
            # Another worker is on it right now; our message comes back later and by then
            # the file is done (skipped) or the other worker's lease has expired (resumed).
            log.info("file busy in another worker", **where)
            return FileOutcome(ref, "busy")

        token = self.report_start(ProgressState.PROCESS_LOG, info)
        try:
            handed = await self._hand_over(ref, file_id, fetched.data, claim.position, message_id)
        except TrailprocError as exc:
            await self._release(file_id)
            self.report_end(ProgressState.PROCESS_LOG, replace(info, success=False), token)
            return FileOutcome(ref, "failed", error=exc.located(**where))
        except _LeaseLost:
            self.report_end(ProgressState.PROCESS_LOG, replace(info, success=False), token)
            log.warning("lease lost to another worker; stopping this file", **where)
            return FileOutcome(ref, "busy")
        except BaseException:
            await self._release(file_id)
            raise
        self.report_end(ProgressState.PROCESS_LOG, info, token)
        return FileOutcome(ref, "done", records=handed)

    async def _release(self, file_id: FileId) -> None:
        try:
            await self.store.release(file_id, self.owner)
        except Exception:  # the lease also expires by itself
            log.warning("could not release checkpoint lease", file=str(file_id))

    async def _hand_over(
        self, ref: FileRef, file_id: FileId, data: bytes, position: int, message_id: str | None
    ) -> int:
        # Decompression and splitting are CPU-bound: keep them off the event loop so
        # receives and visibility heartbeats stay on time.
        records, size = await asyncio.to_thread(decode_log, data, max_bytes=self.max_bytes)
        self.metrics.bytes_decompressed.inc(size)
        if self.on_decoded is not None:
            await self.on_decoded(ref, records)
        delivery = Delivery(ref, message_id)
        keep = self.processor.filter_event
        handed = 0
        renewed = time.monotonic()
        for batch, next_position, dropped in iter_batches(
            records, delivery, start=position, size=self.batch_size, keep=keep
        ):
            if batch:
                try:
                    await self.dispatch(batch)
                except Exception as exc:
                    raise HandlerError(
                        f"handler raised {type(exc).__name__}: {exc} "
                        f"(batch of records {batch[0].index}..{batch[-1].index})"
                    ) from exc
            await self._commit(file_id, next_position)
            handed += len(batch)
            self.metrics.records.inc(len(batch))
            if dropped:
                self.metrics.records_filtered.inc(dropped)
            if time.monotonic() - renewed > self.lease_seconds / 3:
                await self.store.claim(file_id, self.owner, self.lease_seconds)
                renewed = time.monotonic()
        await self.store.complete(file_id, self.owner, len(records))
        return handed

    async def _commit(self, file_id: FileId, position: int) -> None:
        try:
            await self.store.commit(file_id, self.owner, position)
        except Exception as exc:
            if type(exc).__name__ == "LeaseLost":
                raise _LeaseLost() from exc
            raise

    async def close(self) -> None:
        self.dispatch.shutdown()
