"""End to end against moto's server: deliveries in, every record out once, queue empty."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from helpers import run_in_process

import trailproc
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    sandbox: TrailSandbox,
    tmp_path: Path,
    *args: str,
    timeout: float = 120,
    extra_env: dict[str, str] | None = None,
) -> Any:
    env = {**sandbox.env(), **(extra_env or {})}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "trailproc._cli", "run", "--queue-url", sandbox.queue_url,
         "--exit-when-idle", "--wait-time", "1", "--state-dir", str(tmp_path / "state"),
         "--log-format", "json", *args],
        env=env, capture_output=True, timeout=timeout,
    )  # fmt: skip


def compact(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


class Collect(trailproc.EventProcessor):
    def __init__(self) -> None:
        self.batches: list[list[trailproc.Event]] = []

    def process(self, events: list[trailproc.Event]) -> None:
        self.batches.append(events)

    @property
    def events(self) -> list[trailproc.Event]:
        return [e for b in self.batches for e in b]


@pytest.mark.parametrize("raw_delivery", [False, True], ids=["sns-envelope", "raw-delivery"])
def test_daemon_hands_over_every_record_once(
    aws_env: Any, tmp_path: Path, raw_delivery: bool
) -> None:
    sandbox = TrailSandbox(aws_env.url, raw_delivery=raw_delivery).create()
    expected: list[bytes] = []
    keys = []
    for i in range(6):
        records = make_records(40, seed=i)
        key = log_key(unique=f"file{i:02d}abcdefgh")
        sandbox.put(key, encode_log(records))
        keys.append(key)
        expected += [compact(r) for r in records]
    sandbox.notify(keys[:2])  # one notification may name several files
    for key in keys[2:]:
        sandbox.notify([key])
    out = tmp_path / "out.jsonl"
    proc = run_cli(sandbox, tmp_path, "--output", str(out), "--max-events-per-emit", "7")
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    lines = out.read_bytes().splitlines()
    # The original JSON, unchanged, each record exactly once.
    assert sorted(lines) == sorted(expected)
    assert sandbox.queue_depth() == 0
    assert sandbox.queue_depth(sandbox.dlq_url) == 0
    logs = [json.loads(x) for x in proc.stderr.decode().splitlines() if x.startswith("{")]
    stopped = next(x for x in logs if x["event"] == "stopped")
    assert stopped["records"] == len(expected) and stopped["files_done"] == 6
    assert stopped["deleted"] == 5 and "kept" not in stopped  # healthy: no breakdown


def test_pretty_printed_records_become_one_line_each(sandbox: TrailSandbox, tmp_path: Path) -> None:
    records = make_records(3, seed=9)
    body = json.dumps({"Records": records}, indent=2).encode()
    sandbox.put(log_key(), gzip.compress(body))
    key = log_key(unique="plainjsonfile001")
    sandbox.put(key, body)  # plain JSON, not gzip: detected by magic bytes
    sandbox.notify([key])
    out = tmp_path / "out.jsonl"
    proc = run_cli(sandbox, tmp_path, "--output", str(out))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert out.read_bytes().splitlines() == [compact(r) for r in records]


def test_s3_event_and_eventbridge_notifications(sandbox: TrailSandbox, tmp_path: Path) -> None:
    spaced = log_key(prefix="my trail/ü", unique="spacedkey0000001")
    plain = log_key(unique="eventbridge00001")
    sandbox.put(spaced, encode_log(make_records(5, seed=1)))
    sandbox.put(plain, encode_log(make_records(4, seed=2)))
    s3_event = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": sandbox.bucket},
                    "object": {"key": urllib.parse.quote_plus(spaced, safe="/")},
                },
            }
        ]
    }
    eventbridge = {
        "version": "0",
        "id": "1",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": "123456789012",
        "region": "us-east-1",
        "resources": [],
        "detail": {"bucket": {"name": sandbox.bucket}, "object": {"key": plain}},
    }
    sandbox.send_raw(json.dumps(s3_event))
    sandbox.send_raw(json.dumps(eventbridge))
    collected = Collect()
    result = run_in_process(sandbox, tmp_path, collected)
    keys = {e.delivery.key for e in collected.events}
    assert keys == {spaced, plain}
    assert len(collected.events) == 9
    assert result.metrics.value("trailproc_messages_deleted_total", reason="processed") == 2
    assert sandbox.queue_depth() == 0


def test_ack_only_messages_are_deleted_and_counted(sandbox: TrailSandbox, tmp_path: Path) -> None:
    sandbox.send_raw(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}))
    sandbox.send_raw("CloudTrail validation message.")
    digest = (
        "AWSLogs/123456789012/CloudTrail-Digest/us-east-1/2026/11/01/"
        "123456789012_CloudTrail-Digest_us-east-1_trail_us-east-1_20261101T000000Z.json.gz"
    )
    sandbox.notify([digest])  # a digest only: skipped by the default kinds policy
    collected = Collect()
    result = run_in_process(sandbox, tmp_path, collected)
    deleted = result.metrics.value
    assert deleted("trailproc_messages_deleted_total", reason="s3_test_event") == 1
    assert deleted("trailproc_messages_deleted_total", reason="validation") == 1
    assert deleted("trailproc_messages_deleted_total", reason="all_skipped") == 1
    assert collected.events == []
    assert sandbox.queue_depth() == 0


class Hooks(trailproc.EventProcessor):
    """Exercises every optional hook of the processor interface."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.names: list[str | None] = []
        self.states: list[tuple[str, bool]] = []
        self.sources: list[trailproc.Source] = []
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        self.closed = True

    async def process(self, events: list[trailproc.Event]) -> None:
        self.batch_sizes.append(len(events))
        self.names += [e.event_name for e in events]

    def filter_source(self, source: trailproc.Source) -> bool:
        self.sources.append(source)
        return "skipme" not in source.refs[0].key

    def filter_event(self, event: trailproc.Event) -> bool:
        return event.event_name != "GetObject"

    def report_start(self, state: trailproc.ProgressState, info: trailproc.ProgressInfo) -> Any:
        return state

    def report_end(
        self, state: trailproc.ProgressState, info: trailproc.ProgressInfo, token: Any
    ) -> None:
        assert token is state
        self.states.append((state.value, info.success))


