"""Backfill / replay from a bucket, against moto over real HTTP.

The bucket holds two accounts, two regions and three days of log files, an organization
trail's account, and objects that are not log files. Every test checks the exact set of
records handed over (by eventID), so a missed or a repeated record fails it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from trailproc._backfill import backfill
from trailproc._backfill_cli import backfill_command
from trailproc._pipeline.processor import EventProcessor
from trailproc._roads.s3_listing import ListingQuery, parse_time
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records

A, B, C = "111111111111", "222222222222", "333333333333"
ORG = "o-abcdef1234"
REGIONS = ("us-east-1", "eu-west-1")
DAYS = (dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3))
HOURS = (1, 13)
PER_FILE = 3


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.timezone.utc)


class Collect(EventProcessor):
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.keys: set[str] = set()

    def process(self, events: list[Any]) -> None:
        for e in events:
            self.ids.append(e.event_id)
            self.keys.add(e.delivery.key)


@pytest.fixture
def trail_bucket(sandbox: TrailSandbox) -> dict[str, list[str]]:
    """Upload the layout; return {key: [eventID, ...]} for every log file."""
    files: dict[str, list[str]] = {}
    seed = 0
    for account, org in ((A, None), (B, None), (C, ORG)):
        for region in REGIONS:
            for day in DAYS:
                for hour in HOURS:
                    seed += 1
                    when = _utc(day.year, day.month, day.day, hour, 5)
                    key = log_key(account, region, when, org_id=org, unique=f"u{seed:015d}")
                    records = make_records(PER_FILE, seed=seed, account=account, region=region)
                    sandbox.put(key, encode_log(records))
                    files[key] = [r["eventID"] for r in records]
    # Noise: none of it may be handed over.
    sandbox.put(
        f"AWSLogs/{A}/CloudTrail-Digest/us-east-1/2024/03/01/"
        f"{A}_CloudTrail-Digest_us-east-1_trail_us-east-1_20240301T020000Z.json.gz",
        b"{}",
    )
    sandbox.put(f"AWSLogs/{A}/Config/ConfigWritabilityCheckFile", b"x")
    sandbox.put(f"AWSLogs/{A}/CloudTrail/us-east-1/2024/03/02/", b"")
    sandbox.put(f"AWSLogs/{A}/CloudTrail/us-east-1/2024/03/02/notes.txt", b"hello")
    sandbox.put(
        log_key(A, "us-east-1", _utc(2024, 3, 2, 4, 0), folder="CloudTrail-Insight"),
        encode_log(make_records(2, seed=999)),
    )
    sandbox.put("other-prefix/readme.txt", b"not a log")
    return files


def _expected(files: dict[str, list[str]], **want: Any) -> Counter[str]:
    out: Counter[str] = Counter()
    for key, ids in files.items():
        parts = key.split("/")
        account = parts[1] if parts[1] != ORG else parts[2]
        region = parts[-5]
        stamp = dt.datetime.strptime(key.rsplit("_", 2)[-2], "%Y%m%dT%H%MZ").replace(
            tzinfo=dt.timezone.utc
        )
        if "accounts" in want and account not in want["accounts"]:
            continue
        if "regions" in want and region not in want["regions"]:
            continue
        if want.get("start") and stamp < want["start"]:
            continue
        if want.get("end") and stamp >= want["end"]:
            continue
        out.update(ids)
    return out


def test_sub_range_by_time_account_and_region(
    trail_bucket: dict[str, list[str]], tmp_path: Path
) -> None:
    start, end = _utc(2024, 3, 1, 12, 0), _utc(2024, 3, 3, 0, 0)
    seen = Collect()
    result = backfill(
        "trail-bucket",
        seen,
        account_ids=[A],
        regions=["eu-west-1"],
        start_time=start,
        end_time=end,
        checkpoint="memory",
        progress=False,
    )
    expected = _expected(trail_bucket, accounts={A}, regions={"eu-west-1"}, start=start, end=end)
    assert sum(expected.values()) == 3 * PER_FILE  # 03-01 13:05, 03-02 01:05, 03-02 13:05
    assert Counter(seen.ids) == expected
    assert result.ok and result.listed == 3 and result.files_done == 3


def test_everything_includes_the_organization_trail(trail_bucket: dict[str, list[str]]) -> None:
    seen = Collect()
    result = backfill(
        "trail-bucket", seen, checkpoint="memory", progress=False, end_time="2024-03-04"
    )
    assert Counter(seen.ids) == _expected(trail_bucket)
    assert any(f"/{ORG}/{C}/" in key for key in seen.keys)
    assert result.listed == len(trail_bucket) == 36
    assert result.files_failed == 0


def test_no_start_discovers_date_folders(trail_bucket: dict[str, list[str]]) -> None:
    """Without a start the date folders are discovered; the org member is selectable."""
    seen = Collect()
    end = parse_time("2024-03-02T01:06Z")
    backfill(
        "trail-bucket", seen, account_ids=[C], end_time=end, checkpoint="memory", progress=False
    )
    assert Counter(seen.ids) == _expected(trail_bucket, accounts={C}, end=end)
    assert len(seen.keys) == 2 * 3  # 2 regions x (03-01 01:05, 13:05, 03-02 01:05)


def test_start_within_a_day_and_insights(
    trail_bucket: dict[str, list[str]], sandbox: TrailSandbox
) -> None:
    seen = Collect()
    start = _utc(2024, 3, 2, 1, 5)  # exactly a delivery minute: included
    backfill(
        "trail-bucket",
        seen,
        account_ids=[A],
        regions=["us-east-1"],
        start_time=start,
        end_time="2024-03-02T23:59",
        insights=True,
        checkpoint="memory",
        progress=False,
    )
    plain = _expected(
        trail_bucket, accounts={A}, regions={"us-east-1"}, start=start, end=_utc(2024, 3, 2, 23, 59)
    )
    assert sum(plain.values()) == 2 * PER_FILE
    insight_ids = {r["eventID"] for r in make_records(2, seed=999)}
    assert Counter(seen.ids) == plain + Counter(insight_ids)


def test_bad_selection_is_refused() -> None:
    with pytest.raises(ValueError, match="12 digits"):
        ListingQuery.build("b", account_ids=["123"])
    with pytest.raises(ValueError, match="not after"):
        ListingQuery.build("b", start="2024-03-02", end="2024-03-01")
    assert ListingQuery.build("b", prefix="/trails/AWSLogs/").root == "trails/AWSLogs/"
    assert ListingQuery.build("b", prefix="trails").root == "trails/AWSLogs/"


class FailAfter(EventProcessor):
    """Hands over `batches` batches, then raises on every later one (a crash mid-run)."""

    def __init__(self, batches: int) -> None:
        self.left = batches
        self.ids: list[str] = []

    def process(self, events: list[Any]) -> None:
        if self.left <= 0:
            raise RuntimeError("handler crashed")
        self.left -= 1
        self.ids.extend(e.event_id for e in events)


def test_interrupted_then_resumed_without_repeats(
    trail_bucket: dict[str, list[str]], tmp_path: Path
) -> None:
    spec = f"sqlite:///{tmp_path / 'cp.db'}"
    selection: dict[str, Any] = {
        "account_ids": [A, B],
        "start_time": "2024-03-01",
        "end_time": "2024-03-03",
    }
    expected = _expected(
        trail_bucket, accounts={A, B}, start=_utc(2024, 3, 1), end=_utc(2024, 3, 3)
    )
    # Batches of 2 records: files of 3 records take two batches, so the crash lands inside
    # a file, and the resumed run must start that file at its committed position.
    crashing = FailAfter(batches=7)
    first = backfill(
        "trail-bucket",
        crashing,
        checkpoint=spec,
        max_events_per_emit=2,
        concurrency=1,
        progress=False,
        **selection,
    )
    assert not first.ok and first.files_failed > 0
    assert 0 < len(crashing.ids) < sum(expected.values())

    resumed = Collect()
    second = backfill(
        "trail-bucket", resumed, checkpoint=spec, max_events_per_emit=2, progress=False, **selection
    )
    assert second.ok
    assert second.files_skipped == first.files_done > 0
    together = Counter(crashing.ids) + Counter(resumed.ids)
    assert together == expected  # every record exactly once across both runs

    again = Collect()
    third = backfill("trail-bucket", again, checkpoint=spec, progress=False, **selection)
    assert again.ids == [] and third.files_skipped == third.listed


def test_cli_skips_done_files_and_force_reprocesses(
    trail_bucket: dict[str, list[str]], tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    args = [
        "--bucket",
        "trail-bucket",
        "--account-id",
        B,
        "--region",
        "us-east-1",
        "--start-time",
        "2024-03-02",
        "--end-time",
        "2024-03-03T00:00:00Z",
        "--output",
        str(out),
        "--checkpoint",
        "sqlite",
        "--state-dir",
        str(tmp_path / "st"),
        "--concurrency",
        "2",
        "--log-format",
        "json",
    ]
    expected = _expected(
        trail_bucket,
        accounts={B},
        regions={"us-east-1"},
        start=_utc(2024, 3, 2),
        end=_utc(2024, 3, 3),
    )
    runner = CliRunner()

    def ids() -> Counter[str]:
        return Counter(json.loads(line)["eventID"] for line in out.read_text().splitlines())

    first = runner.invoke(backfill_command, args)
    assert first.exit_code == 0, first.output
    assert ids() == expected
    assert "2 file(s) listed: 2 processed" in first.output

    second = runner.invoke(backfill_command, args)
    assert second.exit_code == 0, second.output
    assert "0 processed, 2 already done" in second.output
    assert ids() == expected  # nothing appended

    forced = runner.invoke(backfill_command, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert "2 processed" in forced.output and "namespace force-" in forced.output
    assert ids() == expected + expected


def test_cli_checkpoint_retention_forgets_done_files_after_ttl_days(
    trail_bucket: dict[str, list[str]], tmp_path: Path
) -> None:
    """`--checkpoint sqlite:///PATH?ttl_days=N`: a re-run within the retention skips the
    files done before; once their rows are older than it, a re-run processes them again
    (the documented cost of retention for old backfill ranges)."""
    import time

    out = tmp_path / "out.jsonl"
    ttl_seconds = 4.0
    spec = f"sqlite:///{tmp_path / 'cp.db'}?ttl_days={ttl_seconds / 86400}"
    args = ["--bucket", "trail-bucket", "--account-id", B, "--region", "us-east-1",
            "--start-time", "2024-03-02", "--end-time", "2024-03-03T00:00:00Z",
            "--output", str(out), "--log-format", "json",
            "--checkpoint", spec]  # fmt: skip
    expected = _expected(trail_bucket, accounts={B}, regions={"us-east-1"},
                         start=_utc(2024, 3, 2), end=_utc(2024, 3, 3))  # fmt: skip
    runner = CliRunner()

    def ids() -> Counter[str]:
        return Counter(json.loads(line)["eventID"] for line in out.read_text().splitlines())

    first = runner.invoke(backfill_command, args)
    done_at = time.monotonic()
    assert first.exit_code == 0, first.output
    assert "2 file(s) listed: 2 processed, 0 already done" in first.output

    within = runner.invoke(backfill_command, args)
    assert within.exit_code == 0, within.output
    assert time.monotonic() - done_at < ttl_seconds, "too slow to test within the retention"
    assert "0 processed, 2 already done" in within.output
    assert ids() == expected

    time.sleep(max(0.0, done_at + ttl_seconds + 0.5 - time.monotonic()))
    after = runner.invoke(backfill_command, args)
    assert after.exit_code == 0, after.output
    assert "2 file(s) listed: 2 processed, 0 already done" in after.output
    assert ids() == expected + expected


def test_module_entry_point_and_failure_exit_code(
    trail_bucket: dict[str, list[str]], tmp_path: Path
) -> None:
    """`python -m trailproc._backfill`: a failed file makes the exit code 1."""
    (tmp_path / "crashy.py").write_text(
        "def handle(event):\n"
        "    if event.delivery.region == 'eu-west-1':\n"
        "        raise ValueError('boom')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trailproc._backfill",
            "--bucket",
            "trail-bucket",
            "--account-id",
            A,
            "--start-time",
            "2024-03-03T12:00",
            "--end-time",
            "2024-03-04",
            "--handler",
            "crashy:handle",
            "--checkpoint",
            "memory",
            "--log-format",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "2 file(s) listed: 1 processed, 0 already done, 1 failed" in proc.stderr
    assert '"reason": "handler_failed"' in proc.stderr


def test_sigint_stops_cleanly_and_the_rerun_resumes(
    trail_bucket: dict[str, list[str]], tmp_path: Path
) -> None:
    """A real process interrupted with Ctrl-C: files in flight finish, nothing repeats."""
    import signal
    import time

    (tmp_path / "slow.py").write_text("import time\n\ndef handle(event):\n    time.sleep(0.1)\n")
    out = tmp_path / "out.jsonl"
    args = [sys.executable, "-m", "trailproc._backfill", "--bucket", "trail-bucket",
            "--account-id", A, "--region", "us-east-1",
            "--start-time", "2024-03-01", "--end-time", "2024-03-04",
            "--handler", "slow:handle", "--output", str(out), "--concurrency", "1",
            "--checkpoint", f"sqlite:///{tmp_path / 'cp.db'}", "--log-format", "json"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    expected = _expected(trail_bucket, accounts={A}, regions={"us-east-1"})
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (out.exists() and out.read_text().strip()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "interrupted" in err

    def ids() -> Counter[str]:
        return Counter(json.loads(line)["eventID"] for line in out.read_text().splitlines())

    first = ids()
    assert 0 < sum(first.values()) < sum(expected.values())
    assert sum(first.values()) % PER_FILE == 0  # whole files only: in-flight work finished

    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert ids() == expected
