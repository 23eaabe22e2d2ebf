"""Inline digest verification (`verify_digests`) end to end against moto's server.

Log files and a signed digest are written exactly as CloudTrail does
(`DigestChainSigner`), announced on SNS → SQS, and processed by the real daemon loop.
Pending hashes persist in the SQLite checkpoint store of a shared state folder, so a
digest processed in one run is matched with its log files in the next.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from faultproxy import NO_FAULTS, FaultProxy
from helpers import run_in_process

import trailproc
from trailproc._app import RunResult
from trailproc._errors import DigestMismatch, TrailprocError
from trailproc._sandbox import TrailSandbox, make_records
from trailproc.checkpoint import SqliteStore
from trailproc.integrity._testing import DigestChainSigner, SignedDigest, SignedLog, new_private_key

T0 = dt.datetime(2026, 11, 1, 3, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return new_private_key()


class Collect(trailproc.EventProcessor):
    def __init__(self) -> None:
        self.events: list[trailproc.Event] = []
        self.errors: list[TrailprocError] = []

    def process(self, events: list[trailproc.Event]) -> None:
        self.events.extend(events)

    def on_error(self, error: TrailprocError) -> None:
        self.errors.append(error)

    def keys(self) -> set[str]:
        return {e.delivery.key for e in self.events}

    def raws(self) -> list[bytes]:
        return [e.raw for e in self.events]


def checks(result: RunResult, outcome: str) -> int:
    return int(result.metrics.value("trailproc_digest_checks_total", outcome=outcome))


def errors(result: RunResult, reason: str) -> int:
    return int(result.metrics.value("trailproc_errors_total", reason=reason))


def deliver_hour(
    sandbox: TrailSandbox, key: rsa.RSAPrivateKey, logs: int = 3
) -> tuple[DigestChainSigner, list[SignedLog], SignedDigest]:
    signer = DigestChainSigner(key, bucket=sandbox.bucket, sink=sandbox.client("s3"))
    written = [
        signer.put_log(
            make_records(4, seed=i, start=T0 + dt.timedelta(minutes=5 * i)),
            when=T0 + dt.timedelta(minutes=5 * i + 5),
        )
        for i in range(logs)
    ]
    digest = signer.write_digest(T0 + dt.timedelta(hours=1), start=T0)
    return signer, written, digest


def tamper(sandbox: TrailSandbox, log: SignedLog) -> bytes:
    """Rewrite a delivered log file under its key; returns the new decompressed bytes."""
    doc = json.loads(gzip.decompress(log.body))
    doc["Records"][0]["eventName"] = "DeleteTrail"
    plain = json.dumps(doc, separators=(",", ":")).encode()
    sandbox.put(log.key, gzip.compress(plain))
    return plain


def records_of(body: bytes) -> list[bytes]:
    doc = json.loads(gzip.decompress(body))
    return [json.dumps(r, separators=(",", ":")).encode() for r in doc["Records"]]


def test_intact_hour_matches_and_digest_never_reaches_user_code(
    sandbox: TrailSandbox, tmp_path: Path, private_key: rsa.RSAPrivateKey
) -> None:
    _signer, logs, digest = deliver_hour(sandbox, private_key, logs=3)
    sandbox.notify([logs[0].key, logs[1].key])
    sandbox.notify([digest.key])
    sandbox.notify([logs[2].key])
    user = Collect()

    result = run_in_process(sandbox, tmp_path, user, verify_digests=True)

    assert checks(result, "match") == 3 and checks(result, "mismatch") == 0
    assert user.errors == [] and result.metrics.brief().get("errors") is None
    assert user.keys() == {lf.key for lf in logs}  # no event from the digest
    assert not any(b"digestS3Object" in raw for raw in user.raws())
    assert len(user.events) == 12
    assert result.metrics.value("trailproc_files_total", kind="digest", outcome="done") == 1
    assert sandbox.queue_depth() == 0 and sandbox.queue_depth(sandbox.dlq_url) == 0
    assert result.metrics.brief()["digest_checks"] == {"match": 3}


def test_tampered_log_is_reported_once_and_still_handed_over(
    sandbox: TrailSandbox, tmp_path: Path, private_key: rsa.RSAPrivateKey
) -> None:
    _signer, logs, digest = deliver_hour(sandbox, private_key, logs=3)
    changed = tamper(sandbox, logs[1])  # modified after CloudTrail hashed it
    sandbox.notify([lf.key for lf in logs] + [digest.key])  # one message, both kinds
    user = Collect()

    result = run_in_process(sandbox, tmp_path, user, verify_digests=True)

    assert checks(result, "match") == 2 and checks(result, "mismatch") == 1
    assert errors(result, "digest_mismatch") == 1
    assert len(user.errors) == 1
    error = user.errors[0]
    assert isinstance(error, DigestMismatch) and error.reason == "digest_mismatch"
    assert (error.bucket, error.key) == (sandbox.bucket, logs[1].key)
    assert (error.digest_bucket, error.digest_key) == (sandbox.bucket, digest.key)
    assert error.expected == logs[1].sha256
    assert error.actual == hashlib.sha256(changed).hexdigest()
    assert f"s3://{sandbox.bucket}/{logs[1].key}" in str(error) and digest.key in str(error)
    # The tampered file's records were handed over (as read), and nothing was kept.
    assert b"DeleteTrail" in b"".join(user.raws())
    assert len(user.events) == 12 and user.keys() == {lf.key for lf in logs}
    assert sandbox.queue_depth() == 0 and sandbox.queue_depth(sandbox.dlq_url) == 0
    assert result.metrics.value("trailproc_messages_deleted_total", reason="processed") == 1


@pytest.mark.parametrize("first", ["digest", "logs"])
def test_order_does_not_matter_across_runs(
    sandbox: TrailSandbox, tmp_path: Path, private_key: rsa.RSAPrivateKey, first: str
) -> None:
    """Whichever side comes first waits in the SQLite store; the other run compares."""
    _signer, logs, digest = deliver_hour(sandbox, private_key, logs=3)
    tamper(sandbox, logs[2])
    log_keys = [lf.key for lf in logs]

    sandbox.notify([digest.key] if first == "digest" else log_keys)
    user1 = Collect()
    run1 = run_in_process(sandbox, tmp_path, user1, verify_digests=True)
    assert checks(run1, "match") == checks(run1, "mismatch") == 0
    assert user1.errors == [] and sandbox.queue_depth() == 0

    sandbox.notify(log_keys if first == "digest" else [digest.key])
    user2 = Collect()
    run2 = run_in_process(sandbox, tmp_path, user2, verify_digests=True)
    assert checks(run2, "match") == 2 and checks(run2, "mismatch") == 1
    assert [(type(e), e.key) for e in user2.errors] == [(DigestMismatch, logs[2].key)]
    assert len(user1.events) + len(user2.events) == 12
    assert sandbox.queue_depth() == 0

    async def pending() -> list[str | None]:
        store = SqliteStore(tmp_path / "state" / "checkpoints.sqlite3")
        try:
            return [await store.recall(f"digest-check:s3://{sandbox.bucket}/{k}") for k in log_keys]
        finally:
            await store.close()

    assert asyncio.run(pending()) == [None, None, None]  # compared and forgotten


def test_digest_redelivered_or_listing_unseen_logs_is_quiet(
    sandbox: TrailSandbox, tmp_path: Path, private_key: rsa.RSAPrivateKey
) -> None:
    """A log the deployment never processes waits unchecked (and expires); a digest
    announced again later is checked once (its checkpoint says done)."""
    _signer, logs, digest = deliver_hour(sandbox, private_key, logs=2)
    sandbox.notify([logs[0].key])  # logs[1] is never announced here
    sandbox.notify([digest.key])
    user = Collect()
    first = run_in_process(sandbox, tmp_path, user, verify_digests=True)
    assert checks(first, "match") == 1 and checks(first, "mismatch") == 0
    assert user.errors == [] and sandbox.queue_depth() == 0

    sandbox.notify([digest.key])
    again = run_in_process(sandbox, tmp_path, user, verify_digests=True)
    assert checks(again, "match") == checks(again, "mismatch") == 0
    assert again.metrics.value("trailproc_files_total", kind="digest", outcome="already_done") == 1
    assert user.errors == [] and sandbox.queue_depth() == 0


def test_unreadable_digest_is_kept_for_retry(
    sandbox: TrailSandbox, tmp_path: Path, private_key: rsa.RSAPrivateKey
) -> None:
    _signer, _logs, digest = deliver_hour(sandbox, private_key, logs=1)
    sandbox.put(digest.key, gzip.compress(b'{"not": "a digest"}'))
    sandbox.notify([digest.key])
    user = Collect()

    result = run_in_process(sandbox, tmp_path, user, verify_digests=True)

    assert [e.reason for e in user.errors] == ["bad_log_file"]
    assert "digest" in user.errors[0].message and user.errors[0].key == digest.key
    assert result.metrics.value("trailproc_messages_kept_total", reason="failed") == 1
    assert user.events == []


def test_verify_off_skips_digests_as_before(
    sandbox: TrailSandbox, tmp_path: Path, private_key: rsa.RSAPrivateKey
) -> None:
    _signer, logs, digest = deliver_hour(sandbox, private_key, logs=2)
    tamper(sandbox, logs[0])
    sandbox.notify([lf.key for lf in logs])
    sandbox.notify([digest.key])
    user = Collect()

    result = run_in_process(sandbox, tmp_path, user)

    assert checks(result, "match") == checks(result, "mismatch") == 0
    assert user.errors == [] and len(user.events) == 8
    assert result.metrics.value("trailproc_messages_deleted_total", reason="all_skipped") == 1
    assert result.metrics.value("trailproc_files_total", kind="digest", outcome="done") == 0
    assert sandbox.queue_depth() == 0


def test_verify_digests_config_key() -> None:
    config = trailproc.load_config(env={"TRAILPROC_VERIFY_DIGESTS": "true"})
    assert config.verify_digests is True and config.digest_wait_hours == 168
    assert trailproc.load_config(env={}).verify_digests is False


# --- the store-backed meeting point, directly ------------------------------------------


def listing_of(entries: list[tuple[str, str]]) -> Any:
    from trailproc._pipeline.digests import DigestListing

    return DigestListing("bkt", "AWSLogs/digest.json.gz", tuple(("bkt", k, h) for k, h in entries))


def test_pending_checks_same_side_replaces_and_mismatch_is_reported() -> None:
    from trailproc._pipeline.digests import HashCheck, PendingDigestChecks
    from trailproc.checkpoint import MemoryStore

    seen: list[HashCheck] = []

    async def main() -> None:
        store = MemoryStore()
        pending = PendingDigestChecks(store, seen.append, wait_seconds=60)
        assert await pending.log_processed("bkt", "a", "11") is None
        assert await pending.log_processed("bkt", "a", "AA") is None  # rewritten: newer wins
        assert await pending.log_processed("bkt", "b", "bb") is None
        got = await pending.digest_processed(listing_of([("a", "aa"), ("b", "00"), ("c", "cc")]))
        assert [(c.key, c.matched) for c in got] == [("a", True), ("b", False)]
        check = await pending.log_processed("bkt", "c", "cc")  # the digest came first
        assert check is not None and check.matched and check.digest_key == "AWSLogs/digest.json.gz"
        assert [await store.recall(pending.key("bkt", k)) for k in "abc"] == [None] * 3

    asyncio.run(main())
    assert [(c.key, c.expected, c.actual) for c in seen if not c.matched] == [("b", "00", "bb")]
    assert len(seen) == 3


def test_pending_checks_two_workers_racing_compare_each_file_once(aws_env: Any) -> None:
    """Log files and their digest processed at the same moment by two workers sharing a
    DynamoDB table: every file is compared exactly once, nothing is left waiting."""
    from trailproc._pipeline.digests import HashCheck, PendingDigestChecks
    from trailproc.checkpoint import DynamoDBStore

    seen: list[HashCheck] = []
    entries = [(f"AWSLogs/f{i:02d}.json.gz", f"{i:064x}") for i in range(30)]

    async def main() -> None:
        a = DynamoDBStore("trailproc-race", create_table=True)
        b = DynamoDBStore("trailproc-race", create_table=True)
        try:
            await a.recall("warm-up")  # create the table and both clients before the race
            await b.recall("warm-up")
            worker_a = PendingDigestChecks(a, seen.append, wait_seconds=60)
            worker_b = PendingDigestChecks(b, seen.append, wait_seconds=60, concurrency=4)

            async def logs(part: list[tuple[str, str]]) -> None:
                for k, h in part:
                    await worker_a.log_processed("bkt", k, h)

            # Two log streams on worker A while worker B works through the digest: some
            # files meet on the log side, some on the digest side, some at the same time.
            await asyncio.gather(
                logs(entries[::2]),
                worker_b.digest_processed(listing_of(entries)),
                logs(entries[1::2]),
            )
            left = [await a.recall(worker_a.key("bkt", k)) for k, _ in entries]
            assert left == [None] * len(entries)
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())
    assert sorted(c.key for c in seen) == [k for k, _ in entries]
    assert all(c.matched for c in seen)


def test_lambda_checks_digests_too(sandbox: TrailSandbox, private_key: rsa.RSAPrivateKey) -> None:
    """The Lambda entry point shares the daemon's message handling, digest checks included."""
    from trailproc.aws_lambda import make_handler

    _signer, logs, digest = deliver_hour(sandbox, private_key, logs=2)
    tamper(sandbox, logs[1])
    user = Collect()
    runtime = make_handler(user, checkpoint="memory", verify_digests=True)
    try:
        body = lambda *keys: json.dumps({"s3Bucket": sandbox.bucket, "s3ObjectKey": list(keys)})  # noqa: E731
        records = [
            {"messageId": f"m{i}", "receiptHandle": f"r{i}", "body": b, "attributes": {},
             "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:1:q"}
            for i, b in enumerate([body(logs[0].key, logs[1].key), body(digest.key)])
        ]  # fmt: skip
        answer = runtime({"Records": records}, None)
    finally:
        runtime.close()
    assert answer == {"batchItemFailures": []}  # a mismatch is a finding, not a failure
    mismatch = [e for e in user.errors if isinstance(e, DigestMismatch)]
    assert len(mismatch) == 1 and mismatch[0].key == logs[1].key
    assert runtime.metrics.value("trailproc_digest_checks_total", outcome="match") == 1
    assert user.keys() == {logs[0].key, logs[1].key}  # the digest never reached user code


