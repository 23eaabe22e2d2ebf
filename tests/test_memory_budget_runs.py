"""The memory budget in real runs: the daemon's code path against moto over HTTP.

- a record bomb (millions of `{}` in a small file) fails before its records exist, with
  one error naming the setting to raise; its message stays on the queue, and a good
  delivery in the same queue is handed over exactly once;
- one message naming many files never holds more of them in memory than the budget
  allows (an in-memory probe on the progress hooks counts the files downloaded and not
  yet done), and hands every record over once.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import structlog

from trailproc._app import run_async
from trailproc._config import load_config
from trailproc._observe import Metrics
from trailproc._pipeline.budget import RECORD_COST
from trailproc._pipeline.processor import EventProcessor, ProgressInfo, ProgressState
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import run_in_process

MB = 1 << 20


class Probe(EventProcessor):
    """Collects event ids and counts files held in memory (downloaded, not yet done)."""

    def __init__(self, pause: float = 0.0, metrics: Metrics | None = None) -> None:
        self.ids: list[str] = []
        self.metrics = metrics
        self.most_reserved = 0.0
        self.pause = pause
        self.in_memory = 0
        self.most_in_memory = 0
        self._lock = threading.Lock()

    def process(self, events: list[Any]) -> None:
        self.ids.extend(e.event_id for e in events)
        if self.metrics is not None:
            reserved = self.metrics.value("trailproc_memory_reserved_bytes")
            self.most_reserved = max(self.most_reserved, reserved)
        if self.pause:
            time.sleep(self.pause)  # a handler slower than the downloads

    def report_end(self, state: ProgressState, info: ProgressInfo, token: Any) -> None:
        with self._lock:
            if state is ProgressState.DOWNLOAD and info.success:
                self.in_memory += 1
                self.most_in_memory = max(self.most_in_memory, self.in_memory)
            elif state is ProgressState.PROCESS_LOG:
                self.in_memory -= 1


def _hidden(sandbox: TrailSandbox) -> int:
    attrs = sandbox.client("sqs").get_queue_attributes(
        QueueUrl=sandbox.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def test_a_record_bomb_fails_naming_the_budget_and_the_good_delivery_goes_once(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    count = 3_000_000  # ~9 MB of "{}," in ~10 KB of gzip: 3M records cost ~190 MB
    bomb_key = log_key(region=sandbox.region)
    sandbox.put(bomb_key, gzip.compress(b'{"Records":[' + b"{}," * (count - 1) + b"{}]}"))
    sandbox.notify([bomb_key])
    good = make_records(30, seed=7)
    sandbox.deliver(good)
    probe = Probe()
    with structlog.testing.capture_logs() as logs:
        result = run_in_process(sandbox, tmp_path, probe, memory_budget_mb=64,
                                visibility_timeout=5)  # fmt: skip
    assert sorted(probe.ids) == sorted(r["eventID"] for r in good)  # once each
    errors = [e for e in logs if e.get("log_level") == "error"]
    assert len(errors) == 1, errors
    line = errors[0]
    assert line["reason"] == "over_memory_budget" and line["key"] == bomb_key
    assert line["bucket"] == sandbox.bucket and line.get("message_id")
    text = line["event"]
    # Every record is a JSON object: counting "{" (the envelope's too) bounds them.
    assert f"up to {count + 1:,} records" in text and "memory_budget_mb" in text
    needs = re.search(r"needs ([\d,]+) MB in memory", text)
    assert needs and int(needs[1].replace(",", "")) >= (count + 1) * RECORD_COST // MB
    assert "more than the whole memory budget of 64 MB" in text
    assert result.metrics.value("trailproc_errors_total", reason="over_memory_budget") == 1
    assert _hidden(sandbox) == 1  # the bomb's message is kept for retry/DLQ


def test_one_message_naming_many_files_holds_only_the_budgets_worth(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    files, per_file = 40, 2100  # ~3 MB decompressed each, 120 MB in all
    keys, expected = [], []
    for seed in range(files):
        records = make_records(per_file, seed=100 + seed)
        key = log_key(region=sandbox.region)
        sandbox.put(key, encode_log(records))
        keys.append(key)
        expected.extend(r["eventID"] for r in records)
    sandbox.notify(keys)
    metrics = Metrics()
    probe = Probe(pause=0.002, metrics=metrics)
    config = load_config(env={}, queue_url=sandbox.queue_url, exit_when_idle=True,
                         wait_time_seconds=1, state_dir=str(tmp_path / "state"),
                         stats_interval=0, memory_budget_mb=64)  # fmt: skip
    asyncio.run(run_async(config, probe, metrics=metrics))
    assert sorted(probe.ids) == sorted(expected)  # every record, once
    # Without the budget, every file is downloaded and decoded while the slow handler
    # works on the first ones; with it, files wait for memory before their download.
    assert probe.most_in_memory < files
    assert metrics.value("trailproc_memory_waits_total", kind="admission") > 0
    assert 0 < probe.most_reserved <= 64 * MB
    assert metrics.value("trailproc_memory_budget_bytes") == 64 * MB
    assert metrics.value("trailproc_memory_reserved_bytes") == 0  # all given back
    assert _hidden(sandbox) == 0
