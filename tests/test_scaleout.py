"""Competing consumers: three `trailproc run` processes on one queue with the DynamoDB
checkpoint store (moto) hand every record over exactly once between them."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from trailproc._sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import daemon_command, daemon_env, event_ids, json_logs

WORKERS = 3


@pytest.mark.timeout(150)
def test_three_workers_one_queue_every_record_once(aws_env: MotoServer, tmp_path: Path) -> None:
    sandbox = TrailSandbox(aws_env.url, max_receive_count=100).create(visibility_timeout=6)
    expected: set[str] = set()
    keys = []
    for i in range(24):
        records = make_records(80, seed=7000 + i)
        expected.update(r["eventID"] for r in records)
        key = log_key(unique=f"scale{i:04d}")
        sandbox.put(key, encode_log(records))
        keys.append(key)
        sandbox.notify([key])
    # The same files announced again, some together: workers race for them and the
    # DynamoDB lease (or the done mark) must stop the loser.
    for i in range(0, 24, 4):
        sandbox.notify(keys[i : i + 2])

    outputs = [tmp_path / f"worker{n}.jsonl" for n in range(WORKERS)]
    procs = []
    for n, output in enumerate(outputs):
        env = daemon_env(
            aws_env.url,
            str(tmp_path / f"state{n}"),  # separate folders: DynamoDB is the shared state
            checkpoint="dynamodb://trailproc-checkpoints?create=true",
            max_events_per_emit="20",
            max_in_flight_messages="4",
            test_batch_sleep="0.02",
        )
        command = daemon_command(
            sandbox.queue_url, str(output), "--visibility-timeout", "6",
            "--handler", "faultproxy:Slow",
        )  # fmt: skip
        procs.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        results.append((proc.returncode, stderr))

    for code, stderr in results:
        assert code == 0, stderr[-4000:]
        assert json_logs(stderr)[-1]["event"] == "stopped"
    per_worker = [event_ids(str(o)) for o in outputs]
    total: Counter[str] = Counter()
    for seen in per_worker:
        total.update(seen)
    assert set(total) == expected, f"missing {len(expected - set(total))}"
    assert all(n == 1 for n in total.values()), "a record was handed over twice"
    assert sum(1 for seen in per_worker if seen) >= 2, "the work was not shared"
    assert sandbox.queue_depth() == 0
    assert sandbox.queue_depth(sandbox.dlq_url) == 0

    table = sandbox.client("dynamodb").scan(TableName="trailproc-checkpoints")["Items"]
    table = [item for item in table if item["pk"]["S"].startswith("s3://")]  # file items
    assert len(table) == len(keys)
    assert all(item["done"]["BOOL"] for item in table)
