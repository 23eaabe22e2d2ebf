"""Bad input never crashes the daemon and never loses data.

Each case puts one message on the queue, runs the real pipeline once in-process
(`trailproc._app.run_async`, against moto over HTTP) and asserts the documented outcome:
exactly one error log line naming the message id, bucket and key, the error counter
for its reason, and the message still on the queue (hidden for its retry backoff) or in
the DLQ. The inputs that must pass (a huge record, keys with spaces and unicode) pass.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from trailproc._app import run_async
from trailproc._config import load_config
from trailproc._observe import Metrics
from trailproc._sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import daemon_command, daemon_env, event_ids, json_logs


@dataclass
class Run:
    metrics: Metrics
    logs: list[dict[str, Any]]
    output: Path
    errors: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.errors = [e for e in self.logs if e.get("log_level") == "error"]

    def error_count(self, reason: str) -> int:
        return int(self.metrics.value("trailproc_errors_total", reason=reason))

    @property
    def records(self) -> list[dict[str, Any]]:
        if not self.output.exists():
            return []
        return [json.loads(line) for line in self.output.read_bytes().splitlines()]


def run_once(tmp_path: Path, queue_url: str, **overrides: Any) -> Run:
    """One `trailproc run --exit-when-idle` in this process, logs captured."""
    output = tmp_path / "out.jsonl"
    settings: dict[str, Any] = {
        "queue_url": queue_url,
        "output": str(output),
        "exit_when_idle": True,
        "wait_time_seconds": 0,  # moto answers at once; the run ends at the first empty one
        "visibility_timeout": 5,
        "stats_interval": 0,
        "state_dir": str(tmp_path / "state"),
    }
    settings.update(overrides)
    config = load_config(**settings)
    metrics = Metrics()
    with structlog.testing.capture_logs() as logs:
        asyncio.run(run_async(config, metrics=metrics))
    return Run(metrics, [dict(e) for e in logs], output)


def send(sandbox: TrailSandbox, body: str | dict[str, Any]) -> str:
    """Put a body straight on the queue; returns the SQS message id."""
    text = body if isinstance(body, str) else json.dumps(body)
    sqs = sandbox.client("sqs")
    return str(sqs.send_message(QueueUrl=sandbox.queue_url, MessageBody=text)["MessageId"])


def cloudtrail_note(bucket: str, *keys: str) -> dict[str, Any]:
    """CloudTrail's notification as SQS holds it with SNS raw message delivery."""
    return {"s3Bucket": bucket, "s3ObjectKey": list(keys)}


