"""A notified object version is read with the documented IAM policy (moto, with a
proxy refusing versioned reads that the policy would not allow)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

import trailproc
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import NO_FAULTS, FaultProxy
from sqs_daemon import (
    KeysInOrder,
    drain_through,
)

# --- GetObject of a versioned object -----------------------------------------------------


def _s3_event(bucket: str, key: str, version_id: str, etag: str) -> str:
    obj = {"key": key, "versionId": version_id, "eTag": etag}
    record = {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
              "eventName": "ObjectCreated:Put",
              "s3": {"bucket": {"name": bucket}, "object": obj}}  # fmt: skip
    return json.dumps({"Records": [record]})


class NoVersionReads(FaultProxy):
    """Forwards everything, except that a GetObject naming a `versionId` is answered with
    S3's 403 AccessDenied, as S3 answers a reader without s3:GetObjectVersion (the
    permission docs/iam.md does not grant). The refusal comes from here, not from the
    emulator's policy engine, so the test holds whatever moto enforces."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, faults=NO_FAULTS)
        self.refused = 0

    def forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        if method == "GET" and "versionId=" in path:
            with self._lock:
                self.refused += 1
            payload = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied'
                       b"</Code><Message>Access Denied</Message></Error>")  # fmt: skip
            return 403, "Forbidden", [("Content-Type", "application/xml")], payload
        return super().forward(method, path, headers, body)


@pytest.mark.timeout(60)
def test_versioned_object_is_read_with_the_documented_policy(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """S3 event notifications of a versioned bucket name the object's version. Reading a
    version by id needs s3:GetObjectVersion, which docs/iam.md does not grant: the
    worker must still read the object while that version is the current one, and an
    older version fails with an error naming the permission, its message kept."""
    s3 = sandbox.client("s3")
    s3.put_bucket_versioning(Bucket=sandbox.bucket,
                             VersioningConfiguration={"Status": "Enabled"})  # fmt: skip
    current, replaced = log_key(unique="versioned0000001"), log_key(unique="versioned0000002")
    put = s3.put_object(Bucket=sandbox.bucket, Key=current, Body=encode_log(make_records(5)))
    sandbox.send_raw(_s3_event(sandbox.bucket, current, put["VersionId"], put["ETag"].strip('"')))
    # A version that is no longer the current one cannot be read without the permission.
    old = s3.put_object(Bucket=sandbox.bucket, Key=replaced, Body=encode_log(make_records(3)))
    s3.put_object(Bucket=sandbox.bucket, Key=replaced, Body=encode_log(make_records(4, seed=9)))
    sandbox.send_raw(_s3_event(sandbox.bucket, replaced, old["VersionId"], old["ETag"].strip('"')))
    errors: list[trailproc.TrailprocError] = []

    class Recorder(KeysInOrder):
        def on_error(self, error: trailproc.TrailprocError) -> None:
            errors.append(error)

    collected = Recorder(sleep=0)
    with NoVersionReads(sandbox.endpoint_url) as proxy:
        result, _took = drain_through(proxy, sandbox, tmp_path, collected)
    assert proxy.refused >= 1  # the worker did try the version first
    assert collected.keys == [current] * 5
    assert result.metrics.value("trailproc_messages_deleted_total", reason="processed") == 1
    (error,) = errors
    assert isinstance(error, trailproc.FetchError) and error.code == "AccessDenied"
    assert error.key == replaced and "s3:GetObjectVersion" in str(error)
    assert sandbox.queue_depth() == 1  # the old version's message is kept