def test_processor_hooks_filters_and_batching(sandbox: TrailSandbox, tmp_path: Path) -> None:
    records = make_records(50, seed=3)
    sandbox.deliver(records, key=log_key(unique="keepthisfile0001"))
    sandbox.deliver(make_records(5, seed=4), key=log_key(unique="skipmeplease0001"))
    hooks = Hooks()
    result = run_in_process(sandbox, tmp_path, hooks, max_events_per_emit=4)
    kept = [r["eventName"] for r in records if r["eventName"] != "GetObject"]
    assert hooks.names == kept  # file order, filtered
    assert max(hooks.batch_sizes) <= 4 and sum(hooks.batch_sizes) == len(kept)
    assert hooks.started and hooks.closed
    assert {s.receive_count for s in hooks.sources} == {1}
    states = {s for s, ok in hooks.states if ok}
    assert states >= {
        "poll", "parse_message", "process_source", "download", "process_log", "delete"
    }  # fmt: skip
    # The declined message's delete is reported as Java's deleteFilteredMessage, once.
    assert hooks.states.count(("delete_filtered", True)) == 1
    assert hooks.states.count(("delete", True)) == 1
    assert result.metrics.value("trailproc_messages_deleted_total", reason="filtered") == 1
    assert result.metrics.value("trailproc_records_filtered_total") == len(records) - len(kept)
    assert sandbox.queue_depth() == 0


def test_failure_keeps_the_message_and_on_error_hears_of_it(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    sandbox.notify([log_key(unique="doesnotexist0001")])
    errors: list[trailproc.TrailprocError] = []

    class Recorder(Collect):
        def on_error(self, error: trailproc.TrailprocError) -> None:
            errors.append(error)

    result = run_in_process(sandbox, tmp_path, Recorder())
    assert len(errors) == 1
    assert errors[0].key and "doesnotexist0001" in errors[0].key
    assert errors[0].message_id and errors[0].bucket == sandbox.bucket
    assert "not found" in str(errors[0])
    assert result.metrics.value("trailproc_messages_kept_total", reason="failed") == 1
    assert sandbox.queue_depth() == 1  # kept for retry, never deleted


def test_delete_on_failure_is_opt_in(sandbox: TrailSandbox, tmp_path: Path) -> None:
    sandbox.notify([log_key(unique="doesnotexist0002")])
    result = run_in_process(sandbox, tmp_path, Collect(), delete_on_failure=True)
    assert result.metrics.value("trailproc_messages_deleted_total", reason="failed_deleted") == 1
    assert sandbox.queue_depth() == 0


def test_handler_plugins_loaded_by_module_attr(sandbox: TrailSandbox, tmp_path: Path) -> None:
    records = make_records(60, seed=5)
    sandbox.deliver(records)
    report = tmp_path / "plugin-report.json"
    proc = run_cli(
        sandbox, tmp_path, "--handler", "tests.plugin_handlers:handlers",
        "--handler", "tests.plugin_handlers:CountingProcessor",
        extra_env={"PLUGIN_REPORT": str(report)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    written = json.loads(report.read_text())
    want_sts = sum(1 for r in records if r["eventSource"] == "sts.amazonaws.com")
    want_writes = sum(1 for r in records if r["eventName"].startswith(("Put", "Run", "Attach")))
    assert written["sts"] == want_sts
    assert written["writes"] == want_writes
    assert written["counted"] == len(records)


def test_the_daemon_collects_garbage_once_started(sandbox: TrailSandbox, tmp_path: Path) -> None:
    """`trailproc run` starts up with the collector off; it is on again (with start-up's
    objects frozen out of it) by the time records reach the handlers."""
    sandbox.deliver(make_records(3, seed=9))
    report = tmp_path / "gc-report.json"
    proc = run_cli(sandbox, tmp_path, "--handler", "tests.plugin_handlers:CollectorState",
                   extra_env={"PLUGIN_REPORT": str(report)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    written = json.loads(report.read_text())
    assert written["gc_enabled"] == 1
    assert written["gc_frozen"] > 100_000


def test_eventbridge_cloudtrail_record_over_sqs_takes_the_envelope_account(
    sandbox: TrailSandbox, corpus: Path, tmp_path: Path
) -> None:
    """An "AWS API Call via CloudTrail" event routed to the queue by EventBridge: the
    record is handed over inline, and a record without recipientAccountId (older event
    versions) is labelled with the envelope's account, as on Lambda."""
    path = corpus / "cloud-custodian__cloud-custodian" / "event-cloud-trail-create-bucket.json"
    event = json.loads(path.read_text())
    assert "recipientAccountId" not in event["detail"]
    sandbox.send_raw(json.dumps(event))
    collected = Collect()
    run_in_process(sandbox, tmp_path, collected, accept_records_in_messages=True)
    (only,) = collected.events
    assert only.event_id == event["detail"]["eventID"]
    assert only.delivery.account_id == event["account"]
    assert sandbox.queue_depth() == 0
