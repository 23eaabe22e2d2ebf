"""Network faults between trailproc and AWS: every record still arrives exactly once.

trailproc runs as a subprocess whose every AWS call goes through `FaultProxy`: a seeded
15% of calls fail with 500/503/throttling, some are forwarded and then have their
response dropped (the server acted, the client never heard), some GetObject bodies are
cut short, and every call gets some latency.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from trailproc._sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import FaultProxy, FaultRates, daemon_command, daemon_env, event_ids, json_logs

VISIBILITY = 5  # short, so messages whose receive response was lost come back soon


def _deliver(sandbox: TrailSandbox, files: int, per_file: int) -> set[str]:
    """Log files announced as CloudTrail does; some notifications name two files, one
    file is announced twice (SNS and CloudTrail are at-least-once)."""
    expected: set[str] = set()
    keys = []
    for i in range(files):
        records = make_records(per_file, seed=1000 + i)
        expected.update(r["eventID"] for r in records)
        key = log_key(unique=f"fault{i:04d}")
        sandbox.put(key, encode_log(records))
        keys.append(key)
    for i in range(0, files, 3):
        sandbox.notify(keys[i : i + 2])
        if i + 2 < files:
            sandbox.notify([keys[i + 2]])
    sandbox.notify([keys[0]])  # a duplicate notification
    return expected


@pytest.mark.timeout(150)
@pytest.mark.parametrize("seed", [13, 36])
def test_every_record_once_through_faults(aws_env: MotoServer, tmp_path: Path, seed: int) -> None:
    sandbox = TrailSandbox(aws_env.url, max_receive_count=100).create(visibility_timeout=VISIBILITY)
    expected = _deliver(sandbox, files=18, per_file=60)
    output = tmp_path / "out.jsonl"
    with FaultProxy(
        aws_env.url, seed=seed, faults=FaultRates(drop_rate=0.06, truncate_rate=0.1)
    ) as proxy:
        env = daemon_env(proxy.url, str(tmp_path / "state"), max_in_flight_messages="4")
        started = time.monotonic()
        proc = subprocess.run(
            daemon_command(sandbox.queue_url, str(output), "--visibility-timeout", str(VISIBILITY)),
            env=env,
            capture_output=True,
            text=True,
            timeout=130,
        )
        elapsed = time.monotonic() - started
        stats = dict(proxy.stats)

    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = event_ids(str(output))
    repeated = {k: n for k, n in seen.items() if n > 1}
    assert not repeated, f"records handed over more than once: {len(repeated)}"
    assert set(seen) == expected, f"missing {len(expected - set(seen))} records"
    assert sandbox.queue_depth() == 0
    assert sandbox.queue_depth(sandbox.dlq_url) == 0
    # The proxy really broke things, of every kind.
    assert stats.get("drop", 0) > 0, stats
    assert stats.get("truncate", 0) > 0, stats
    assert sum(stats.get(k, 0) for k in ("throttle", "unavailable", "internal")) > 0, stats
    logs = json_logs(proc.stderr)
    assert logs[-1]["event"] == "stopped"
    assert logs[-1]["records"] == len(expected)
    assert elapsed < 120
