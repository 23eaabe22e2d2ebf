"""Logging and metrics: structlog lines and Prometheus counters, one place for both.

Logs are readable on a terminal and JSON elsewhere (`log_format="auto"`). Metrics live
in a registry per `Metrics` object, so several pipelines in one process (tests, Lambda
warm starts) never mix their numbers.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:  # prometheus_client is imported when a Metrics object is made
    from prometheus_client import CollectorRegistry

__all__ = ["Metrics", "configure_logging", "get_logger", "redact", "short_handle"]


# Field names whose values are secrets or bearer tokens: never written to a log line.
_SECRET_FIELDS = frozenset(
    {"aws_secret_access_key", "secret_access_key", "secretkey", "secret_key",
     "aws_session_token", "session_token", "sessiontoken", "password", "authorization",
     "credentials", "token"}
)  # fmt: skip
_HANDLE_FIELDS = frozenset({"receipthandle", "receipt_handle", "handle"})


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop secrets, shorten receipt handles, whatever the caller passed."""
    for name in list(event):
        lowered = name.lower()
        if lowered in _SECRET_FIELDS or lowered.endswith(("_secret", "secret_key", "password")):
            event[name] = "[redacted]"
        elif lowered in _HANDLE_FIELDS and isinstance(event[name], str):
            value = event[name]
            event[name] = value if value.endswith("…") else short_handle(value)
    return event


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Route structlog to stderr: colourful console on a TTY, one JSON object per line else."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
            if hasattr(logging, "getLevelNamesMapping")
            else getattr(logging, level.upper())
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "trailproc") -> Any:
    return structlog.get_logger(name)


def short_handle(receipt_handle: str | None) -> str:
    """Receipt handles are long bearer tokens: log only a recognisable prefix."""
    return (receipt_handle or "")[:12] + "…" if receipt_handle else ""


