"""Visibility end to end on moto: failure backoffs within twelve hours of the receive,
and a heartbeat refused for good not retried every second."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from helpers import iam_user, run_in_process

from trailproc._sandbox import MotoServer, TrailSandbox, log_key, make_records

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sqs_daemon import (
    KeysInOrder,
    SqsRecorder,
    drain_through,
)


@pytest.mark.timeout(60)
def test_failure_backoff_ends_within_twelve_hours_of_the_receive(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """SQS refuses a visibility change that would end more than 12 hours after the
    receive; a backoff as long as that is cut to what is left of those 12 hours."""
    sandbox.notify([log_key(unique="twelvehours0001")])  # names no object: it fails
    with SqsRecorder(sandbox.endpoint_url) as proxy:
        result, _took = drain_through(proxy, sandbox, tmp_path,
                                       failure_visibility_base=43200,
                                       failure_visibility_max=43200)  # fmt: skip
    assert result.metrics.value("trailproc_messages_kept_total", reason="failed") == 1
    received = next(t for action, t, _ in proxy.calls if action == "ReceiveMessage")
    changes = [(t, body["VisibilityTimeout"]) for action, t, body in proxy.calls
               if action == "ChangeMessageVisibility"]  # fmt: skip
    assert changes, proxy.calls
    for sent, seconds in changes:
        assert seconds > 0 and seconds + (sent - received) <= 43200, (sent - received, seconds)
    assert sandbox.queue_depth() == 1  # kept, hidden for the rest of the 12 hours


@pytest.mark.timeout(60)
def test_heartbeat_refused_for_good_is_not_retried_every_second(
    enforcing: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker without sqs:ChangeMessageVisibility: the heartbeat's AccessDenied is
    permanent, so it is logged once per heartbeat interval, not every second."""
    import boto3
    import structlog

    iam = boto3.client("iam", endpoint_url=enforcing.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    admin = iam_user(iam, "admin", ["*"])
    worker = iam_user(iam, "worker", ["sqs:ReceiveMessage", "sqs:DeleteMessage",
                                      "sqs:DeleteMessageBatch", "sqs:GetQueueAttributes",
                                      "s3:GetObject"])  # fmt: skip
    sandbox = TrailSandbox(enforcing.url, access_key=admin).create(visibility_timeout=60)
    sandbox.deliver(make_records(3))
    for name, value in enforcing.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", worker[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", worker[1])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    # Heartbeats every 2 s (visibility 4 s); the handler takes ~5.5 s: two heartbeats.
    slow = KeysInOrder(sleep=5.5)
    with structlog.testing.capture_logs() as logs:
        run_in_process(sandbox, tmp_path, slow, visibility_timeout=4)
    refused = [e for e in logs if e["event"].startswith("heartbeat")]
    assert refused and all(e["event"].startswith("heartbeat refused") for e in refused)
    # SQS's JSON protocol names AccessDenied; moto's answer carries only the status.
    assert refused[0]["code"] in ("AccessDenied", "AccessDeniedException", "403")
    assert len(refused) <= 3  # every 2 s, not every second (that made 5 or more)
    assert len(slow.keys) == 3
