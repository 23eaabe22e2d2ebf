"""SIGTERM/SIGINT: stop receiving, finish or cleanly stop in-flight work within
shutdown_timeout, release what is left at once, exit 0; a second signal exits now."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trailproc._sandbox import MotoServer, TrailSandbox, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import daemon_command, daemon_env, event_ids, json_logs

BATCH = 10


def _deliver(sandbox: TrailSandbox, files: int, per_file: int) -> set[str]:
    expected: set[str] = set()
    for i in range(files):
        records = make_records(per_file, seed=9000 + i)
        expected.update(r["eventID"] for r in records)
        sandbox.deliver(records)
    return expected


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)


def _wait_for_output(proc: subprocess.Popen[str], output: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "daemon exited before processing anything"
        if output.exists() and output.stat().st_size > 0:
            return
        time.sleep(0.02)
    raise AssertionError("no records were handed over")


@pytest.mark.timeout(120)
def test_sigterm_finishes_cleanly_and_nothing_is_lost(aws_env: MotoServer, tmp_path: Path) -> None:
    # A long visibility timeout: released messages must be visible again at once, not
    # after it, for the re-run below to finish quickly.
    sandbox = TrailSandbox(aws_env.url).create(visibility_timeout=60)
    expected = _deliver(sandbox, files=8, per_file=200)
    output = tmp_path / "out.jsonl"
    env = daemon_env(
        aws_env.url,
        str(tmp_path / "state"),
        max_events_per_emit=str(BATCH),
        max_in_flight_messages="3",
        test_batch_sleep="0.1",  # 2 s a file: more than the shutdown timeout allows
    )
    shutdown_timeout = 3.0
    command = daemon_command(
        sandbox.queue_url, str(output), "--handler", "faultproxy:Slow",
        "--visibility-timeout", "60", "--shutdown-timeout", str(shutdown_timeout),
    )  # fmt: skip

    proc = _start(command, env)
    _wait_for_output(proc, output)
    time.sleep(0.3)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    took = time.monotonic() - signalled
    assert proc.returncode == 0, stderr[-4000:]
    assert took < shutdown_timeout + 2.0, f"took {took:.1f}s to stop"
    logs = json_logs(stderr)
    assert any(e["event"].startswith("signal received") for e in logs)
    assert logs[-1]["event"] == "stopped"

    first = event_ids(str(output))
    assert 0 < len(first) < len(expected)
    assert all(n == 1 for n in first.values())
    # Nothing hidden: work not finished was released (visibility 0), not left to time out.
    attrs = sandbox.client("sqs").get_queue_attributes(
        QueueUrl=sandbox.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"

    env["TRAILPROC_TEST_BATCH_SLEEP"] = "0"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    seen = event_ids(str(output))
    assert set(seen) == expected
    assert all(n == 1 for n in seen.values()), "a graceful stop must repeat nothing"
    assert sandbox.queue_depth() == 0


@pytest.mark.timeout(120)
def test_second_signal_exits_at_once(aws_env: MotoServer, tmp_path: Path) -> None:
    sandbox = TrailSandbox(aws_env.url).create(visibility_timeout=5)
    expected = _deliver(sandbox, files=6, per_file=200)
    output = tmp_path / "out.jsonl"
    env = daemon_env(
        aws_env.url,
        str(tmp_path / "state"),
        worker_id="second-signal-worker",
        max_events_per_emit=str(BATCH),
        max_in_flight_messages="3",
        test_batch_sleep="0.1",
    )
    command = daemon_command(
        sandbox.queue_url, str(output), "--handler", "faultproxy:Slow",
        "--visibility-timeout", "5", "--shutdown-timeout", "30",
    )  # fmt: skip

    proc = _start(command, env)
    _wait_for_output(proc, output)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proc.poll() is None, "the first signal must let in-flight work go on"
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=10)
    assert time.monotonic() - signalled < 2.0
    assert proc.returncode == 128 + signal.SIGTERM
    assert any(e["event"].startswith("second signal") for e in json_logs(stderr))

    # Everything the checkpoints did not cover comes back (after the visibility timeout).
    env["TRAILPROC_TEST_BATCH_SLEEP"] = "0"
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    seen = event_ids(str(output))
    assert set(seen) == expected
    # At most the batches in the handler at the moment of exit can repeat.
    assert sum(n - 1 for n in seen.values()) <= 3 * BATCH
    assert sandbox.queue_depth() == 0
