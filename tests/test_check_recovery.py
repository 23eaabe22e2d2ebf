"""`trailproc check --audit-bucket/--redrive-from`: the permissions audit and redrive need,
probed without moving, hiding or deleting a message (moto over real HTTP; one test with
moto enforcing IAM policies)."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from helpers import iam_user

from trailproc._check_cli import check_command
from trailproc._sandbox import MotoServer, TrailSandbox


def _rows(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines():
        parts = line.split()
        for status in ("pass", "FAIL", "WARN", "skip"):
            if status in parts:
                rows[" ".join(parts[: parts.index(status)])] = status
                break
    return rows


def _dead_letter(sandbox: TrailSandbox) -> None:
    body = json.dumps({"s3Bucket": sandbox.bucket, "s3ObjectKey": ["AWSLogs/x.json.gz"]})
    sandbox.client("sqs").send_message(QueueUrl=sandbox.dlq_url, MessageBody=body)


def test_check_probes_audit_and_redrive_and_moves_nothing(sandbox: TrailSandbox) -> None:
    _dead_letter(sandbox)
    result = CliRunner().invoke(check_command, [
        "--queue-url", sandbox.queue_url, "--checkpoint", "memory",
        "--audit-bucket", sandbox.bucket, "--redrive-from", sandbox.dlq_url,
    ])  # fmt: skip
    rows = _rows(result.output)
    assert rows[f"audit: s3:ListBucket {sandbox.bucket}"] == "pass"
    assert rows["redrive: dead-letter queue"] == "pass"
    assert rows["redrive: sqs:ListDeadLetterSourceQueues"] == "pass"
    assert rows["redrive: sqs:ReceiveMessage"] == "pass"
    assert rows["redrive: sqs:DeleteMessage"] == "pass"
    assert rows["redrive: sqs:SendMessage"] == "skip"
    assert "redrive: message move task" in rows  # pass where SQS has it, else a warning
    # The dead letter is still there and visible.
    attributes = sandbox.client("sqs").get_queue_attributes(
        QueueUrl=sandbox.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessages"] == "1"


def test_check_names_what_redrive_and_audit_are_denied(
    enforcing: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    iam = boto3.client("iam", endpoint_url=enforcing.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    admin = iam_user(iam, "admin", ["*"])
    # May look at queues, not delete from them; no S3 at all.
    reader = iam_user(iam, "reader", ["sqs:GetQueueAttributes", "sqs:ReceiveMessage",
                                      "sqs:ListDeadLetterSourceQueues", "sts:*"])  # fmt: skip
    sandbox = TrailSandbox(enforcing.url, access_key=admin).create()
    for name, value in enforcing.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", reader[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reader[1])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    result = CliRunner().invoke(check_command, [
        "--queue-url", sandbox.queue_url, "--checkpoint", "memory",
        "--state-dir", str(tmp_path),
        "--audit-bucket", sandbox.bucket, "--redrive-from", sandbox.dlq_url,
    ])  # fmt: skip
    rows = _rows(result.output)
    assert result.exit_code == 1
    assert rows[f"audit: s3:ListBucket {sandbox.bucket}"] == "FAIL"
    assert rows["redrive: dead-letter queue"] == "pass"
    assert rows["redrive: sqs:ReceiveMessage"] == "pass"
    assert rows["redrive: sqs:DeleteMessage"] == "FAIL"
    assert "allow sqs:DeleteMessage" in result.output
