"""A run that cannot start says why and how to fix it: one `SetupError`, not an SDK traceback.

Through the public API (`trailproc.run`) and the CLI, against moto's server: a queue that
does not exist, no credentials at all (a subprocess with an empty AWS configuration and
the instance metadata service off), and a worker whose IAM policy lacks
sqs:ReceiveMessage (moto enforcing IAM).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from helpers import iam_user

import trailproc
from trailproc._cli import main
from trailproc._sandbox import MotoServer, TrailSandbox

REPO = Path(__file__).resolve().parent.parent


def _missing_queue(moto: MotoServer) -> str:
    return f"{moto.url}/123456789012/no-such-queue"


def test_wrong_queue_url_raises_one_setup_error(aws_env: MotoServer, tmp_path: Path) -> None:
    queue = _missing_queue(aws_env)
    with pytest.raises(trailproc.TrailprocError) as caught:
        trailproc.run(queue_url=queue, output=str(tmp_path / "out.jsonl"), exit_when_idle=True,
                      wait_time_seconds=1, state_dir=str(tmp_path), stats_interval=0)  # fmt: skip
    error = caught.value
    assert isinstance(error, trailproc.SetupError)
    assert str(error).startswith(f"queue {queue} does not exist: check queue_url")
    assert error.code == "AWS.SimpleQueueService.NonExistentQueue"
    # The SDK's exception is kept for debugging but not chained into the traceback.
    assert error.cause is not None and error.__cause__ is None and error.__suppress_context__


def test_cli_prints_the_same_one_line(aws_env: MotoServer, tmp_path: Path) -> None:
    queue = _missing_queue(aws_env)
    result = CliRunner().invoke(main, [
        "run", "--queue-url", queue, "--output", str(tmp_path / "out.jsonl"), "--exit-when-idle",
        "--state-dir", str(tmp_path),
    ])  # fmt: skip
    assert result.exit_code == 1
    assert f"Error: queue {queue} does not exist: check queue_url" in result.stderr
    assert "Traceback" not in result.stderr and "botocore" not in result.stderr


def _credential_free_env(tmp_path: Path, moto: MotoServer) -> dict[str, str]:
    empty = tmp_path / "empty"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ENDPOINT_URL=moto.url,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=str(empty),
        AWS_SHARED_CREDENTIALS_FILE=str(empty),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(REPO),
    )
    return env


def test_missing_credentials_name_the_fix(moto: MotoServer, tmp_path: Path) -> None:
    code = (
        "import sys, trailproc\n"
        "trailproc.run(queue_url=sys.argv[1], output=sys.argv[2], exit_when_idle=True,\n"
        "              wait_time_seconds=1, state_dir=sys.argv[3], stats_interval=0)\n"
    )
    argv = [sys.executable, "-c", code, _missing_queue(moto), str(tmp_path / "o"), str(tmp_path)]
    proc = subprocess.run(argv, env=_credential_free_env(tmp_path, moto), capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("trailproc.SetupError: no AWS credentials found: set AWS_PROFILE")
    assert "botocore" not in proc.stderr and "never awaited" not in proc.stderr
    assert "During handling" not in proc.stderr and "direct cause" not in proc.stderr


def test_missing_credentials_on_the_cli(moto: MotoServer, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "trailproc._cli", "run", "--queue-url", _missing_queue(moto),
            "--output", str(tmp_path / "o"), "--exit-when-idle",
            "--state-dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(argv, env=_credential_free_env(tmp_path, moto), capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    assert "Error: no AWS credentials found: set AWS_PROFILE" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_access_denied_names_the_missing_permission(
    enforcing: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    iam = boto3.client("iam", endpoint_url=enforcing.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    admin = iam_user(iam, "admin", ["*"])
    worker = iam_user(iam, "worker", ["s3:GetObject", "sqs:GetQueueAttributes"])
    sandbox = TrailSandbox(enforcing.url, access_key=admin).create()
    for name, value in enforcing.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", worker[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", worker[1])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    with pytest.raises(trailproc.SetupError) as caught:
        trailproc.run(queue_url=sandbox.queue_url, output=str(tmp_path / "out.jsonl"),
                      exit_when_idle=True, wait_time_seconds=1, state_dir=str(tmp_path),
                      stats_interval=0)  # fmt: skip
    message = str(caught.value)
    assert message.startswith(f"access denied calling ReceiveMessage on {sandbox.queue_url}: ")
    assert "grant sqs:ReceiveMessage to the credentials in use" in message
    assert caught.value.code in ("AccessDenied", "AccessDeniedException")
