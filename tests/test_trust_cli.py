"""Trust settings at the command line: allow-list flags, a typo'd TRAILPROC_* variable,
the one "trust settings" line at start, and credentials kept out of log lines."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import structlog
from faultproxy import daemon_command, daemon_env, json_logs

from trailproc._config import unknown_env
from trailproc._observe import configure_logging, get_logger
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records


def _run(sandbox: TrailSandbox, tmp_path: Path, *flags: str, **env: str) -> Any:
    return subprocess.run(
        daemon_command(sandbox.queue_url, str(tmp_path / "out.jsonl"), *flags),
        env={**daemon_env(sandbox.endpoint_url, str(tmp_path / "state")), **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("flag", ["--allowed-bucket", "--allowed-account", "--allowed-topic-arn"])
@pytest.mark.parametrize("value", ["", "  "])
def test_a_blank_allow_list_flag_is_an_error(
    sandbox: TrailSandbox, tmp_path: Path, flag: str, value: str
) -> None:
    proc = _run(sandbox, tmp_path, flag, value)
    assert proc.returncode == 2, proc.stderr
    assert "has an empty entry" in proc.stderr
    assert sandbox.queue_depth() == 0  # nothing received: it never started


def test_allow_list_flags_refuse_and_keep_and_are_logged_once(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    other = "someone-elses-bucket"
    sandbox.client("s3").create_bucket(Bucket=other)
    key = log_key(unique="flagged00001")
    sandbox.client("s3").put_object(Bucket=other, Key=key, Body=encode_log(make_records(2)))
    sandbox.notify([key], bucket=other)  # through the allowed topic, naming another bucket
    good = sandbox.deliver(make_records(3, seed=5))
    assert good
    proc = _run(sandbox, tmp_path, "--allowed-bucket", sandbox.bucket,
                "--allowed-bucket", "spare-bucket", "--allowed-account", "123456789012",
                "--allowed-topic-arn", sandbox.topic_arn,
                TRAILPROC_ALLOWED_BUCKET="typo")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    logs = json_logs(proc.stderr)
    (trust,) = [e for e in logs if e.get("event") == "trust settings"]
    assert trust["allowed_buckets"] == sorted([sandbox.bucket, "spare-bucket"])
    assert trust["allowed_accounts"] == ["123456789012"]
    assert trust["allowed_topic_arns"] == [sandbox.topic_arn]
    assert trust["verify_sns_signatures"] is False
    (typo,) = [e for e in logs if e.get("variable") == "TRAILPROC_ALLOWED_BUCKET"]
    assert typo["level"] == "warning" and typo["closest"] == "TRAILPROC_ALLOWED_BUCKETS"
    (error,) = [e for e in logs if e.get("level") == "error"]
    assert error["reason"] == "refused" and error["bucket"] == other
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 3  # the allowed delivery only
    assert sandbox.queue_depth() == 1  # the refused one is kept


def test_unknown_env_names_the_closest_known_variable() -> None:
    env = {"TRAILPROC_ALOWED_ACCOUNTS": "1", "TRAILPROC_QUEUE_URL": "q", "TRAILPROC_HANDLER": "m:a",
           "TRAILPROC_COMPLETELY_DIFFERENT_THING": "x", "OTHER": "y"}  # fmt: skip
    assert unknown_env(env) == [
        ("TRAILPROC_ALOWED_ACCOUNTS", "TRAILPROC_ALLOWED_ACCOUNTS"),
        ("TRAILPROC_COMPLETELY_DIFFERENT_THING", None),
    ]


SECRETS = [
    "X-Amz-Signature=0123456789abcdef0123456789abcdef",
    "X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261101%2Fus-east-1%2Fs3%2Faws4_request",
    "X-Amz-Security-Token=FwoGZXIvYXdzEJr%2F%2F%2F%2F%2Fwtoken",
    "Signature=Zm9yZ2VkLXNpZ25hdHVyZQ%3D%3D",
    "AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE",
]


def test_credentials_inside_keys_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """An object key (or URL, or error text) carrying a presigned query string or an
    access key id is logged with those parts blanked; the rest stays readable."""
    key = ("AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/01/f.json.gz?"
           + "&".join(SECRETS) + "&Expires=1700000000")  # fmt: skip
    configure_logging("info", "json")
    try:
        get_logger("test").error(f"cannot read {key}", key=key, keys=[key],
                                 note="ASIAIOSFODNN7EXAMPLE was used")  # fmt: skip
    finally:
        configure_logging("info", "json")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    text = json.dumps(line)
    for secret in SECRETS:
        assert secret.split("=", 1)[1] not in text
    assert "AKIAIOSFODNN7EXAMPLE" not in text and "ASIAIOSFODNN7EXAMPLE" not in text
    assert line["key"].startswith("AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/01/f.json.gz?")
    assert "X-Amz-Signature=[redacted]" in line["key"] and "Expires=1700000000" in line["key"]
    assert line["keys"] == [line["key"]] and line["event"].endswith(line["key"])


def test_lambda_handler_warns_about_a_misspelt_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from trailproc.aws_lambda import make_handler

    monkeypatch.setenv("TRAILPROC_ALLOWED_ACOUNTS", "123456789012")
    with structlog.testing.capture_logs() as logs:
        handler = make_handler(lambda e: None, checkpoint="memory", configure_logs=False)
    handler.close()
    (warning,) = [e for e in logs if e.get("variable") == "TRAILPROC_ALLOWED_ACOUNTS"]
    assert warning["log_level"] == "warning"
    assert warning["closest"] == "TRAILPROC_ALLOWED_ACCOUNTS"
