"""`trailproc history`: LookupEvents pages to the handlers, rate-limited and resumable.

moto does not implement LookupEvents, so the loopback proxy in front of moto answers it in
CloudTrail's JSON wire format (as for ListPublicKeys); everything else (STS, the DynamoDB
store) is moto's server over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from faultproxy import NO_FAULTS, FaultProxy

from trailproc._history_cli import history_command
from trailproc._roads.history import TokenBucket, parse_lookup_attribute
from trailproc._sandbox import MotoServer

PLASO = "log2timeline__plaso/aws_cloudtrail.jsonl"
JSON_11 = {"Content-Type": "application/x-amz-json-1.1"}


def item(n: int, event_name: str = "CreateUser") -> dict[str, Any]:
    """One LookupEvents item: the record is the JSON string in CloudTrailEvent."""
    event_id = f"00000000-0000-4000-8000-{n:012d}"
    record = json.dumps(
        {"eventVersion": "1.08", "eventID": event_id, "eventName": event_name,
         "eventTime": "2026-11-01T10:00:00Z", "eventSource": "iam.amazonaws.com",
         "awsRegion": "us-east-1", "requestParameters": {"userName": f"ü-{n}"},
         "recipientAccountId": "123456789012"},
        separators=(",", ":"), ensure_ascii=False,
    )  # fmt: skip
    return {"EventId": event_id, "EventName": event_name, "ReadOnly": "false",
            "EventTime": 1793527200.0, "EventSource": "iam.amazonaws.com",
            "Resources": [], "CloudTrailEvent": record}  # fmt: skip


class LookupEvents:
    """Answers LookupEvents from a list of items, `page` per page, tokens "tok-<index>".

    `fail_at`: request numbers (1-based) answered with the given error instead.
    """

    def __init__(self, items: list[dict[str, Any]], page: int = 2) -> None:
        self.items = items
        self.page = page
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []
        self.fail_at: dict[int, tuple[int, str]] = {}

    def __call__(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
        request = json.loads(body or b"{}")
        self.requests.append(request)
        self.times.append(time.monotonic())
        if len(self.requests) in self.fail_at:
            status, code = self.fail_at[len(self.requests)]
            payload = {"__type": code, "message": f"{code} from the test"}
            return status, JSON_11, json.dumps(payload).encode()
        token = request.get("NextToken")
        start = int(token.removeprefix("tok-")) if token else 0
        if token and not token.startswith("tok-"):
            payload = {"__type": "InvalidNextTokenException", "message": "bad token"}
            return 400, JSON_11, json.dumps(payload).encode()
        size = min(self.page, int(request.get("MaxResults") or 50))
        answer: dict[str, Any] = {"Events": self.items[start : start + size]}
        if start + size < len(self.items):
            answer["NextToken"] = f"tok-{start + size}"
        return 200, JSON_11, json.dumps(answer).encode()


def records_of(items: list[dict[str, Any]]) -> list[str]:
    return [i["CloudTrailEvent"] for i in items]


def run_history(
    monkeypatch: pytest.MonkeyPatch,
    proxy: FaultProxy,
    out: Path,
    *extra: str,
) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    args = ["--start-time", "2026-11-01T00:00:00Z", "--end-time", "2026-11-02T00:00:00Z",
            "--output", str(out), "--region", "us-east-1", "--no-progress", *extra]  # fmt: skip
    return CliRunner().invoke(history_command, args)


def proxied(moto: MotoServer, answer: Callable[..., Any]) -> FaultProxy:
    return FaultProxy(moto.url, faults=NO_FAULTS, answers={"LookupEvents": answer})


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_real_lookup_output_is_handed_over_unchanged(
    aws_env: MotoServer, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [json.loads(line) for line in (corpus / PLASO).read_text().splitlines()]
    answer = LookupEvents(items, page=4)
    out = tmp_path / "out.jsonl"
    with proxied(aws_env, answer) as proxy:
        result = run_history(monkeypatch, proxy, out, "--lookup-attribute", "ReadOnly=false")
    assert result.exit_code == 0, result.output
    assert lines(out) == records_of(items)
    assert f"2 page(s): {len(items)} record(s) handed over" in result.output
    first = answer.requests[0]
    assert first["LookupAttributes"] == [{"AttributeKey": "ReadOnly", "AttributeValue": "false"}]
    assert first["StartTime"] == 1793491200 and first["EndTime"] == 1793577600
    assert "NextToken" not in first and answer.requests[1]["NextToken"] == "tok-4"


def test_interrupted_run_resumes_from_its_saved_token_without_repeats(
    aws_env: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [item(n) for n in range(9)]
    answer = LookupEvents(items, page=2)
    answer.fail_at = {3: (400, "InvalidParameterValueException")}  # the third page fails
    out = tmp_path / "out.jsonl"
    with proxied(aws_env, answer) as proxy:
        first = run_history(monkeypatch, proxy, out)
    assert first.exit_code == 1
    assert "us-east-1 failed: InvalidParameterValueException" in first.output
    assert lines(out) == records_of(items[:4])

    resumed = LookupEvents(items, page=2)
    with proxied(aws_env, resumed) as proxy:
        second = run_history(monkeypatch, proxy, out)
    assert second.exit_code == 0, second.output
    assert resumed.requests[0]["NextToken"] == "tok-4"  # not the window's first page again
    assert lines(out) == records_of(items)  # each record exactly once

    again = LookupEvents(items, page=2)
    with proxied(aws_env, again) as proxy:
        third = run_history(monkeypatch, proxy, out)
    assert third.exit_code == 0 and "1 region(s) done before" in third.output
    assert again.requests == [] and lines(out) == records_of(items)


def test_an_expired_token_restarts_the_window_and_skips_pages_done(
    aws_env: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [item(n) for n in range(100, 106)]
    answer = LookupEvents(items, page=2)
    answer.fail_at = {2: (400, "InvalidParameterValueException")}
    out = tmp_path / "out.jsonl"
    with proxied(aws_env, answer) as proxy:
        assert run_history(monkeypatch, proxy, out).exit_code == 1
    assert lines(out) == records_of(items[:2])

    class Expired(LookupEvents):
        def __call__(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
            request = json.loads(body or b"{}")
            if request.get("NextToken") == "tok-2" and len(self.requests) == 0:
                self.requests.append(request)
                payload = {"__type": "InvalidNextTokenException", "message": "expired"}
                return 400, JSON_11, json.dumps(payload).encode()
            return super().__call__(body)

    expired = Expired(items, page=2)
    with proxied(aws_env, expired) as proxy:
        second = run_history(monkeypatch, proxy, out)
    assert second.exit_code == 0, second.output
    assert "NextToken" not in expired.requests[1]  # started again from the first page
    assert "1 page(s) already done" in second.output
    assert lines(out) == records_of(items)


def test_throttling_is_retried_and_requests_keep_two_per_second(
    aws_env: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [item(n) for n in range(200, 208)]
    answer = LookupEvents(items, page=2)
    answer.fail_at = {2: (400, "ThrottlingException"), 3: (400, "ThrottlingException")}
    out = tmp_path / "out.jsonl"
    with proxied(aws_env, answer) as proxy:
        result = run_history(monkeypatch, proxy, out)
    assert result.exit_code == 0, result.output
    assert lines(out) == records_of(items)
    assert len(answer.requests) >= 6
    # The token bucket spaces LookupEvents calls 0.5 s apart when they leave; arrival
    # jitter here (a loaded machine) moves single gaps, so the bound is on the whole span,
    # with a second of slack for late departures (seen: the first three calls arriving
    # 0.78 s apart instead of 1.5 s on a machine at load 18). Without the limiter the span
    # is ~0.6 s (two immediate pages, two short retry waits), well under the bound.
    span = answer.times[-1] - answer.times[0]
    assert span >= (len(answer.times) - 1) * 0.5 - 1.0, answer.times


@pytest.mark.parametrize(
    ("events", "words"),
    [
        ([{"EventId": "x"}], "no CloudTrailEvent string"),
        ([{"EventId": "x", "CloudTrailEvent": "not json"}], "not a JSON object"),
        ([{"EventId": "x", "CloudTrailEvent": 5}], "no CloudTrailEvent string"),
    ],
    ids=["missing", "not-json", "not-a-string"],
)
def test_bad_items_fail_the_region_with_one_clear_error_and_keep_the_position(
    aws_env: MotoServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    events: list[dict[str, Any]],
    words: str,
) -> None:
    answer = LookupEvents([item(300), item(301), *events, item(302)], page=2)
    out = tmp_path / "out.jsonl"
    with proxied(aws_env, answer) as proxy:
        result = run_history(monkeypatch, proxy, out)
    assert result.exit_code == 1 and words in result.output
    assert len(lines(out)) == 2  # the first page went through; the bad one did not
    fixed = LookupEvents([item(300), item(301), item(303), item(302)], page=2)
    with proxied(aws_env, fixed) as proxy:
        assert run_history(monkeypatch, proxy, out).exit_code == 0
    assert fixed.requests[0]["NextToken"] == "tok-2"
    assert len(lines(out)) == 4


def test_a_page_over_max_decompressed_bytes_is_refused(
    aws_env: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = LookupEvents([item(400), item(401)], page=2)
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv("TRAILPROC_MAX_DECOMPRESSED_BYTES", "300")
    with proxied(aws_env, answer) as proxy:
        result = run_history(monkeypatch, proxy, out)
    assert result.exit_code == 1 and "max_decompressed_bytes=300" in result.output
    assert lines(out) == []


def test_lookup_attribute_validation() -> None:
    assert parse_lookup_attribute("EventName=ConsoleLogin") == {
        "AttributeKey": "EventName", "AttributeValue": "ConsoleLogin"}  # fmt: skip
    with pytest.raises(ValueError, match="not one of"):
        parse_lookup_attribute("eventName=x")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_lookup_attribute("EventName")
    result = CliRunner().invoke(history_command, [
        "--start-time", "2026-11-01", "--end-time", "2026-11-02",
        "--lookup-attribute", "EventName=a", "--lookup-attribute", "Username=b",
    ])  # fmt: skip
    assert result.exit_code == 2 and "one --lookup-attribute" in result.output
    backwards = CliRunner().invoke(
        history_command, ["--start-time", "2026-11-02", "--end-time", "2026-11-01"]
    )
    assert backwards.exit_code == 2 and "before --end-time" in backwards.output


def test_token_bucket_never_allows_more_than_the_rate_in_any_second() -> None:
    now = [0.0]
    acquired: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds

    async def main() -> None:
        bucket = TokenBucket(2.0, clock=lambda: now[0], sleep=fake_sleep)
        for _ in range(9):
            await bucket.acquire()
            acquired.append(now[0])

    asyncio.run(main())
    assert acquired == pytest.approx([0.5 * i for i in range(9)])
    for t in acquired:
        assert sum(t <= u < t + 1.0 for u in acquired) <= 2


def test_check_probes_lookup_events(aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from trailproc._config import load_config
    from trailproc._ops.check import run_checks

    def denied(body: bytes) -> tuple[int, dict[str, str], bytes]:
        payload = {"__type": "AccessDeniedException", "message": "not authorized to perform "
                   "cloudtrail:LookupEvents"}  # fmt: skip
        return 400, JSON_11, json.dumps(payload).encode()

    for answer, status in ((LookupEvents([item(500)]), "pass"), (denied, "fail")):
        with proxied(aws_env, answer) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
            rows = run_checks(load_config(checkpoint="memory"), history=True)
        (row,) = [r for r in rows if r.check == "cloudtrail:LookupEvents"]
        assert row.status == status, row
        # A history-only setup has no queue: not a failure when probing for history.
        assert [r.status for r in rows if r.check == "sqs queue"] == ["skip"]
        if status == "fail":
            assert "AccessDenied" in row.detail and "cloudtrail:LookupEvents" in row.fix
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env.url)
    without = run_checks(load_config(checkpoint="memory"))
    assert all(r.check != "cloudtrail:LookupEvents" for r in without)


def test_sigterm_stops_between_pages_and_a_rerun_resumes(
    aws_env: MotoServer, tmp_path: Path
) -> None:
    """A real `trailproc history` process, stopped by SIGTERM while it waits for a page."""
    import signal
    import subprocess
    import sys
    import threading

    from faultproxy import daemon_env, event_ids

    items = [item(n) for n in range(600, 610)]
    asked_third = threading.Event()
    release = threading.Event()

    class Held(LookupEvents):
        def __call__(self, body: bytes) -> tuple[int, dict[str, str], bytes]:
            if len(self.requests) == 2:  # the third request waits for the signal
                asked_third.set()
                release.wait(30)
            return super().__call__(body)

    answer = Held(items, page=2)
    out = str(tmp_path / "out.jsonl")
    command = [sys.executable, "-m", "trailproc._cli", "history", "--start-time", "2026-11-01",
               "--end-time", "2026-11-02", "--region", "us-east-1", "--output", out,
               "--no-progress"]  # fmt: skip
    with proxied(aws_env, answer) as proxy:
        env = daemon_env(proxy.url, str(tmp_path / "state"))
        proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        try:
            assert asked_third.wait(60), "the third page was never asked for"
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)  # let the handler set the stop flag before the page arrives
            release.set()
            _, stderr = proc.communicate(timeout=60)
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 1, stderr
    assert "interrupted (run again to resume)" in stderr
    # Stopped at a page boundary: the page in flight went through (a slow machine may
    # even have finished one more before the flag was seen), nothing after it.
    handed = len(event_ids(out))
    assert handed in (6, 8)
    expected = {json.loads(r)["eventID"] for r in records_of(items[:handed])}
    assert set(event_ids(out)) == expected

    rest = LookupEvents(items, page=2)
    with proxied(aws_env, rest) as proxy:
        env = daemon_env(proxy.url, str(tmp_path / "state"))
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert rest.requests[0]["NextToken"] == f"tok-{handed}"
    counts = event_ids(out)
    assert set(counts) == {json.loads(r)["eventID"] for r in records_of(items)}
    assert set(counts.values()) == {1}


def test_an_account_outside_allowed_accounts_is_not_read(
    aws_env: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trust boundary: the credentials' account (moto's 123456789012) is not allowed,
    so no LookupEvents request is made and the command fails naming the setting."""
    answer = LookupEvents([item(500)], page=2)
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv("TRAILPROC_ALLOWED_ACCOUNTS", "999999999999")
    with proxied(aws_env, answer) as proxy:
        result = run_history(monkeypatch, proxy, out)
    assert result.exit_code == 1
    assert "'123456789012' not in allowed_accounts" in result.output
    assert answer.requests == [] and lines(out) == []
