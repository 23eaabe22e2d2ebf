"""Review findings in offline digest-chain validation (`trailproc validate` and
`trailproc.integrity.validate`), against moto's S3 over real HTTP or a local mirror."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa

from trailproc.integrity import validate
from trailproc.integrity.cli import validate_command
from trailproc.integrity.testing import DigestChainSigner, SignedDigest, new_private_key
from trailproc.sandbox import MotoServer

BUCKET = "trail-bucket"
ACCOUNT = "123456789012"
TRAIL = "test-trail"
ARN = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
HOUR = dt.timedelta(hours=1)
# Real digests are not on the hour: CloudTrail's end times drift (e.g. 05:01:31).
OFFSET = dt.timedelta(minutes=1, seconds=31)


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return new_private_key()


@pytest.fixture
def s3(aws_env: MotoServer) -> Any:
    client = boto3.client(
        "s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1"
    )
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def signer(s3: Any, private_key: rsa.RSAPrivateKey) -> DigestChainSigner:
    return DigestChainSigner(private_key, bucket=BUCKET, sink=s3, trail_name=TRAIL)


@pytest.fixture
def key_file(tmp_path: Path, private_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "cloudtrail-us-east-1.pem"
    path.write_bytes(DigestChainSigner(private_key, bucket=BUCKET, sink=tmp_path).public_key_pem())
    return path


def cli(start: str, end: str, key: Path, *args: str | Path) -> Any:
    argv = ["--trail-arn", ARN, "--s3-bucket", BUCKET, "--start-time", start, "--end-time", end]
    return CliRunner().invoke(
        validate_command, [*argv, "--public-key-file", str(key), *map(str, args)]
    )


def stderr_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def uri(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


def drifting_hours(signer: DigestChainSigner, hours: int) -> list[SignedDigest]:
    """`hours` hourly digests ending at HH:01:31, each listing logs delivered at :05 and :30."""
    out = []
    for h in range(hours):
        for minutes in (5, 30):
            when = T0 + h * HOUR + dt.timedelta(minutes=minutes)
            signer.put_log([{"eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")}], when=when)
        out.append(signer.write_digest(T0 + (h + 1) * HOUR + OFFSET, start=T0 + h * HOUR + OFFSET))
    return out


def test_digest_ending_after_end_time_checks_logs_delivered_before_it(
    s3: Any, signer: DigestChainSigner, key_file: Path
) -> None:
    # Logs delivered at 05:05 and 05:30 are listed by the digest ending at 06:01:31, after
    # --end-time 06:00. `aws cloudtrail validate-logs` reads digests up to an hour past the
    # end for exactly this; skipping it leaves the last hour of the range unchecked.
    digests = drifting_hours(signer, 6)
    victim = digests[-1].logs[1].key
    s3.put_object(Bucket=BUCKET, Key=victim, Body=gzip.compress(b'{"Records":[]}'))
    result = cli("2026-11-01T00:00:00Z", "2026-11-01T06:00:00Z", key_file)
    assert result.exit_code == 1, result.output
    assert stderr_lines(result) == [f"Log file\t{uri(victim)}\tINVALID: hash value doesn't match"]
    assert "6/6 digest files valid\n" in result.stdout
    assert "11/12 log files valid, 1/12 log files INVALID" in result.stdout
    # As the AWS CLI does, the range found never ends after the range requested.
    assert "Results found for 2026-11-01T00:01:31Z to 2026-11-01T06:00:00Z:" in result.stdout


def test_newest_digest_in_range_deleted_is_found_through_the_next_one(
    s3: Any, signer: DigestChainSigner, key_file: Path
) -> None:
    # --end-time 05:30: the digest ending 05:01:31 is the newest in range. Deleted, it is
    # only noticed through the one ending 06:01:31 (which lists the 05:05 and 05:30 logs).
    digests = drifting_hours(signer, 7)
    s3.delete_object(Bucket=BUCKET, Key=digests[4].key)
    result = cli("2026-11-01T00:00:00Z", "2026-11-01T05:30:00Z", key_file)
    assert result.exit_code == 1, result.output
    assert stderr_lines(result) == [f"Digest file\t{uri(digests[4].key)}\tINVALID: not found"]
    # 06:01:31 (starts 05:01:31, before the end) and 01..04 valid; 07:01:31 not read.
    assert "5/6 digest files valid, 1/6 digest files INVALID" in result.stdout
    assert "10/10 log files valid\n" in result.stdout


def test_digest_overwritten_with_another_is_reported_once_as_moved(
    s3: Any, signer: DigestChainSigner, key_file: Path
) -> None:
    # The 03:00 digest replaced by a (validly signed) copy of the 02:00 one: one file, one
    # verdict. It was reported both "moved" and "not found" (though it is there).
    digests = signer.run_hours(T0, 6)
    s3.copy_object(
        Bucket=BUCKET, Key=digests[2].key, CopySource={"Bucket": BUCKET, "Key": digests[1].key}
    )
    result = cli("2026-11-01T00:00:00Z", "2026-11-01T06:00:00Z", key_file)
    assert result.exit_code == 1
    assert stderr_lines(result) == [
        f"Digest file\t{uri(digests[2].key)}\tINVALID: has been moved from its original location"
    ]
    assert "5/6 digest files valid, 1/6 digest files INVALID" in result.stdout
    assert "10/10 log files valid\n" in result.stdout


@pytest.fixture
def tokyo_time() -> Iterator[None]:
    """The process's local time zone is UTC+9 for the test."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_library_reads_naive_times_as_utc(
    private_key: rsa.RSAPrivateKey, tmp_path: Path, tokyo_time: None
) -> None:
    # Naive datetimes are UTC everywhere in trailproc (and CloudTrail); validate() read
    # them in the machine's local zone, missing every digest 9 hours away.
    signer = DigestChainSigner(private_key, bucket=BUCKET, sink=tmp_path, trail_name=TRAIL)
    digests = signer.run_hours(T0, 3)
    report = validate(
        ARN,
        BUCKET,
        dt.datetime(2026, 11, 1),
        dt.datetime(2026, 11, 1, 3),
        local_dir=tmp_path,
        public_keys=[signer.public_key_pem()],
    )
    assert report.requested_start == T0 and report.requested_end == T0 + 3 * HOUR
    assert report.ok
    assert [r.key for r in report.digests] == [d.key for d in reversed(digests)]