# --- backfill with verify_digests: digests listed beside the log files -----------------


def backfill_hours(
    sandbox: TrailSandbox, key: rsa.RSAPrivateKey, hours: int = 3
) -> tuple[list[SignedDigest], list[SignedLog]]:
    """`hours` hours from T0 in one region: 2 log files and one digest (ending on the
    next hour) each. Returns the digests and every log file, in order."""
    signer = DigestChainSigner(key, bucket=sandbox.bucket, sink=sandbox.client("s3"))
    digests = signer.run_hours(T0, hours, logs_per_hour=2, records_per_log=3)
    return digests, [lf for d in digests for lf in d.logs]


def backfill_args(sandbox: TrailSandbox, tmp_path: Path, *extra: str) -> list[str]:
    # The second hour only: [T0 + 1 h, T0 + 2 h), without the late-delivery window (the
    # next hour's first file, delivered at 05:05, would join the range: see test_fleet).
    (tmp_path / "strict.toml").write_text("late_delivery_minutes = 0\n")
    return ["--config", str(tmp_path / "strict.toml"), "--bucket", sandbox.bucket,
            "--start-time", "2026-11-01T04:00:00Z",
            "--end-time", "2026-11-01T05:00:00Z", "--output", str(tmp_path / "out.jsonl"),
            "--checkpoint", f"sqlite:///{tmp_path / 'cp.db'}", "--log-format", "json",
            "--no-progress", *extra]  # fmt: skip