class Metrics:
    """Counters and histograms per pipeline stage."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # Imported here, not at module level: `import trailproc` stays light.
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_received = Counter(
            "trailproc_messages_received", "SQS messages received", registry=r
        )
        self.messages_deleted = Counter(
            "trailproc_messages_deleted",
            "SQS messages deleted, by reason",
            ["reason"],
            registry=r,
        )
        self.messages_kept = Counter(
            "trailproc_messages_kept",
            "SQS messages left on the queue for retry/DLQ, by reason",
            ["reason"],
            registry=r,
        )
        self.visibility_extensions = Counter(
            "trailproc_visibility_extensions", "Visibility heartbeats sent", registry=r
        )
        self.files = Counter(
            "trailproc_files", "Log files by kind and outcome", ["kind", "outcome"], registry=r
        )
        self.bytes_compressed = Counter(
            "trailproc_bytes_compressed", "Object bytes downloaded", registry=r
        )
        self.bytes_decompressed = Counter(
            "trailproc_bytes_decompressed", "Bytes after decompression", registry=r
        )
        self.records = Counter(
            "trailproc_records", "Records handed to user code", registry=r
        )
        self.records_filtered = Counter(
            "trailproc_records_filtered", "Records dropped by filter_event", registry=r
        )
        self.errors = Counter(
            "trailproc_errors", "Errors by reason", ["reason"], registry=r
        )
        self.queue_lag = Histogram(
            "trailproc_queue_lag_seconds",
            "Now minus the message's SentTimestamp when received",
            buckets=(1, 5, 30, 60, 300, 900, 3600, 21600, 86400),
            registry=r,
        )
        self.file_seconds = Histogram(
            "trailproc_file_processing_seconds",
            "Time to process one log file",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300),
            registry=r,
        )
        self.in_flight_messages = Gauge(
            "trailproc_in_flight_messages", "Messages being worked on", registry=r
        )
        self.in_flight_files = Gauge(
            "trailproc_in_flight_files", "Files being worked on", registry=r
        )
        self.last_poll = Gauge(
            "trailproc_last_poll_timestamp", "Unix time of the last receive", registry=r
        )
        self.digest_checks = Counter(
            "trailproc_digest_checks",
            "Processed log files compared with their digest (verify_digests), by outcome",
            ["outcome"],
            registry=r,
        )
        self.stage_seconds = Histogram(
            "trailproc_stage_seconds",
            "Time spent per pipeline stage (receive, download, decode, handler)",
            ["stage"],
            buckets=(0.005, 0.025, 0.1, 0.5, 1, 2.5, 10, 30, 120),
            registry=r,
        )
        self.started = time.time()
        self._preinitialise()

    # Label values the engine and the SQS source use. Creating them up front makes every
    # series exist (at 0) from the first scrape, so rate() and alerts work before the
    # first failure ever happens.
    DELETE_REASONS = ("processed", "filtered", "all_skipped", "s3_test_event", "validation",
                      "failed_deleted", "moved_to_dlq")  # fmt: skip
    KEEP_REASONS = ("failed", "busy", "interrupted", "bad_notification", "refused")
    FILE_KINDS = ("log", "insight", "digest", "other")
    FILE_OUTCOMES = ("done", "already_done", "busy", "interrupted", "failed")
    ERROR_REASONS = ("fetch_failed", "bad_log_file", "too_large", "bad_notification",
                     "refused", "handler_failed", "digest_mismatch", "error")  # fmt: skip
    DIGEST_OUTCOMES = ("match", "mismatch")
    STAGES = ("receive", "download", "decode", "handler")

    def _preinitialise(self) -> None:
        for reason in self.DELETE_REASONS:
            self.messages_deleted.labels(reason)
        for reason in self.KEEP_REASONS:
            self.messages_kept.labels(reason)
        for kind in self.FILE_KINDS:
            for outcome in self.FILE_OUTCOMES:
                self.files.labels(kind, outcome)
        for reason in self.ERROR_REASONS:
            self.errors.labels(reason)
        for stage in self.STAGES:
            self.stage_seconds.labels(stage)
        for outcome in self.DIGEST_OUTCOMES:
            self.digest_checks.labels(outcome)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample, e.g. value("trailproc_records_total")."""
        got = self.registry.get_sample_value(name, labels or None)
        return float(got or 0.0)

    def summary(self) -> dict[str, Any]:
        """The headline numbers, for the periodic log line and the end-of-run report."""
        out: dict[str, Any] = {}
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name.endswith(("_created", "_bucket", "_sum")):
                    continue
                label = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                name = sample.name.removeprefix("trailproc_")
                out[f"{name}{{{label}}}" if label else name] = sample.value
        return out

    def _total(self, name: str) -> float:
        """Sum of a counter over all its label sets."""
        total = 0.0
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == name:
                    total += sample.value
        return total

    def _by_label(self, name: str, label: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == name and sample.value:
                    key = sample.labels.get(label, "")
                    out[key] = out.get(key, 0) + int(sample.value)
        return out

    def brief(self) -> dict[str, Any]:
        """A short, flat summary for the periodic log line: totals, non-zero breakdowns only.

        e.g. ``received=120 deleted=118 kept={'failed': 2} files_done=236 records=33040
        mb_in=41.2 mb_out=390.5 errors={'fetch_failed': 2} in_flight=3 uptime_s=600``
        """
        files = self._by_label("trailproc_files_total", "outcome")
        out: dict[str, Any] = {
            "received": int(self._total("trailproc_messages_received_total")),
            "deleted": int(self._total("trailproc_messages_deleted_total")),
            "kept": self._by_label("trailproc_messages_kept_total", "reason"),
            "files_done": files.get("done", 0),
            "files_skipped_done_before": files.get("already_done", 0),
            "files_busy": files.get("busy", 0),
            "files_failed": files.get("failed", 0),
            "records": int(self._total("trailproc_records_total")),
            "filtered": int(self._total("trailproc_records_filtered_total")),
            "mb_in": round(self._total("trailproc_bytes_compressed_total") / 1e6, 1),
            "mb_out": round(self._total("trailproc_bytes_decompressed_total") / 1e6, 1),
            "errors": self._by_label("trailproc_errors_total", "reason"),
            "digest_checks": self._by_label("trailproc_digest_checks_total", "outcome"),
            "in_flight": int(self.value("trailproc_in_flight_messages")),
            "uptime_s": int(time.time() - self.started),
        }
        last_poll = self.value("trailproc_last_poll_timestamp")
        if last_poll:
            out["last_poll_s_ago"] = round(time.time() - last_poll, 1)
        # Drop empty breakdowns so a healthy line stays short.
        return {k: v for k, v in out.items() if v != {}}


async def stats_loop(metrics: Metrics, interval: float, logger: Any = None) -> None:
    """Log `metrics.brief()` every `interval` seconds (cancel the task to stop)."""
    import asyncio

    logger = logger or get_logger("trailproc")
    while True:
        await asyncio.sleep(interval)
        logger.info("stats", **metrics.brief())
