"""Digests deleted from the end of the range: named from the hourly cadence and from
CloudTrail's GetTrailStatus, never "all valid".

No newer digest links to the deleted ones, so only the cadence (one digest an hour while
logging is on) and GetTrailStatus's `LatestDigestDeliveryTime` can show they are gone.
moto's GetTrailStatus has no digest fields, so the test proxy answers that API in
CloudTrail's JSON wire format (epoch seconds), as CloudTrail does.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa
from faultproxy import NO_FAULTS, FaultProxy

from trailproc._sandbox import MotoServer
from trailproc.integrity import Status, validate
from trailproc.integrity._cli import validate_command
from trailproc.integrity._testing import DigestChainSigner, new_private_key
from trailproc.integrity._validator import TrailDelivery

BUCKET, TRAIL, ACCOUNT = "trail-bucket", "test-trail", "123456789012"
ARN = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
HOUR = dt.timedelta(hours=1)


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


def make_signer(s3: Any, key: rsa.RSAPrivateKey, region: str = "us-east-1") -> DigestChainSigner:
    return DigestChainSigner(
        key, bucket=BUCKET, sink=s3, trail_name=TRAIL, region=region, home_region="us-east-1"
    )


@pytest.fixture
def key_file(tmp_path: Path, private_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "key.pem"
    path.write_bytes(make_signer(None, private_key).public_key_pem())
    return path


def cli(key: Path, *args: str, end: str = "2026-11-01T06:00:00Z") -> Any:
    argv = ["--trail-arn", ARN, "--s3-bucket", BUCKET, "--start-time", "2026-11-01T00:00:00Z",
            "--end-time", end, "--public-key-file", str(key), *args]  # fmt: skip
    return CliRunner().invoke(validate_command, argv)


def errors(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def trail_status_answer(last_digest: dt.datetime | None, requests: list[dict[str, Any]]) -> Any:
    """GetTrailStatus as CloudTrail answers it (JSON 1.1, times as epoch seconds)."""

    def answer(body: bytes) -> tuple[int, dict[str, str], bytes]:
        requests.append(json.loads(body or b"{}"))
        status: dict[str, Any] = {"IsLogging": last_digest is None}
        if last_digest is not None:
            status["LatestDigestDeliveryTime"] = last_digest.timestamp()
            status["StopLoggingTime"] = last_digest.timestamp()
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(status).encode()

    return answer


def proxied(moto: MotoServer, answer: Any) -> FaultProxy:
    return FaultProxy(moto.url, faults=NO_FAULTS, answers={"GetTrailStatus": answer})


def test_deleted_trailing_digests_are_named_by_the_cadence(
    s3: Any, private_key: rsa.RSAPrivateKey, key_file: Path
) -> None:
    digests = make_signer(s3, private_key).run_hours(T0, 6)
    for victim in digests[4:]:
        s3.delete_object(Bucket=BUCKET, Key=victim.key)
    result = cli(key_file, "--no-trail-status")
    assert result.exit_code == 1, result.output
    missing = [d.key for d in reversed(digests[4:])]  # inferred keys: the real ones here
    assert errors(result) == [
        *(f"Digest file\ts3://{BUCKET}/{key}\tINVALID: not found (expected from the hourly "
          "digest cadence)" for key in missing),
        f"Digest files missing for account {ACCOUNT} in us-east-1: none after "
        "2026-11-01T04:00:00Z, 2 hourly digests expected from 2026-11-01T05:00:00Z to "
        "2026-11-01T06:00:00Z (judged by the hourly cadence; GetTrailStatus: not asked)",
    ]  # fmt: skip
    assert "4/6 digest files valid, 2/6 digest files INVALID" in result.stdout
    assert "8/8 log files valid" in result.stdout


def test_trail_status_names_the_last_delivery(
    s3: Any,
    private_key: rsa.RSAPrivateKey,
    key_file: Path,
    aws_env: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digests = make_signer(s3, private_key).run_hours(T0, 6)
    s3.delete_object(Bucket=BUCKET, Key=digests[-1].key)
    requests: list[dict[str, Any]] = []
    delivered = T0 + 6 * HOUR + dt.timedelta(minutes=2)
    with proxied(aws_env, trail_status_answer(delivered, requests)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = cli(key_file, "--json")
    assert result.exit_code == 1, result.output
    assert proxy.stats["answered:GetTrailStatus"] == 1 and requests == [{"Name": ARN}]
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert report["missing_trailing_digests"] == [{
        "account_id": ACCOUNT, "region": "us-east-1", "after": "2026-11-01T05:00:00Z",
        "hours": ["2026-11-01T06:00:00Z"], "last_delivery": "2026-11-01T06:02:00Z",
        "status_note": None,
    }]  # fmt: skip
    inferred = [d for d in report["digest_files"] if d.get("inferred")]
    assert [d["key"] for d in inferred] == [digests[-1].key]
    assert inferred[0]["status"] == "not_found"


def test_a_trail_that_stopped_delivering_is_not_a_deletion(
    s3: Any,
    private_key: rsa.RSAPrivateKey,
    key_file: Path,
    aws_env: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Logging stopped at 04:00: GetTrailStatus's last digest delivery says no digest after
    # it was ever written, so the hours up to 06:00 are not missing.
    make_signer(s3, private_key).run_hours(T0, 4)
    requests: list[dict[str, Any]] = []
    with proxied(aws_env, trail_status_answer(T0 + 4 * HOUR, requests)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = cli(key_file)
        assert result.exit_code == 0, result.output
        assert "4/4 digest files valid\n" in result.stdout and errors(result) == []
        # Without GetTrailStatus, the same bucket cannot be told from a deletion.
        result = cli(key_file, "--no-trail-status")
    assert result.exit_code == 1
    assert "2 hourly digests expected from 2026-11-01T05:00:00Z" in result.stderr
    assert proxy.stats["answered:GetTrailStatus"] == 1


def test_trail_status_that_fails_falls_back_to_the_cadence(
    s3: Any,
    private_key: rsa.RSAPrivateKey,
    key_file: Path,
    aws_env: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    digests = make_signer(s3, private_key).run_hours(T0, 6)
    s3.delete_object(Bucket=BUCKET, Key=digests[-1].key)

    def denied(body: bytes) -> tuple[int, dict[str, str], bytes]:
        payload = {"__type": "AccessDeniedException", "message": "not allowed"}
        return 400, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(payload).encode()

    with proxied(aws_env, denied) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = cli(key_file)
    assert result.exit_code == 1
    tail = errors(result)[-1]
    assert tail.startswith(
        f"Digest files missing for account {ACCOUNT} in us-east-1: none after "
        "2026-11-01T05:00:00Z, 1 hourly digest expected from 2026-11-01T06:00:00Z to "
        "2026-11-01T06:00:00Z (judged by the hourly cadence; GetTrailStatus: unavailable ("
    )
    assert "AccessDenied" in tail


def test_the_hour_not_yet_due_is_not_missing(
    private_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    # A range ending "now": the digest of the hour in progress is not written yet.
    signer = DigestChainSigner(private_key, bucket=BUCKET, sink=tmp_path, trail_name=TRAIL)
    signer.run_hours(T0, 3)
    end = T0 + 3 * HOUR + dt.timedelta(minutes=40)

    def run(now: dt.datetime) -> Any:
        return validate(ARN, BUCKET, T0, end, local_dir=tmp_path, now=now,
                        public_keys=[signer.public_key_pem()])  # fmt: skip

    assert run(end).ok
    later = run(end + 2 * HOUR)  # by then, the 04:00 digest is overdue
    assert not later.ok
    assert [t.hours for t in later.missing_tails] == [(T0 + 4 * HOUR,)]


def test_given_delivery_time_decides_without_asking(
    private_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    signer = DigestChainSigner(private_key, bucket=BUCKET, sink=tmp_path, trail_name=TRAIL)
    digests = signer.run_hours(T0, 5)
    (tmp_path / digests[-1].key).unlink()
    (tmp_path / digests[-2].key).unlink()
    report = validate(ARN, BUCKET, T0, T0 + 5 * HOUR, local_dir=tmp_path,
                      public_keys=[signer.public_key_pem()],
                      trail_status=TrailDelivery(last_digest_delivery=T0 + 5 * HOUR))  # fmt: skip
    assert [t.hours for t in report.missing_tails] == [(T0 + 4 * HOUR, T0 + 5 * HOUR)]
    assert [r.key for r in report.digests if r.status is Status.NOT_FOUND] == [
        digests[-1].key,
        digests[-2].key,
    ]


def test_drifting_digest_times_and_the_digest_past_the_end(
    s3: Any, private_key: rsa.RSAPrivateKey, key_file: Path
) -> None:
    # Real digests end at HH:01:31. The one ending 06:01:31 lists files delivered before
    # --end-time 06:00; deleted, it is missing. Present, nothing is.
    signer = make_signer(s3, private_key)
    offset = dt.timedelta(minutes=1, seconds=31)
    digests = []
    for h in range(6):
        when = T0 + h * HOUR + dt.timedelta(minutes=20)
        signer.put_log([{"eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ")}], when=when)
        digests.append(signer.write_digest(T0 + (h + 1) * HOUR + offset))
    assert cli(key_file, "--no-trail-status").exit_code == 0
    s3.delete_object(Bucket=BUCKET, Key=digests[-1].key)
    result = cli(key_file, "--no-trail-status")
    assert result.exit_code == 1
    assert f"Digest file\ts3://{BUCKET}/{digests[-1].key}\tINVALID: not found" in result.stderr
    assert "none after 2026-11-01T05:01:31Z, 1 hourly digest expected" in result.stderr


def test_each_region_is_held_to_the_cadence(
    s3: Any, private_key: rsa.RSAPrivateKey, key_file: Path
) -> None:
    home = make_signer(s3, private_key).run_hours(T0, 6)
    other = make_signer(s3, private_key, region="eu-west-1").run_hours(T0, 6)
    for victim in other[3:]:
        s3.delete_object(Bucket=BUCKET, Key=victim.key)
    result = cli(key_file, "--no-trail-status")
    assert result.exit_code == 1
    tails = [line for line in errors(result) if line.startswith("Digest files missing")]
    assert (
        len(tails) == 1 and " in eu-west-1: none after 2026-11-01T03:00:00Z, 3 hourly" in tails[0]
    )
    assert home[-1].key not in result.stderr
    assert "9/12 digest files valid, 3/12 digest files INVALID" in result.stdout


def test_a_region_whose_digests_in_range_were_all_deleted(
    s3: Any, private_key: rsa.RSAPrivateKey, key_file: Path
) -> None:
    # Both regions delivered from 21:00 the day before; eu-west-1 lost every digest of
    # the range. Nothing in range links to them: its last digest before the range and
    # the cadence name the six hours.
    make_signer(s3, private_key).run_hours(T0 - 3 * HOUR, 9)
    other = make_signer(s3, private_key, region="eu-west-1").run_hours(T0 - 3 * HOUR, 9)
    for victim in other[2:]:  # 00:00 .. 06:00
        s3.delete_object(Bucket=BUCKET, Key=victim.key)
    result = cli(key_file, "--no-trail-status")
    assert result.exit_code == 1, result.output
    tails = [line for line in errors(result) if line.startswith("Digest files missing")]
    assert tails == [
        f"Digest files missing for account {ACCOUNT} in eu-west-1: none after "
        "2026-10-31T23:00:00Z, 6 hourly digests expected from 2026-11-01T01:00:00Z to "
        "2026-11-01T06:00:00Z (judged by the hourly cadence; GetTrailStatus: not asked)"
    ]
    # The 00:00 digest lists files delivered before the range: not counted against it.
    assert other[2].key not in result.stderr and other[3].key in result.stderr


def test_digests_deleted_from_the_start_of_the_range_are_each_named(
    s3: Any, private_key: rsa.RSAPrivateKey, key_file: Path
) -> None:
    digests = make_signer(s3, private_key).run_hours(T0, 6)
    for victim in digests[:2]:
        s3.delete_object(Bucket=BUCKET, Key=victim.key)
    result = cli(key_file, "--no-trail-status")
    assert result.exit_code == 1
    assert errors(result) == [
        f"Digest file\ts3://{BUCKET}/{digests[1].key}\tINVALID: not found",
        f"Digest file\ts3://{BUCKET}/{digests[0].key}\tINVALID: not found",
    ]
    assert "4/6 digest files valid, 2/6 digest files INVALID" in result.stdout