def test_backfill_verify_digests_over_signed_logs_passes(
    sandbox: TrailSandbox, tmp_path: Path, private_key: rsa.RSAPrivateKey
) -> None:
    """`trailproc backfill --verify-digests`: the range's log files are checked against
    the digests listed beside them; digests never reach the handlers."""
    from click.testing import CliRunner

    from trailproc._backfill_cli import backfill_command

    digests, logs = backfill_hours(sandbox, private_key)
    tamper(sandbox, logs[0])  # first hour: outside the range, never read
    in_range = digests[1].logs  # delivered 04:05 and 04:30, listed by the 05:00 digest
    runner = CliRunner()

    first = runner.invoke(backfill_command, backfill_args(sandbox, tmp_path, "--verify-digests"))

    assert first.exit_code == 0, first.output
    assert "4 file(s) listed: 4 processed, 0 already done, 0 failed; 6 record(s)" in first.output
    # Digests ending 05:00 (this hour) and 06:00 (slack); 04:00 lists only earlier files.
    assert "2 of them digest file(s): 2 log file(s) checked, 0 not matching" in first.output
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 6 and not any("digestS3Object" in line for line in lines)
    assert {json.loads(line)["eventID"] for line in lines} == {
        json.loads(raw)["eventID"] for lf in in_range for raw in records_of(lf.body)
    }
    assert '"reason": "digest_mismatch"' not in first.output

    # Files done before are skipped, so not read or checked again; --force checks anew,
    # in its own namespace (its pending hashes never meet the first run's).
    again = runner.invoke(backfill_command, backfill_args(sandbox, tmp_path, "--verify-digests"))
    assert again.exit_code == 0, again.output
    assert "0 processed, 4 already done" in again.output
    assert "2 of them digest file(s): 0 log file(s) checked, 0 not matching" in again.output
    forced = runner.invoke(
        backfill_command, backfill_args(sandbox, tmp_path, "--verify-digests", "--force")
    )
    assert forced.exit_code == 0, forced.output
    assert "2 log file(s) checked, 0 not matching" in forced.output

    # Without the flag, nothing about digests (as before).
    plain = runner.invoke(
        backfill_command, backfill_args(sandbox, tmp_path, "--force", "--no-verify-digests")
    )
    assert plain.exit_code == 0, plain.output
    assert "2 file(s) listed: 2 processed" in plain.output
    assert "digest file(s)" not in plain.output and '"verify_digests": false' in plain.output


