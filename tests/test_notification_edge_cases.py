"""Notification parsing and key classification at their edges.

Undecodable or malformed bodies are a `BadNotification` whose message is one short line
naming the bucket and key; a key listed twice in one notification is one file (the
message is acknowledged at once, never busy with itself); keys with a trailing newline,
non-ASCII digits or a sovereign-cloud region are classified as S3 and CloudTrail do.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import structlog

from trailproc._app import run_async
from trailproc._config import load_config
from trailproc._observe import Metrics
from trailproc._pipeline.keys import ObjectKind, classify_key
from trailproc._pipeline.notifications import (
    BadNotification,
    NotificationKind,
    parse_notification,
    parse_payload,
)
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records

BUCKET = "my-trail-bucket"
ACCT = "123456789012"
TOPIC = "arn:aws:sns:us-east-2:123456789012:CloudTrailTopic"
LOG1 = (
    f"AWSLogs/{ACCT}/CloudTrail/us-east-2/2016/08/11/"
    f"{ACCT}_CloudTrail_us-east-2_20160811T2215Z_kpaMYavMQA9Ahp7L.json.gz"
)
LOG2 = LOG1.replace("kpaMYavMQA9Ahp7L", "zqDkyQv3TK8ZdLr0")


def ct(*keys: Any, bucket: Any = BUCKET) -> dict[str, Any]:
    return {"s3Bucket": bucket, "s3ObjectKey": list(keys)}


def s3_record(key: str | None, *, event: str | None = "ObjectCreated:Put") -> dict[str, Any]:
    obj: dict[str, Any] = {"size": 10, "eTag": "abc"}
    if key is not None:
        obj["key"] = key
    rec: dict[str, Any] = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "s3": {"bucket": {"name": BUCKET}, "object": obj},
    }
    if event is not None:
        rec["eventName"] = event
    return rec


def sns(message: str, **extra: Any) -> dict[str, Any]:
    env = {"Type": "Notification", "MessageId": "m-1", "TopicArn": TOPIC, "Message": message}
    env.update(extra)
    return env


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


# -- bad input must raise BadNotification, never another exception type ---------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"s3Bucket": "b\xff", "s3ObjectKey": ["k"]}', id="invalid-utf8-in-string"),
        pytest.param(b'{"Records": [{"eventSource": "aws:s3\xc3"}]}', id="truncated-utf8-seq"),
        pytest.param('{"s3Bucket": "\ud800", "s3ObjectKey": ["k"]}', id="lone-surrogate-str"),
        pytest.param(nested(5000), id="deeply-nested-body"),
        pytest.param(json.dumps(sns(nested(5000))), id="deeply-nested-sns-message"),
        pytest.param("[" * 200_000, id="deeply-nested-array"),
    ],
)
def test_undecodable_body_is_bad_notification(body: str | bytes) -> None:
    with pytest.raises(BadNotification) as info:
        parse_notification(body)
    assert "\n" not in str(info.value)


def test_sns_record_with_lone_surrogate_is_bad_notification() -> None:
    # A Lambda SNS record is decoded by the runtime's json module, which accepts "\ud800".
    payload = json.loads(json.dumps(sns('{"s3Bucket": "\ud800"}')))
    with pytest.raises(BadNotification, match="SNS Message"):
        parse_payload(payload)


# -- error messages stay one short line -------------------------------------------------

_HUGE = "x" * 100_000


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json.dumps({"line one\nline two": 1}), id="unknown-shape-key-newline"),
        pytest.param(json.dumps({_HUGE: 1, "b": 2}), id="unknown-shape-huge-key"),
        pytest.param(
            json.dumps({"Type": "Subscription\nConfirmation", "TopicArn": "arn\n" + _HUGE}),
            id="sns-type-and-topic",
        ),
        pytest.param(
            json.dumps({"Type": "Notification", "TopicArn": "t\n" + _HUGE, "Message": 1}),
            id="sns-no-message-topic",
        ),
        pytest.param(json.dumps({"Records": [{"eventSource": _HUGE}]}), id="records-source"),
        pytest.param(
            json.dumps({"detail-type": _HUGE + " via CloudTrail", "detail": 1}),
            id="eventbridge-detail-type",
        ),
    ],
)
def test_bad_notification_message_is_one_short_line(body: str) -> None:
    with pytest.raises(BadNotification) as info:
        parse_notification(body)
    message = str(info.value)
    assert "\n" not in message
    assert len(message) < 500, len(message)


# -- the bucket and key are named when known --------------------------------------------


@pytest.mark.parametrize(
    ("body", "bucket", "key"),
    [
        pytest.param(ct(LOG1, 7), BUCKET, None, id="ct-bad-second-key"),
        pytest.param(ct(), BUCKET, None, id="ct-empty-key-list"),
        pytest.param({"s3Bucket": BUCKET, "s3ObjectKey": LOG1}, BUCKET, None, id="ct-key-str"),
        pytest.param(ct(LOG1, bucket=""), None, None, id="ct-no-bucket"),
        pytest.param({"Records": [s3_record(None)]}, BUCKET, None, id="s3-no-key"),
        pytest.param(
            {"Records": [s3_record("a+b%3D/" + LOG1, event=None)]},
            BUCKET,
            "a b=/" + LOG1,  # decoded, as it would be fetched
            id="s3-no-event-name",
        ),
        pytest.param(
            {
                "detail-type": "Object Created",
                "source": "aws.s3",
                "detail": {"bucket": {"name": BUCKET}, "object": {"size": 1}},
            },
            BUCKET,
            None,
            id="eventbridge-s3-no-key",
        ),
    ],
)
def test_bad_notification_names_bucket_and_key(
    body: dict[str, Any], bucket: str | None, key: str | None
) -> None:
    with pytest.raises(BadNotification) as info:
        parse_notification(json.dumps(body))
    assert (info.value.bucket, info.value.key) == (bucket, key)


def test_bad_notification_log_line_names_bucket(sandbox: TrailSandbox, tmp_path: Path) -> None:
    sqs = sandbox.client("sqs")
    body = json.dumps(ct(log_key(unique="goodkey00001"), 7, bucket=sandbox.bucket))
    message_id = sqs.send_message(QueueUrl=sandbox.queue_url, MessageBody=body)["MessageId"]
    config = load_config(
        queue_url=sandbox.queue_url,
        output=str(tmp_path / "out.jsonl"),
        exit_when_idle=True,
        wait_time_seconds=0,
        visibility_timeout=5,
        stats_interval=0,
        state_dir=str(tmp_path / "state"),
    )
    metrics = Metrics()
    with structlog.testing.capture_logs() as logs:
        asyncio.run(run_async(config, metrics=metrics))
    errors = [e for e in logs if e.get("log_level") == "error"]
    assert len(errors) == 1, errors
    (line,) = errors
    assert line["reason"] == "bad_notification"
    assert line["message_id"] == message_id
    assert line["bucket"] == sandbox.bucket
    assert "key" not in line
    assert "s3ObjectKey[1]" in line["event"]
    assert sandbox.queue_depth() == 1  # kept


# -- one object named twice is handed over once -----------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json.dumps(ct(LOG1, LOG2, LOG1)), id="cloudtrail"),
        pytest.param(
            json.dumps({"Records": [s3_record(LOG1), s3_record(LOG2), s3_record(LOG1)]}),
            id="s3-event",
        ),
    ],
)
def test_duplicate_key_is_one_ref(body: str) -> None:
    n = parse_notification(body)
    assert [r.key for r in n.refs] == [LOG1, LOG2]


def test_duplicate_key_message_is_acknowledged_at_once(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    records = make_records(4, seed=7)
    key = log_key(unique="dupkey000001")
    sandbox.put(key, encode_log(records))
    sandbox.send_raw(json.dumps(ct(key, key, bucket=sandbox.bucket)))
    output = tmp_path / "out.jsonl"
    config = load_config(
        queue_url=sandbox.queue_url,
        output=str(output),
        exit_when_idle=True,
        wait_time_seconds=0,
        visibility_timeout=30,
        stats_interval=0,
        state_dir=str(tmp_path / "state"),
    )
    metrics = Metrics()
    asyncio.run(run_async(config, metrics=metrics))
    assert metrics.value("trailproc_messages_kept_total", reason="busy") == 0
    assert metrics.value("trailproc_messages_deleted_total", reason="processed") == 1
    assert metrics.value("trailproc_messages_received_total") == 1
    assert len(output.read_bytes().splitlines()) == len(records)
    assert sandbox.queue_depth() == 0


# -- key classification -------------------------------------------------------------------


def test_key_with_trailing_newline_is_not_a_log() -> None:
    # Python's "$" also matches before a final "\n": such a key is not CloudTrail's.
    assert classify_key(LOG1).kind is ObjectKind.LOG
    assert classify_key(LOG1 + "\n").kind is ObjectKind.OTHER
    digest = (
        f"AWSLogs/{ACCT}/CloudTrail-Digest/us-east-2/2016/08/11/"
        f"{ACCT}_CloudTrail-Digest_us-east-2_trail_us-east-2_20160811T220000Z.json.gz"
    )
    assert classify_key(digest).kind is ObjectKind.DIGEST
    assert classify_key(digest + "\n").kind is ObjectKind.OTHER
    loose = f"AWSLogs/{ACCT}/CloudTrail/us-east-2/2016/08/11/fixture.json.gz"
    assert classify_key(loose).kind is ObjectKind.LOG
    assert classify_key(loose + "\n").kind is ObjectKind.OTHER


def test_non_ascii_digits_are_not_an_account_id() -> None:
    arabic = "".join(chr(0x660 + int(c)) for c in ACCT)  # ١٢٣... : \d matches them
    info = classify_key(LOG1.replace(ACCT, arabic))
    assert info.kind is ObjectKind.OTHER
    assert info.account_id is None


@pytest.mark.parametrize(
    ("region", "home"),
    [
        ("eusc-de-east-1", "eusc-de-east-1"),  # AWS European Sovereign Cloud (aws-eusc)
        ("us-east-1", "eusc-de-east-1"),
        ("eusc-de-east-1", "us-east-1"),
    ],
)
def test_digest_key_in_sovereign_cloud_region(region: str, home: str) -> None:
    key = (
        f"AWSLogs/{ACCT}/CloudTrail-Digest/{region}/2026/01/05/"
        f"{ACCT}_CloudTrail-Digest_{region}_my_trail_{home}_20260105T100000Z.json.gz"
    )
    info = classify_key(key)
    assert info.kind is ObjectKind.DIGEST
    assert (info.region, info.trail_name, info.home_region) == (region, "my_trail", home)
    n = parse_notification(json.dumps(ct(key)), process_kinds=frozenset({ObjectKind.DIGEST}))
    assert n.kind is NotificationKind.CLOUDTRAIL
    assert [r.key for r in n.refs] == [key]
