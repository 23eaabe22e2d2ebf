"""Logging and metrics: structlog lines and Prometheus counters, one place for both.

Logs are readable on a terminal and JSON elsewhere (`log_format="auto"`). Metrics live
in a registry per `Metrics` object, so several pipelines in one process (tests, Lambda
warm starts) never mix their numbers.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics", "configure_logging", "get_logger"]


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
        self.started = time.time()

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
