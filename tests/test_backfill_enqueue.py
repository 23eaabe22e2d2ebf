"""Distributed backfill on moto's server: `backfill --enqueue` queues the range, two
`trailproc run` worker processes sharing one SQLite checkpoint store hand it over once.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from faultproxy import NO_FAULTS, FaultProxy, daemon_command, daemon_env, event_ids

from trailproc._backfill_cli import backfill_command
from trailproc._pipeline.notifications import parse_notification
from trailproc._sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records

A, B, C = "111111111111", "222222222222", "333333333333"
ORG = "o-abcdef1234"
REGIONS = ("us-east-1", "eu-west-1")
DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2))


def _upload(sandbox: TrailSandbox) -> dict[str, list[str]]:
    """Three accounts (one in an organization trail) x two regions x two days x two
    files, two records each, plus a file outside the range; {key: [eventID, ...]}."""
    files: dict[str, list[str]] = {}
    seed = 0
    for account, org in ((A, None), (B, None), (C, ORG)):
        for region in REGIONS:
            for day in DAYS:
                for hour in (2, 14):
                    seed += 1
                    when = dt.datetime(day.year, day.month, day.day, hour, 5,
                                       tzinfo=dt.timezone.utc)  # fmt: skip
                    key = log_key(account, region, when, org_id=org, unique=f"u{seed:015d}")
                    records = make_records(2, seed=seed, account=account, region=region)
                    sandbox.put(key, encode_log(records))
                    files[key] = [r["eventID"] for r in records]
    late = dt.datetime(2024, 3, 5, 12, 0, tzinfo=dt.timezone.utc)
    sandbox.put(log_key(A, "us-east-1", late), encode_log(make_records(1, seed=999)))
    return files


def _enqueue(state_dir: Path, queue_url: str, *extra: str) -> Any:
    args = ["--bucket", "trail-bucket", "--start-time", "2024-03-01",
            "--end-time", "2024-03-03", "--enqueue", queue_url,
            "--state-dir", str(state_dir), "--no-progress", *extra]  # fmt: skip
    return CliRunner().invoke(backfill_command, args, catch_exceptions=False)


def _workers(moto_url: str, queue_url: str, state: Path, tmp_path: Path) -> list[Path]:
    outputs = [tmp_path / f"worker{i}.jsonl" for i in range(2)]
    # One message at a time and a slow handler, so that neither worker can drain the
    # queue before the other has started.
    env = daemon_env(moto_url, str(state), max_messages_per_receive="1",
                     max_in_flight_messages="1", test_batch_sleep="0.3")  # fmt: skip
    command = ["--visibility-timeout", "30", "--handler", "faultproxy:Slow"]
    procs = [
        subprocess.Popen(
            daemon_command(queue_url, str(out), *command), env=env, stderr=subprocess.DEVNULL
        )
        for out in outputs
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    return outputs


def test_enqueue_then_two_workers_hand_over_the_range_exactly_once(
    sandbox: TrailSandbox, aws_env: MotoServer, tmp_path: Path
) -> None:
    files = _upload(sandbox)
    state = tmp_path / "shared-state"
    result = _enqueue(state, sandbox.queue_url)
    assert result.exit_code == 0, result.output
    assert f"{len(files)} file(s) listed: {len(files)} queued" in result.output
    assert sandbox.queue_depth() == len(files)

    outputs = _workers(aws_env.url, sandbox.queue_url, state, tmp_path)
    seen: Counter[str] = Counter()
    for out in outputs:
        seen += event_ids(str(out))
    expected = Counter(i for ids in files.values() for i in ids)
    assert seen == expected  # every record of the range, once; nothing outside it
    assert all(event_ids(str(out)) for out in outputs), "both workers took part"

    # A rerun queues nothing: the shared store says every file is done.
    again = _enqueue(state, sandbox.queue_url)
    assert again.exit_code == 0, again.output
    assert f"0 queued, {len(files)} already done" in again.output
    assert sandbox.queue_depth() == 0
    # --force queues every file again.
    forced = _enqueue(state, sandbox.queue_url, "--force")
    assert f"{len(files)} queued" in forced.output
    assert sandbox.queue_depth() == len(files)


def test_rerun_queues_only_files_not_done(
    sandbox: TrailSandbox, aws_env: MotoServer, tmp_path: Path
) -> None:
    files = _upload(sandbox)
    state = tmp_path / "state"
    # One worker processes a first, smaller range (2024-03-01 only) through its own queue.
    first = CliRunner().invoke(backfill_command, [
        "--bucket", "trail-bucket", "--start-time", "2024-03-01", "--end-time", "2024-03-02",
        "--state-dir", str(state), "--output", str(tmp_path / "first.jsonl"), "--no-progress",
    ], catch_exceptions=False)  # fmt: skip
    assert first.exit_code == 0, first.output
    day_one = [k for k in files if "/2024/03/01/" in k]
    result = _enqueue(state, sandbox.queue_url)
    assert f"{len(files) - len(day_one)} queued, {len(day_one)} already done" in result.output
    sqs = sandbox.client("sqs")
    queued = set()
    while True:
        got = sqs.receive_message(QueueUrl=sandbox.queue_url, MaxNumberOfMessages=10)
        messages = got.get("Messages", [])
        if not messages:
            break
        for message in messages:
            (ref,) = parse_notification(message["Body"]).refs
            queued.add(ref.key)
            sqs.delete_message(QueueUrl=sandbox.queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert queued == set(files) - set(day_one)


def _partial_failure(moto_url: str) -> Any:
    """SendMessageBatch answered as SQS does under stress: the first call queues half
    the entries and reports the rest failed (server side); later calls queue all."""
    sqs = boto3.client("sqs", endpoint_url=moto_url, region_name="us-east-1")
    calls: list[int] = []

    def answer(body: bytes) -> tuple[int, dict[str, str], bytes]:
        request = json.loads(body)
        entries = request["Entries"]
        calls.append(len(entries))
        keep = entries[: len(entries) // 2] if len(calls) == 1 else entries
        if keep:
            sqs.send_message_batch(QueueUrl=request["QueueUrl"], Entries=keep)
        failed = [{"Id": e["Id"], "SenderFault": False, "Code": "InternalError",
                   "Message": "try again"} for e in entries[len(keep):]]  # fmt: skip
        successful = [{"Id": e["Id"], "MessageId": f"m{e['Id']}", "MD5OfMessageBody": "x"}
                      for e in keep]  # fmt: skip
        payload = json.dumps({"Successful": successful, "Failed": failed}).encode()
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, payload

    return answer, calls


def test_failed_batch_entries_are_sent_again(
    sandbox: TrailSandbox, aws_env: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _upload(sandbox)
    answer, calls = _partial_failure(aws_env.url)
    proxy = FaultProxy(aws_env.url, faults=NO_FAULTS, answers={"SendMessageBatch": answer})
    with proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = _enqueue(tmp_path / "state", sandbox.queue_url)
    assert result.exit_code == 0, result.output
    assert calls[0] == 10 and calls[1] == 5  # the failed half went again, alone
    assert sandbox.queue_depth() == len(files)
    assert all(n <= 10 for n in calls)


def test_message_is_an_s3_event_the_workers_read_back_exactly() -> None:
    from trailproc._enqueue import s3_event_body
    from trailproc._pipeline.keys import FileRef

    key = "my trail+logs/AWSLogs/111111111111/CloudTrail/us-east-1/2024/03/01/x.json.gz"
    ref = FileRef.of("trail-bucket", key, etag='"abc"', size=123)
    notification = parse_notification(s3_event_body(ref))
    (back,) = notification.refs
    assert (back.bucket, back.key, back.etag, back.size) == ("trail-bucket", key, "abc", 123)


def test_event_time_range_reads_files_delivered_up_to_15_minutes_after_its_end(
    sandbox: TrailSandbox,
) -> None:
    from trailproc._backfill import backfill
    from trailproc._pipeline.processor import EventProcessor

    class Collect(EventProcessor):
        def __init__(self) -> None:
            self.ids: list[str] = []

        def process(self, events: list[Any]) -> None:
            self.ids.extend(e.event_id for e in events)

    def at(day: int, hour: int, minute: int, seed: int) -> list[str]:
        when = dt.datetime(2024, 3, day, hour, minute, tzinfo=dt.timezone.utc)
        records = make_records(1, seed=seed)
        sandbox.put(log_key(A, "us-east-1", when, unique=f"t{seed:015d}"), encode_log(records))
        return [r["eventID"] for r in records]

    inside = at(2, 23, 50, 1)
    late = at(3, 0, 10, 2)  # delivered after midnight: can hold 23:5x events
    at(3, 0, 16, 3)  # beyond the 15 minutes

    seen = Collect()
    result = backfill("trail-bucket", seen, start_time="2024-03-02", end_time="2024-03-03",
                      checkpoint="memory", progress=False)  # fmt: skip
    assert result.ok
    assert Counter(seen.ids) == Counter(inside + late)
    strict = Collect()
    backfill("trail-bucket", strict, start_time="2024-03-02", end_time="2024-03-03",
             checkpoint="memory", progress=False, late_delivery_minutes=0)  # fmt: skip
    assert Counter(strict.ids) == Counter(inside)
