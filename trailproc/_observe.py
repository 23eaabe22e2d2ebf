"""Logging and metrics: structlog lines and Prometheus counters, one place for both.

Logs are readable on a terminal and JSON elsewhere (`log_format="auto"`). Metrics live
in a registry per `Metrics` object, so several pipelines in one process (tests, Lambda
warm starts) never mix their numbers.
"""

from __future__ import annotations

import bisect
import datetime
import io
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TextIO, cast

import structlog

if TYPE_CHECKING:  # prometheus_client is imported only when `Metrics.registry` is read
    from prometheus_client import CollectorRegistry

__all__ = [
    "MAX_ORIGIN_SERIES", "Freshness", "Metrics", "configure_logging", "ensure_logging",
    "get_logger", "redact", "short_handle",
]  # fmt: skip


# Field names whose values are secrets or bearer tokens: never written to a log line.
_SECRET_FIELDS = frozenset(
    {"aws_secret_access_key", "secret_access_key", "secretkey", "secret_key",
     "aws_session_token", "session_token", "sessiontoken", "password", "authorization",
     "credentials", "token"}
)  # fmt: skip
_HANDLE_FIELDS = frozenset({"receipthandle", "receipt_handle", "handle"})


# Credentials that travel inside text: presigned-URL query parameters (SigV4 and SigV2)
# and access key ids. An S3 key, a URL or an error message can carry them, and a log
# line is read by more people than the bucket.
_SECRET_IN_TEXT = re.compile(
    r"(?P<name>X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId"
    r"|aws_secret_access_key|aws_session_token)(?P<sep>=|%3D)[^&\s\"'<>]+"
    r"|(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])",
    re.IGNORECASE,
)


def _redact_text(text: str) -> str:
    def hide(match: re.Match[str]) -> str:
        if match.group("name"):
            return f"{match.group('name')}{match.group('sep')}[redacted]"
        return "[redacted-key-id]"

    return _SECRET_IN_TEXT.sub(hide, text)


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop secrets, shorten receipt handles, and blank credentials
    inside text (presigned URL parameters, access key ids), whatever the caller passed."""
    for name in list(event):
        lowered = name.lower()
        value = event[name]
        if lowered in _SECRET_FIELDS or lowered.endswith(("_secret", "secret_key", "password")):
            event[name] = "[redacted]"
        elif lowered in _HANDLE_FIELDS and isinstance(value, str):
            event[name] = value if value.endswith("…") else short_handle(value)
        elif isinstance(value, str):
            event[name] = _redact_text(value)
        elif isinstance(value, (list, tuple)) and any(isinstance(v, str) for v in value):
            event[name] = [_redact_text(v) if isinstance(v, str) else v for v in value]
    return event


class DeliveredFile(Protocol):
    """Where a handed-over batch came from (a log file's `KeyInfo`)."""

    @property
    def account_id(self) -> str | None: ...
    @property
    def region(self) -> str | None: ...
    @property
    def delivered_at(self) -> datetime.datetime | None: ...


class TimedRecord(Protocol):
    """A handed-over record (an `Event`): when it happened."""

    @property
    def event_time(self) -> datetime.datetime | None: ...


class _LogStream(io.TextIOBase):
    """stderr, except while a progress bar is drawn: then lines go above the bar
    (`tqdm.write`) instead of breaking it."""

    bars = 0  # progress bars currently on screen (see trailproc._progress)

    def __init__(self) -> None:
        super().__init__()
        self._partial = ""

    def write(self, text: str) -> int:
        # print() sends a line and its "\n" in two writes. Pass on whole lines only, each
        # in one write: workers sharing one stderr (`run --workers`, a container log)
        # would otherwise interleave their lines between the two.
        written = len(text)
        text = self._partial + text
        end = text.rfind("\n") + 1
        self._partial, lines = text[end:], text[:end]
        if not lines:
            return written
        if _LogStream.bars:
            from tqdm import tqdm

            tqdm.write(lines.rstrip("\n"), file=sys.stderr)  # tqdm.write adds its own
        else:
            sys.stderr.write(lines)
            sys.stderr.flush()
        return written

    def flush(self) -> None:
        sys.stderr.flush()


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
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _LogStream())),
        cache_logger_on_first_use=False,
    )


