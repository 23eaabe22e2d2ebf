"""`run --workers N`: one worker runs in the calling process, N-1 in spawned children;
SIGTERM to the command stops all of them cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trailproc._sandbox import TrailSandbox, log_key, make_records


def _lines(path: Path) -> list[dict[str, object]]:
    """JSON log lines; two workers' lines may run together (`{...}{...}`)."""
    decoder = json.JSONDecoder()
    text, found, at = path.read_text(), [], 0
    while (at := text.find("{", at)) >= 0:
        try:
            entry, at = decoder.raw_decode(text, at)
            found.append(entry)
        except ValueError:
            at += 1
    return found


@pytest.mark.timeout(150)
def test_sigterm_stops_every_worker_and_this_process(sandbox: TrailSandbox, tmp_path: Path) -> None:
    for i in range(4):
        sandbox.deliver(make_records(20, seed=300 + i), key=log_key(unique=f"sig{i:02d}abcdefgh"))
    out, log = tmp_path / "out.jsonl", tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trailproc._cli", "run", "--queue-url", sandbox.queue_url,
             "--workers", "2", "--wait-time", "20", "--output", str(out),
             "--state-dir", str(tmp_path / "state"), "--log-format", "json"],
            env=sandbox.env(), stderr=stderr, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            # Both workers polling, and the four files done: then both sit in a 20 s poll.
            while time.monotonic() < deadline:
                polling = [e for e in _lines(log) if e.get("event") == "polling"]
                if len(polling) == 2 and out.exists() and out.read_bytes().count(b"\n") == 80:
                    break
                time.sleep(0.2)
            else:
                pytest.fail(f"workers did not start/drain: {log.read_text()[-2000:]}")
            owners = {str(e.get("owner")) for e in _lines(log) if e.get("event") == "polling"}
            assert len(owners) == 2
            assert any(o.endswith(f":{proc.pid}") for o in owners)  # one worker is this process
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            waited = time.monotonic() - started
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert code == 0, log.read_text()[-2000:]
    assert waited < 15, f"took {waited:.1f} s: the 20 s long poll was not interrupted"
    events = [e.get("event") for e in _lines(log)]
    assert events.count("signal received: finishing in-flight work") == 2
    assert events.count("stopped") == 2
    assert sandbox.queue_depth() == 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.timeout(90)
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_sigterm_while_a_worker_is_still_starting_is_a_clean_stop(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    # systemd or Kubernetes may stop the service the moment it started: a child killed by
    # the forwarded SIGTERM before it installed its own handlers had received nothing, so
    # the command must exit 0, not report a failed worker. A forked child installs them
    # within milliseconds; a thread alive in the parent (an application embedding the
    # CLI, here) makes the children spawned, whose start-up leaves time to hit.
    embedded = ("import sys, threading; threading.Thread(target=threading.Event().wait, "
                "daemon=True).start(); from trailproc._cli import main; sys.argv[0] = "
                "'trailproc'; main()")  # fmt: skip
    log = tmp_path / "stderr.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", embedded, "run", "--queue-url", sandbox.queue_url,
             "--workers", "2", "--wait-time", "20", "--output", str(tmp_path / "out.jsonl"),
             "--state-dir", str(tmp_path / "state"), "--log-format", "json"],
            env=sandbox.env(), stderr=stderr, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not _children(proc.pid):
                assert time.monotonic() < deadline, "no worker child was started"
                assert proc.poll() is None, log.read_text()[-2000:]
                time.sleep(0.005)
            time.sleep(0.05)  # the parent forwards signals now; the child is still importing
            assert not [e for e in _lines(log) if e.get("event") == "polling"]
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "workers failed" not in text
    assert sandbox.queue_depth() == 0
