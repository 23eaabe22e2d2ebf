"""The operations endpoints: Prometheus metrics and liveness/readiness probes.

Both are served by aiohttp's web server on the daemon's own event loop (no thread), so
they stop with the daemon and cannot outlive it. aiohttp's server is imported only when
a port is configured: a run without ports never loads it::

    async with serve_ops(config, metrics) as ops:
        ...  # ops.metrics_port / ops.health_port are the bound ports (useful with port 0)

Routes, on whichever port(s) are configured (metrics_port and health_port may be equal):

* ``GET /metrics``: the Prometheus text exposition of ``metrics.registry``;
* ``GET /livez``: 200 while the poll loop makes progress, 503 when it looks stuck;
* ``GET /readyz``: 200 while every readiness check passes, else 503 with one line per
  failing check's reason. The default checks (`readiness_checks`): the queue has
  answered a receive; with ``expect_deliveries_from``, no listed account and region has
  been silent longer than ``silence_threshold_minutes`` (`ops.freshness`). A check is
  any callable returning True/False or (ok, reason).

Endpoints listen on 127.0.0.1 unless ``bind`` says otherwise (``0.0.0.0`` in a container
whose orchestrator probes from outside the network namespace).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .._config import Config
from .._observe import Metrics, get_logger

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "CheckResult",
    "HealthCheck",
    "Liveness",
    "OpsServers",
    "readiness_checks",
    "serve_ops",
]

log = get_logger("trailproc.ops")

DEFAULT_BIND = "127.0.0.1"
# Seconds of slack on top of one long poll plus one visibility timeout before the
# daemon is declared stuck: generous, because a false "not live" restarts a healthy pod.
LIVENESS_MARGIN = 60.0

# A connection that has not sent a whole request within this many seconds is closed
# (aiohttp's keep-alive timer also runs before the first request).
_REQUEST_TIMEOUT = 5.0
_MAX_REQUEST_LINE = 8190  # bytes of request line, and of each header
_NO_STORE = {"Cache-Control": "no-store"}

# A health check: True/False, or (ok, reason) so a 503 can say what is wrong.
CheckResult = bool | tuple[bool, str]
HealthCheck = Callable[[], CheckResult]


class Liveness:
    """Decides whether the poll loop is alive from the metrics it keeps moving.

    Alive while *something* moved recently: a receive (the ``last_poll`` gauge), or any
    progress counter (records handed over, files finished, messages deleted or kept).
    A loop that is waiting on a full set of in-flight messages is therefore alive as long
    as those messages make progress; one where nothing moved for ``threshold`` seconds
    (default: long-poll wait + visibility timeout + 60 s) is stuck.
    """

    _PROGRESS = (
        "trailproc_records_total",
        "trailproc_files_total",
        "trailproc_messages_deleted_total",
        "trailproc_messages_kept_total",
    )

    def __init__(
        self,
        metrics: Metrics,
        threshold: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.threshold = threshold
        self.clock = clock
        self._fingerprint: tuple[float, ...] = ()
        self._moved_at = clock()

    @classmethod
    def for_config(cls, config: Config, metrics: Metrics) -> Liveness:
        return cls(
            metrics, float(config.wait_time_seconds + config.visibility_timeout) + LIVENESS_MARGIN
        )

    def _progress(self) -> tuple[float, ...]:
        totals = dict.fromkeys(self._PROGRESS, 0.0)
        for metric in self.metrics.registry.collect():
            for sample in metric.samples:
                if sample.name in totals:
                    totals[sample.name] += sample.value
        return tuple(totals.values())

    def idle_seconds(self) -> float:
        """Seconds since the last receive or the last progress, whichever is later."""
        now = self.clock()
        fingerprint = self._progress()
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            self._moved_at = now
        last_poll = self.metrics.value("trailproc_last_poll_timestamp")
        return now - max(last_poll, self._moved_at, self.metrics.started)

    def __call__(self) -> bool:
        return self.idle_seconds() <= self.threshold


def queue_answered(metrics: Metrics) -> HealthCheck:
    """Ready once a receive has answered: the SQS source sets the last_poll gauge then."""

    def check() -> CheckResult:
        if metrics.value("trailproc_last_poll_timestamp") > 0:
            return True
        return False, "the queue has not answered a receive yet"

    return check


def readiness_checks(config: Config, metrics: Metrics) -> list[HealthCheck]:
    """The checks /readyz runs by default; a new readiness condition is one more entry."""
    checks: list[HealthCheck] = [queue_answered(metrics)]
    if config.expect_deliveries_from:
        from .freshness import SilenceCheck

        checks.append(SilenceCheck(metrics, config.expect_deliveries_from,
                                   config.silence_threshold_minutes))  # fmt: skip
    return checks


def _as_checks(given: HealthCheck | Sequence[HealthCheck]) -> Sequence[HealthCheck]:
    """One check, or the caller's own list (read on every probe, so it may grow)."""
    return [given] if callable(given) else given