def test_backfill_verify_digests_reports_a_tampered_log(
    sandbox: TrailSandbox, tmp_path: Path, private_key: rsa.RSAPrivateKey
) -> None:
    """A log file changed after delivery is reported as in the SQS path: on_error with a
    DigestMismatch, trailproc_errors_total and the digest-check counter; its records are
    still handed over. The command prints it as an error line and exits 1."""
    from click.testing import CliRunner

    from trailproc._backfill import backfill
    from trailproc._backfill_cli import backfill_command

    digests, _logs = backfill_hours(sandbox, private_key)
    target = digests[1].logs[1]
    changed = tamper(sandbox, target)
    user = Collect()

    result = backfill(
        sandbox.bucket, user, start_time="2026-11-01T04:00Z", end_time="2026-11-01T05:00Z",
        checkpoint="memory", verify_digests=True, progress=False, late_delivery_minutes=0,
    )  # fmt: skip

    assert result.digests_listed == 2 and result.listed == 4
    assert (result.digest_matches, result.digest_mismatches) == (1, 1)
    assert checks(result, "match") == 1 and checks(result, "mismatch") == 1
    assert errors(result, "digest_mismatch") == 1
    assert result.files_failed == 0 and not result.ok  # a finding, not a failed file
    assert len(user.errors) == 1
    error = user.errors[0]
    assert isinstance(error, DigestMismatch)
    assert (error.bucket, error.key) == (sandbox.bucket, target.key)
    assert (error.digest_bucket, error.digest_key) == (sandbox.bucket, digests[1].key)
    assert error.expected == target.sha256
    assert error.actual == hashlib.sha256(changed).hexdigest()
    assert b"DeleteTrail" in b"".join(user.raws()) and len(user.events) == 6
    assert user.keys() == {lf.key for lf in digests[1].logs}

    cli = CliRunner().invoke(backfill_command, backfill_args(sandbox, tmp_path, "--verify-digests"))
    assert cli.exit_code == 1, cli.output
    assert "4 file(s) listed: 4 processed, 0 already done, 0 failed" in cli.output
    assert "2 of them digest file(s): 2 log file(s) checked, 1 not matching" in cli.output
    lines = [json.loads(line) for line in cli.output.splitlines() if line.startswith("{")]
    logged = [line for line in lines if line.get("reason") == "digest_mismatch"]
    assert len(logged) == 1
    assert logged[0]["level"] == "error" and logged[0]["key"] == target.key
    assert logged[0]["digest_key"] == digests[1].key
    assert logged[0]["actual_sha256"] == hashlib.sha256(changed).hexdigest()


