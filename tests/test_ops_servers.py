"""The operations endpoints' server: readiness checks with reasons, HEAD, hostile
clients, and no server code loaded by a run without ports."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from trailproc._config import load_config
from trailproc._observe import Metrics
from trailproc._ops import servers
from trailproc._ops.servers import CheckResult, readiness_checks, serve_ops

REPO = Path(__file__).resolve().parent.parent


def _get(url: str, method: str = "GET") -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_readyz_lists_the_reason_of_each_failing_check() -> None:
    config = load_config(env={}, health_port=0)
    state = {"region": False}

    def region_heard() -> CheckResult:
        return state["region"], "no log file from us-east-1 for 2 hours"

    def broken() -> CheckResult:
        raise RuntimeError("boom")

    async def main() -> list[tuple[int, str, dict[str, str]]]:
        metrics = Metrics()
        checks = [*readiness_checks(config, metrics), region_heard]
        answers = []
        async with serve_ops(config, metrics, ready=checks) as ops:
            url = f"http://127.0.0.1:{ops.health_port}/readyz"
            answers.append(await asyncio.to_thread(_get, url))
            metrics.last_poll.set(1.0)  # the queue answered
            answers.append(await asyncio.to_thread(_get, url))
            state["region"] = True
            answers.append(await asyncio.to_thread(_get, url))
            checks.append(broken)  # the list is read on every probe
            answers.append(await asyncio.to_thread(_get, url))
        return answers

    first, second, third, fourth = asyncio.run(main())
    assert first[:2] == (503, "not ready: the queue has not answered a receive yet\n"
                              "not ready: no log file from us-east-1 for 2 hours\n")  # fmt: skip
    assert second[:2] == (503, "not ready: no log file from us-east-1 for 2 hours\n")
    assert third[:2] == (200, "ok\n")
    assert third[2]["Cache-Control"] == "no-store"
    assert fourth[:2] == (503, "not ready: check raised RuntimeError\n")


def test_head_answers_without_a_body_and_metrics_have_their_content_type() -> None:
    config = load_config(env={}, metrics_port=0, health_port=0)

    async def main() -> tuple[tuple[int, str, dict[str, str]], ...]:
        async with serve_ops(config, Metrics(), ready=lambda: True) as ops:
            head = await asyncio.to_thread(
                _get, f"http://127.0.0.1:{ops.health_port}/livez", "HEAD"
            )
            scrape = await asyncio.to_thread(_get, f"http://127.0.0.1:{ops.metrics_port}/metrics")
            return head, scrape

    head, scrape = asyncio.run(main())
    assert head[:2] == (200, "")
    assert scrape[0] == 200
    assert scrape[2]["Content-Type"].startswith("text/plain; version=")
    assert "# TYPE trailproc_records_total counter" in scrape[1]


def test_silent_and_oversized_clients_are_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection that never completes its request is closed by the server, and a huge
    request line is refused, while the endpoints keep answering others."""
    monkeypatch.setattr(servers, "_REQUEST_TIMEOUT", 0.5)
    config = load_config(env={}, health_port=0)

    def silent(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")  # never finished
            return sock.recv(1024)  # b"": the server closed it

    def oversized(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock.recv(1024)

    async def main() -> tuple[bytes, bytes, int]:
        async with serve_ops(config, Metrics(), live=lambda: True) as ops:
            port = ops.health_port or 0
            cut = await asyncio.to_thread(silent, port)
            refused = await asyncio.to_thread(oversized, port)
            still = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/livez")
            return cut, refused, still[0]

    cut, refused, still = asyncio.run(main())
    assert cut == b""
    assert refused.split(b" ", 2)[1] in (b"400", b"414", b"431")
    assert still == 200


def test_a_run_without_ports_loads_no_server_code() -> None:
    script = (
        "import asyncio, sys\n"
        "from trailproc._config import load_config\n"
        "from trailproc._observe import Metrics\n"
        "from trailproc._ops.servers import serve_ops\n"
        "async def main():\n"
        "    async with serve_ops(load_config(env={}), Metrics()) as ops:\n"
        "        assert ops.metrics_port is None and ops.health_port is None\n"
        "asyncio.run(main())\n"
        "loaded = ('aiohttp.web', 'prometheus_client.exposition')\n"
        "print(sorted(m for m in sys.modules if m.startswith(loaded)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"
