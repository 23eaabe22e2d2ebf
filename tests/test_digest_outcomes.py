"""Inline digest checks: a log file hash whose digest never arrives becomes the outcome
"unverified" (counted, logged once), instead of expiring silently."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

from trailproc._observe import Metrics
from trailproc._pipeline.digests import DigestListing, HashCheck, PendingDigestChecks
from trailproc._pipeline.engine import FilePipeline, PipelineSettings
from trailproc._pipeline.fetch import LocalFetcher
from trailproc._pipeline.observer import PipelineObserver
from trailproc._pipeline.processor import EventProcessor
from trailproc.checkpoint._memory import MemoryStore
from trailproc.checkpoint._sqlite import SqliteStore

WAIT = 3600.0
BUCKET = "trail-bucket"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Nothing(EventProcessor):
    def process(self, events: list[Any]) -> None:
        pass


def _sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _pipeline(store: Any) -> tuple[FilePipeline, Clock]:
    user = Nothing()
    observer = PipelineObserver(user, Metrics(), digest_store=store, digest_wait_seconds=WAIT)
    pipeline = FilePipeline(
        processor=user,
        store=store,
        fetcher=LocalFetcher(),
        observer=observer,
        settings=PipelineSettings(owner="test"),
    )
    clock = Clock()
    assert pipeline.digest_checks is not None
    pipeline.digest_checks.clock = clock
    return pipeline, clock


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_hash_whose_digest_never_comes_is_reported_unverified_once(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store: Any = MemoryStore() if kind == "memory" else SqliteStore(tmp_path / "state.db")
    pipeline, clock = _pipeline(store)
    checks = pipeline.digest_checks
    assert checks is not None

    async def scenario() -> None:
        await checks.log_processed(BUCKET, "a.json.gz", _sha("a"))
        await checks.log_processed(BUCKET, "b.json.gz", _sha("b"))
        # The digest of "a" arrives; "b"'s never does.
        await checks.digest_processed(
            DigestListing(BUCKET, "digest.json.gz", ((BUCKET, "a.json.gz", _sha("a")),))
        )
        clock.now += WAIT - 1
        assert await checks.sweep() == []  # not yet due
        clock.now += 2
        await checks.log_processed(BUCKET, "c.json.gz", _sha("c"))  # sweeps on the way
        assert await checks.sweep() == []  # reported once, not on every sweep
        await store.close()

    asyncio.run(scenario())
    metrics = pipeline.observer.metrics
    assert metrics.value("trailproc_digest_checks_total", outcome="match") == 1
    assert metrics.value("trailproc_digest_checks_total", outcome="unverified") == 1
    assert metrics.value("trailproc_digest_checks_total", outcome="mismatch") == 0
    assert metrics.value("trailproc_errors_total", reason="digest_mismatch") == 0
    logged = capsys.readouterr()
    lines = [line for line in (logged.out + logged.err).splitlines() if "unverified" in line]
    assert len(lines) == 1 and "b.json.gz" in lines[0]


def test_two_workers_report_a_missing_digest_once_and_a_late_digest_still_matches() -> None:
    store = MemoryStore()
    reports: list[HashCheck] = []
    clock = Clock()
    first = PendingDigestChecks(store, reports.append, wait_seconds=WAIT, clock=clock)
    second = PendingDigestChecks(store, reports.append, wait_seconds=WAIT, clock=clock)

    async def scenario() -> None:
        # The same log file processed by both workers (a redelivered notification).
        await first.log_processed(BUCKET, "x.json.gz", _sha("x"))
        await second.log_processed(BUCKET, "x.json.gz", _sha("x"))
        await first.log_processed(BUCKET, "y.json.gz", _sha("y"))
        # y's digest arrives at the other worker before the wait is over.
        await second.digest_processed(
            DigestListing(BUCKET, "d.json.gz", ((BUCKET, "y.json.gz", _sha("y")),))
        )
        clock.now += WAIT + 1
        await first.sweep()
        await second.sweep()

    asyncio.run(scenario())
    assert sorted((c.key, c.outcome) for c in reports) == [
        ("x.json.gz", "unverified"),
        ("y.json.gz", "match"),
    ]


# --- gap filling: a digest lists a file no notification named -------------------------------


def test_a_digest_listing_a_never_notified_file_makes_the_daemon_hand_it_over(
    sandbox: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import datetime as dt

    from faultproxy import event_ids
    from helpers import run_in_process

    from trailproc._sandbox import make_records
    from trailproc.integrity._testing import DigestChainSigner, new_private_key

    t0 = dt.datetime(2026, 11, 1, 3, tzinfo=dt.timezone.utc)
    signer = DigestChainSigner(new_private_key(), bucket=sandbox.bucket, sink=sandbox.client("s3"))
    records = [make_records(4, seed=i, start=t0 + dt.timedelta(minutes=5 * i)) for i in range(3)]
    logs = [signer.put_log(r, when=t0 + dt.timedelta(minutes=5 * i + 5))
            for i, r in enumerate(records)]  # fmt: skip
    digest = signer.write_digest(t0 + dt.timedelta(hours=1), start=t0)
    out = tmp_path / "out.jsonl"
    settings = {"verify_digests": True, "fill_gaps_from_digests": True, "output": str(out)}

    sandbox.notify([logs[0].key, logs[2].key])  # logs[1]'s notification never comes
    first = run_in_process(sandbox, tmp_path, **settings)
    assert first.metrics.value("trailproc_missed_deliveries_total") == 0
    sandbox.notify([digest.key])
    second = run_in_process(sandbox, tmp_path, **settings)
    assert second.metrics.value("trailproc_missed_deliveries_total") == 1
    # The fetched file met the digest's expected hash like a notified one.
    assert second.metrics.value("trailproc_digest_checks_total", outcome="match") == 3
    every = [r["eventID"] for batch in records for r in batch]
    assert sorted(event_ids(str(out)).elements()) == sorted(every)  # each record once
    logged = capsys.readouterr()
    lines = [line for line in (logged.out + logged.err).splitlines() if "never notified" in line]
    assert len(lines) == 1 and logs[1].key in lines[0]

    # Its late notification finds it done: nothing handed over twice.
    sandbox.notify([logs[1].key])
    third = run_in_process(sandbox, tmp_path, **settings)
    assert third.files_skipped == 1 and third.records == 0


def test_gap_filling_only_trusts_a_digest_for_its_own_bucket_account_and_region() -> None:
    from trailproc._pipeline.gaps import GapFiller
    from trailproc._pipeline.keys import FileRef
    from trailproc._sandbox import log_key

    digest = FileRef.of(BUCKET, "AWSLogs/111111111111/CloudTrail-Digest/us-east-1/2026/11/01/"
                        "111111111111_CloudTrail-Digest_us-east-1_t_us-east-1_20261101T040000Z"
                        ".json.gz")  # fmt: skip
    own = log_key("111111111111", "us-east-1")
    unseen = [
        (BUCKET, own),
        ("other-bucket", own),
        (BUCKET, log_key("222222222222", "us-east-1")),
        (BUCKET, log_key("111111111111", "eu-west-1")),
        (BUCKET, "AWSLogs/not-a-log-file.txt"),
    ]
    filler = GapFiller(None, None)
    assert [r.key for r in filler.candidates(digest, unseen)] == [own]
    assert GapFiller(None, None, allowed_accounts=["999999999999"]).candidates(digest, unseen) == []
    assert GapFiller(None, None, allowed_buckets=["elsewhere"]).candidates(digest, unseen) == []
