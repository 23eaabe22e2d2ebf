"""The file pipeline: every source's file references go through these same stages.

    claim (checkpoint) → fetch → decompress (capped) → split → Event → filter → batch
    → user code → commit progress → complete

It knows nothing of SQS, Lambda or S3 listings: a source hands it a `FileRef` and gets a
`FileOutcome` back, and decides itself how to acknowledge.

Everything it has to tell goes to the `PipelineObserver` it is given (failures, progress
hooks, metrics). When that observer carries digest checks (the `verify_digests` option,
set up when the runtime opens) each log file's decompressed bytes are hashed in the
decode thread and, once its records were handed over, met with its digest's entry in the
checkpoint store; digest objects take their own short path (claim → fetch → compare →
complete) and never reach user code.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from .._errors import (
    BadLogFile,
    CheckpointError,
    HandlerError,
    TrailprocError,
    retry_transient,
)
from .._observe import get_logger
from ..checkpoint import CheckpointStore, Claim, ClaimState, FileId, LeaseLost
from .batches import iter_batches
from .budget import MemoryBudget, Reservation
from .budgeted import decode_within
from .events import Delivery
from .fetch import Fetcher
from .filters import RecordFilter, keep_both
from .gunzip import decompress
from .keys import FileRef, ObjectKind
from .observer import PipelineObserver
from .processor import Dispatcher, EventProcessor, ProgressInfo, ProgressState

if TYPE_CHECKING:  # digest checks: imported only when enabled
    from .digests import DigestListing
    from .gaps import GapFiller
    from .quarantine import RecordQuarantine

__all__ = ["FileOutcome", "FilePipeline", "PipelineSettings"]

log = get_logger("trailproc.pipeline")

# done/already_done: acknowledge. busy: another attempt holds the file right now (this
# worker or another), try later. interrupted: shutdown stopped it at a batch boundary,
# progress committed, release at once. failed: keep the message for retry/DLQ.
Status = Literal["done", "already_done", "busy", "interrupted", "failed"]


@dataclass(frozen=True, slots=True)
class FileOutcome:
    ref: FileRef
    status: Status
    records: int = 0  # records handed over in this attempt
    error: TrailprocError | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("done", "already_done")


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """How the pipeline runs each file; the runtime builds them once from the Config."""

    owner: str  # the name this worker's checkpoint leases are taken under
    max_events_per_emit: int = 100
    max_decompressed_bytes: int = 1 << 30
    lease_seconds: float = 60.0
    handlers_in_thread: bool = True
    record_filter: RecordFilter | None = None


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One file being run: its ref, its checkpoint id, the message that named it."""

    ref: FileRef
    file_id: FileId
    message_id: str | None

    @property
    def where(self) -> dict[str, Any]:
        """How an error names the file: message id, bucket and key."""
        return {"message_id": self.message_id, "bucket": self.ref.bucket, "key": self.ref.key}


class _Interrupted(Exception):
    pass


