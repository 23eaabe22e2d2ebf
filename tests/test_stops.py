"""Stops keep their word, in real `trailproc run` subprocesses against moto's server:

- SIGTERM with a handler that never returns (sync, async, or async swallowing its
  cancellation): the process exits within shutdown_timeout + 3 s with exit code 75, its
  messages visible again, close() run and one "stopped" line logged;
- a batch the handler returns during the shutdown (before its deadline) is committed:
  the restart hands nothing over twice;
- the state directory removed mid-run stops the run with one clear error, and nothing
  is deleted from the queue;
- a checkpoint store of a newer incompatible schema stops `run` at start-up.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from trailproc._app import EXIT_ABANDONED
from trailproc._sandbox import MotoServer, TrailSandbox, make_records
from trailproc.checkpoint._schema import SCHEMA_VERSION

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import daemon_command, daemon_env, event_ids, json_logs

BATCH = 10


def _deliver(sandbox: TrailSandbox, files: int, per_file: int) -> set[str]:
    expected: set[str] = set()
    for i in range(files):
        records = make_records(per_file, seed=7100 + i)
        expected.update(r["eventID"] for r in records)
        sandbox.deliver(records)
    return expected


def _wait_for(proc: subprocess.Popen[str], path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"daemon exited before {path.name} appeared"
        if path.exists():
            return
        time.sleep(0.02)
    raise AssertionError(f"{path.name} never appeared")


def _not_visible(sandbox: TrailSandbox) -> int:
    attrs = sandbox.client("sqs").get_queue_attributes(
        QueueUrl=sandbox.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _handler_ids(marks: Path) -> Counter[str]:
    ids = marks / "ids"
    return Counter(ids.read_text().split()) if ids.exists() else Counter()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("handler", ["HangSync", "HangAsync", "HangStubborn"])
def test_sigterm_with_a_hung_handler_exits_in_time_and_says_so(
    aws_env: MotoServer, tmp_path: Path, handler: str
) -> None:
    sandbox = TrailSandbox(aws_env.url).create(visibility_timeout=60)
    _deliver(sandbox, files=2, per_file=25)
    marks = tmp_path / "marks"
    env = daemon_env(aws_env.url, str(tmp_path / "state"), max_events_per_emit=str(BATCH))
    env["STOP_TEST_MARKS"] = str(marks)
    shutdown_timeout = 2.0
    command = daemon_command(
        sandbox.queue_url, str(tmp_path / "out.jsonl"), "--handler", f"stop_handlers:{handler}",
        "--visibility-timeout", "60", "--shutdown-timeout", str(shutdown_timeout),
    )  # fmt: skip

    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    _wait_for(proc, marks / "started-1")
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - signalled

    assert proc.returncode == EXIT_ABANDONED, stderr[-4000:]
    assert took < shutdown_timeout + 3.0, f"took {took:.1f}s to stop"
    logs = json_logs(stderr)
    stopped = [e for e in logs if e["event"] == "stopped"]
    assert len(stopped) == 1 and stopped[0]["abandoned_batches"] >= 1
    said = " | ".join(e["event"] for e in logs)
    if handler == "HangStubborn":
        # Cancellation swallowed: left behind, and the hard deadline ends the process.
        assert "work ignored cancellation at shutdown" in said
        assert "stop still not over at the hard deadline" in said
    else:
        assert "shutdown deadline reached with the handler still busy" in said
    assert (marks / "closed").exists(), "close() must run even with the handler hung"
    # Nothing hidden: the abandoned messages are visible again at once, not after 60 s.
    assert _not_visible(sandbox) == 0
    assert sandbox.queue_depth() == 2, "an abandoned message must never be deleted"


@pytest.mark.timeout(120)
def test_batch_returned_during_shutdown_is_committed(aws_env: MotoServer, tmp_path: Path) -> None:
    """Batch 2 is held in the handler past the moment the stop interrupts files (at
    shutdown_timeout - grace) and released before the deadline: it is committed, the
    file stops at the next boundary, and the restart hands nothing over twice."""
    sandbox = TrailSandbox(aws_env.url).create(visibility_timeout=60)
    expected = _deliver(sandbox, files=1, per_file=5 * BATCH)
    marks = tmp_path / "marks"
    output = tmp_path / "out.jsonl"
    env = daemon_env(aws_env.url, str(tmp_path / "state"), max_events_per_emit=str(BATCH))
    env.update(STOP_TEST_MARKS=str(marks), STOP_TEST_HOLD="2")
    shutdown_timeout = 6.0  # the files are interrupted at 4.5 s (grace: a quarter)
    command = daemon_command(
        sandbox.queue_url, str(output), "--handler", "stop_handlers:WaitForRelease",
        "--visibility-timeout", "60", "--shutdown-timeout", str(shutdown_timeout),
    )  # fmt: skip

    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    _wait_for(proc, marks / "started-2")
    proc.send_signal(signal.SIGTERM)
    time.sleep(5.0)  # past the interruption, a second before the deadline
    (marks / "release").touch()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr[-4000:]
    assert (marks / "returned-2").exists()
    assert not (marks / "started-3").exists(), "an interrupted file starts no new batch"
    assert _handler_ids(marks).total() == 2 * BATCH
    assert _not_visible(sandbox) == 0

    env.update(STOP_TEST_HOLD="0")
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    handed = _handler_ids(marks)
    assert set(handed) == expected
    assert all(n == 1 for n in handed.values()), "a batch that returned was handed over again"
    assert set(event_ids(str(output))) == expected
    assert sandbox.queue_depth() == 0


@pytest.mark.timeout(120)
def test_state_dir_removed_mid_run_stops_the_run_loudly(
    aws_env: MotoServer, tmp_path: Path
) -> None:
    sandbox = TrailSandbox(aws_env.url).create(visibility_timeout=60)
    expected = _deliver(sandbox, files=2, per_file=20 * BATCH)
    marks = tmp_path / "marks"
    state = tmp_path / "state"
    env = daemon_env(aws_env.url, str(state), max_events_per_emit=str(BATCH))
    env.update(STOP_TEST_MARKS=str(marks), STOP_TEST_BATCH_SECONDS="0.1")
    command = daemon_command(
        sandbox.queue_url, str(tmp_path / "out.jsonl"), "--handler", "stop_handlers:Steady",
        "--visibility-timeout", "60", "--shutdown-timeout", "10",
    )  # fmt: skip

    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    _wait_for(proc, marks / "returned-2")
    shutil.rmtree(state)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 1, stderr[-4000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("Error: checkpoint database") and "deleted or moved away" in last
    assert str(state / "checkpoints.sqlite3") in last
    assert 0 < len(_handler_ids(marks)) < len(expected)
    # No message was deleted: neither file was finished with its progress recorded.
    assert sandbox.queue_depth() == 2
    assert not state.exists(), "nothing may recreate the state directory behind our back"


def test_run_refuses_a_store_of_a_newer_schema_before_receiving(
    aws_env: MotoServer, tmp_path: Path
) -> None:
    sandbox = TrailSandbox(aws_env.url).create(visibility_timeout=60)
    _deliver(sandbox, files=1, per_file=5)
    state = tmp_path / "state"
    db = state / "checkpoints.sqlite3"
    state.mkdir()
    newer = SCHEMA_VERSION + 1
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE trailproc_meta (name TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL);"
        f"INSERT INTO trailproc_meta VALUES ('schema_version', '{newer}'),"
        f" ('compatible_from', '{newer}'), ('written_by', '9.0.0');"
        f"PRAGMA user_version = {newer};"
    )
    conn.close()
    env = daemon_env(aws_env.url, str(state))
    output = tmp_path / "out.jsonl"
    command = daemon_command(sandbox.queue_url, str(output))

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr[-4000:]
    error = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and f"schema version {newer}" in error[0] and str(db) in error[0]
    assert "Traceback" not in done.stderr
    assert not any(e["event"] == "polling" for e in json_logs(done.stderr))
    # Nothing received: the message is still visible, not in flight.
    assert _not_visible(sandbox) == 0 and sandbox.queue_depth() == 1
    assert not output.exists() or output.stat().st_size == 0


@pytest.mark.timeout(120)
def test_workers_report_an_abandoned_batch_with_exit_code_75(
    aws_env: MotoServer, tmp_path: Path
) -> None:
    """`run --workers 2`: the signal reaches every worker; a hung handler in any of them
    makes the command exit 75, in time, with the messages visible again."""
    sandbox = TrailSandbox(aws_env.url).create(visibility_timeout=60)
    _deliver(sandbox, files=4, per_file=25)
    marks = tmp_path / "marks"
    env = daemon_env(aws_env.url, str(tmp_path / "state"), max_events_per_emit=str(BATCH))
    env["STOP_TEST_MARKS"] = str(marks)
    shutdown_timeout = 2.0
    command = daemon_command(
        sandbox.queue_url, str(tmp_path / "out.jsonl"), "--handler", "stop_handlers:HangSync",
        "--visibility-timeout", "60", "--shutdown-timeout", str(shutdown_timeout),
        "--workers", "2",
    )  # fmt: skip

    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    _wait_for(proc, marks / "started-1")
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - signalled

    assert proc.returncode == EXIT_ABANDONED, stderr[-4000:]
    assert took < shutdown_timeout + 3.0, f"took {took:.1f}s to stop"
    assert _not_visible(sandbox) == 0
    assert sandbox.queue_depth() == 4
