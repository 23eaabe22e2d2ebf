"""Organisation access rules on moto's server, seen on the wire through the loopback proxy:
assumed roles, requester pays, expected bucket owner, bucket and queue regions, archived
objects and their restore.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from faultproxy import NO_FAULTS, FaultProxy

from trailproc._aws import queue_region
from trailproc._backfill import backfill
from trailproc._pipeline.processor import EventProcessor
from trailproc._sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records

A = "111111111111"
WHEN = dt.datetime(2024, 3, 1, 10, 5, tzinfo=dt.timezone.utc)
RANGE = {"start_time": "2024-03-01", "end_time": "2024-03-02"}


class Collect(EventProcessor):
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.errors: list[Any] = []

    def process(self, events: list[Any]) -> None:
        self.ids.extend(e.event_id for e in events)

    def on_error(self, error: Any) -> None:
        self.errors.append(error)


def _clean_proxy(upstream: str, **extra: Any) -> FaultProxy:
    return FaultProxy(upstream, faults=NO_FAULTS, **extra)


def _log(sandbox: TrailSandbox, bucket: str | None = None, **put: Any) -> tuple[str, list[str]]:
    records = make_records(2, seed=7, account=A)
    key = log_key(A, "us-east-1", WHEN, unique="a000000000000001")
    sandbox.client("s3").put_object(Bucket=bucket or sandbox.bucket, Key=key,
                                    Body=encode_log(records), **put)  # fmt: skip
    return key, [r["eventID"] for r in records]


def _gets(proxy: FaultProxy, key_part: str) -> list[dict[str, str]]:
    return [h for method, path, h in proxy.headers_seen
            if method == "GET" and key_part in path and "list-type" not in path]  # fmt: skip


def test_queue_region_comes_from_the_queue_url() -> None:
    assert queue_region("https://sqs.eu-west-3.amazonaws.com/1/q") == "eu-west-3"
    assert queue_region("https://eu-central-1.queue.amazonaws.com/1/q") == "eu-central-1"
    assert queue_region("https://sqs.cn-north-1.amazonaws.com.cn/1/q") == "cn-north-1"
    assert queue_region("http://127.0.0.1:5000/1/q") is None
    assert queue_region(None) is None


def test_requester_pays_and_expected_owner_are_sent(
    sandbox: TrailSandbox, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, ids = _log(sandbox)
    seen = Collect()
    with _clean_proxy(aws_env.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = backfill(sandbox.bucket, seen, checkpoint="memory", progress=False,
                          requester_pays_buckets=[sandbox.bucket],
                          bucket_owners={sandbox.bucket: "123456789012"}, **RANGE)  # fmt: skip
    assert result.ok and Counter(seen.ids) == Counter(ids)
    (get,) = _gets(proxy, key.rsplit("/", 1)[1])
    headers = {k.lower(): v for k, v in get.items()}
    assert headers["x-amz-request-payer"] == "requester"
    assert headers["x-amz-expected-bucket-owner"] == "123456789012"


def test_a_look_alike_bucket_in_another_account_is_refused(
    sandbox: TrailSandbox, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 answers 403 AccessDenied when ExpectedBucketOwner is not the bucket's owner;
    the proxy plays that part (the bucket here belongs to moto's account 123456789012)."""
    key, _ids = _log(sandbox)

    def owner_check(method: str, path: str, headers: Any) -> Any:
        expected = headers.get("x-amz-expected-bucket-owner")
        if expected and expected != "123456789012":
            body = (b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied"
                    b"</Code><Message>Access Denied</Message></Error>")  # fmt: skip
            return 403, {"Content-Type": "application/xml"}, body
        return None

    seen = Collect()
    with _clean_proxy(aws_env.url, intercept=owner_check) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = backfill(sandbox.bucket, seen, checkpoint="memory", progress=False,
                          bucket_owners={sandbox.bucket: "999999999999"}, **RANGE)  # fmt: skip
    assert seen.ids == [] and result.files_failed == 1
    (error,) = seen.errors
    assert error.key == key and "not owned by account 999999999999" in str(error)
    assert _gets(proxy, key.rsplit("/", 1)[1])  # the GetObject carried the header


