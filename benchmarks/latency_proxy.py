"""A loopback HTTP proxy that adds a round trip to every AWS request and counts them.

    python benchmarks/latency_proxy.py --upstream http://127.0.0.1:PORT --delay-ms 20

Prints `listening on http://127.0.0.1:PORT` once ready. Point a client at it with
AWS_ENDPOINT_URL. Every request waits `--delay-ms` before it is forwarded (one added round
trip, as a region a few hundred kilometres away adds), then goes to the upstream on a new
connection (moto's server closes each connection after one answer anyway). Towards the
client the proxy keeps connections alive, as AWS's endpoints do, so a client that reuses
its connections pays no extra connect here either.

`GET /__stats__` answers JSON: requests per `service:Action` (from X-Amz-Target, the query
`Action=`, or S3's method and path shape), the most requests in flight at once per
action, and how many client connections were opened. Nothing here depends on trailproc.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import urllib.parse
from collections import Counter

_CREDENTIAL = re.compile(rb"Credential=[^/]+/\d{8}/[^/]+/([a-z0-9-]+)/")
_DROP = {b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"expect"}


class Stats:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.in_flight: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.connections = 0

    def enter(self, action: str) -> None:
        self.requests[action] += 1
        self.in_flight[action] += 1
        self.peak[action] = max(self.peak[action], self.in_flight[action])

    def leave(self, action: str) -> None:
        self.in_flight[action] -= 1

    def as_json(self) -> bytes:
        return json.dumps({
            "requests": dict(self.requests),
            "peak_in_flight": dict(self.peak),
            "in_flight": sum(self.in_flight.values()),
            "connections": self.connections,
        }).encode()  # fmt: skip


def classify(method: str, target: str, headers: dict[bytes, bytes], body: bytes) -> str:
    """`service:Action` of one request, as far as the wire says."""
    amz_target = headers.get(b"x-amz-target", b"").decode()
    if amz_target:
        prefix, _, action = amz_target.partition(".")
        service = "sqs" if prefix.startswith("AmazonSQS") else prefix.split("_")[0].lower()
        return f"{service}:{action}"
    match = _CREDENTIAL.search(headers.get(b"authorization", b""))
    service = match.group(1).decode() if match else "?"
    if service == "s3":
        path = urllib.parse.urlsplit(target).path.strip("/")
        has_key = "/" in path
        names = {
            "GET": "GetObject" if has_key else "ListObjects",
            "PUT": "PutObject",
            "HEAD": "HeadObject" if has_key else "HeadBucket",
            "DELETE": "DeleteObject",
        }
        return f"s3:{names.get(method, method)}"  # fmt: skip
    action = urllib.parse.parse_qs(body.decode(errors="replace")).get("Action", ["?"])[0]
    return f"{service}:{action}"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    line, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for raw in lines:
        name, _, value = raw.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = await read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return line, headers, body


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def parse_response(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = []
    chunked = False
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        headers.append((name.strip(), value.strip()))
    if chunked:
        body = _dechunk(body)
    return status, headers, body


def _dechunk(data: bytes) -> bytes:
    out, at = [], 0
    while True:
        end = data.index(b"\r\n", at)
        size = int(data[at:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2 : end + 2 + size])
        at = end + 2 + size + 2


class Proxy:
    def __init__(self, upstream: str, delay: float) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.delay = delay
        self.stats = Stats()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            while True:
                try:
                    line, headers, body = await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                reply, close = await self.answer(line, headers, body)
                writer.write(reply)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()

    async def answer(self, line: bytes, headers: dict[bytes, bytes],
                     body: bytes) -> tuple[bytes, bool]:  # fmt: skip
        method, target, _version = line.decode().split(" ", 2)
        close = headers.get(b"connection", b"").lower() == b"close"
        if target == "/__stats__":
            data = self.stats.as_json()
            return _reply(b"HTTP/1.1 200 OK", [(b"Content-Type", b"application/json")], data,
                          method == "HEAD"), close  # fmt: skip
        action = classify(method, target, headers, body)
        self.stats.enter(action)
        try:
            await asyncio.sleep(self.delay)
            status, out_headers, data = await self.forward(line, headers, body)
        finally:
            self.stats.leave(action)
        return _reply(status, out_headers, data, method == "HEAD"), close

    async def forward(self, line: bytes, headers: dict[bytes, bytes],
                      body: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:  # fmt: skip
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            head = [line]
            head += [name + b": " + value for name, value in headers.items() if name not in _DROP]
            head += [b"Content-Length: " + str(len(body)).encode(), b"Connection: close"]
            writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        status, out_headers, data = parse_response(raw)
        if line.startswith(b"HEAD "):  # the body a HEAD answer describes is not sent
            length = next((v for n, v in out_headers if n.lower() == b"content-length"), b"0")
            return status, out_headers, b"\0" * int(length)
        return status, out_headers, data


def _reply(status: bytes, headers: list[tuple[bytes, bytes]], body: bytes, head: bool) -> bytes:
    lines = [status] + [n + b": " + v for n, v in headers if n.lower() not in _DROP]
    lines += [b"Content-Length: " + str(len(body)).encode(), b"Connection: keep-alive"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head else body)


async def main_async(args: argparse.Namespace) -> None:
    proxy = Proxy(args.upstream, args.delay_ms / 1000)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", args.port, backlog=512)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:5000")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="added per request")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args()
    try:
        asyncio.run(main_async(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
