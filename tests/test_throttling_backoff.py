"""Throttled by AWS, trailproc backs off, loses nothing, deletes nothing early, and
picks up again once the throttling stops.

The daemon runs as a subprocess against `FaultProxy` in front of moto. After the first
files have gone through, the proxy throttles every SQS call (`ThrottlingException` and
`RequestThrottled`, as SQS answers them) and every S3 GetObject (503 `SlowDown`) for a
few seconds, then lets everything through again. moto never throttles."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from trailproc._sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import (
    NO_FAULTS,
    FaultProxy,
    daemon_command,
    daemon_env,
    error_response,
    event_ids,
    json_logs,
)

FILES = 16
THROTTLED_SECONDS = 4.0
# Every actor of a run (receives, downloads, deletes, visibility changes) retrying in a
# tight loop would send thousands of requests in the window; backing off, about ten.
MOST_REQUESTS_WHILE_THROTTLED = 80


class Throttle:
    """Throttles SQS and S3 GetObject for `THROTTLED_SECONDS`, from the moment the first
    `after_gets` GetObject calls went through."""

    def __init__(self, after_gets: int) -> None:
        self.after_gets = after_gets
        self.gets = 0
        self.started: float | None = None
        self.throttled: list[tuple[float, str]] = []  # (when, what)
        self.answered_after: list[str] = []  # what went through once it was over
        self.lock = threading.Lock()

    def on(self, now: float) -> bool:
        return self.started is not None and now < self.started + THROTTLED_SECONDS

    def __call__(self, method: str, path: str, headers: Any) -> Any:
        target = (headers.get("X-Amz-Target") or "").rpartition(".")[2]
        is_get = method == "GET" and not target and "/s3/" in (headers.get("Authorization") or "")
        now = time.monotonic()
        with self.lock:
            if target or is_get:
                what = target or "GetObject"
                if self.on(now):
                    self.throttled.append((now, what))
                    if is_get:
                        return error_response("throttle", "s3")  # 503 SlowDown
                    # SQS answers both, depending on the call and its server.
                    status, answer, body = error_response("throttle", "sqs-json")
                    if len(self.throttled) % 2:
                        code = "RequestThrottled"
                        body = body.replace(b"ThrottlingException", code.encode())
                        answer["x-amzn-query-error"] = f"{code};Sender"
                    return status, answer, body
                if self.started is not None:
                    self.answered_after.append(what)
            if is_get:
                self.gets += 1
                if self.gets == self.after_gets:
                    self.started = now
        return None


def test_throttling_slows_the_run_which_loses_nothing_and_recovers(
    aws_env: MotoServer, tmp_path: Path
) -> None:
    sandbox = TrailSandbox(aws_env.url, max_receive_count=100).create(visibility_timeout=30)
    expected: set[str] = set()
    for index in range(FILES):
        records = make_records(30, seed=500 + index)
        expected.update(record["eventID"] for record in records)
        key = log_key(unique=f"throttled{index:03d}")
        sandbox.put(key, encode_log(records))
        sandbox.notify([key])
    throttle = Throttle(after_gets=3)
    output = tmp_path / "out.jsonl"
    with FaultProxy(aws_env.url, faults=NO_FAULTS, intercept=throttle) as proxy:
        done = subprocess.run(
            daemon_command(sandbox.queue_url, str(output), "--visibility-timeout", "30"),
            env=daemon_env(proxy.url, str(tmp_path / "state"), max_in_flight_messages="4"),
            capture_output=True, text=True, timeout=150,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    # Nothing lost, nothing twice, nothing left behind or sent to the dead-letter queue:
    # every message was deleted only once its records were out.
    seen = event_ids(str(output))
    assert set(seen) == expected and max(seen.values()) == 1
    assert sandbox.queue_depth() == 0
    assert sandbox.queue_depth(sandbox.dlq_url) == 0
    assert json_logs(done.stderr)[-1]["event"] == "stopped"
    # It was throttled on both services, and retried rather than hammered the endpoints.
    kinds = {what for _when, what in throttle.throttled}
    assert {"GetObject", "ReceiveMessage"} <= kinds, kinds
    assert len(throttle.throttled) <= MOST_REQUESTS_WHILE_THROTTLED, len(throttle.throttled)
    # Once the throttling stopped, it picked up: the rest of the files were downloaded.
    assert throttle.answered_after.count("GetObject") >= FILES - throttle.after_gets
