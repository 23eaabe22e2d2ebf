"""The operations endpoints: Prometheus metrics and liveness/readiness probes.

Both are served by a tiny HTTP/1.1 server on the daemon's own event loop (no thread, no
extra dependency), so they stop with the daemon and cannot outlive it::

    async with serve_ops(config, metrics) as ops:
        ...  # ops.metrics_port / ops.health_port are the bound ports (useful with port 0)

Routes, on whichever port(s) are configured (metrics_port and health_port may be equal):

* ``GET /metrics``: the Prometheus text exposition of ``metrics.registry``;
* ``GET /livez``: 200 while the poll loop makes progress, 503 when it looks stuck;
* ``GET /readyz``: 200 once the queue has answered a receive, 503 before.

Endpoints listen on 127.0.0.1 unless ``bind`` says otherwise (``0.0.0.0`` in a container
whose orchestrator probes from outside the network namespace).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ..config import Config
from ..observe import Metrics, get_logger

__all__ = ["Liveness", "OpsServers", "serve_ops"]

log = get_logger("trailproc.ops")

DEFAULT_BIND = "127.0.0.1"
# Seconds of slack on top of one long poll plus one visibility timeout before the
# daemon is declared stuck: generous, because a false "not live" restarts a healthy pod.
LIVENESS_MARGIN = 60.0

_REQUEST_TIMEOUT = 5.0
_MAX_REQUEST_BYTES = 8192


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


@dataclass
class OpsServers:
    """What `serve_ops` started; ports are the bound ones (None: not served)."""

    metrics_port: int | None = None
    health_port: int | None = None
    bind: str = DEFAULT_BIND
    _servers: list[asyncio.base_events.Server] = field(default_factory=list, repr=False)


def _response(status: str, body: bytes, content_type: str, head: bool = False) -> bytes:
    headers = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return headers.encode("ascii") + (b"" if head else body)


class _Handler:
    def __init__(
        self,
        metrics: Metrics,
        ready: Callable[[], bool],
        live: Callable[[], bool],
        routes: frozenset[str],
    ) -> None:
        self.metrics = metrics
        self.ready = ready
        self.live = live
        self.routes = routes

    def _probe(self, check: Callable[[], bool], name: str) -> tuple[str, bytes]:
        try:
            ok = bool(check())
        except Exception as exc:  # a broken probe must answer, not hang the kubelet
            log.warning("health probe raised", probe=name, error=repr(exc))
            ok = False
        return ("200 OK", b"ok\n") if ok else ("503 Service Unavailable", f"not {name}\n".encode())

    def answer(self, method: str, path: str) -> bytes:
        text = "text/plain; charset=utf-8"
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", b"GET only\n", text)
        path = path.split("?", 1)[0]
        if path not in self.routes:
            return _response("404 Not Found", b"not found\n", text, head)
        if path == "/metrics":
            # Imported on the first scrape: prometheus_client's exposition module costs
            # ~40 ms of start-up, which a daemon without --metrics-port should not pay.
            from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

            return _response("200 OK", generate_latest(self.metrics.registry),
                             CONTENT_TYPE_LATEST, head)  # fmt: skip
        if path == "/readyz":
            status, body = self._probe(self.ready, "ready")
        else:
            status, body = self._probe(self.live, "live")
        return _response(status, body, text, head)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), timeout=_REQUEST_TIMEOUT
            )
            if len(request) > _MAX_REQUEST_BYTES:
                raise ValueError("request too large")
            parts = request.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) != 3:
                writer.write(_response("400 Bad Request", b"bad request\n", "text/plain"))
            else:
                writer.write(self.answer(parts[0], parts[1]))
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, ValueError):  # fmt: skip
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _start(handler: _Handler, bind: str, port: int) -> asyncio.base_events.Server:
    return await asyncio.start_server(
        handler, host=bind, port=port, reuse_address=True, limit=_MAX_REQUEST_BYTES
    )


@contextlib.asynccontextmanager
async def serve_ops(
    config: Config,
    metrics: Metrics,
    *,
    ready: Callable[[], bool] | None = None,
    live: Callable[[], bool] | None = None,
    bind: str | None = None,
) -> AsyncIterator[OpsServers]:
    """Serve /metrics on config.metrics_port and /livez, /readyz on config.health_port.

    Nothing is started for a port that is None; port 0 picks a free port (see the
    returned `OpsServers`). `ready` defaults to "a receive has answered" (the last_poll
    gauge is set); `live` defaults to `Liveness.for_config(config, metrics)`.
    `bind` defaults to config's `ops_bind` when the model has it, else 127.0.0.1.
    """
    bind = bind or getattr(config, "ops_bind", None) or DEFAULT_BIND
    live = live or Liveness.for_config(config, metrics)
    if ready is None:
        # The SQS source sets last_poll when a receive answered, exactly when it
        # turns `ready`; so the metrics alone can say whether the queue answered.
        def ready() -> bool:
            return metrics.value("trailproc_last_poll_timestamp") > 0

    ops = OpsServers(bind=bind)
    wanted: list[tuple[int, set[str]]] = []
    if config.metrics_port is not None:
        wanted.append((config.metrics_port, {"/metrics"}))
    if config.health_port is not None:
        health = {"/livez", "/readyz"}
        if wanted and config.health_port == config.metrics_port != 0:
            wanted[0][1].update(health)  # one port serves both (port 0: two free ports)
        else:
            wanted.append((config.health_port, health))
    try:
        for port, routes in wanted:
            server = await _start(_Handler(metrics, ready, live, frozenset(routes)), bind, port)
            ops._servers.append(server)
            bound = int(server.sockets[0].getsockname()[1])
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
    for server in ops._servers:
        server.close()
    for server in ops._servers:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), timeout=2)
    ops._servers.clear()


def scrape(text: str) -> dict[str, float]:
    """Parse a Prometheus text exposition into {'name{labels}': value} (tests, `check`)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return out
