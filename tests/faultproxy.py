"""Test helpers for the reliability tests: a fault-injecting HTTP proxy and a slow handler.

`FaultProxy` listens on 127.0.0.1 (random port) and forwards every request to an upstream
(moto's server). trailproc is pointed at it through AWS_ENDPOINT_URL, so every AWS call it
makes passes through here. A seeded random generator decides, per request, to:

* fail it before it reaches the server: 500 InternalError, 503 ServiceUnavailable /
  SlowDown, or a throttling error, each with the error body the service's protocol uses
  (JSON `__type` for SQS and DynamoDB, `<Error>` XML for S3, `<ErrorResponse>` for query);
* forward it and then drop the connection without answering (the server acted, the
  client never hears of it: the hard case for exactly-once);
* forward it and cut the response body short (GetObject interrupted mid-body);
* and add latency to any request.

Kept small on purpose: a ThreadingHTTPServer speaking HTTP/1.1 with keep-alive on the
client side, and one http.client connection per proxy thread to the upstream.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import http.server
import json
import os
import random
import re
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from trailproc._pipeline.processor import EventProcessor

__all__ = ["FaultProxy", "Slow"]

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "content-length",
}


def _protocol(headers: Any, path: str) -> str:
    """Which wire protocol (and so which error body) the request speaks."""
    target = headers.get("X-Amz-Target", "") or ""
    if target.startswith("AmazonSQS"):
        return "sqs-json"
    if target.startswith("DynamoDB"):
        return "dynamodb-json"
    if target:
        return "json"
    auth = headers.get("Authorization", "") or ""
    if "/s3/" in auth:
        return "s3"
    return "query"


# (status, code) per fault flavour and protocol.
_ERRORS: dict[str, dict[str, tuple[int, str]]] = {
    "throttle": {
        "sqs-json": (400, "ThrottlingException"),
        "dynamodb-json": (400, "ThrottlingException"),
        "json": (400, "ThrottlingException"),
        "s3": (503, "SlowDown"),
        "query": (400, "Throttling"),
    },
    "unavailable": {
        "sqs-json": (503, "ServiceUnavailable"),
        "dynamodb-json": (503, "ServiceUnavailable"),
        "json": (503, "ServiceUnavailable"),
        "s3": (503, "ServiceUnavailable"),
        "query": (503, "ServiceUnavailable"),
    },
    "internal": {
        "sqs-json": (500, "InternalFailure"),
        "dynamodb-json": (500, "InternalServerError"),
        "json": (500, "InternalFailure"),
        "s3": (500, "InternalError"),
        "query": (500, "InternalFailure"),
    },
}


def error_response(flavour: str, protocol: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of an error as the protocol's real service sends it."""
    status, code = _ERRORS[flavour][protocol]
    request_id = str(uuid.uuid4())
    message = f"injected fault: {code}"
    if protocol.endswith("json"):
        namespace = {
            "sqs-json": "com.amazonaws.sqs",
            "dynamodb-json": "com.amazonaws.dynamodb.v20120810",
        }.get(protocol, "com.amazonaws")
        body = json.dumps({"__type": f"{namespace}#{code}", "message": message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": request_id}
        if protocol == "sqs-json":
            # SQS speaks JSON but keeps its query-era error codes in this header.
            kind = "Receiver" if status >= 500 else "Sender"
            headers["x-amzn-query-error"] = f"{code};{kind}"
        return status, headers, body
    if protocol == "s3":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        return status, {"Content-Type": "application/xml", "x-amz-request-id": request_id}, body
    kind = "Receiver" if status >= 500 else "Sender"
    body = (
        f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    ).encode()
    return status, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, body


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy

    def process_request(self, request: Any, client_address: Any) -> None:
        self.proxy.count("connections")  # TCP connections accepted from the client
        super().process_request(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore and aiohttp expect
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers, up to the empty line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _proxy(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        target = (self.headers.get("X-Amz-Target") or "").rpartition(".")[2]
        proxy.headers_seen.append((self.command, self.path, dict(self.headers.items())))
        special = None
        if proxy.intercept is not None:
            special = proxy.intercept(self.command, self.path, self.headers)
        if special is not None:
            proxy.count("intercepted")
            status, answer_headers, payload = special
            self._respond(status, list(answer_headers.items()), payload)
            return
        if target in proxy.answers:
            # A service moto does not implement: answered here, in its wire format.
            proxy.count(f"answered:{target}")
            status, answer_headers, payload = proxy.answers[target](body)
            self._respond(status, list(answer_headers.items()), payload)
            return
        protocol = _protocol(self.headers, self.path)
        action = proxy.decide(self.command, self.path, protocol)
        if proxy.take_reply_drop(target):
            action = "drop"
        if proxy.latency:
            time.sleep(proxy.pick_latency())
        if action in _ERRORS:
            status, error_headers, payload = error_response(action, protocol)
            self._respond(status, list(error_headers.items()), payload)
            return
        try:
            status, reason, headers, payload = proxy.forward(
                self.command, self.path, self.headers, body
            )
        except OSError:
            # Upstream trouble: look like a dead server to the client.
            proxy.count("upstream_error")
            self._drop()
            return
        if action == "drop":
            self._drop()
            return
        if action == "truncate" and len(payload) > 16:
            self._respond(status, headers, payload, cut=len(payload) // 2)
            return
        self._respond(status, headers, payload, reason=reason)

    def _respond(
        self,
        status: int,
        headers: list[tuple[str, str]],
        payload: bytes,
        *,
        reason: str | None = None,
        cut: int | None = None,
    ) -> None:
        self.send_response_only(status, reason)
        has_length = False
        for name, value in headers:
            lname = name.lower()
            if lname in _HOP_BY_HOP and not (lname == "content-length" and self.command == "HEAD"):
                continue
            has_length = has_length or lname == "content-length"
            self.send_header(name, value)
        if self.command != "HEAD" and not has_length:
            self.send_header("Content-Length", str(len(payload)))
        if cut is not None:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload if cut is None else payload[:cut])
        self.wfile.flush()
        if cut is not None:
            self._drop()

    def _drop(self) -> None:
        """Close the client connection abruptly, with no (further) response."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _proxy


@dataclass(frozen=True)
class FaultRates:
    """How often a `FaultProxy` misbehaves, per request: an error reply, a dropped
    connection, a truncated body; plus the added latency, and how often it is
    `slow_latency` instead."""

    error_rate: float = 0.15
    drop_rate: float = 0.04
    truncate_rate: float = 0.04
    latency: float = 0.03
    slow_rate: float = 0.02
    slow_latency: float = 0.4


# A proxy that forwards everything cleanly (for `answers`, `drop_replies`, `intercept`).
NO_FAULTS = FaultRates(error_rate=0, drop_rate=0, truncate_rate=0, latency=0, slow_rate=0)


class FaultProxy:
    """A seeded fault-injecting HTTP proxy in front of `upstream` (e.g. moto's URL).

    Rates (`faults`) are per request. `only_actions`, if given, limits faults to requests whose
    target/query action or HTTP method contains one of the strings; everything else is
    forwarded cleanly.
    """

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        faults: FaultRates = FaultRates(),
        answers: dict[str, Any] | None = None,
        drop_replies: dict[str, int] | None = None,
        intercept: Any = None,
    ) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.error_rate = faults.error_rate
        self.drop_rate = faults.drop_rate
        self.truncate_rate = faults.truncate_rate
        self.latency = faults.latency
        self.slow_rate = faults.slow_rate
        self.slow_latency = faults.slow_latency
        self.enabled = True
        # X-Amz-Target action → handler(body) -> (status, headers, payload), answered
        # without forwarding (for APIs moto lacks, such as CloudTrail ListPublicKeys).
        self.answers: dict[str, Any] = dict(answers or {})
        # X-Amz-Target action → how many of its next requests are forwarded and then
        # left unanswered (the server acted; the client never hears of it).
        self.drop_replies: dict[str, int] = dict(drop_replies or {})
        # (method, path, headers) -> (status, headers, payload) to answer a request
        # without forwarding it, or None to go on (e.g. S3 refusing a header's value).
        self.intercept = intercept
        self.headers_seen: list[tuple[str, str, dict[str, str]]] = []  # every request
        self._seed = seed
        self._rng = random.Random(seed)
        self._streams: dict[tuple[str, str], random.Random] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.stats: collections.Counter[str] = collections.Counter()
        self.requests: list[tuple[str, str]] = []  # (method, path with query), in order
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.proxy = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- decisions --------------------------------------------------------------------------
    def count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    def take_reply_drop(self, target: str) -> bool:
        """True (once per count) if this request's reply is to be dropped."""
        with self._lock:
            left = self.drop_replies.get(target, 0)
            if left <= 0:
                return False
            self.drop_replies[target] = left - 1
            self.stats[f"dropped_reply:{target}"] += 1
            return True

    def decide(self, method: str, path: str, protocol: str) -> str:
        """'forward', 'drop', 'truncate' or an error flavour; seeded, counted."""
        with self._lock:
            self.stats["requests"] += 1
            self.requests.append((method, path))
            # One random stream per kind of call, so the faults a kind gets do not depend
            # on how its requests interleave with others' (threads, long polls).
            rng = self._streams.get((method, protocol))
            if rng is None:
                rng = random.Random(f"{self._seed}/{method}/{protocol}")
                self._streams[(method, protocol)] = rng
            roll = rng.random()
            if not self.enabled:
                action = "forward"
            elif roll < self.error_rate:
                action = rng.choice(["throttle", "unavailable", "internal"])
            elif roll < self.error_rate + self.drop_rate:
                action = "drop"
            elif (
                roll < self.error_rate + self.drop_rate + self.truncate_rate
                and method == "GET"
                and protocol == "s3"
            ):
                action = "truncate"
            else:
                action = "forward"
            self.stats[action] += 1
            return action

    def pick_latency(self) -> float:
        with self._lock:
            if self._rng.random() < self.slow_rate:
                return self.slow_latency
            return self._rng.random() * self.latency

    # --- forwarding ---------------------------------------------------------------------------
    def forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        out = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        out["Content-Length"] = str(len(body))
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=out)
                response = conn.getresponse()
                payload = response.read()
                return response.status, response.reason, response.getheaders(), payload
            except (http.client.HTTPException, OSError):
                # A stale keep-alive connection to the upstream: reconnect once.
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
            self._local.conn = conn
        return conn


class Slow(EventProcessor):
    """A handler for daemon subprocesses: sleeps TRAILPROC_TEST_BATCH_SLEEP seconds a batch.

    Load it with `--handler faultproxy:Slow` and the tests folder on PYTHONPATH.
    """

    def __init__(self) -> None:
        self.sleep = float(os.environ.get("TRAILPROC_TEST_BATCH_SLEEP", "0.05"))

    async def process(self, events: list[Any]) -> None:
        await asyncio.sleep(self.sleep)


# --- running the daemon as a subprocess ----------------------------------------------------
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
EVENT_ID = re.compile(rb'"eventID":"([^"]+)"')


def daemon_command(queue_url: str, output: str, *extra: str) -> list[str]:
    """`trailproc run` on `queue_url`, appending records to `output`, until idle."""
    return [
        sys.executable, "-m", "trailproc._cli", "run",
        "--queue-url", queue_url, "--output", output,
        "--exit-when-idle", "--wait-time", "1", "--log-format", "json",
        *extra,
    ]  # fmt: skip


def daemon_env(endpoint: str, state_dir: str, **settings: str) -> dict[str, str]:
    """Environment for a daemon subprocess talking to `endpoint` (moto or a FaultProxy)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAILPROC_", "AWS_"))}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        TRAILPROC_LOG_FORMAT="json",
        TRAILPROC_STATE_DIR=state_dir,
        TRAILPROC_STATS_INTERVAL="0",
        PYTHONPATH=os.pathsep.join(p for p in (TESTS_DIR, os.environ.get("PYTHONPATH", "")) if p),
    )
    env.update({f"TRAILPROC_{k.upper()}": v for k, v in settings.items()})
    return env


def event_ids(path: str) -> collections.Counter[str]:
    """eventIDs written to an --output file, counted.

    Scans for the field rather than parsing lines, so a line cut short by a SIGKILL (and
    glued to the next run's first line) still counts what it holds.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return collections.Counter()
    return collections.Counter(m.decode() for m in EVENT_ID.findall(data))


def json_logs(stderr: str) -> list[dict[str, Any]]:
    """The structlog JSON lines of a daemon's stderr."""
    out = []
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out