def _verdict(checks: Sequence[HealthCheck], name: str) -> tuple[int, str]:
    """(HTTP status, body) of a probe: 200 "ok", or 503 with each failing reason."""
    reasons: list[str] = []
    for check in checks:
        try:
            result = check()
        except Exception as exc:  # a broken probe must answer, not hang the kubelet
            log.warning("health probe raised", probe=name, error=repr(exc))
            result = (False, f"check raised {type(exc).__name__}")
        ok, reason = result if isinstance(result, tuple) else (bool(result), "")
        if not ok:
            reasons.append(reason)
    if not reasons:
        return 200, "ok\n"
    detail = "".join(f"not {name}: {reason}\n" for reason in reasons if reason)
    return 503, detail or f"not {name}\n"


@dataclass
class OpsServers:
    """What `serve_ops` started; ports are the bound ones (None: not served)."""

    metrics_port: int | None = None
    health_port: int | None = None
    bind: str = DEFAULT_BIND
    _runners: list[web.AppRunner] = field(default_factory=list, repr=False)


def _application(
    metrics: Metrics,
    routes: set[str],
    ready: Sequence[HealthCheck],
    live: Sequence[HealthCheck],
) -> web.Application:
    from aiohttp import web

    async def serve_metrics(request: web.Request) -> web.Response:
        # Imported on the first scrape: prometheus_client's exposition module costs
        # ~40 ms of start-up, which a daemon without --metrics-port should not pay.
        from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

        response = web.Response(body=generate_latest(metrics.registry), headers=_NO_STORE)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    def probe(
        checks: Sequence[HealthCheck], name: str
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            status, text = _verdict(checks, name)
            return web.Response(status=status, text=text, headers=_NO_STORE)

        return serve

    handlers = {"/metrics": serve_metrics, "/readyz": probe(ready, "ready"),
                "/livez": probe(live, "live")}  # fmt: skip
    app = web.Application()
    for path in sorted(routes):
        app.router.add_get(path, handlers[path])  # HEAD too; other methods: 405
    return app


async def _start(app: web.Application, bind: str, port: int) -> tuple[web.AppRunner, int]:
    from aiohttp import web

    runner = web.AppRunner(
        app,
        access_log=None,  # probes every few seconds are not worth a log line each
        keepalive_timeout=_REQUEST_TIMEOUT,
        max_line_size=_MAX_REQUEST_LINE,
        max_field_size=_MAX_REQUEST_LINE,
        handle_signals=False,
        shutdown_timeout=2.0,  # seconds a scrape in progress may take to finish on close
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, bind, port, reuse_address=True)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


def _wanted(config: Config) -> list[tuple[int, set[str]]]:
    """(port, paths) to serve: one port per setting, or one for both when equal."""
    wanted: list[tuple[int, set[str]]] = []
    if config.metrics_port is not None:
        wanted.append((config.metrics_port, {"/metrics"}))
    if config.health_port is not None:
        health = {"/livez", "/readyz"}
        if wanted and config.health_port == config.metrics_port != 0:
            wanted[0][1].update(health)  # one port serves both (port 0: two free ports)
        else:
            wanted.append((config.health_port, health))
    return wanted


@contextlib.asynccontextmanager
async def serve_ops(
    config: Config,
    metrics: Metrics,
    *,
    ready: HealthCheck | Sequence[HealthCheck] | None = None,
    live: HealthCheck | Sequence[HealthCheck] | None = None,
    bind: str | None = None,
) -> AsyncIterator[OpsServers]:
    """Serve /metrics on config.metrics_port and /livez, /readyz on config.health_port.

    Nothing is started (nor imported) for a port that is None; port 0 picks a free port
    (see the returned `OpsServers`). `ready` defaults to `readiness_checks(config,
    metrics)`; `live` defaults to `Liveness.for_config(config, metrics)`. Each may be
    one check or a list of them. `bind` defaults to config's `ops_bind` (127.0.0.1
    unless set).
    """
    bind = bind or config.ops_bind or DEFAULT_BIND
    ops = OpsServers(bind=bind)
    wanted = _wanted(config)
    if not wanted:
        yield ops
        return
    ready_checks = _as_checks(ready if ready is not None else readiness_checks(config, metrics))
    live_checks = _as_checks(live if live is not None else Liveness.for_config(config, metrics))
    try:
        for port, routes in wanted:
            app = _application(metrics, routes, ready_checks, live_checks)
            runner, bound = await _start(app, bind, port)
            ops._runners.append(runner)
            if "/metrics" in routes:
                ops.metrics_port = bound
            if "/livez" in routes:
                ops.health_port = bound
            log.info("serving", address=f"http://{bind}:{bound}", paths=sorted(routes))
    except OSError as exc:
        await _close(ops)
        raise OSError(exc.errno, f"cannot serve ops endpoints on {bind}: {exc.strerror}") from exc
    try:
        yield ops
    finally:
        await _close(ops)


async def _close(ops: OpsServers) -> None:
    for runner in ops._runners:
        with contextlib.suppress(Exception):
            await runner.cleanup()
    ops._runners.clear()


def scrape(text: str) -> dict[str, float]:
    """Parse a Prometheus text exposition into {'name{labels}': value} (tests, `check`)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return out
