"""The one observer every layer is given: failures, progress hooks, metrics and the
inline digest checks, so that no layer reaches into another to report.

`open_runtime` builds one `PipelineObserver` per run and hands it to the file pipeline,
which hands it on to the roads (`pipeline.observer`). A failure is logged once (one line
naming message id, bucket and key when known), counted, and passed to the user's
`on_error`; progress goes to the user's `report_start` and `report_end` hooks (a hook
that raises is logged and never breaks the work); the pipeline's stage counters are
kept here too, once per file or per batch, never per record.

With `verify_digests` the observer also carries the digest checks (`digests`), set up
from the config when the runtime opens: the pipeline hashes log files and meets digests
through them, and each comparison comes back to `digest_checked`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .._errors import DigestMismatch, InternalError, TrailprocError
from .._observe import Metrics, get_logger
from .events import Event
from .keys import FileRef, KeyInfo
from .processor import EventProcessor, ProgressInfo, ProgressState

if TYPE_CHECKING:  # digest checks: imported only when enabled
    from ..checkpoint import CheckpointStore
    from .digests import HashCheck, PendingDigestChecks

__all__ = ["PipelineObserver"]

log = get_logger("trailproc.pipeline")


class PipelineObserver:
    """Surfaces failures, progress and stage counts to the logs, the metrics and the
    user's hooks; carries the run's digest checks (None: `verify_digests` is off)."""

    def __init__(
        self,
        processor: EventProcessor,
        metrics: Metrics,
        *,
        digest_store: CheckpointStore | None = None,
        digest_wait_seconds: float = 7 * 86400.0,
    ) -> None:
        self.processor = processor
        self.metrics = metrics
        self.digests: PendingDigestChecks | None = None
        if digest_store is not None:
            self.digests = self._digest_checks(digest_store, digest_wait_seconds)

    def _digest_checks(self, store: CheckpointStore, wait_seconds: float) -> PendingDigestChecks:
        """Hash log files as they are processed and check them against their digests.

        Pending hashes wait up to `wait_seconds` in the checkpoint store, which must
        therefore be a `KeyValueStore` (all of trailproc's stores are). A mismatch is
        surfaced through `fail` and counted in `trailproc_digest_checks_total`; records
        are never withheld because of it."""
        from .digests import PendingDigestChecks

        try:
            return PendingDigestChecks(
                store,  # type: ignore[arg-type]  # checked at run time (TypeError)
                self.digest_checked,
                wait_seconds=wait_seconds,
            )
        except TypeError as exc:
            raise ValueError(f"verify_digests needs a store that keeps values: {exc}") from None

    # --- the user's progress hooks -------------------------------------------------------
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

    # --- failures ------------------------------------------------------------------------
    def fail(self, error: TrailprocError) -> None:
        """Log, count and report one failure: the single place a failure is surfaced."""
        self.metrics.errors.labels(error.reason).inc()
        extra: dict[str, Any] = {}
        if isinstance(error, DigestMismatch):
            extra = {"digest_key": error.digest_key, "expected_sha256": error.expected,
                     "actual_sha256": error.actual}  # fmt: skip
        where = {"message_id": error.message_id, "bucket": error.bucket, "key": error.key,
                 "cause": repr(error.__cause__) if error.__cause__ else None}  # fmt: skip
        if isinstance(error, InternalError) and error.__cause__ is not None:
            extra["exc_info"] = error.__cause__  # a bug: the traceback, in the same line
        # Only what is known: a local file has no message id or bucket.
        log.error(
            error.message,
            reason=error.reason,
            **{k: v for k, v in where.items() if v},
            **extra,
        )
        try:
            self.processor.on_error(error)
        except Exception:
            log.exception("on_error hook failed")

    # --- one file through the pipeline (per file or per batch, never per record) --------
    def file_started(self) -> float:
        """A file's work begins; returns the start time to give to `file_finished`."""
        self.metrics.in_flight_files.inc()
        return time.monotonic()

    def file_finished(self, started: float) -> None:
        self.metrics.in_flight_files.dec()
        self.metrics.file_seconds.observe(time.monotonic() - started)

    def file_outcome(self, ref: FileRef, status: str) -> None:
        """How a file ended (done, already_done, busy, interrupted, failed)."""
        self.metrics.files.labels(ref.kind.value, status).inc()

    def fetched(self, compressed_bytes: int) -> None:
        self.metrics.bytes_compressed.inc(compressed_bytes)

    def decoded(self, decompressed_bytes: int) -> None:
        self.metrics.bytes_decompressed.inc(decompressed_bytes)

    def batch_handed_over(self, info: KeyInfo, batch: list[Event], dropped: int) -> None:
        """`process` returned for `batch`; `dropped` records before it were filtered out."""
        self.metrics.handed_over(info, batch)
        if dropped:
            self.metrics.records_filtered.inc(dropped)

    # --- digest checks -------------------------------------------------------------------
    def digest_checked(self, check: HashCheck) -> None:
        """One log file compared with its digest: count it, and surface a mismatch."""
        outcome = check.outcome
        self.metrics.digest_checks.labels(outcome).inc()
        if outcome == "unverified":
            log.warning("log file unverified: its digest did not arrive in time",
                        bucket=check.bucket, key=check.key, actual_sha256=check.actual)  # fmt: skip
            return
        if check.matched:
            log.debug("log file matches its digest", bucket=check.bucket, key=check.key,
                      digest_key=check.digest_key)  # fmt: skip
            return
        self.fail(
            DigestMismatch(
                f"log file does not match its CloudTrail digest {check.digest_uri}: "
                f"digest says sha256 {check.expected}, processed bytes have {check.actual}",
                expected=check.expected,
                actual=check.actual,
                digest_bucket=check.digest_bucket,
                digest_key=check.digest_key,
                bucket=check.bucket,
                key=check.key,
            )
        )

    def gap_filled(self, ref: FileRef, digest: FileRef, records: int) -> None:
        """A log file no notification named was handed over because its digest lists it."""
        self.metrics.missed_deliveries.inc()
        log.warning("log file was never notified; handed over because its digest lists it",
                    bucket=ref.bucket, key=ref.key, digest_key=digest.key,
                    records=records)  # fmt: skip
