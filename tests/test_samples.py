"""The samples run as they are and find what they claim to find."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import trailproc
from trailproc._sandbox import encode_log

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "samples"))

import s3_access_summary  # noqa: E402
import security_alerts  # noqa: E402
import tail  # noqa: E402


def _write(tmp_path: Path, records: list[dict[str, object]]) -> Path:
    path = tmp_path / "log.json.gz"
    path.write_bytes(encode_log(records))
    return path


def rec(name: str, source: str, when: str = "2026-11-01T00:00:00Z", **extra: object) -> dict:
    base = {"eventID": f"{name}-{when}", "eventName": name, "eventSource": source,
            "eventTime": when, "awsRegion": "us-east-1",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::1:user/alice"}}  # fmt: skip
    base.update(extra)
    return base


def test_security_alerts_rules(tmp_path: Path) -> None:
    records = [
        rec("ConsoleLogin", "signin.amazonaws.com", userIdentity={"type": "Root", "arn": "r"},
            additionalEventData={"MFAUsed": "No"}),
        rec("ConsoleLogin", "signin.amazonaws.com", additionalEventData={"MFAUsed": "Yes"}),
        rec("StopLogging", "cloudtrail.amazonaws.com"),
        rec("AttachRolePolicy", "iam.amazonaws.com",
            requestParameters={"roleName": "r1", "policyArn": "arn:aws:iam::aws:policy/Admin"}),
        rec("AttachRolePolicy", "iam.amazonaws.com", errorCode="AccessDenied"),
        rec("GetObject", "s3.amazonaws.com"),
    ] + [
        rec("ListUsers", "iam.amazonaws.com", when=f"2026-11-01T00:0{i}:00Z",
            errorCode="AccessDenied")
        for i in range(6)
    ]  # fmt: skip
    alerts: list[security_alerts.Alert] = []
    trailproc.process_paths([_write(tmp_path, records)], security_alerts.build(alerts.append))
    rules = [a.rule for a in alerts]
    assert rules.count("root-sign-in") == 1
    assert rules.count("console-sign-in-without-mfa") == 1
    assert rules.count("cloudtrail-tampering") == 1
    assert rules.count("iam-policy-change") == 1  # the denied attempt changed nothing
    assert rules.count("access-denied-burst") == 1  # 7 denials, one alert at the 5th
    change = next(a for a in alerts if a.rule == "iam-policy-change")
    assert "r1" in change.detail and "Admin" in change.detail


def test_s3_access_summary_aggregates(tmp_path: Path) -> None:
    bob = {"type": "IAMUser", "arn": "arn:aws:iam::1:user/bob"}
    records = [
        rec("GetObject", "s3.amazonaws.com", requestParameters={"bucketName": "data"},
            additionalEventData={"bytesTransferredOut": 1000.0}),
        rec("GetObject", "s3.amazonaws.com", requestParameters={"bucketName": "data"},
            errorCode="AccessDenied"),
        rec("PutObject", "s3.amazonaws.com", requestParameters={"bucketName": "data"},
            userIdentity=bob),
        rec("DeleteObject", "s3.amazonaws.com", requestParameters={"bucketName": "logs"},
            userIdentity=bob),
        rec("DescribeInstances", "ec2.amazonaws.com"),
    ]  # fmt: skip
    out = io.StringIO()
    summary = s3_access_summary.S3AccessSummary(out)
    result = trailproc.process_paths([_write(tmp_path, records)], summary)
    assert result.records == 4  # the EC2 event was filtered out before batching
    table = {(p, b): dict(c) for p, b, c in summary.rows()}
    alice = table[("arn:aws:iam::1:user/alice", "data")]
    assert alice["read"] == 2 and alice["denied"] == 1 and alice["bytes_out"] == 1000
    assert table[("arn:aws:iam::1:user/bob", "data")]["write"] == 1
    assert table[("arn:aws:iam::1:user/bob", "logs")]["delete"] == 1
    assert "arn:aws:iam::1:user/alice" in out.getvalue()  # printed at close


def test_tail_prints_one_line_per_event(tmp_path: Path) -> None:
    records = [rec("GetObject", "s3.amazonaws.com", errorCode="NoSuchKey"),
               rec("RunInstances", "ec2.amazonaws.com")]  # fmt: skip
    out = io.StringIO()
    trailproc.process_paths([_write(tmp_path, records)], tail.Tail(out))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "s3:GetObject" in lines[0] and "!NoSuchKey" in lines[0]
    assert "ec2:RunInstances" in lines[1] and "user/alice" in lines[1]


def test_samples_run_as_they_are_on_sample_data() -> None:
    """`python samples/X.py` with no arguments runs on a local sandbox and prints results."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for script, marker in (("tail.py", "sts:AssumeRole"), ("security_alerts.py", '"rule"'),
                           ("s3_access_summary.py", "principal")):  # fmt: skip
        proc = subprocess.run([sys.executable, str(REPO / "samples" / script)], env=env,
                              capture_output=True, timeout=120, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert marker in proc.stdout, (script, proc.stdout[-500:])
        if script == "security_alerts.py":
            assert all(json.loads(line)["rule"] for line in proc.stdout.splitlines())


def test_samples_run_on_paths_and_as_documented_daemon_handlers(tmp_path: Path) -> None:
    """`python samples/X.py PATH` works, and so does the `--handler samples.X:Y` each
    docstring gives, in the installed `trailproc` command, run as documented: from the
    repository root, with no PYTHONPATH."""
    command = Path(sys.executable).with_name("trailproc")
    if not command.is_file():
        pytest.skip("no trailproc console script beside this interpreter")
    log = _write(tmp_path, [
        rec("StopLogging", "cloudtrail.amazonaws.com"),
        rec("GetObject", "s3.amazonaws.com", requestParameters={"bucketName": "data"}),
    ])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "PYTHONPATH"}
    for module, marker in ((tail, "cloudtrail:StopLogging"),
                           (security_alerts, "cloudtrail-tampering"),
                           (s3_access_summary, "arn:aws:iam::1:user/alice")):  # fmt: skip
        script = REPO / "samples" / f"{module.__name__}.py"
        proc = subprocess.run([sys.executable, str(script), str(log)], env=env, cwd=REPO,
                              capture_output=True, timeout=120, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert marker in proc.stdout, (script.name, proc.stdout[-500:])
        found = re.search(r"--handler (samples\.\S+)", module.__doc__ or "")
        assert found, f"{script.name}: no daemon handler command in the docstring"
        args = [str(command), "process", str(log), "--handler", found[1], "--checkpoint", "memory"]
        proc = subprocess.run(args, env=env, cwd=REPO, capture_output=True, timeout=120, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert marker in proc.stdout, (found[1], proc.stdout[-500:])


def test_docs_name_existing_sample_handlers() -> None:
    """Every `samples.X:attr` in the README and docs is an attribute of that sample."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    pattern = re.compile(r"samples\.(\w+):(\w+)")
    named = {(page.name, mod, attr) for page in pages
             for mod, attr in pattern.findall(page.read_text(encoding="utf-8"))}  # fmt: skip
    assert named
    modules = {m.__name__: m for m in (tail, security_alerts, s3_access_summary)}
    missing = [f"{page}: samples.{mod}:{attr}" for page, mod, attr in sorted(named)
               if not hasattr(modules.get(mod), attr)]  # fmt: skip
    assert not missing, missing