def s3_event(bucket: str, key: str) -> dict[str, Any]:
    """An S3 ObjectCreated notification, key URL-encoded as S3 sends it."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-11-01T00:05:12.345Z",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": 1},
                },
            }
        ]
    }


def hidden(sandbox: TrailSandbox, queue_url: str | None = None) -> int:
    attrs = sandbox.client("sqs").get_queue_attributes(
        QueueUrl=queue_url or sandbox.queue_url,
        AttributeNames=["ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessagesNotVisible"])


def assert_kept(run: Run, sandbox: TrailSandbox, message_id: str, reason: str, *,
                bucket: str | None = None, key: str | None = None,
                text: str | None = None) -> None:  # fmt: skip
    """The documented outcome of a bad input."""
    assert len(run.errors) == 1, run.errors
    line = run.errors[0]
    assert line["reason"] == reason
    assert line["message_id"] == message_id
    # Fields are present exactly when known (a bad body names no object).
    assert line.get("bucket") == bucket
    assert line.get("key") == key
    if text:
        assert text in line["event"], line["event"]
    assert run.error_count(reason) == 1
    assert (
        run.metrics.value("trailproc_messages_kept_total", reason="failed")
        + run.metrics.value("trailproc_messages_kept_total", reason="refused")
        + run.metrics.value("trailproc_messages_kept_total", reason="bad_notification")
        == 1
    )
    assert sum(v for k, v in run.metrics.summary().items() if k.startswith("messages_deleted")) == 0
    # Still on the queue, hidden for its retry backoff; nothing handed over.
    assert sandbox.queue_depth() == 1
    assert hidden(sandbox) == 1
    assert run.records == []


# --- bad SQS bodies ---------------------------------------------------------------------


def test_non_json_body(sandbox: TrailSandbox, tmp_path: Path) -> None:
    message_id = send(sandbox, "this is not JSON {")
    run = run_once(tmp_path, sandbox.queue_url)
    assert_kept(run, sandbox, message_id, "bad_notification")


def test_json_of_unknown_shape(sandbox: TrailSandbox, tmp_path: Path) -> None:
    message_id = send(sandbox, {"hello": "world", "n": [1, 2, 3]})
    run = run_once(tmp_path, sandbox.queue_url)
    assert_kept(run, sandbox, message_id, "bad_notification")


# --- objects that cannot be fetched -----------------------------------------------------


def test_missing_object(sandbox: TrailSandbox, tmp_path: Path) -> None:
    key = log_key(unique="missing0000")
    message_id = send(sandbox, cloudtrail_note(sandbox.bucket, key))
    run = run_once(tmp_path, sandbox.queue_url)
    assert_kept(run, sandbox, message_id, "fetch_failed", bucket=sandbox.bucket, key=key,
                text="not found")  # fmt: skip


def test_bucket_without_access(sandbox: TrailSandbox, tmp_path: Path) -> None:
    # A bucket the worker cannot read (here: one that does not exist) must not be
    # retried in-process nor deleted.
    key = log_key(unique="nobucket000")
    message_id = send(sandbox, cloudtrail_note("no-such-trail-bucket", key))
    run = run_once(tmp_path, sandbox.queue_url)
    assert_kept(run, sandbox, message_id, "fetch_failed", bucket="no-such-trail-bucket",
                key=key, text="bucket does not exist")  # fmt: skip
    assert run.metrics.value("trailproc_bytes_compressed_total") == 0


# --- log files trailproc cannot read ----------------------------------------------------

_GOOD = encode_log(make_records(20, seed=3))

BAD_FILES = {
    "corrupt_gzip": (_GOOD[:10] + b"\x00garbage\xff" * 20, "bad_log_file", "corrupt gzip"),
    "truncated_gzip": (_GOOD[: len(_GOOD) // 2], "bad_log_file", "truncated gzip"),
    "non_json_log": (gzip.compress(b"<html>not a log</html>"), "bad_log_file", "not valid JSON"),
    "json_without_records": (
        gzip.compress(b'{"Events": []}'), "bad_log_file", "not a CloudTrail log file",
    ),
    "records_not_objects": (
        gzip.compress(b'{"Records": [{"eventID": "a"}, 42, "x"]}'),
        "bad_log_file",
        "record 1 is not a JSON object",
    ),
    # msgspec does not look inside raw records: invalid bytes there must still fail the
    # file, before any record is handed over.
    "invalid_utf8_in_a_record": (
        gzip.compress(b'{"Records": [{"eventID": "a"}, {"eventID": "b\xff\xfe"}]}'),
        "bad_log_file",
        "not valid UTF-8 (byte 45: invalid start byte)",
    ),
    "nested_too_deeply": (
        gzip.compress(b'{"Records": [{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}]}"),
        "bad_log_file",
        "nested too deeply",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_log_file(sandbox: TrailSandbox, tmp_path: Path, case: str) -> None:
    body, reason, text = BAD_FILES[case]
    key = log_key(unique=f"bad{case.replace('_', '')[:12]}")
    sandbox.put(key, body)
    message_id = send(sandbox, cloudtrail_note(sandbox.bucket, key))
    run = run_once(tmp_path, sandbox.queue_url)
    assert_kept(run, sandbox, message_id, reason, bucket=sandbox.bucket, key=key, text=text)


def test_gzip_bomb_is_bounded(
    sandbox: TrailSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAILPROC_MAX_DECOMPRESSED_BYTES", str(2 << 20))
    bomb = gzip.compress(b'{"Records": [' + b" " * (64 << 20) + b"]}", compresslevel=9)
    assert len(bomb) < 256 << 10  # small on the wire, 64 MiB inflated
    key = log_key(unique="bomb00000000")
    sandbox.put(key, bomb)
    message_id = send(sandbox, cloudtrail_note(sandbox.bucket, key))
    run = run_once(tmp_path, sandbox.queue_url)
    assert_kept(run, sandbox, message_id, "too_large", bucket=sandbox.bucket, key=key,
                text="max_decompressed_bytes")  # fmt: skip
    # Stopped within the cap (+ one chunk), not after inflating everything.
    assert run.metrics.value("trailproc_bytes_decompressed_total") == 0


def test_object_larger_than_the_cap_is_not_downloaded(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """A gzip is never larger than its JSON, so an object bigger than
    max_decompressed_bytes is refused from its size, before its body is read into memory."""
    body = gzip.compress(random.Random(7).randbytes(200_000), compresslevel=1)
    key = log_key(unique="hugeobject01")
    sandbox.put(key, body)
    message_id = send(sandbox, cloudtrail_note(sandbox.bucket, key))
    run = run_once(tmp_path, sandbox.queue_url, max_decompressed_bytes=100_000)
    assert_kept(run, sandbox, message_id, "too_large", bucket=sandbox.bucket, key=key,
                text=f"object is {len(body)} bytes, over max_decompressed_bytes=100000; "
                "not downloaded")  # fmt: skip
    assert run.metrics.value("trailproc_bytes_compressed_total") == 0


# --- inputs that must pass --------------------------------------------------------------


def test_huge_single_record_passes(sandbox: TrailSandbox, tmp_path: Path) -> None:
    record = make_records(1, seed=11)[0]
    record["requestParameters"]["policy"] = "x" * (3 << 20)  # a 3 MiB record
    key = sandbox.deliver([record, *make_records(2, seed=12)])
    run = run_once(tmp_path, sandbox.queue_url)
    assert run.errors == []
    got = run.records
    assert len(got) == 3
    assert got[0]["eventID"] == record["eventID"]
    assert len(got[0]["requestParameters"]["policy"]) == 3 << 20
    assert got[0]["requestParameters"]["policy"] == record["requestParameters"]["policy"]
    assert sandbox.queue_depth() == 0
    assert key


@pytest.mark.parametrize(
    "prefix", ["trail logs/with spaces", "prod/été-日本語/ü+plus", "a%20b/100%"]
)
def test_keys_with_spaces_and_unicode_pass(
    sandbox: TrailSandbox, tmp_path: Path, prefix: str
) -> None:
    records = make_records(5, seed=21)
    key = log_key(prefix=prefix, unique="unicodekey01")
    sandbox.put(key, encode_log(records))
    send(sandbox, s3_event(sandbox.bucket, key))
    run = run_once(tmp_path, sandbox.queue_url)
    assert run.errors == [], run.errors
    assert [r["eventID"] for r in run.records] == [r["eventID"] for r in records]
    assert sandbox.queue_depth() == 0


# --- one good file and one missing file in one message ----------------------------------


def test_good_and_missing_file_then_trailproc_dlq(sandbox: TrailSandbox, tmp_path: Path) -> None:
    records = make_records(30, seed=41)
    good = log_key(unique="goodfile0001")
    sandbox.put(good, encode_log(records))
    missing = log_key(unique="missingfile1")
    message_id = send(sandbox, cloudtrail_note(sandbox.bucket, good, missing))
    settings = {"dlq_url": sandbox.dlq_url, "max_receive_count": 2, "failure_visibility_base": 1}

    first = run_once(tmp_path, sandbox.queue_url, **settings)
    assert [e["key"] for e in first.errors] == [missing]
    assert first.errors[0]["message_id"] == message_id
    assert sandbox.queue_depth() == 1  # kept: not deleted because one file failed
    assert sandbox.queue_depth(sandbox.dlq_url) == 0

    time.sleep(1.2)  # the failure backoff (1 s), then the message comes back
    second = run_once(tmp_path, sandbox.queue_url, **settings)
    assert second.metrics.value("trailproc_messages_received_total") == 1
    assert second.metrics.value("trailproc_files_total", kind="log", outcome="already_done") == 1
    assert [e["key"] for e in second.errors] == [missing]
    # Received twice = max_receive_count: moved to the DLQ named in the configuration.
    assert sandbox.queue_depth() == 0
    assert sandbox.queue_depth(sandbox.dlq_url) == 1
    dlq = sandbox.client("sqs").receive_message(
        QueueUrl=sandbox.dlq_url, MessageAttributeNames=["All"]
    )["Messages"][0]
    assert json.loads(dlq["Body"])["s3ObjectKey"] == [good, missing]
    attributes = dlq["MessageAttributes"]
    assert attributes["trailproc-source-message-id"]["StringValue"] == message_id

    # The good file's records were handed over once in all.
    seen = event_ids(str(first.output))
    assert set(seen) == {r["eventID"] for r in records}
    assert all(n == 1 for n in seen.values())


def _wait_until_visible(sandbox: TrailSandbox, timeout: float = 20.0) -> None:
    """Until a message kept with a backoff can be received again (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        attributes = sandbox.client("sqs").get_queue_attributes(
            QueueUrl=sandbox.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        if int(attributes["ApproximateNumberOfMessages"]) > 0:
            return
        time.sleep(0.1)
    raise AssertionError("the kept message never became visible again")


def test_good_and_missing_file_then_queue_redrive(aws_env: MotoServer, tmp_path: Path) -> None:
    sandbox = TrailSandbox(aws_env.url, max_receive_count=2).create(visibility_timeout=5)
    records = make_records(30, seed=42)
    good = log_key(unique="goodfile0002")
    sandbox.put(good, encode_log(records))
    missing = log_key(unique="missingfile2")
    sandbox.notify([good, missing])  # through SNS, as CloudTrail does
    for _ in range(2):
        run = run_once(tmp_path, sandbox.queue_url, failure_visibility_base=1)
        assert [e["key"] for e in run.errors] == [missing]
        _wait_until_visible(sandbox)  # its 1 s backoff, however busy the machine is
    # The third receive finds it gone: the queue's redrive policy moved it.
    last = run_once(tmp_path, sandbox.queue_url, failure_visibility_base=1)
    assert last.errors == []
    assert sandbox.queue_depth() == 0
    assert sandbox.queue_depth(sandbox.dlq_url) == 1
    seen = event_ids(str(last.output))
    assert set(seen) == {r["eventID"] for r in records}
    assert all(n == 1 for n in seen.values())


# --- allow-lists: a forged notification must not make trailproc read another bucket -----


def _other_bucket(sandbox: TrailSandbox) -> tuple[str, str]:
    other = "someone-elses-bucket"
    sandbox.client("s3").create_bucket(Bucket=other)
    key = log_key(unique="forged000001")
    sandbox.client("s3").put_object(Bucket=other, Key=key, Body=encode_log(make_records(3)))
    return other, key


def test_forged_bucket_is_refused_and_never_fetched(sandbox: TrailSandbox, tmp_path: Path) -> None:
    other, key = _other_bucket(sandbox)
    message_id = send(sandbox, cloudtrail_note(other, key))
    run = run_once(tmp_path, sandbox.queue_url, allowed_buckets=[sandbox.bucket])
    assert_kept(run, sandbox, message_id, "refused", bucket=other, key=key,
                text="allowed_buckets")  # fmt: skip
    assert run.metrics.value("trailproc_bytes_compressed_total") == 0


def test_forged_account_is_refused(sandbox: TrailSandbox, tmp_path: Path) -> None:
    key = log_key(account="999999999999", unique="forgedacct01")
    sandbox.put(key, encode_log(make_records(3, account="999999999999")))
    message_id = send(sandbox, cloudtrail_note(sandbox.bucket, key))
    run = run_once(tmp_path, sandbox.queue_url, allowed_accounts=["123456789012"])
    assert_kept(run, sandbox, message_id, "refused", bucket=sandbox.bucket, key=key,
                text="allowed_accounts")  # fmt: skip
    assert run.metrics.value("trailproc_bytes_compressed_total") == 0


def _eventbridge_api_call(account: str, recipient: str | None) -> dict[str, Any]:
    detail = dict(make_records(1, seed=9, account=recipient or account)[0])
    if recipient is None:
        detail.pop("recipientAccountId", None)
    return {"version": "0", "id": f"eb-{account}-{recipient}", "source": "aws.iam",
            "detail-type": "AWS API Call via CloudTrail", "account": account,
            "region": "us-east-1", "time": "2026-11-01T00:00:00Z", "resources": [],
            "detail": detail}  # fmt: skip


@pytest.mark.parametrize(
    ("account", "recipient", "refused"),
    [("999999999999", "999999999999", True), ("999999999999", None, True),
     ("123456789012", "999999999999", True), ("123456789012", None, False),
     ("123456789012", "123456789012", False)],
)  # fmt: skip
def test_allowed_accounts_applies_to_records_routed_by_eventbridge(
    sandbox: TrailSandbox, tmp_path: Path, account: str, recipient: str | None, refused: bool
) -> None:
    """A CloudTrail record inside an EventBridge event reads no bucket, but a forged one
    would reach the handlers: allowed_accounts checks its recipientAccountId, or the
    envelope's account when the record has none."""
    message_id = send(sandbox, _eventbridge_api_call(account, recipient))
    run = run_once(tmp_path, sandbox.queue_url, allowed_accounts=["123456789012"],
                   accept_records_in_messages=True)  # fmt: skip
    if refused:
        assert len(run.errors) == 1 and run.errors[0]["reason"] == "refused"
        assert "allowed_accounts" in run.errors[0]["event"]
        assert run.errors[0]["message_id"] == message_id
        assert run.records == [] and sandbox.queue_depth() == 1
    else:
        assert run.errors == [] and len(run.records) == 1
        assert sandbox.queue_depth() == 0


def _sns_wrapped(topic_arn: str, message: dict[str, Any]) -> dict[str, Any]:
    """An SNS envelope as a hostile sender writes it straight to the queue: any topic
    name it likes, no valid signature."""
    return {"Type": "Notification", "MessageId": "11111111-2222-3333-4444-555555555555",
            "TopicArn": topic_arn, "Message": json.dumps(message),
            "Timestamp": "2026-11-01T00:00:00.000Z", "SignatureVersion": "1",
            "Signature": "Zm9yZ2Vk",
            "SigningCertURL": "https://example.invalid/cert.pem"}  # fmt: skip


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "sns-wrapped"])
def test_records_in_messages_are_refused_unless_opted_in(
    sandbox: TrailSandbox, tmp_path: Path, wrapped: bool
) -> None:
    """A forged root ConsoleLogin as an EventBridge "via CloudTrail" event, claiming the
    allowed account, sent straight to the queue (bare, or inside an SNS envelope naming
    the allowed topic): with every allow-list set it must not reach the output. It is
    refused with one error line naming the opt-in, counted, and the message is kept."""
    topic = "arn:aws:sns:us-east-1:123456789012:trail"
    forged = _eventbridge_api_call("123456789012", "123456789012")
    forged["detail"].update(eventName="ConsoleLogin", eventSource="signin.amazonaws.com",
                            userIdentity={"type": "Root"})  # fmt: skip
    message_id = send(sandbox, _sns_wrapped(topic, forged) if wrapped else forged)
    run = run_once(tmp_path, sandbox.queue_url, allowed_accounts=["123456789012"],
                   allowed_buckets=[sandbox.bucket], allowed_topic_arns=[topic])  # fmt: skip
    assert run.records == []
    (error,) = run.errors
    assert error["reason"] == "refused" and error["message_id"] == message_id
    assert "accept_records_in_messages" in error["event"]
    assert run.metrics.value("trailproc_messages_kept_total", reason="refused") == 1
    assert sandbox.queue_depth() == 1