def ensure_logging(level: str = "info", fmt: str = "auto") -> None:
    """`configure_logging`, unless the application configured structlog itself.

    For the library entry points: unconfigured, structlog prints every level, debug
    included, to stdout."""
    if not structlog.is_configured():
        configure_logging(level, fmt)


def get_logger(name: str = "trailproc") -> Any:
    return structlog.get_logger(name)


def short_handle(receipt_handle: str | None) -> str:
    """Receipt handles are long bearer tokens: log only a recognisable prefix."""
    return (receipt_handle or "")[:12] + "…" if receipt_handle else ""


class _Series:
    """One labelled time series of a counter or gauge (prometheus_client's "child")."""

    __slots__ = ("_lock", "created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()
        self._lock = threading.Lock()

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value -= amount

    def set(self, value: float) -> None:
        self.value = float(value)


class _HistogramSeries:
    __slots__ = ("_lock", "bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, the last one is +Inf
        self.sum = 0.0
        self.created = time.time()
        self._lock = threading.Lock()

    def observe(self, amount: float) -> None:
        index = bisect.bisect_left(self.bounds, amount)  # `le`: bound >= amount
        with self._lock:
            self.counts[index] += 1
            self.sum += amount


class _Metric:
    """A counter, gauge or histogram with prometheus_client's calling conventions
    (`inc`, `dec`, `set`, `observe`, `labels(...)`), kept in plain Python objects.

    prometheus_client itself (~40 ms to import, a lock and a dict lookup per call) is only
    loaded when something reads `Metrics.registry`: the /metrics endpoint or the docs.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...] = (),
        buckets: tuple[float, ...] = (),
    ) -> None:
        self.kind, self.name, self.documentation = kind, name, documentation
        self.labelnames = labelnames
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self.series: dict[tuple[str, ...], Any] = {}
        if not labelnames:
            self._default = self.labels()

    def labels(self, *values: str) -> Any:
        got = self.series.get(values)
        if got is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
            values = tuple(str(v) for v in values)
            got = _HistogramSeries(self.bounds) if self.kind == "histogram" else _Series()
            got = self.series.setdefault(values, got)
        return got

    def inc(self, amount: float = 1.0) -> None:
        self._default.inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        self._default.dec(amount)

    def set(self, value: float) -> None:
        self._default.set(value)

    def observe(self, amount: float) -> None:
        self._default.observe(amount)

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        """(sample name, labels, value), in prometheus_client's order and naming."""
        for values, series in list(self.series.items()):
            labels = dict(zip(self.labelnames, values, strict=True))
            if self.kind == "counter":
                yield self.name + "_total", labels, series.value
                yield self.name + "_created", labels, series.created
            elif self.kind == "gauge":
                yield self.name, labels, series.value
            else:
                cumulative = 0.0
                for bound, count in zip((*series.bounds, math.inf), series.counts, strict=True):
                    cumulative += count
                    yield self.name + "_bucket", {**labels, "le": _go_float(bound)}, cumulative
                yield self.name + "_count", labels, cumulative
                yield self.name + "_sum", labels, series.sum
                yield self.name + "_created", labels, series.created


def _go_float(value: float) -> str:
    # How Prometheus spells bucket bounds (prometheus_client's floatToGoString).
    if value == math.inf:
        return "+Inf"
    return repr(float(value))


# Account and region pairs that get a series of their own in the freshness gauge; every
# later pair shares the series labelled "other" (a forged or very large organization
# cannot grow the metrics without bound). Pairs configured in expect_deliveries_from
# are always labelled, ahead of this cap.
MAX_ORIGIN_SERIES = 100
OTHER = "other"


class Freshness:
    """The newest delivery per account and region, and the lag from eventTime to hand-over.

    `last_seen` holds every pair's newest delivery time (Unix seconds, from the delivery
    time in the log file's key, never later than now), for the silence check of the
    readiness probe; the gauge holds the same, within the label cap.
    """

    def __init__(
        self,
        last_delivery: _Metric,
        event_lag: _Metric,
        cap: int = MAX_ORIGIN_SERIES,
        clock: Any = time.time,
    ) -> None:
        self.gauge = last_delivery
        self.lag = event_lag
        self.cap = cap
        self.clock = clock
        self.last_seen: dict[tuple[str, str], float] = {}
        self._labelled: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def expect(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Give these pairs their own series whatever the cap."""
        with self._lock:
            self._labelled.update(pairs)

    def _label(self, pair: tuple[str, str]) -> tuple[str, str]:
        with self._lock:
            if pair in self._labelled:
                return pair
            if len(self._labelled) < self.cap:
                self._labelled.add(pair)
                return pair
        return (OTHER, OTHER)

    def handed_over(self, info: DeliveredFile, batch: Sequence[TimedRecord]) -> None:
        now = self.clock()
        account, region = info.account_id, info.region
        if account and region:
            delivered = info.delivered_at
            # A key's timestamp in the future (clock skew, a forged key) must not make a
            # pair look fresh for longer than it is.
            when = min(now, delivered.timestamp()) if delivered is not None else now
            pair = (account, region)
            if when > self.last_seen.get(pair, 0.0):
                self.last_seen[pair] = when
            series = self.gauge.labels(*self._label(pair))
            if when > series.value:
                series.set(when)
        if batch:
            # One record per batch: eventTime needs the record's header decoded, which
            # handlers reading only raw bytes never pay for otherwise.
            event_time = batch[0].event_time
            if event_time is not None:
                self.lag.observe(max(0.0, now - event_time.timestamp()))


class Metrics:
    """Counters and histograms per pipeline stage."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._registry = registry
        self._metrics: list[_Metric] = []
        self._add_queue_metrics()
        self._add_file_metrics()
        self._add_trust_and_freshness_metrics()
        self._add_memory_metrics()
        self.started = time.time()
        self._preinitialise()
        if registry is not None:
            registry.register(_Collector(self))

    def _add_queue_metrics(self) -> None:
        """The SQS side: messages received, deleted and kept, and the poll loop's pulse."""
        add = self._add
        self.messages_received = add(
            "counter", "trailproc_messages_received", "SQS messages received"
        )
        self.messages_deleted = add(
            "counter", "trailproc_messages_deleted", "SQS messages deleted, by reason", ("reason",)
        )
        self.messages_kept = add(
            "counter", "trailproc_messages_kept",
            "SQS messages left on the queue for retry/DLQ, by reason", ("reason",),
        )  # fmt: skip
        self.visibility_extensions = add(
            "counter", "trailproc_visibility_extensions", "Visibility heartbeats sent"
        )
        self.queue_lag = add(
            "histogram", "trailproc_queue_lag_seconds",
            "Now minus the message's SentTimestamp when received",
            buckets=(1, 5, 30, 60, 300, 900, 3600, 21600, 86400),
        )  # fmt: skip
        self.in_flight_messages = add(
            "gauge", "trailproc_in_flight_messages", "Messages being worked on"
        )
        self.last_poll = add(
            "gauge", "trailproc_last_poll_timestamp", "Unix time of the last receive"
        )
        self.aws_requests = add(
            "counter", "trailproc_aws_requests",
            "HTTP requests sent to AWS (retries included), by service and operation: SQS, "
            "S3 and, with that checkpoint store, DynamoDB",
            ("service", "operation"),
        )  # fmt: skip

    def _add_file_metrics(self) -> None:
        """Files and records through the stages: counts, bytes, outcomes and time."""
        add = self._add
        self.files = add(
            "counter", "trailproc_files", "Log files by kind and outcome", ("kind", "outcome")
        )
        self.bytes_compressed = add(
            "counter", "trailproc_bytes_compressed", "Object bytes downloaded"
        )
        self.bytes_decompressed = add(
            "counter", "trailproc_bytes_decompressed", "Bytes after decompression"
        )
        self.records = add("counter", "trailproc_records", "Records handed to user code")
        self.records_filtered = add(
            "counter", "trailproc_records_filtered", "Records left out by filters or filter_event"
        )
        self.errors = add("counter", "trailproc_errors", "Errors by reason", ("reason",))
        self.file_seconds = add(
            "histogram", "trailproc_file_processing_seconds", "Time to process one log file",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300),
        )  # fmt: skip
        self.in_flight_files = add("gauge", "trailproc_in_flight_files", "Files being worked on")
        self.stage_seconds = add(
            "histogram", "trailproc_stage_seconds",
            "Time spent per pipeline stage (receive, download, decode, handler)",
            ("stage",), buckets=(0.005, 0.025, 0.1, 0.5, 1, 2.5, 10, 30, 120),
        )  # fmt: skip
        self.road_units = add(
            "counter", "trailproc_road_units",
            "Units that came without an S3 notification, by road (lambda: a CloudWatch "
            "Logs payload; kinesis and firehose records; history pages) and outcome",
            ("road", "outcome"),
        )  # fmt: skip
        self.records_quarantined = add(
            "counter", "trailproc_records_quarantined",
            "Records a handler raised on, written to the quarantine, by exception type",
            ("reason",),
        )  # fmt: skip

    def _add_trust_and_freshness_metrics(self) -> None:
        """Whether the logs are complete and current: digest checks, missed deliveries,
        and the newest delivery per account and region."""
        add = self._add
        self.digest_checks = add(
            "counter", "trailproc_digest_checks",
            "Processed log files compared with their digest (verify_digests), by outcome "
            "(unverified: the digest did not arrive within digest_wait_hours)",
            ("outcome",),
        )  # fmt: skip
        self.missed_deliveries = add(
            "counter", "trailproc_missed_deliveries",
            "Log files a digest listed that no notification had named, fetched and handed "
            "over (verify_digests with fill_gaps_from_digests)",
        )  # fmt: skip
        self.last_delivery = add(
            "gauge", "trailproc_last_delivery_timestamp",
            "Unix time of the newest log file delivery handed over, by account and region "
            f"(the first {MAX_ORIGIN_SERIES} pairs seen; later ones under 'other')",
            ("account_id", "region"),
        )  # fmt: skip
        self.event_lag = add(
            "histogram", "trailproc_event_lag_seconds",
            "Hand-over time minus eventTime, of the first record of each batch handed over",
            buckets=(60, 300, 600, 900, 1800, 3600, 7200, 21600, 86400),
        )  # fmt: skip
        self.freshness = Freshness(self.last_delivery, self.event_lag)

    def _add_memory_metrics(self) -> None:
        """The memory budget (see trailproc._pipeline.budget) and the waits it imposes."""
        add = self._add
        self.memory_budget = add(
            "gauge", "trailproc_memory_budget_bytes",
            "Memory this process lets its files hold at once (memory_budget_mb)",
        )  # fmt: skip
        self.memory_reserved = add(
            "gauge", "trailproc_memory_reserved_bytes",
            "Memory the files in work hold of the budget: downloads, decompressed bytes, records",
        )  # fmt: skip
        self.memory_waits = add(
            "counter", "trailproc_memory_waits",
            "Times a file waited for memory: admission (before its download) or growth "
            "(to decompress, for its records)",
            ("kind",),
        )  # fmt: skip

    def _add(
        self,
        kind: str,
        name: str,
        documentation: str,
        labelnames: tuple[str, ...] = (),
        buckets: tuple[float, ...] = (),
    ) -> _Metric:
        metric = _Metric(kind, name, documentation, labelnames, buckets)
        self._metrics.append(metric)
        return metric

    def budget_changed(self, in_use: int, total: int) -> None:
        """The memory budget's probe (see trailproc._pipeline.budget)."""
        self.memory_reserved.set(in_use)
        self.memory_budget.set(total)

    def budget_waited(self, kind: str) -> None:
        self.memory_waits.labels(kind).inc()

    @property
    def registry(self) -> CollectorRegistry:
        """A prometheus_client registry serving these metrics (made on first use)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry()
            self._registry.register(_Collector(self))
        return self._registry

    def samples(self) -> Iterator[tuple[str, dict[str, str], float]]:
        """Every sample as (name, labels, value), as the registry would expose it."""
        for metric in self._metrics:
            yield from metric.samples()

    # Label values the engine and the SQS source use. Creating them up front makes every
    # series exist (at 0) from the first scrape, so rate() and alerts work before the
    # first failure ever happens.
    DELETE_REASONS = ("processed", "filtered", "all_skipped", "s3_test_event", "validation",
                      "failed_deleted", "moved_to_dlq")  # fmt: skip
    KEEP_REASONS = ("failed", "busy", "interrupted", "bad_notification", "refused", "error",
                    "held_back")  # fmt: skip
    FILE_KINDS = ("log", "insight", "digest", "other")
    FILE_OUTCOMES = ("done", "already_done", "busy", "interrupted", "failed")
    ERROR_REASONS = ("fetch_failed", "bad_log_file", "too_large", "over_memory_budget",
                     "memory_contended", "bad_notification", "refused", "handler_failed",
                     "digest_mismatch", "error")  # fmt: skip
    MEMORY_WAITS = ("admission", "growth")
    DIGEST_OUTCOMES = ("match", "mismatch", "unverified")
    STAGES = ("receive", "download", "decode", "handler")
    ROADS = ("lambda", "kinesis", "firehose", "history")
    ROAD_OUTCOMES = ("ok", "control", "failed", "refused", "bad_payload")

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
        for road in self.ROADS:
            for outcome in self.ROAD_OUTCOMES:
                self.road_units.labels(road, outcome)
        for kind in self.MEMORY_WAITS:
            self.memory_waits.labels(kind)

    def handed_over(self, info: DeliveredFile, batch: Sequence[TimedRecord]) -> None:
        """A batch of records of the file whose `KeyInfo` is `info` was handed over."""
        self.records.inc(len(batch))
        self.freshness.handed_over(info, batch)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample, e.g. value("trailproc_records_total")."""
        for sample, got_labels, value in self.samples():
            if sample == name and got_labels == labels:
                return float(value)
        return 0.0

    def summary(self) -> dict[str, Any]:
        """The headline numbers, for the periodic log line and the end-of-run report."""
        out: dict[str, Any] = {}
        for sample, labels, value in self.samples():
            if sample.endswith(("_created", "_bucket", "_sum")):
                continue
            label = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            name = sample.removeprefix("trailproc_")
            out[f"{name}{{{label}}}" if label else name] = value
        return out

    def _total(self, name: str) -> float:
        """Sum of a counter over all its label sets."""
        return sum(value for sample, _labels, value in self.samples() if sample == name)

    def _by_label(self, name: str, label: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for sample, labels, value in self.samples():
            if sample == name and value:
                key = labels.get(label, "")
                out[key] = out.get(key, 0) + int(value)
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


class _Collector:
    """Exposes a `Metrics` object's samples to a prometheus_client registry."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.metrics_core import Metric

        for metric in self.metrics._metrics:
            family = Metric(metric.name, metric.documentation, metric.kind)
            for name, labels, value in metric.samples():
                family.add_sample(name, labels, value)
            yield family


async def stats_loop(metrics: Metrics, interval: float, logger: Any = None) -> None:
    """Log `metrics.brief()` every `interval` seconds (cancel the task to stop)."""
    import asyncio

    logger = logger or get_logger("trailproc")
    while True:
        await asyncio.sleep(interval)
        logger.info("stats", **metrics.brief())