def test_archived_object_fails_clearly_then_restore_days_processes_it(
    sandbox: TrailSandbox, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, ids = _log(sandbox, StorageClass="GLACIER")
    refused = Collect()
    result = backfill(sandbox.bucket, refused, checkpoint="memory", progress=False, **RANGE)
    assert result.files_failed == 1 and refused.ids == []
    (error,) = refused.errors
    assert "InvalidObjectState" in str(error) and "GLACIER" in str(error)
    assert "--restore-days" in str(error) and error.key == key

    # moto finishes a restore at once; S3 takes hours. The proxy answers the first two
    # HeadObject calls after the RestoreObject request as S3 does meanwhile.
    name = key.rsplit("/", 1)[1]
    calls: list[str] = []

    def in_progress(method: str, path: str, headers: Any) -> Any:
        if method == "POST" and "restore" in path:
            calls.append("restore")
        elif method == "HEAD" and name in path and "restore" in calls:
            calls.append("head")
            if calls.count("head") <= 2:
                return (
                    200,
                    {
                        "x-amz-storage-class": "GLACIER",
                        "Content-Length": "10",
                        "x-amz-restore": 'ongoing-request="true"',
                        "ETag": '"e"',
                    },
                    b"",
                )
        elif method == "GET" and name in path:
            calls.append("get")
        return None

    seen = Collect()
    with _clean_proxy(aws_env.url, intercept=in_progress) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        restored = backfill(sandbox.bucket, seen, checkpoint="memory", progress=False,
                            restore_days=2, restore_poll_seconds=0.2, **RANGE)  # fmt: skip
    # Requested once; read only after the third check found the copy ready.
    assert calls == ["restore", "head", "head", "head", "get"]
    assert restored.ok and Counter(seen.ids) == Counter(ids)


def test_each_bucket_is_read_in_its_own_region(
    sandbox: TrailSandbox, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = sandbox.client("s3")
    s3.create_bucket(Bucket="paris-trail",
                     CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})  # fmt: skip
    key, ids = _log(sandbox, bucket="paris-trail")
    seen = Collect()
    with _clean_proxy(aws_env.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = backfill("paris-trail", seen, checkpoint="memory", progress=False, **RANGE)
    assert result.ok and Counter(seen.ids) == Counter(ids)
    (get,) = _gets(proxy, key.rsplit("/", 1)[1])
    assert "/eu-west-3/s3/aws4_request" in get["Authorization"]
    heads = [p for m, p, _h in proxy.headers_seen if m == "HEAD" and "paris-trail" in p]
    assert len(heads) == 1  # detected once, then cached


def test_role_assumed_per_bucket(
    sandbox: TrailSandbox, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, ids = _log(sandbox)
    role = "arn:aws:iam::123456789012:role/trail-reader"
    seen = Collect()
    with _clean_proxy(aws_env.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = backfill(sandbox.bucket, seen, checkpoint="memory", progress=False,
                          assume_role_by_bucket={sandbox.bucket: role}, **RANGE)  # fmt: skip
    assert result.ok and Counter(seen.ids) == Counter(ids)
    assume = [h for m, p, h in proxy.headers_seen if m == "POST" and p == "/"]
    assert assume, "AssumeRole was called"
    (get,) = _gets(proxy, key.rsplit("/", 1)[1])
    # Signed with the role's temporary key, not the caller's ("testing").
    assert "Credential=testing/" not in get["Authorization"]
    assert get.get("X-Amz-Security-Token") not in (None, "testing")


def test_docs_name_the_settings(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "fleet.md").read_text()
    for name in ("assume_role_by_bucket", "requester_pays_buckets", "bucket_owners",
                 "--restore-days", "s3_region", "sqs_region"):  # fmt: skip
        assert name in text
