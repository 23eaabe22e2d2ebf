"""`trailproc audit`: missed deliveries found from the bucket listing and the digests, and
filled with --fix (in place or through the queue), against moto over real HTTP."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from faultproxy import event_ids
from helpers import run_in_process

from trailproc._cli import main
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records
from trailproc.integrity._testing import DigestChainSigner, new_private_key

ACCOUNT, REGION = "123456789012", "us-east-1"
DAY = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
RANGE = ["--start-time", "2026-11-01T00:00Z", "--end-time", "2026-11-02T00:00Z"]


def _deliveries(sandbox: TrailSandbox, count: int, withheld: set[int]) -> dict[str, list[str]]:
    """`count` log files in the bucket; all but the `withheld` ones notified.
    Returns {key: [eventID, ...]}."""
    files = {}
    for i in range(count):
        when = DAY + dt.timedelta(hours=1, minutes=5 * i)
        records = make_records(4, seed=i, account=ACCOUNT, region=REGION, start=when)
        key = log_key(ACCOUNT, REGION, when)
        sandbox.put(key, encode_log(records))
        if i not in withheld:
            sandbox.notify([key])
        files[key] = [r["eventID"] for r in records]
    return files


def _audit(sandbox: TrailSandbox, *extra: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        main, ["audit", "--bucket", sandbox.bucket, *RANGE, "--json", "--no-progress", *extra]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def test_audit_names_exactly_the_withheld_files_and_fix_hands_them_over_once(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    files = _deliveries(sandbox, 6, withheld={1, 4})
    withheld = {list(files)[1], list(files)[4]}
    out = tmp_path / "out.jsonl"
    run_in_process(sandbox, tmp_path, output=str(out))

    code, report = _audit(sandbox)
    assert code == 1
    assert {m["key"] for m in report["missing"]} == withheld
    assert report["expected"] == 6 and report["handed_over"] == 4
    for missing in report["missing"]:
        assert missing["account_id"] == ACCOUNT and missing["region"] == REGION
        assert missing["delivered_at"].startswith("2026-11-01T01:")
        assert missing["in_bucket"] is True

    code, report = _audit(sandbox, "--fix", "--output", str(out))
    assert code == 0
    assert report["fix"] == {"handed_over": 2, "failed": 0, "records": 8}

    code, report = _audit(sandbox)
    assert code == 0 and report["missing"] == [] and report["handed_over"] == 6
    every = [event for ids in files.values() for event in ids]
    assert event_ids(str(out)) == Counter(every)  # each record once, none missing


def test_audit_fix_enqueue_lets_the_daemon_fill_the_gap(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    files = _deliveries(sandbox, 13, withheld={0, 2, 3, 5, 7, 8, 9, 10, 11, 12, 6})
    out = tmp_path / "out.jsonl"
    run_in_process(sandbox, tmp_path, output=str(out))
    code, report = _audit(sandbox, "--fix", "--enqueue", sandbox.queue_url)
    assert code == 0  # every missing file was enqueued (11: two SendMessageBatch calls)
    assert report["fix"]["enqueued"] == 11 and len(report["missing"]) == 11

    run_in_process(sandbox, tmp_path, output=str(out))
    code, report = _audit(sandbox)
    assert code == 0 and report["handed_over"] == 13
    every = [event for ids in files.values() for event in ids]
    assert event_ids(str(out)) == Counter(every)


def test_audit_expects_what_digests_list_even_when_the_bucket_lost_it(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    s3 = sandbox.client("s3")
    signer = DigestChainSigner(new_private_key(), sandbox.bucket, s3, account_id=ACCOUNT,
                               region=REGION)  # fmt: skip
    kept = signer.put_log(make_records(3, seed=1), when=DAY + dt.timedelta(hours=2, minutes=5))
    lost = signer.put_log(make_records(3, seed=2), when=DAY + dt.timedelta(hours=2, minutes=25))
    signer.write_digest(DAY + dt.timedelta(hours=3))
    s3.delete_object(Bucket=sandbox.bucket, Key=lost.key)

    code, report = _audit(sandbox)
    assert code == 1 and report["digests_read"] == 1
    assert {(m["key"], m["in_bucket"]) for m in report["missing"]} == {
        (kept.key, True),
        (lost.key, False),
    }
    out = tmp_path / "out.jsonl"
    code, report = _audit(sandbox, "--fix", "--output", str(out))
    assert code == 1  # the lost file cannot be handed over: still a gap
    code, report = _audit(sandbox)
    assert [(m["key"], m["in_bucket"]) for m in report["missing"]] == [(lost.key, False)]

    code, report = _audit(sandbox, "--no-digests")
    assert code == 0  # the listing alone cannot see what the bucket lost


def test_audit_reports_an_unreadable_digest_and_ignores_forged_entries(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    s3 = sandbox.client("s3")
    signer = DigestChainSigner(new_private_key(), sandbox.bucket, s3, account_id=ACCOUNT,
                               region=REGION)  # fmt: skip
    signer.put_log(make_records(2, seed=3), when=DAY + dt.timedelta(hours=4, minutes=5))
    # Entries a digest of this account and region never lists: another bucket, another
    # account, outside the range. None of them may become an expected file.
    foreign = [
        ("other-bucket", log_key(ACCOUNT, REGION, DAY + dt.timedelta(hours=4))),
        (sandbox.bucket, log_key("999999999999", REGION, DAY + dt.timedelta(hours=4))),
        (sandbox.bucket, log_key(ACCOUNT, REGION, DAY - dt.timedelta(days=3))),
    ]
    digest = signer.write_digest(DAY + dt.timedelta(hours=5))
    document = dict(digest.document)
    document["logFiles"] = [*document["logFiles"],
                            *({"s3Bucket": b, "s3Object": k, "hashValue": "00"}
                              for b, k in foreign)]  # fmt: skip
    import gzip

    s3.put_object(Bucket=sandbox.bucket, Key=digest.key, Body=gzip.compress(
        json.dumps(document).encode()))  # fmt: skip
    broken = digest.key.replace("T050000Z", "T060000Z")
    s3.put_object(Bucket=sandbox.bucket, Key=broken, Body=b"\x1f\x8bnot gzip")

    code, report = _audit(sandbox)
    assert code == 1
    assert len(report["missing"]) == 1  # only the real, unprocessed log file
    assert report["digests_read"] == 1
    assert len(report["digest_errors"]) == 1 and report["digest_errors"][0].startswith(broken)


def test_audit_command_usage_errors(sandbox: TrailSandbox) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["audit", "--bucket", sandbox.bucket, *RANGE, "--enqueue", "q"])
    assert result.exit_code == 2 and "--enqueue goes with --fix" in result.output
    result = runner.invoke(main, ["audit", "--bucket", sandbox.bucket, *RANGE, "--fix"])
    assert result.exit_code == 2 and "--handler or --output" in result.output
