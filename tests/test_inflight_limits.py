"""How much work a process takes on at once: `max_in_flight_messages` and
`download_concurrency` follow from its memory budget unless they are set.

- the arithmetic (`limits_for_budget`): 16 messages and 8 downloads at the default
  1 GiB budget, fewer for smaller budgets down to a floor (never 0), more for larger
  ones up to a cap; `--workers`/`--jobs` split the budget and so the limits;
- explicit settings win, from Python, the environment or a config file;
- end to end against moto through the loopback proxy: a small `memory_budget_mb` lowers
  the messages in work and the GetObject calls in flight that the run really has, an
  explicit setting raises them again, and the start-up line says which and why.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from faultproxy import NO_FAULTS, FaultProxy
from helpers import run_in_process

from trailproc._app import run_async
from trailproc._config import Config, ConfigError, load_config
from trailproc._memory import (
    DOWNLOADS_RANGE,
    MESSAGES_RANGE,
    InFlightLimits,
    budget_bytes,
    container_memory_limit,
    limits_for_budget,
)
from trailproc._observe import Metrics
from trailproc._pipeline.processor import EventProcessor
from trailproc._sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records

MIB = 1 << 20
GIB = 1 << 30


# --- the arithmetic ----------------------------------------------------------------------


def test_the_default_budget_keeps_16_messages_and_8_downloads() -> None:
    # No container limit found: a 2 GiB container is assumed, half of it the budget.
    assert budget_bytes(None, container_limit=None) in (GIB, budget_bytes(None))
    default = budget_bytes(None, container_limit=2 * GIB)
    assert default == GIB
    assert limits_for_budget(default) == InFlightLimits(16, 8)


@pytest.mark.parametrize(
    ("lambda_mb", "expected"),
    [(128, (4, 2)), (512, (4, 2)), (1024, (8, 4)), (1769, (13, 6)), (3008, (23, 11))],
)
def test_lambda_functions_of_less_memory_work_on_fewer_messages_at_once(
    tmp_path: Path, lambda_mb: int, expected: tuple[int, int]
) -> None:
    lambda_env = {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(lambda_mb)}
    limit = container_memory_limit(root=tmp_path, proc_cgroup=tmp_path / "none",
                                   environ=lambda_env)  # fmt: skip
    assert limit == lambda_mb * MIB
    assert limits_for_budget(budget_bytes(None, container_limit=limit)) == expected


def test_smaller_budgets_scale_down_to_a_floor_and_never_to_zero() -> None:
    floor = InFlightLimits(MESSAGES_RANGE[0], DOWNLOADS_RANGE[0])
    assert floor.max_in_flight_messages >= 1 and floor.download_concurrency >= 1
    for budget in (1, MIB, 64 * MIB, 255 * MIB):
        assert limits_for_budget(budget) == floor
    assert limits_for_budget(512 * MIB) == InFlightLimits(8, 4)


def test_larger_budgets_raise_them_up_to_a_cap() -> None:
    cap = InFlightLimits(MESSAGES_RANGE[1], DOWNLOADS_RANGE[1])
    assert limits_for_budget(2 * GIB) == cap
    assert limits_for_budget(64 * GIB) == cap
    # The cap keeps SQS receives (one per 5 messages of room) and the S3 client's pool
    # (downloads + 4 connections) at sizes that only help at long round trips.
    assert cap.max_in_flight_messages // 5 <= 6 and cap.download_concurrency + 4 <= 20


def test_the_limits_never_fall_as_the_budget_grows() -> None:
    previous = limits_for_budget(0)
    for mib in range(0, 5000, 7):
        now = limits_for_budget(mib * MIB)
        assert now.max_in_flight_messages >= previous.max_in_flight_messages
        assert now.download_concurrency >= previous.download_concurrency
        assert now.max_in_flight_messages >= now.download_concurrency >= 1
        previous = now


def test_workers_split_the_budget_and_so_the_limits() -> None:
    # `run --workers 2` in a 2 GiB container: each worker gets half of the 1 GiB budget.
    per_worker = budget_bytes(None, 2, container_limit=2 * GIB)
    assert per_worker == 512 * MIB
    assert limits_for_budget(per_worker) == InFlightLimits(8, 4)
    # The split reaches the workers as memory_budget_mb, and the limits follow it.
    assert Config(memory_budget_mb=512).limits() == InFlightLimits(8, 4)


def test_explicit_settings_win_over_the_budget(tmp_path: Path) -> None:
    assert Config(memory_budget_mb=64, max_in_flight_messages=40).limits() == (40, 2)
    assert Config(memory_budget_mb=8192, download_concurrency=1).limits() == (32, 1)
    from_env = load_config(env={"TRAILPROC_DOWNLOAD_CONCURRENCY": "5",
                                "TRAILPROC_MEMORY_BUDGET_MB": "64"})  # fmt: skip
    assert from_env.limits() == (4, 5)
    path = tmp_path / "trailproc.toml"
    path.write_text("memory_budget_mb = 64\nmax_in_flight_messages = 24\n")
    assert load_config(path, env={}).limits() == (24, 2)
    # A Java properties file's threadCount sets download_concurrency, as before.
    java = tmp_path / "old.properties"
    java.write_text("sqsUrl=https://q\nthreadCount=12\n")
    assert load_config(java, env={}).limits(budget=GIB) == (16, 12)


def test_unset_is_not_zero_and_zero_is_refused() -> None:
    config = Config()
    assert config.max_in_flight_messages is None and config.download_concurrency is None
    for name in ("max_in_flight_messages", "download_concurrency"):
        with pytest.raises(ConfigError, match=name):
            config.replace(**{name: 0})


def test_with_limits_fills_in_only_what_is_unset() -> None:
    resolved = Config(download_concurrency=3).with_limits(budget=GIB)
    assert (resolved.max_in_flight_messages, resolved.download_concurrency) == (16, 3)
    assert resolved.with_limits(budget=64 * MIB).limits() == (16, 3)  # now both are set


# --- a real run ----------------------------------------------------------------------------

GET_SECONDS = 0.2  # each GetObject held this long at the proxy, so downloads overlap


class Discard(EventProcessor):
    def process(self, events: list[Any]) -> None:
        pass


class HeldHandler(EventProcessor):
    """Holds the first batch until released: every message the run admits meanwhile is
    received and downloaded, and then waits for the handler, holding its slot."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ids: list[str] = []

    def process(self, events: list[Any]) -> None:
        assert self.release.wait(timeout=60), "never released"
        self.ids.extend(e.event_id for e in events)


