"""trailproc keeps its connections to AWS open and reuses them, as it must against real
AWS, where each new connection costs a TCP and a TLS handshake.

moto's server closes every connection after one response, so the daemon runs against
`FaultProxy` (no faults), which keeps the client's connections alive as AWS does and
counts the TCP connections it accepts: a run over many files opens a handful, not one
per request."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from trailproc._sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import NO_FAULTS, FaultProxy, daemon_command, daemon_env, event_ids, json_logs


def test_a_run_over_many_files_reuses_its_connections(aws_env: MotoServer, tmp_path: Path) -> None:
    sandbox = TrailSandbox(aws_env.url).create()
    expected: set[str] = set()
    for index in range(80):
        records = make_records(10, seed=index)
        expected.update(record["eventID"] for record in records)
        key = log_key(unique=f"reuse{index:03d}")
        sandbox.put(key, encode_log(records))
        sandbox.notify([key])
    output = tmp_path / "out.jsonl"
    with FaultProxy(aws_env.url, faults=NO_FAULTS) as proxy:
        done = subprocess.run(
            daemon_command(sandbox.queue_url, str(output)),
            env=daemon_env(proxy.url, str(tmp_path / "state")),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        stats = dict(proxy.stats)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = event_ids(str(output))
    assert set(seen) == expected and max(seen.values()) == 1
    assert sandbox.queue_depth() == 0
    assert json_logs(done.stderr)[-1]["event"] == "stopped"
    requests, connections = stats["requests"], stats["connections"]
    assert requests >= 80 + 5  # a GetObject per file, receives, deletes
    # One connection per request would be `requests`; reused, only as many as were
    # ever in use at once (downloads in parallel, a receive, a delete).
    assert connections * 4 <= requests, stats
