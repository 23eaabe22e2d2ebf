"""One place where failures and progress are surfaced: the reporter every layer is given.

A failure is logged once (one line naming message id, bucket and key when known),
counted, and passed to the user's `on_error`; progress goes to the user's `report_start`
and `report_end` hooks. A hook that raises is logged and never breaks the work.
"""

from __future__ import annotations

from typing import Any

from .._errors import DigestMismatch, InternalError, TrailprocError
from .._observe import Metrics, get_logger
from .processor import EventProcessor, ProgressInfo, ProgressState

__all__ = ["Reporter"]

log = get_logger("trailproc.pipeline")


class Reporter:
    """Surfaces failures and progress to the logs, the metrics and the user's hooks."""

    def __init__(self, processor: EventProcessor, metrics: Metrics) -> None:
        self.processor = processor
        self.metrics = metrics

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