class GetObjects:
    """Counts the GetObject calls reaching the proxy, and the most in flight at once."""

    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        self.started = 0
        self.now = 0
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, method: str, path: str, headers: Any) -> None:
        if method != "GET" or f"/{self.bucket}/AWSLogs/" not in path:
            return None
        with self.lock:
            self.started += 1
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(GET_SECONDS)
        with self.lock:
            self.now -= 1
        return None  # forwarded to moto as it is

    def started_once_settled(self, at_least: int, handler: HeldHandler) -> int:
        """Wait (bounded) until `at_least` GetObject calls started, then a while more
        for any the run should not make, and release the handler; how many started."""
        deadline = time.monotonic() + 30
        while self.started < at_least and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(4 * GET_SECONDS)  # room for more: none may come while all are held
        with self.lock:
            started = self.started
        handler.release.set()
        return started


def _run_held(sandbox: TrailSandbox, tmp_path: Path, proxy: FaultProxy, gets: GetObjects, *,
              expect_messages: int, env: dict[str, str],
              **settings: Any) -> tuple[int, list[Any]]:  # fmt: skip
    """Run the daemon with the handler held; (GetObject calls started while it was held,
    the start-up log lines)."""
    handler = HeldHandler()
    counted: list[int] = []
    watcher = threading.Thread(
        target=lambda: counted.append(gets.started_once_settled(expect_messages, handler))
    )
    watcher.start()
    config = load_config(env=env, queue_url=sandbox.queue_url, exit_when_idle=True,
                         wait_time_seconds=1, state_dir=str(tmp_path / "state"),
                         stats_interval=0, endpoint_url=proxy.url, **settings)  # fmt: skip
    try:
        with structlog.testing.capture_logs() as logs:
            result = asyncio.run(run_async(config, handler, metrics=Metrics()))
    finally:
        handler.release.set()
        watcher.join()
    assert result.files_done == len(handler.ids) // 3 == FILES  # every file, once
    return counted[0], logs