def _drop_frames(error: BaseException) -> None:
    """Forget the frames of a reported failure and of its causes: they hold the file's
    bytes and records, which its share of the memory budget no longer counts."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        current = current.__cause__ or current.__context__


def _name(ref: FileRef) -> str:
    """How logs name a file: its S3 URI, or its path for a local file."""
    return ref.uri if ref.bucket else ref.key


def _read_digest(data: bytes, max_bytes: int) -> DigestListing:
    from .digests import parse_digest

    document = decompress(data, max_bytes=max_bytes)
    try:
        return parse_digest(document)
    except ValueError as exc:
        raise BadLogFile(f"unreadable CloudTrail digest file: {exc}") from exc


# What the file being run in this task holds of the memory budget (set by `run`).
_held: contextvars.ContextVar[Reservation] = contextvars.ContextVar("trailproc_held_memory")


class FilePipeline:
    """Runs one file at a time through every stage; many files may run concurrently.

    Every file run holds a share of `budget` (see `budget.py`): its download once its size
    is known, then its decompressed bytes and records, until it is done."""

    def __init__(
        self,
        *,
        processor: EventProcessor,
        store: CheckpointStore,
        fetcher: Fetcher,
        observer: PipelineObserver,
        settings: PipelineSettings,
        budget: MemoryBudget | None = None,
        quarantine: RecordQuarantine | None = None,
        fill_gaps: Callable[[Callable[..., Awaitable[FileOutcome]]], GapFiller] | None = None,
    ) -> None:
        self.processor = processor
        if budget is None:
            from .._memory import budget_bytes

            budget = MemoryBudget(budget_bytes(None), probe=observer.metrics)
        self.budget = budget
        self.observer = observer
        # Per record: the configured filter, then the processor's filter_event.
        self.keep = keep_both(settings.record_filter, processor)
        self.dispatch = Dispatcher(processor, in_thread=settings.handlers_in_thread)
        self.store = store
        self.fetcher = fetcher
        self.settings = settings
        # Read on every batch: copied out of `settings` once.
        self.owner = settings.owner
        self.batch_size = settings.max_events_per_emit
        self.max_bytes = settings.max_decompressed_bytes
        self.lease_seconds = settings.lease_seconds
        # Inline digest verification (None: off; digests are then ordinary objects).
        self.digest_checks = observer.digests
        # With digest checks: hands over, through `run`, the log files a digest lists that
        # no notification named (`fill_gaps` builds it around this pipeline's `run`).
        self.gap_filler: GapFiller | None = None
        if fill_gaps is not None and self.digest_checks is not None:
            self.gap_filler = fill_gaps(self.run)
        # With `quarantine` configured: isolates the records a handler cannot take;
        # None: a handler error fails the whole file.
        self.quarantine = quarantine
        # Files this process is working on right now. The store's lease is per owner, and
        # one owner may receive the same file twice at once (a message redelivered while
        # still being processed, or two messages naming one object): only one goes on.
        self._active: set[FileId] = set()
        self._interrupted = False
        # Stores whose calls never suspend (in-process dicts, a local SQLite file) leave
        # no point where a cancellation could land inside a commit: they are awaited
        # directly, without the task + shield that protect commits to a remote store.
        # Each shielded commit is a trip through the event loop's queue, which holds the
        # file (and its message's in-flight slot) behind every other ready callback.
        self._store_never_suspends = store.never_suspends is True

    def interrupt(self) -> None:
        """Shutdown: every file stops at its next batch boundary (progress committed)."""
        self._interrupted = True

    async def _store(self, what: str, call: Any) -> Any:
        """One checkpoint-store call, transient failures retried; others → CheckpointError."""
        try:
            return await retry_transient(call, attempts=5)
        except Exception as exc:
            if isinstance(exc, LeaseLost):
                raise
            raise CheckpointError(
                f"checkpoint store {what} failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def run(self, ref: FileRef, message_id: str | None = None) -> FileOutcome:
        """Run one S3 object (or local file) through every stage."""
        return await self._measured(ref, self._held_run(ref, message_id))

    async def _held_run(self, ref: FileRef, message_id: str | None) -> FileOutcome:
        """`_run` with this file's share of the memory budget, given back at the end."""
        held = self.budget.reservation(_name(ref))
        token = _held.set(held)
        try:
            return await self._run(ref, message_id)
        finally:
            _held.reset(token)
            held.release()

    async def run_records(
        self, ref: FileRef, records: list[Any], message_id: str | None = None
    ) -> FileOutcome:
        """Hand over records that came inside a message (EventBridge), checkpointed under
        `ref` like a file, so a redelivered message is not handed over twice."""
        attempt = _Attempt(ref, FileId(ref.bucket, ref.key, ref.etag or ""), message_id)
        return await self._measured(ref, self._process(attempt, None, records))

    async def _measured(self, ref: FileRef, work: Any) -> FileOutcome:
        """Count, time and surface the outcome of `work` (the one place for both)."""
        if self._interrupted:
            work.close()  # never started: shutdown is under way
            outcome = FileOutcome(ref, "interrupted")
        else:
            started = self.observer.file_started()
            try:
                outcome = await work
            finally:
                self.observer.file_finished(started)
        self.observer.file_outcome(ref, outcome.status)
        if outcome.error is not None:
            self.observer.fail(outcome.error)
            _drop_frames(outcome.error)
        return outcome

    async def _run(self, ref: FileRef, message_id: str | None) -> FileOutcome:
        where = {"message_id": message_id, "bucket": ref.bucket, "key": ref.key}
        try:
            if ref.etag and await self._store(
                "read", lambda: self.store.is_done(FileId(ref.bucket, ref.key, ref.etag or ""))
            ):
                return FileOutcome(ref, "already_done")
        except CheckpointError as exc:
            return FileOutcome(ref, "failed", error=exc.located(**where))

        info = ProgressInfo(True, message_id, ref.bucket, ref.key)
        token = self.observer.report_start(ProgressState.DOWNLOAD, info)
        try:
            fetched = await self.fetcher.fetch(ref, _held.get())
        except TrailprocError as exc:
            self.observer.report_end(ProgressState.DOWNLOAD, replace(info, success=False), token)
            return FileOutcome(ref, "failed", error=exc.located(**where))
        self.observer.report_end(ProgressState.DOWNLOAD, info, token)
        self.observer.fetched(len(fetched.data))

        ref = replace(ref, etag=fetched.etag or ref.etag, version_id=fetched.version_id)
        attempt = _Attempt(ref, FileId(ref.bucket, ref.key, ref.etag or ""), message_id)
        if ref.kind is ObjectKind.DIGEST and self.digest_checks is not None:
            return await self._digest(attempt, fetched.data)
        return await self._process(attempt, fetched.data, None)

    async def _digest(self, attempt: _Attempt, data: bytes) -> FileOutcome:
        """Check the log files a digest lists (or leave their expected hashes waiting).

        Checkpointed like a log file, so a redelivered digest is not checked twice. A
        mismatch is a finding, not a failure: the digest completes and its message is
        acknowledged. An unreadable digest or a store failure fails (kept for retry).
        """
        checker = self.digest_checks
        assert checker is not None
        ref, file_id, message_id = attempt.ref, attempt.file_id, attempt.message_id
        async with self._exclusive(attempt) as claim:
            if isinstance(claim, FileOutcome):
                return claim
            unseen: list[tuple[str, str]] = []
            try:
                listing = await asyncio.to_thread(_read_digest, data, self.max_bytes)
                checks = await self._pending_checks(
                    "digest check",
                    lambda: checker.digest_processed(listing, lambda b, k: unseen.append((b, k))),
                )
                await asyncio.shield(
                    self._store(
                        "complete",
                        lambda: self.store.complete(file_id, self.owner, len(listing.log_files)),
                    )
                )
            except TrailprocError as exc:
                await self._release(file_id)
                return FileOutcome(ref, "failed", error=exc.located(**attempt.where))
            except BaseException:
                await asyncio.shield(self._release(file_id))
                raise
            log.info("digest checked", message_id=message_id, key=ref.key,
                     listed=len(listing.log_files), checked=len(checks),
                     mismatched=sum(not c.matched for c in checks))  # fmt: skip
            if self.gap_filler is not None and unseen:
                await self.gap_filler(ref, unseen, message_id)
            return FileOutcome(ref, "done")

    async def _pending_checks(self, what: str, call: Any) -> Any:
        """A digest-check step (its store calls retry transient errors themselves)."""
        try:
            return await call()
        except TrailprocError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint store {what} failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def _process(
        self, attempt: _Attempt, data: bytes | None, records: list[Any] | None
    ) -> FileOutcome:
        async with self._exclusive(attempt) as claim:
            if isinstance(claim, FileOutcome):
                return claim
            return await self._claimed(attempt, data, records, claim.position)

    @contextlib.asynccontextmanager
    async def _exclusive(self, attempt: _Attempt) -> AsyncIterator[Claim | FileOutcome]:
        """Claim the attempt's file for this worker: yields the Claim, or the outcome to
        return instead (done before, busy here or elsewhere, store failure)."""
        ref, file_id, where = attempt.ref, attempt.file_id, attempt.where
        # The store's lease is per owner, and one owner may be handed the same file twice
        # at once (a message redelivered while still being worked on, or two messages
        # naming one object): only one goes on.
        if file_id in self._active:
            log.info("file already being processed here; trying later", **where)
            yield FileOutcome(ref, "busy")
            return
        self._active.add(file_id)
        try:
            try:
                claim = await self._store(
                    "claim", lambda: self.store.claim(file_id, self.owner, self.lease_seconds)
                )
            except CheckpointError as exc:
                yield FileOutcome(ref, "failed", error=exc.located(**where))
                return
            if claim.state is ClaimState.DONE:
                yield FileOutcome(ref, "already_done")
            elif claim.state is ClaimState.BUSY:
                # Another worker is on it right now; our message comes back later and by
                # then the file is done (skipped) or the other lease expired (resumed).
                log.info("file busy in another worker", **where)
                yield FileOutcome(ref, "busy")
            else:
                yield claim
        finally:
            self._active.discard(file_id)

    async def _claimed(
        self, attempt: _Attempt, data: bytes | None, records: list[Any] | None, position: int
    ) -> FileOutcome:
        ref, file_id, where = attempt.ref, attempt.file_id, attempt.where
        info = ProgressInfo(True, attempt.message_id, ref.bucket, ref.key)
        token = self.observer.report_start(ProgressState.PROCESS_LOG, info)
        try:
            handed = await self._hand_over(attempt, data, records, position)
        except TrailprocError as exc:
            await self._release(file_id)
            self.observer.report_end(ProgressState.PROCESS_LOG, replace(info, success=False), token)
            return FileOutcome(ref, "failed", error=exc.located(**where))
        except LeaseLost:
            self.observer.report_end(ProgressState.PROCESS_LOG, replace(info, success=False), token)
            log.warning("lease lost to another worker; stopping this file", **where)
            return FileOutcome(ref, "busy")
        except _Interrupted:
            await self._release(file_id)
            self.observer.report_end(ProgressState.PROCESS_LOG, replace(info, success=False), token)
            log.info("shutting down: file stopped at a batch boundary", **where)
            return FileOutcome(ref, "interrupted")
        except BaseException:
            await asyncio.shield(self._release(file_id))
            raise
        self.observer.report_end(ProgressState.PROCESS_LOG, info, token)
        return FileOutcome(ref, "done", records=handed)

    async def _release(self, file_id: FileId) -> None:
        try:
            await self._store("release", lambda: self.store.release(file_id, self.owner))
        except Exception:  # the lease also expires by itself
            log.warning("could not release checkpoint lease", file=str(file_id))

    async def _hand_over(
        self, attempt: _Attempt, data: bytes | None, records: list[Any] | None, position: int
    ) -> int:
        ref, file_id = attempt.ref, attempt.file_id
        # The lease was taken just before this call: renewals count from here, not from
        # the end of decoding (a large file's decode may take a good part of the lease).
        renewed = time.monotonic()
        sha256: str | None = None
        one_line = False
        if records is None:
            assert data is not None
            records, one_line, sha256 = await self._decoded(ref, data)
        file_size = len(data) if data is not None else ref.size
        delivery = Delivery(ref, attempt.message_id, one_line=one_line, size=file_size)
        handed = 0
        yielded = time.monotonic()
        total = len(records)
        for batch, next_position, dropped in iter_batches(
            records, delivery, start=position, size=self.batch_size, keep=self.keep
        ):
            if self._interrupted:
                raise _Interrupted()
            if batch:
                await self._to_user(batch)
            # The batch returned: from here on it must be recorded even if a shutdown
            # cancels us, or it would be handed over again. The last batch's end is
            # recorded by `complete` right after, one store write less per file (a
            # one-batch file costs claim + complete), unless a digest check comes between.
            if next_position < total or sha256 is not None:
                yielded = await self._record(file_id, next_position, yielded)
            handed += len(batch)
            self.observer.batch_handed_over(ref.info, batch, dropped)
            if time.monotonic() - renewed > self.lease_seconds / 3:
                renewed = await self._renew(file_id)
        await self._finish(ref, file_id, total, sha256)
        return handed

    async def _decoded(self, ref: FileRef, data: bytes) -> tuple[list[Any], bool, str | None]:
        """The file's records, whether it was one line, and its SHA-256 when a digest
        check will want it (the decompressed bytes digests list), each step reserved in
        the file's share of the memory budget first."""
        decoded = await decode_within(
            _held.get(), data, max_bytes=self.max_bytes, name=_name(ref),
            hashed=self.digest_checks is not None and ref.kind is ObjectKind.LOG
            and bool(ref.bucket),
        )  # fmt: skip
        self.observer.decoded(decoded.size)
        return decoded.records, decoded.one_line, decoded.sha256

    async def _to_user(self, batch: list[Any]) -> None:
        try:
            await self.dispatch(batch)
        except Exception as exc:
            if self.quarantine is not None and await self.quarantine.isolate(
                batch, self.dispatch, exc
            ):
                return
            raise HandlerError(
                f"handler raised {type(exc).__name__}: {exc} "
                f"(batch of records {batch[0].index}..{batch[-1].index})"
            ) from exc

    async def _record(self, file_id: FileId, position: int, yielded: float) -> float:
        """Commit `position`; returns when the loop was last given a turn."""
        if self._store_never_suspends:
            await self._unsuspended("commit", self.store.commit(file_id, self.owner, position))
            if time.monotonic() - yielded > 0.02:
                # Nothing above suspended: let the loop run (other files, heartbeats,
                # signals) every 20 ms, as the task + shield below would each batch.
                await asyncio.sleep(0)
                return time.monotonic()
            return yielded
        commit = asyncio.ensure_future(self._commit(file_id, position))
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            # Let the commit land before the caller releases the lease.
            with contextlib.suppress(Exception):
                await commit
            raise
        return yielded

    async def _renew(self, file_id: FileId) -> float:
        """Renew the file's lease; returns when. LeaseLost if another worker took it."""
        claim = await self._store(
            "lease renewal", lambda: self.store.claim(file_id, self.owner, self.lease_seconds)
        )
        if claim.state in (ClaimState.BUSY, ClaimState.DONE):
            raise LeaseLost(f"{self.owner} lost the lease on {file_id}")
        return time.monotonic()

    async def _finish(self, ref: FileRef, file_id: FileId, total: int, sha256: str | None) -> None:
        if sha256 is not None:
            # Every record was handed over. Meet the digest now, before completing: if the
            # store fails here the file is retried (resuming past its last record) rather
            # than completed with its hash never recorded. A mismatch is only reported.
            checks = self.digest_checks
            assert checks is not None
            digest = sha256
            await self._pending_checks(
                "digest check", lambda: checks.log_processed(ref.bucket, ref.key, digest)
            )
        if self._store_never_suspends:
            await self._unsuspended("complete", self.store.complete(file_id, self.owner, total))
        else:
            await asyncio.shield(
                self._store("complete", lambda: self.store.complete(file_id, self.owner, total))
            )

    async def _commit(self, file_id: FileId, position: int) -> None:
        await self._store("commit", lambda: self.store.commit(file_id, self.owner, position))

    async def _unsuspended(self, what: str, call: Awaitable[None]) -> None:
        """One call to a store that never suspends (see `_store_never_suspends`), awaited as
        is. Such stores have no transient failures to retry (a local file's errors stay),
        so there is no retry wrapper and its coroutines per batch; failures map to the
        same exceptions as in `_commit` and `_store`."""
        try:
            await call
        except LeaseLost:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint store {what} failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def close(self) -> None:
        self.dispatch.shutdown()
