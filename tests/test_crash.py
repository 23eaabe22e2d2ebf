"""SIGKILL the daemon at random moments, then let it finish: nothing lost, and repeats
only within the batches that were in flight at each kill.

The runs share one SQLite checkpoint store (a state folder) and one worker id, as a
systemd unit restarted on the same host would, so a restarted worker resumes its own
leases at once instead of waiting for them to expire.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trailproc._sandbox import MotoServer, TrailSandbox, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import daemon_command, daemon_env, event_ids, json_logs

FILES = 16
PER_FILE = 100
BATCH = 10  # max_events_per_emit
IN_FLIGHT = 4  # max_in_flight_messages; one file per message
KILLS = 4


@pytest.mark.timeout(150)
def test_sigkill_at_random_moments_loses_nothing(aws_env: MotoServer, tmp_path: Path) -> None:
    rng = random.Random(31337)
    sandbox = TrailSandbox(aws_env.url, max_receive_count=100).create(visibility_timeout=5)
    expected: set[str] = set()
    for i in range(FILES):
        records = make_records(PER_FILE, seed=5000 + i)
        expected.update(r["eventID"] for r in records)
        sandbox.deliver(records)

    output = tmp_path / "out.jsonl"
    env = daemon_env(
        aws_env.url,
        str(tmp_path / "state"),  # the SQLite store every run shares
        worker_id="crash-test-worker",
        max_events_per_emit=str(BATCH),
        max_in_flight_messages=str(IN_FLIGHT),
        test_batch_sleep="0.04",
    )
    command = daemon_command(
        sandbox.queue_url, str(output), "--visibility-timeout", "5", "--handler", "faultproxy:Slow"
    )

    kills = 0
    for _ in range(KILLS):
        before = output.stat().st_size if output.exists() else 0
        proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        try:
            # Wait for this run to hand records over, then kill it a random moment later.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                if output.exists() and output.stat().st_size > before:
                    break
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.8))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
        finally:
            proc.wait(10)

    assert kills >= 3, "the daemon finished before it could be killed; give it more work"
    assert len(event_ids(str(output))) < len(expected), "nothing left for the final run"

    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
    assert final.returncode == 0, final.stderr[-4000:]
    assert json_logs(final.stderr)[-1]["event"] == "stopped"

    seen = event_ids(str(output))
    assert set(seen) == expected, f"lost {len(expected - set(seen))} records"
    repeats = sum(n - 1 for n in seen.values())
    assert repeats <= kills * BATCH * IN_FLIGHT, f"{repeats} repeats after {kills} kills"
    assert sandbox.queue_depth() == 0
    assert sandbox.queue_depth(sandbox.dlq_url) == 0