FILES = 12  # one file (3 records) per message, more than any limit below


def _deliver(sandbox: TrailSandbox, first: int = 0) -> None:
    for i in range(first, first + FILES):
        key = log_key(region=sandbox.region, unique=f"{i:016x}")
        sandbox.put(key, encode_log(make_records(3, seed=i)))
        sandbox.notify([key])


def _limits_line(logs: list[dict[str, Any]]) -> dict[str, Any]:
    lines = [entry for entry in logs if entry["event"] == "in-flight limits"]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_small_budget_lowers_the_work_a_run_takes_on_and_settings_win(
    sandbox: TrailSandbox, aws_env: MotoServer, tmp_path: Path
) -> None:
    _deliver(sandbox)
    gets = GetObjects(sandbox.bucket)
    with FaultProxy(aws_env.url, faults=NO_FAULTS, intercept=gets) as proxy:
        # 256 MiB: 4 messages in work, 2 GetObject calls at once (16 and 8 by default).
        held, logs = _run_held(sandbox, tmp_path / "small", proxy, gets, expect_messages=4,
                               env={}, memory_budget_mb=256)  # fmt: skip
        assert held == 4  # every message admitted waits for the handler: 4 were admitted
        assert gets.most == 2
        line = _limits_line(logs)
        assert (line["max_in_flight_messages"], line["download_concurrency"]) == (4, 2)
        assert line["chosen"] == "auto from budget" and line["memory_budget_mb"] == 256
        assert line["budget_from"] == "memory_budget_mb"

        # The same budget with both set (one through the environment): they win.
        _deliver(sandbox, first=FILES)
        gets.started = gets.most = 0
        held, logs = _run_held(sandbox, tmp_path / "set", proxy, gets, expect_messages=6,
                               env={"TRAILPROC_DOWNLOAD_CONCURRENCY": "3"},
                               memory_budget_mb=256, max_in_flight_messages=6)  # fmt: skip
        assert held == 6
        assert gets.most == 3
        line = _limits_line(logs)
        assert (line["max_in_flight_messages"], line["download_concurrency"]) == (6, 3)
        assert line["chosen"] == "set"


def test_the_start_up_line_names_the_unset_one_as_auto(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    with structlog.testing.capture_logs() as logs:
        result = run_in_process(sandbox, tmp_path, Discard(),
                                memory_budget_mb=512, download_concurrency=5)  # fmt: skip
    assert result.files_done == 0
    line = _limits_line(logs)
    assert (line["max_in_flight_messages"], line["download_concurrency"]) == (8, 5)
    assert line["chosen"] == "max_in_flight_messages auto from budget, the other set"


def test_a_small_lambda_function_takes_on_less_at_once(
    aws_env: MotoServer, runtime_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
    handler = runtime_factory(Discard())
    # CloudTrail's set-up message: acknowledged, after the cold start built the runtime.
    event = {"Records": [{
        "messageId": "m-1", "receiptHandle": "AQEBm-1", "body": "CloudTrail validation message.",
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1714557600000"},
        "messageAttributes": {}, "md5OfBody": "0" * 32, "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:trail", "awsRegion": "us-east-1",
    }]}  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        assert handler(event, None) == {"batchItemFailures": []}
    line = _limits_line(logs)
    assert (line["max_in_flight_messages"], line["download_concurrency"]) == (4, 2)
    assert line["memory_budget_mb"] == 64 and line["chosen"] == "auto from budget"
    assert line["budget_from"] == "memory limit 128 MiB (cgroup or Lambda function)"
    assert handler.config.limits() == (4, 2)  # what its invocations work with
