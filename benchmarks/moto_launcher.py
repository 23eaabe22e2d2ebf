"""moto's server for the benchmarks: no request log, requests counted in memory.

    python benchmarks/moto_launcher.py --port PORT

The same application `python -m moto.server` serves (moto's domain dispatcher, its
request handler, one thread per connection), with two changes that only touch the
server's own overhead, the same for every client measured against it:

- werkzeug's request log (a formatted line per request, written to a pipe or file) is
  off: it was ~9 % of moto's CPU in a small-files run, CPU that AWS spends on its own
  machines, not on the client's;
- a WSGI middleware counts each request by `service:Action` (X-Amz-Target, the query
  protocol's `Action=`, or S3's method and path shape, as `latency_proxy.py` does) and
  the messages SQS ReceiveMessage answers handed out, and answers `GET /__counts__`
  with both as JSON (`{"requests": {...}, "received": N}`). The benchmarks read the
  counts there instead of parsing a log, and the small-files feeder knows how many of
  the messages it sent are still visible (sent - received: nothing returns to the
  queue in those runs) without asking moto's GetQueueAttributes, which computes every
  attribute of the queue over all its messages (~half of moto's CPU when polled every
  25 ms);
- moto's ReceiveMessage checks each message it returns against the queue's retention
  period by computing every attribute of the queue (its message counts included, each a
  walk over all its messages, several times over): O(messages returned x messages on
  the queue), ~45 % of moto's CPU in a small-files run once the above were gone. The
  launcher reads the retention period from the queue directly: the same value and the
  same check, in O(1). `BENCH_MOTO_AS_IS=1` serves moto unchanged.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import sys
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

_CREDENTIAL = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([a-z0-9-]+)/")
_S3_NAMES = {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}
_S3_BUCKET_NAMES = {"GET": "ListObjects", "HEAD": "HeadBucket", "PUT": "CreateBucket"}


def classify(environ: dict[str, Any]) -> str:
    """`service:Action` of one request, from what the wire says."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        prefix, _, action = target.partition(".")
        service = "sqs" if prefix.startswith("AmazonSQS") else prefix.split("_")[0].lower()
        return f"{service}:{action}"
    match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    service = match.group(1) if match else "?"
    method = environ.get("REQUEST_METHOD", "")
    if service == "s3":
        has_key = "/" in environ.get("PATH_INFO", "").strip("/")
        names = _S3_NAMES if has_key else {**_S3_NAMES, **_S3_BUCKET_NAMES}
        return f"s3:{names.get(method, method)}"
    action = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("Action")
    if not action and method == "POST":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(size) if size else b""
        environ["wsgi.input"] = io.BytesIO(body)  # the application reads it again
        action = urllib.parse.parse_qs(body.decode(errors="replace")).get("Action")
    return f"{service}:{(action or ['?'])[0]}"


class Counting:
    """WSGI middleware: counts requests by `service:Action`; serves `GET /__counts__`."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.counts: Counter[str] = Counter()
        self.received = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/__counts__":
            with self.lock:
                body = json.dumps({"requests": dict(self.counts),
                                   "received": self.received}).encode()  # fmt: skip
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("Content-Length", str(len(body)))])  # fmt: skip
            return [body]
        action = classify(environ)
        with self.lock:
            self.counts[action] += 1
        if action != "sqs:ReceiveMessage":
            return self.app(environ, start_response)
        body = b"".join(self.app(environ, start_response))
        handed_out = body.count(b'"ReceiptHandle"')  # the JSON protocol's answer
        with self.lock:
            self.received += handed_out
        return [body]


def _cheaper_retention_check() -> None:
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    def is_message_valid_based_on_retention_period(
        self: Any, queue_name: str, message: Any
    ) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > unix_time())

    SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )


def main() -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    class QuietHandler(MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            pass

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as `python -m moto.server` does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if os.environ.get("BENCH_MOTO_AS_IS") != "1":
        _cheaper_retention_check()
    app = Counting(DomainDispatcherApplication(create_backend_app))
    run_simple(args.host, args.port, app, threaded=True, request_handler=QuietHandler)


if __name__ == "__main__":
    main()