def test_backfill_verify_digests_finds_the_digest_after_midnight(
    sandbox: TrailSandbox, private_key: rsa.RSAPrivateKey
) -> None:
    """Without a start time the day folders are discovered from the log files; the
    digest of a day's last hour lies in the next day's folder, which has no log files."""
    from trailproc._backfill import backfill

    signer = DigestChainSigner(private_key, bucket=sandbox.bucket, sink=sandbox.client("s3"))
    (digest,) = signer.run_hours(dt.datetime(2026, 11, 1, 23, tzinfo=dt.timezone.utc), 1)
    assert "/2026/11/02/" in digest.key and all("/2026/11/01/" in lf.key for lf in digest.logs)
    user = Collect()

    result = backfill(
        sandbox.bucket, user, end_time="2026-11-02T00:00Z", checkpoint="memory",
        verify_digests=True, progress=False,
    )  # fmt: skip

    assert (result.listed, result.digests_listed) == (3, 1)
    assert (result.digest_matches, result.digest_mismatches) == (2, 0)
    assert result.ok and user.errors == [] and len(user.events) == 6


def test_backfill_verify_digests_lists_each_folder_once(
    sandbox: TrailSandbox, private_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest walk reuses the log walk's folder listings (accounts, regions, years,
    months, days): with discovered days, no folder is listed twice in one run, and the
    next day's digest folder is still found."""
    from trailproc._backfill import backfill

    signer = DigestChainSigner(private_key, bucket=sandbox.bucket, sink=sandbox.client("s3"))
    signer.run_hours(dt.datetime(2026, 11, 1, 22, tzinfo=dt.timezone.utc), 2)
    with FaultProxy(sandbox.endpoint_url, faults=NO_FAULTS) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = backfill(
            sandbox.bucket, Collect(), end_time="2026-11-02T00:00Z", checkpoint="memory",
            verify_digests=True, progress=False,
        )  # fmt: skip

    assert (result.digests_listed, result.digest_matches, result.digest_mismatches) == (2, 4, 0)
    folder_listings = [
        path for method, path in proxy.requests if method == "GET" and "delimiter=" in path
    ]
    assert folder_listings, "the walk lists folders with a delimiter"
    repeated = {p for p in folder_listings if folder_listings.count(p) > 1}
    assert not repeated, f"folders listed more than once: {sorted(repeated)}"
