"""Small things a newcomer trips over in the first hour, each through the CLI or public API."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from trailproc._sandbox import MotoServer, TrailSandbox, make_records

REPO = Path(__file__).resolve().parent.parent


def credential_free_env(tmp_path: Path) -> dict[str, str]:
    """No AWS credentials anywhere: no variables, empty config files, no metadata service."""
    empty = tmp_path / "empty-aws-config"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRAILPROC_"))}
    env.update(AWS_CONFIG_FILE=str(empty), AWS_SHARED_CREDENTIALS_FILE=str(empty),
               AWS_EC2_METADATA_DISABLED="true", PYTHONPATH=str(REPO))  # fmt: skip
    return env


def trailproc_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trailproc._cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


# --- trailproc check: a local store needs no AWS ---------------------------------------------


def test_check_of_a_local_sqlite_store_needs_no_credentials(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = trailproc_cli("check", "--checkpoint", "sqlite", "--state-dir", str(state),
                         env=credential_free_env(tmp_path), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.split()[:4] == ["checkpoint", "store", "sqlite", "pass"] for line in lines)
    assert any(line.split()[:2] == ["credentials", "skip"] for line in lines)
    assert "0 check(s) failed" in proc.stdout
    assert (state).is_dir()  # the store really was opened (and its lease probe released)


def test_check_without_credentials_still_checks_the_local_store(
    moto: MotoServer, tmp_path: Path
) -> None:
    env = credential_free_env(tmp_path)
    env["AWS_ENDPOINT_URL"] = moto.url
    proc = trailproc_cli("check", "--queue-url", f"{moto.url}/123456789012/q", "--region",
                         "us-east-1", "--checkpoint", "sqlite", "--state-dir",
                         str(tmp_path / "state"), env=env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1  # the daemon would need credentials for its queue
    rows = {tuple(line.split()[:2]) for line in proc.stdout.splitlines()}
    assert ("credentials", "FAIL") in rows and ("sqs", "queue") in rows
    assert any(line.split()[:4] == ["checkpoint", "store", "sqlite", "pass"]
               for line in proc.stdout.splitlines())  # fmt: skip


# --- the Lambda sample leaves nothing open at exit ---------------------------------------------

_INVOKE_SAMPLE = """
import importlib.util, json, sys

class Context:
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self):
        return 60_000

spec = importlib.util.spec_from_file_location("sample_app", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
with open(sys.argv[2]) as f:
    event = json.load(f)
print(json.dumps(module.handler(event, Context())))
"""  # the process then exits as a Lambda environment's runtime does: no close() call


def test_lambda_sample_leaves_no_unclosed_session(sandbox: TrailSandbox, tmp_path: Path) -> None:
    from test_lambda import received_as_lambda_event

    sandbox.deliver(make_records(3))
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps(received_as_lambda_event(sandbox)))
    script = tmp_path / "invoke.py"
    script.write_text(_INVOKE_SAMPLE)
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="default", PYTHONDEVMODE="1")
    proc = subprocess.run([sys.executable, str(script), str(REPO / "samples/lambda/app.py"),
                           str(event_file)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"batchItemFailures": []}
    assert "Unclosed" not in proc.stderr, proc.stderr
    assert "ResourceWarning" not in proc.stderr, proc.stderr


# --- the demo: findings in columns, event times before their keys' times ---------------------


def test_demo_findings_line_up_and_times_match_the_keys(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "trailproc._cli", "demo", "--files", "6",
                           "--records", "40"], env=dict(os.environ, PYTHONPATH=str(REPO)),
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    keys = [line.split()[-1] for line in lines if line.strip().startswith("delivered AWSLogs/")]
    key_times = [dt.datetime.strptime(k.rsplit("_", 2)[-2], "%Y%m%dT%H%MZ") for k in keys]
    assert len(keys) == 6
    for key, when in zip(keys, key_times, strict=True):
        assert f"/{when:%Y/%m/%d}/" in key  # the date folder is the delivery's
    start = lines.index(next(line for line in lines if line.startswith("Findings (")))
    findings = [line for line in lines[start + 1 :] if line.startswith("  20")]
    assert len(findings) >= 2, proc.stdout  # these seeds have several kinds of finding
    assert len({line.index(" by ") for line in findings}) == 1, findings  # one column
    assert len({len(line.split("  ")[1]) for line in findings}) == 1  # times are one width
    for line in findings:
        event_time = dt.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%SZ")
        # Delivered within the hour after the event, as CloudTrail does.
        assert any(dt.timedelta(0) < t - event_time < dt.timedelta(hours=1) for t in key_times)


def test_demo_sample_records_precede_their_delivery(sandbox: TrailSandbox) -> None:
    from trailproc._demo import deliver_samples
    from trailproc._pipeline.keys import classify_key

    now = dt.datetime(2027, 1, 1, 0, 2, tzinfo=dt.timezone.utc)  # just after midnight
    keys = deliver_samples(sandbox, 3, 50, now=now)
    s3 = sandbox.client("s3")
    for key in keys:
        delivered = classify_key(key).delivered_at
        assert delivered is not None and delivered <= now
        body = json.loads(
            gzip.decompress(s3.get_object(Bucket=sandbox.bucket, Key=key)["Body"].read())
        )
        times = [dt.datetime.strptime(r["eventTime"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.timezone.utc) for r in body["Records"]]  # fmt: skip
        assert all(delivered - dt.timedelta(hours=1) < t < delivered for t in times)


# --- --help: every option documented, paths shown as PATH or DIR -----------------------------

_COMMANDS = ("run", "process", "backfill", "validate", "check", "audit", "redrive", "demo")


def _help(command: str) -> str:
    from click.testing import CliRunner

    from trailproc._cli import main

    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


def test_validate_max_workers_has_help() -> None:
    line = next(x for x in _help("validate").splitlines() if "--max-workers" in x)
    assert "Log files downloaded and hashed at once" in line


def test_path_options_show_path_or_dir_in_every_command() -> None:
    seen: dict[str, str] = {}
    for command in _COMMANDS:
        for name, metavar in re.findall(r"^\s+(--[a-z-]+) ([A-Z][A-Z|:_-]*)", _help(command), re.M):
            if name.endswith("-dir"):
                assert metavar == "DIR", (command, name, metavar)
            elif name in ("--config", "--output") or name.endswith("-file"):
                assert metavar.startswith("PATH"), (command, name, metavar)
            else:
                continue
            seen[name] = metavar
    # Every kind of path option was met, so the test cannot pass by finding none.
    assert {"--config", "--output", "--state-dir", "--local-dir", "--public-key-file"} <= set(seen)
    assert all(" FILE " not in _help(c) and "DIRECTORY" not in _help(c) for c in _COMMANDS)
