"""SNS signature verification on the roads: the daemon (moto's SQS over HTTP) and the
Lambda SQS and SNS triggers. Envelopes are signed with a test certificate served on
127.0.0.1 (`sns_test_cert_url_prefix`, the test-only setting); a forged one is refused,
logged once, counted and kept; a signed one is handed over and deleted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from sns_signing import CertServer, make_certificate, signed

from trailproc._app import run_async
from trailproc._config import load_config
from trailproc._observe import Metrics
from trailproc._roads.lambda_ import InvocationFailed
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records
from trailproc.aws_lambda import make_handler


@pytest.fixture(scope="module")
def signer() -> Any:
    return make_certificate()


@pytest.fixture
def certs(signer: Any) -> Iterator[CertServer]:
    server = CertServer(signer[1]).start()
    try:
        yield server
    finally:
        server.stop()


def _delivery(sandbox: TrailSandbox, seed: int) -> tuple[dict[str, Any], list[str]]:
    records = make_records(3, seed=seed)
    key = log_key(unique=f"signed{seed:06d}")
    sandbox.put(key, encode_log(records))
    return {"s3Bucket": sandbox.bucket, "s3ObjectKey": [key]}, [r["eventID"] for r in records]


def _send(sandbox: TrailSandbox, body: dict[str, Any]) -> str:
    sqs = sandbox.client("sqs")
    return str(sqs.send_message(QueueUrl=sandbox.queue_url, MessageBody=json.dumps(body))
               ["MessageId"])  # fmt: skip


def _run(sandbox: TrailSandbox, tmp_path: Path, **settings: Any) -> tuple[Metrics, list[Any]]:
    config = load_config(
        env={}, queue_url=sandbox.queue_url, output=str(tmp_path / "out.jsonl"),
        exit_when_idle=True, wait_time_seconds=0, visibility_timeout=5, stats_interval=0,
        state_dir=str(tmp_path / "state"), **settings,
    )  # fmt: skip
    metrics = Metrics()
    with structlog.testing.capture_logs() as logs:
        asyncio.run(run_async(config, metrics=metrics))
    return metrics, [dict(e) for e in logs]


def _output_ids(tmp_path: Path) -> list[str]:
    out = tmp_path / "out.jsonl"
    if not out.exists():
        return []
    return [json.loads(line)["eventID"] for line in out.read_bytes().splitlines()]


def test_daemon_hands_over_signed_and_keeps_forged(
    sandbox: TrailSandbox, tmp_path: Path, signer: Any, certs: CertServer
) -> None:
    key, _pem = signer
    forger, _ = make_certificate("forger")
    topic = sandbox.topic_arn
    good_body, good_ids = _delivery(sandbox, 1)
    forged_body, _ = _delivery(sandbox, 2)
    _send(sandbox, signed(good_body, key, topic_arn=topic, cert_url=certs.cert_url, version="2"))
    forged_id = _send(sandbox, signed(forged_body, forger, topic_arn=topic,
                                      cert_url=certs.cert_url))  # fmt: skip
    raw_id = _send(sandbox, forged_body)  # no envelope at all
    metrics, logs = _run(sandbox, tmp_path, verify_sns_signatures=True,
                         sns_test_cert_url_prefix=certs.prefix,
                         allowed_topic_arns=[topic])  # fmt: skip
    assert _output_ids(tmp_path) == good_ids
    errors = [e for e in logs if e.get("log_level") == "error"]
    assert sorted(e["message_id"] for e in errors) == sorted([forged_id, raw_id])
    assert all(e["reason"] == "refused" for e in errors)
    by_id = {e["message_id"]: e["event"] for e in errors}
    assert "does not match" in by_id[forged_id]
    assert "accept_unsigned_messages" in by_id[raw_id]
    assert metrics.value("trailproc_messages_kept_total", reason="refused") == 2
    assert sandbox.queue_depth() == 2  # both kept (hidden for their retry), none deleted
    assert len(certs.requests) == 1
    trust_lines = [e for e in logs if e.get("event") == "trust settings"]
    assert len(trust_lines) == 1 and trust_lines[0]["verify_sns_signatures"] is True


def test_daemon_accepts_unsigned_only_when_told(
    sandbox: TrailSandbox, tmp_path: Path, certs: CertServer
) -> None:
    body, ids = _delivery(sandbox, 3)
    _send(sandbox, body)
    _run(sandbox, tmp_path, verify_sns_signatures=True, accept_unsigned_messages=True,
         sns_test_cert_url_prefix=certs.prefix)  # fmt: skip
    assert _output_ids(tmp_path) == ids
    assert sandbox.queue_depth() == 0
    assert certs.requests == []


def test_lambda_sqs_reports_the_forged_message(
    sandbox: TrailSandbox, signer: Any, certs: CertServer
) -> None:
    key, _ = signer
    forger, _ = make_certificate("forger")
    good, good_ids = _delivery(sandbox, 4)
    bad, _ = _delivery(sandbox, 5)
    seen: list[str] = []
    handler = make_handler(lambda e: seen.append(e.event_id), checkpoint="memory",
                           verify_sns_signatures=True, sns_test_cert_url_prefix=certs.prefix,
                           configure_logs=False)  # fmt: skip
    arn = "arn:aws:sqs:us-east-1:123456789012:q"

    def record(mid: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"messageId": mid, "body": json.dumps(body), "eventSource": "aws:sqs",
                "eventSourceARN": arn, "attributes": {}}  # fmt: skip

    event = {"Records": [
        record("good", signed(good, key, topic_arn=sandbox.topic_arn, cert_url=certs.cert_url)),
        record("forged", signed(bad, forger, topic_arn=sandbox.topic_arn,
                                cert_url=certs.cert_url)),
        record("raw", bad),
    ]}  # fmt: skip
    try:
        answer = handler(event, None)
    finally:
        handler.close()
    assert answer == {"batchItemFailures": [{"itemIdentifier": "forged"},
                                            {"itemIdentifier": "raw"}]}  # fmt: skip
    assert sorted(seen) == sorted(good_ids)
    assert handler.metrics.value("trailproc_errors_total", reason="refused") == 2


def test_lambda_sns_trigger_refuses_a_forged_envelope(
    sandbox: TrailSandbox, signer: Any, certs: CertServer
) -> None:
    key, _ = signer
    body, ids = _delivery(sandbox, 6)
    env = signed(body, key, topic_arn=sandbox.topic_arn, cert_url=certs.cert_url)
    sns = {**env, "SigningCertUrl": env.pop("SigningCertURL"), "Subject": None}
    seen: list[str] = []
    handler = make_handler(lambda e: seen.append(e.event_id), checkpoint="memory",
                           verify_sns_signatures=True, sns_test_cert_url_prefix=certs.prefix,
                           configure_logs=False)  # fmt: skip
    try:
        forged = {**sns, "TopicArn": sandbox.topic_arn + "-other"}
        with pytest.raises(InvocationFailed, match="does not match"):
            handler({"Records": [{"EventSource": "aws:sns", "Sns": forged}]}, None)
        assert seen == []
        handler({"Records": [{"EventSource": "aws:sns", "Sns": sns}]}, None)
    finally:
        handler.close()
    assert sorted(seen) == sorted(ids)


def test_backfill_refuses_files_of_other_accounts_unread(sandbox: TrailSandbox) -> None:
    """A file dropped under another account's folder of the trail bucket (anyone with
    s3:PutObject can) is refused by allowed_accounts before it is downloaded: counted as
    failed with one error, no byte read, its records never handed over."""
    from trailproc._backfill import backfill
    from trailproc._pipeline.processor import FunctionProcessor

    mine = make_records(2, seed=40)
    sandbox.put(log_key(unique="mine00000001"), encode_log(mine))
    sandbox.put(log_key(account="999999999999", unique="theirs000001"),
                encode_log(make_records(2, seed=41, account="999999999999")))  # fmt: skip
    seen: list[str] = []
    with structlog.testing.capture_logs() as logs:
        result = backfill(sandbox.bucket, FunctionProcessor(lambda e: seen.append(e.event_id)),
                          checkpoint="memory", progress=False,
                          allowed_accounts=["123456789012"])  # fmt: skip
    assert sorted(seen) == sorted(r["eventID"] for r in mine)
    assert result.listed == 2 and result.files_done == 1 and result.files_failed == 1
    (error,) = [e for e in logs if e.get("log_level") == "error"]
    assert error["reason"] == "refused" and "999999999999" in error["key"]
    assert result.metrics.value("trailproc_bytes_compressed_total") == len(encode_log(mine))