def test_notification_from_unknown_topic_is_refused(sandbox: TrailSandbox, tmp_path: Path) -> None:
    key = sandbox.deliver(make_records(3))  # SNS from the sandbox's topic
    assert key
    run = run_once(
        tmp_path, sandbox.queue_url,
        allowed_topic_arns=["arn:aws:sns:us-east-1:123456789012:the-real-trail-topic"],
    )  # fmt: skip
    assert len(run.errors) == 1
    assert run.errors[0]["reason"] == "refused"
    assert "allowed_topic_arns" in run.errors[0]["event"]
    assert run.errors[0]["message_id"]
    assert run.metrics.value("trailproc_bytes_compressed_total") == 0
    assert sandbox.queue_depth() == 1
    assert run.records == []
    # The right topic passes.
    time.sleep(0.1)


def test_allow_lists_let_the_trail_through(sandbox: TrailSandbox, tmp_path: Path) -> None:
    records = make_records(4, seed=77)
    sandbox.deliver(records)
    run = run_once(
        tmp_path, sandbox.queue_url,
        allowed_buckets=[sandbox.bucket], allowed_accounts=["123456789012"],
        allowed_topic_arns=[sandbox.topic_arn],
    )  # fmt: skip
    assert run.errors == []
    assert [r["eventID"] for r in run.records] == [r["eventID"] for r in records]
    assert sandbox.queue_depth() == 0


