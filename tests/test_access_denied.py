"""AccessDenied for real: moto enforcing IAM policies, a worker without s3:GetObject."""

from __future__ import annotations

import asyncio
from pathlib import Path

import boto3
import pytest
from helpers import iam_user

import trailproc
from trailproc._app import run_async
from trailproc._observe import Metrics
from trailproc._sandbox import MotoServer, TrailSandbox, make_records


def test_access_denied_is_reported_and_the_message_kept(
    enforcing: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    iam = boto3.client("iam", endpoint_url=enforcing.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    admin = iam_user(iam, "admin", ["*"])
    # The worker may use the queue but was never granted s3:GetObject.
    worker = iam_user(iam, "worker", ["sqs:*"])
    sandbox = TrailSandbox(enforcing.url, access_key=admin).create()
    key = sandbox.deliver(make_records(5))

    for name, value in enforcing.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", worker[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", worker[1])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    errors: list[trailproc.TrailprocError] = []

    class Recorder(trailproc.EventProcessor):
        def process(self, events: list[trailproc.Event]) -> None:
            raise AssertionError("no record can be read without s3:GetObject")

        def on_error(self, error: trailproc.TrailprocError) -> None:
            errors.append(error)

    config = trailproc.load_config(
        env={}, queue_url=sandbox.queue_url, exit_when_idle=True, wait_time_seconds=1,
        state_dir=str(tmp_path), stats_interval=0,
    )  # fmt: skip
    metrics = Metrics()
    asyncio.run(run_async(config, Recorder(), metrics=metrics))

    assert len(errors) == 1
    error = errors[0]
    assert isinstance(error, trailproc.FetchError) and error.code == "AccessDenied"
    assert error.bucket == sandbox.bucket and error.key == key and error.message_id
    assert "s3:GetObject" in str(error)  # the fix is in the message
    assert metrics.value("trailproc_errors_total", reason="fetch_failed") == 1
    assert metrics.value("trailproc_messages_kept_total", reason="failed") == 1
    assert metrics.value("trailproc_messages_deleted_total", reason="failed_deleted") == 0
    assert sandbox.queue_depth() == 1  # never deleted because of an access error
