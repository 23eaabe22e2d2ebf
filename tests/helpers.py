"""Small helpers several test modules share (import as `from helpers import ...`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import trailproc
from trailproc._app import RunResult, run_async
from trailproc._observe import Metrics
from trailproc._sandbox import TrailSandbox


def run_in_process(
    sandbox: TrailSandbox, tmp_path: Path, processor: Any = None, **overrides: Any
) -> RunResult:
    """Drain the sandbox queue with the daemon's code path in this process, fresh metrics."""
    settings: dict[str, Any] = {
        "queue_url": sandbox.queue_url,
        "exit_when_idle": True,
        "wait_time_seconds": 1,
        "state_dir": str(tmp_path / "state"),
        "stats_interval": 0,
    }
    config = trailproc.load_config(env={}, **{**settings, **overrides})
    return asyncio.run(run_async(config, processor, metrics=Metrics()))


def iam_user(iam: Any, name: str, actions: list[str]) -> tuple[str, str]:
    """An IAM user allowed `actions` on everything, with an access key: (id, secret).
    Three requests, made before an `enforcing` moto starts checking policies."""
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    policy = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}  # fmt: skip
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
    return key["AccessKeyId"], key["SecretAccessKey"]