# --- the daemon's own log line ----------------------------------------------------------


@pytest.mark.timeout(60)
def test_daemon_logs_one_json_error_line(sandbox: TrailSandbox, tmp_path: Path) -> None:
    good = sandbox.deliver(make_records(5, seed=88))
    bad = log_key(unique="corruptdaemon")
    sandbox.put(bad, b"\x1f\x8b\x08\x00garbage")
    sandbox.notify([bad])
    output = tmp_path / "out.jsonl"
    proc = subprocess.run(
        daemon_command(sandbox.queue_url, str(output)),
        env=daemon_env(sandbox.endpoint_url, str(tmp_path / "state")),
        capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = json_logs(proc.stderr)
    errors = [e for e in logs if e.get("level") == "error"]
    assert len(errors) == 1, errors
    assert errors[0]["reason"] == "bad_log_file"
    assert errors[0]["bucket"] == sandbox.bucket
    assert errors[0]["key"] == bad
    assert errors[0]["message_id"]
    stopped = [e for e in logs if e["event"] == "stopped"]
    assert len(stopped) == 1
    assert stopped[0]["records"] == 5
    assert stopped[0]["errors"] == {"bad_log_file": 1}  # the breakdown names the reason
    assert len(event_ids(str(output))) == 5
    assert sandbox.queue_depth() == 1  # the bad one, kept
    assert good


@pytest.mark.timeout(60)
def test_unexpected_exception_is_one_error_line_with_its_traceback(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """An exception nobody expected (here from the user's filter_source hook) is one error
    line naming the message, with the traceback in it; the message is kept."""
    sandbox.deliver(make_records(3, seed=5))
    proc = subprocess.run(
        daemon_command(sandbox.queue_url, str(tmp_path / "out.jsonl"),
                       "--handler", "plugin_handlers:BrokenFilterSource"),
        env=daemon_env(sandbox.endpoint_url, str(tmp_path / "state"), visibility_timeout="5"),
        capture_output=True, text=True, timeout=50,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = [e for e in json_logs(proc.stderr) if e.get("level") == "error"]
    assert len(errors) == 1, errors
    assert errors[0]["reason"] == "error" and errors[0]["message_id"]
    assert errors[0]["event"] == "internal error: RuntimeError('filter_source exploded')"
    assert "Traceback" in str(errors[0]["exception"])
    assert "filter_source exploded" in str(errors[0]["exception"])
    assert sandbox.queue_depth() == 1