def test_local_dir_unreadable_signature_file_fails_that_digest_only(
    private_key: rsa.RSAPrivateKey, tmp_path: Path, key_file: Path
) -> None:
    # A damaged `<digest>.signature` sidecar (not hex text) is a failed signature for that
    # digest, not a crash of the whole run.
    mirror = tmp_path / "mirror"
    signer = DigestChainSigner(private_key, bucket=BUCKET, sink=mirror, trail_name=TRAIL)
    digests = signer.run_hours(T0, 3)
    (mirror / (digests[-1].key + ".signature")).write_bytes(b"\xc3\xa9\xff not hex")
    result = cli("2026-11-01T00:00:00Z", "2026-11-01T03:00:00Z", key_file, "--local-dir", mirror)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1
    assert stderr_lines(result) == [
        f"Digest file\t{uri(digests[-1].key)}\tINVALID: signature verification failed"
    ]
    assert "2/3 digest files valid, 1/3 digest files INVALID" in result.stdout
    assert "4/4 log files valid\n" in result.stdout


def test_chain_continues_into_the_trails_previous_bucket(
    s3: Any, private_key: rsa.RSAPrivateKey, key_file: Path
) -> None:
    # The trail delivered to "old-bucket" until 02:00, then to BUCKET: the 03:00 digest
    # names its predecessor in old-bucket. That digest is there (and valid), so it must be
    # checked there, as the AWS CLI does, not reported "not found".
    s3.create_bucket(Bucket="old-bucket")
    signer = DigestChainSigner(private_key, bucket="old-bucket", sink=s3, trail_name=TRAIL)
    old = signer.run_hours(T0, 2)
    signer.bucket = BUCKET
    new = signer.run_hours(T0 + 2 * HOUR, 2)
    assert new[0].document["previousDigestS3Bucket"] == "old-bucket"
    result = cli("2026-11-01T00:00:00Z", "2026-11-01T04:00:00Z", key_file, "--verbose")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "4/4 digest files valid\n" in result.stdout
    assert "8/8 log files valid\n" in result.stdout
    assert f"Digest file\ts3://old-bucket/{old[0].key}\tvalid" in result.stdout
    assert f"Log file\ts3://old-bucket/{old[0].logs[0].key}\tvalid" in result.stdout

    # A digest missing from the old bucket is still reported, under that bucket.
    s3.delete_object(Bucket="old-bucket", Key=old[1].key)
    result = cli("2026-11-01T00:00:00Z", "2026-11-01T04:00:00Z", key_file)
    assert result.exit_code == 1
    assert stderr_lines(result) == [
        f"Digest file\ts3://old-bucket/{old[1].key}\tINVALID: not found"
    ]
