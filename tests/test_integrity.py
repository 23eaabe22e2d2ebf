"""Digest-chain validation against moto's S3 over real HTTP, via the library and the CLI."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from trailproc._sandbox import MotoServer
from trailproc.integrity import FileKind, Status, validate
from trailproc.integrity._cli import validate_command
from trailproc.integrity._testing import (
    DigestChainSigner,
    SignedDigest,
    digest_key,
    new_private_key,
)

BUCKET = "trail-bucket"
ACCOUNT = "123456789012"
TRAIL = "test-trail"
ARN = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
START, END = "2026-11-01T00:00:00Z", "2026-11-01T06:00:00Z"
REPO = Path(__file__).resolve().parent.parent


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
def key_file(tmp_path: Path, signer: DigestChainSigner) -> Path:
    path = tmp_path / "cloudtrail-us-east-1.pem"
    path.write_bytes(signer.public_key_pem())
    return path


def cli(*args: str | Path, key: Path | None = None, end: str = END) -> Any:
    argv = ["--trail-arn", ARN, "--s3-bucket", BUCKET, "--start-time", START, "--end-time", end]
    if key is not None:
        argv += ["--public-key-file", str(key)]
    return CliRunner().invoke(validate_command, [*argv, *map(str, args)])


def stderr_lines(result: Any) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def uri(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


def test_intact_multi_hour_chain_passes(signer: DigestChainSigner, key_file: Path) -> None:
    digests = signer.run_hours(T0, 6)
    assert digests[0].document["previousDigestSignature"] is None  # chain start
    assert digests[1].document["previousDigestSignature"] == digests[0].signature
    result = cli(key=key_file)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = result.stdout
    assert f"Validating log files for trail {ARN} between {START} and {END}" in out
    assert f"Results requested for {START} to {END}" in out
    assert f"Results found for {START} to {END}:" in out
    assert "6/6 digest files valid\n" in out
    assert "12/12 log files valid\n" in out
    assert "INVALID" not in out


def test_verbose_lists_valid_files_on_stdout(signer: DigestChainSigner, key_file: Path) -> None:
    digests = signer.run_hours(T0, 2)
    result = cli("--verbose", key=key_file, end="2026-11-01T02:00:00Z")
    assert result.exit_code == 0
    assert f"Digest file\t{uri(digests[1].key)}\tvalid" in result.stdout
    assert f"Log file\t{uri(digests[0].logs[0].key)}\tvalid" in result.stdout
    # newest first
    assert result.stdout.index(digests[1].key) < result.stdout.index(digests[0].key)


def test_modified_log_is_hash_mismatch(s3: Any, signer: DigestChainSigner, key_file: Path) -> None:
    digests = signer.run_hours(T0, 6)
    victim = digests[2].logs[1].key
    body = gzip.decompress(s3.get_object(Bucket=BUCKET, Key=victim)["Body"].read())
    s3.put_object(Bucket=BUCKET, Key=victim, Body=gzip.compress(body.replace(b"user-", b"User-")))
    result = cli(key=key_file)
    assert result.exit_code == 1
    assert stderr_lines(result) == [f"Log file\t{uri(victim)}\tINVALID: hash value doesn't match"]
    assert "6/6 digest files valid\n" in result.stdout
    assert "11/12 log files valid, 1/12 log files INVALID" in result.stdout


def test_deleted_log_is_not_found(s3: Any, signer: DigestChainSigner, key_file: Path) -> None:
    digests = signer.run_hours(T0, 6)
    victim = digests[4].logs[0].key
    s3.delete_object(Bucket=BUCKET, Key=victim)
    result = cli(key=key_file)
    assert result.exit_code == 1
    assert stderr_lines(result) == [f"Log file\t{uri(victim)}\tINVALID: not found"]
    assert "11/12 log files valid, 1/12 log files INVALID" in result.stdout


def test_tampered_digest_fails_signature(
    s3: Any, signer: DigestChainSigner, key_file: Path
) -> None:
    digests = signer.run_hours(T0, 6)
    victim = digests[2]
    doc = dict(victim.document, logFiles=victim.document["logFiles"][:1])  # hide a log file
    s3.put_object(
        Bucket=BUCKET,
        Key=victim.key,
        Body=gzip.compress(json.dumps(doc).encode()),
        Metadata={"signature": victim.signature, "signature-algorithm": "SHA256withRSA"},
    )
    result = cli(key=key_file)
    assert result.exit_code == 1
    assert stderr_lines(result) == [
        f"Digest file\t{uri(victim.key)}\tINVALID: signature verification failed"
    ]
    assert "5/6 digest files valid, 1/6 digest files INVALID" in result.stdout
    # the tampered digest's logs are not vouched for; the others are
    assert "10/10 log files valid\n" in result.stdout


def test_newest_digest_without_signature_metadata(
    s3: Any, signer: DigestChainSigner, key_file: Path
) -> None:
    digests = signer.run_hours(T0, 3)
    newest = digests[-1]
    s3.put_object(Bucket=BUCKET, Key=newest.key, Body=newest.body)  # metadata dropped
    result = cli(key=key_file, end="2026-11-01T03:00:00Z")
    assert result.exit_code == 1
    assert stderr_lines(result) == [
        f"Digest file\t{uri(newest.key)}\tINVALID: signature verification failed"
    ]
    # the older ones are still proven through the chain
    assert "2/3 digest files valid, 1/3 digest files INVALID" in result.stdout


def test_moved_digest(s3: Any, signer: DigestChainSigner, key_file: Path) -> None:
    digests = signer.run_hours(T0, 6)
    original = digests[2].key
    moved = digest_key(
        ACCOUNT, "us-east-1", TRAIL, "us-east-1", T0 + dt.timedelta(hours=3, minutes=30)
    )
    s3.copy_object(Bucket=BUCKET, Key=moved, CopySource={"Bucket": BUCKET, "Key": original})
    s3.delete_object(Bucket=BUCKET, Key=original)
    result = cli(key=key_file)
    assert result.exit_code == 1
    assert stderr_lines(result) == [
        f"Digest file\t{uri(moved)}\tINVALID: has been moved from its original location",
        f"Digest file\t{uri(original)}\tINVALID: not found",
    ]


def test_copied_digest_is_moved_and_chain_stays_intact(
    s3: Any, signer: DigestChainSigner, key_file: Path
) -> None:
    digests = signer.run_hours(T0, 4)
    copy = digest_key(
        ACCOUNT, "us-east-1", TRAIL, "us-east-1", T0 + dt.timedelta(hours=2, minutes=1)
    )
    s3.copy_object(Bucket=BUCKET, Key=copy, CopySource={"Bucket": BUCKET, "Key": digests[1].key})
    report = validate(
        ARN, BUCKET, T0, T0 + dt.timedelta(hours=6), public_keys=[signer.public_key_pem()]
    )
    statuses = {r.key: r.status for r in report.digests}
    assert statuses[copy] is Status.MOVED
    assert [statuses[d.key] for d in digests] == [Status.VALID] * 4
    assert all(r.ok for r in report.log_files) and len(report.log_files) == 8


def test_missing_digest(s3: Any, signer: DigestChainSigner, key_file: Path) -> None:
    digests = signer.run_hours(T0, 6)
    s3.delete_object(Bucket=BUCKET, Key=digests[2].key)
    result = cli(key=key_file)
    assert result.exit_code == 1
    assert stderr_lines(result) == [f"Digest file\t{uri(digests[2].key)}\tINVALID: not found"]
    assert "5/6 digest files valid, 1/6 digest files INVALID" in result.stdout
    assert "10/10 log files valid\n" in result.stdout


def test_two_consecutive_missing_digests_reported_individually(
    s3: Any, signer: DigestChainSigner, key_file: Path
) -> None:
    digests = signer.run_hours(T0, 6)
    for d in digests[2:4]:
        s3.delete_object(Bucket=BUCKET, Key=d.key)
    result = cli(key=key_file)
    assert result.exit_code == 1
    assert stderr_lines(result) == [
        f"Digest file\t{uri(digests[3].key)}\tINVALID: not found",
        f"Digest file\t{uri(digests[2].key)}\tINVALID: not found",
    ]
    assert "4/6 digest files valid, 2/6 digest files INVALID" in result.stdout


def test_oldest_digest_in_range_missing(s3: Any, signer: DigestChainSigner, key_file: Path) -> None:
    digests = signer.run_hours(T0, 4)
    s3.delete_object(Bucket=BUCKET, Key=digests[0].key)
    result = cli(key=key_file, end="2026-11-01T04:00:00Z")
    assert result.exit_code == 1
    assert stderr_lines(result) == [f"Digest file\t{uri(digests[0].key)}\tINVALID: not found"]


def test_chain_restart_is_a_gap_not_an_error(signer: DigestChainSigner, key_file: Path) -> None:
    signer.run_hours(T0, 2)
    signer.restart_chain()  # logging stopped for two hours, then restarted
    later = signer.run_hours(T0 + dt.timedelta(hours=4), 2)
    assert later[0].document["previousDigestS3Object"] is None
    assert later[0].document["previousDigestHashValue"] is None
    result = cli(key=key_file)
    assert result.exit_code == 0, result.output
    assert stderr_lines(result) == [
        "No log files were delivered by CloudTrail between 2026-11-01T02:00:00Z "
        "and 2026-11-01T04:00:00Z"
    ]
    assert "4/4 digest files valid\n" in result.stdout


def test_first_digest_in_range_starts_chain(signer: DigestChainSigner, key_file: Path) -> None:
    # The chain starts mid-range; nothing before it is missing.
    digests = signer.run_hours(T0 + dt.timedelta(hours=3), 2)
    assert digests[0].document["previousDigestSignature"] is None
    result = cli(key=key_file, end="2026-11-01T05:00:00Z")
    assert result.exit_code == 0, result.output
    assert "Results found for 2026-11-01T03:00:00Z to 2026-11-01T05:00:00Z:" in result.stdout


def test_empty_hour(signer: DigestChainSigner, key_file: Path) -> None:
    signer.run_hours(T0, 1)
    empty = signer.write_digest(T0 + dt.timedelta(hours=2))
    signer.run_hours(T0 + dt.timedelta(hours=2), 1)
    assert empty.document["logFiles"] == []
    assert empty.document["newestEventTime"] is None
    result = cli("--verbose", key=key_file, end="2026-11-01T03:00:00Z")
    assert result.exit_code == 0, result.output
    assert f"Digest file\t{uri(empty.key)}\tvalid" in result.stdout
    assert "3/3 digest files valid\n" in result.stdout
    assert "4/4 log files valid\n" in result.stdout


def test_non_gzip_log_is_invalid_format(signer: DigestChainSigner, key_file: Path) -> None:
    signer.run_hours(T0, 1)
    bad = signer.put_log(b'{"Records": []}', when=T0 + dt.timedelta(hours=1, minutes=10))
    signer.write_digest(T0 + dt.timedelta(hours=2))
    result = cli(key=key_file, end="2026-11-01T02:00:00Z")
    assert result.exit_code == 1
    assert stderr_lines(result) == [f"Log file\t{uri(bad.key)}\tINVALID: invalid format"]


def test_unparseable_digest_is_invalid_format(
    s3: Any, signer: DigestChainSigner, key_file: Path
) -> None:
    digests = signer.run_hours(T0, 3)
    s3.put_object(Bucket=BUCKET, Key=digests[1].key, Body=b"garbage")
    result = cli(key=key_file, end="2026-11-01T03:00:00Z")
    assert result.exit_code == 1
    assert stderr_lines(result) == [f"Digest file\t{uri(digests[1].key)}\tINVALID: invalid format"]
    assert "2/3 digest files valid, 1/3 digest files INVALID" in result.stdout


@pytest.mark.parametrize(
    ("form", "encoding"),
    [
        (serialization.PublicFormat.SubjectPublicKeyInfo, serialization.Encoding.PEM),
        (serialization.PublicFormat.SubjectPublicKeyInfo, serialization.Encoding.DER),
        (serialization.PublicFormat.PKCS1, serialization.Encoding.PEM),
        (serialization.PublicFormat.PKCS1, serialization.Encoding.DER),
    ],
)
@pytest.mark.parametrize(
    "published", [serialization.PublicFormat.SubjectPublicKeyInfo, serialization.PublicFormat.PKCS1]
)
def test_key_forms_accepted(
    s3: Any,
    private_key: rsa.RSAPrivateKey,
    tmp_path: Path,
    *,
    form: serialization.PublicFormat,
    encoding: serialization.Encoding,
    published: serialization.PublicFormat,
) -> None:
    # `published`: which DER form CloudTrail fingerprinted; `form`/`encoding`: the user's file.
    signer = DigestChainSigner(
        private_key, bucket=BUCKET, sink=s3, trail_name=TRAIL, key_form=published
    )
    signer.run_hours(T0, 2, logs_per_hour=1)
    path = tmp_path / "key.bin"
    path.write_bytes(private_key.public_key().public_bytes(encoding, form))
    result = cli(key=path, end="2026-11-01T02:00:00Z")
    assert result.exit_code == 0, result.output
    assert "2/2 digest files valid\n" in result.stdout


def test_wrong_key_is_public_key_not_found(signer: DigestChainSigner, tmp_path: Path) -> None:
    digests = signer.run_hours(T0, 2)
    other = tmp_path / "other.pem"
    other.write_bytes(
        new_private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    result = cli(key=other, end="2026-11-01T02:00:00Z")
    assert result.exit_code == 1
    assert stderr_lines(result) == [
        f"Digest file\t{uri(d.key)}\tINVALID: public key not found" for d in reversed(digests)
    ]
    assert "0/2 digest files valid, 2/2 digest files INVALID" in result.stdout
    assert "0/0 log files valid" in result.stdout


def test_key_file_that_is_not_a_key_is_usage_error(
    signer: DigestChainSigner, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("hello")
    assert cli(key=bad).exit_code == 2


def test_json_output(s3: Any, signer: DigestChainSigner, key_file: Path) -> None:
    digests = signer.run_hours(T0, 3)
    s3.delete_object(Bucket=BUCKET, Key=digests[0].logs[0].key)
    result = cli("--json", key=key_file, end="2026-11-01T03:00:00Z")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["trail_arn"] == ARN
    assert report["requested"] == {"start": START, "end": "2026-11-01T03:00:00Z"}
    assert report["found"] == {"start": START, "end": "2026-11-01T03:00:00Z"}
    assert report["valid"] is False
    assert report["summary"]["digest_files"] == {
        "total": 3,
        "valid": 3,
        "invalid": 0,
        "by_status": {"valid": 3},
    }
    assert report["summary"]["log_files"] == {
        "total": 6,
        "valid": 5,
        "invalid": 1,
        "by_status": {"valid": 5, "not_found": 1},
    }
    assert [d["key"] for d in report["digest_files"]] == [d.key for d in reversed(digests)]
    first = report["digest_files"][0]
    assert first["status"] == "valid" and first["kind"] == "digest"
    assert first["uri"] == uri(digests[2].key)
    assert first["start_time"] == "2026-11-01T02:00:00Z"
    missing = [lf for lf in report["log_files"] if lf["status"] != "valid"]
    assert missing == [
        {
            "kind": "log",
            "bucket": BUCKET,
            "key": digests[0].logs[0].key,
            "uri": uri(digests[0].logs[0].key),
            "status": "not_found",
            "message": "INVALID: not found",
            "region": "us-east-1",
            "digest_key": digests[0].key,
        }
    ]
    assert report["gaps"] == []
    assert report["missing_trailing_digests"] == []


def test_library_report(signer: DigestChainSigner) -> None:
    digests = signer.run_hours(T0, 3, logs_per_hour=5)
    report = validate(
        ARN,
        BUCKET,
        T0,
        T0 + dt.timedelta(hours=3),
        public_keys=[signer.public_key_pem()],
        max_workers=4,
    )
    assert report.ok
    assert [r.key for r in report.digests] == [d.key for d in reversed(digests)]
    assert all(r.kind is FileKind.DIGEST for r in report.digests)
    assert sorted(r.key for r in report.log_files) == sorted(
        lf.key for d in digests for lf in d.logs
    )
    assert report.summary()["log_files"]["valid"] == 15
    assert report.found_start == T0 and report.found_end == T0 + dt.timedelta(hours=3)


def test_range_selects_digests(signer: DigestChainSigner, key_file: Path) -> None:
    signer.run_hours(T0, 6)
    result = CliRunner().invoke(
        validate_command,
        [
            "--trail-arn",
            ARN,
            "--s3-bucket",
            BUCKET,
            "--start-time",
            "2026-11-01T02:30:00Z",
            "--end-time",
            "2026-11-01T04:00:00Z",
            "--public-key-file",
            str(key_file),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2/2 digest files valid" in result.stdout
    assert "Results found for 2026-11-01T02:00:00Z to 2026-11-01T04:00:00Z:" in result.stdout


def test_prefix_and_org_layout(s3: Any, private_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    signer = DigestChainSigner(
        private_key,
        bucket=BUCKET,
        sink=s3,
        trail_name="org.trail_1",
        prefix="team/logs",
        org_id="o-abcdef1234",
        region="eu-west-1",
        home_region="us-east-1",
    )
    digests = signer.run_hours(T0, 2)
    assert digests[0].key.startswith(
        "team/logs/AWSLogs/o-abcdef1234/123456789012/CloudTrail-Digest/eu-west-1/2026/11/01/"
        "123456789012_CloudTrail-Digest_eu-west-1_org.trail_1_us-east-1_20261101T010000Z"
    )
    report = validate(
        f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/org.trail_1",
        BUCKET,
        T0,
        T0 + dt.timedelta(hours=2),
        s3_prefix="team/logs",
        public_keys=[signer.public_key_pem()],
    )
    assert report.ok and len(report.digests) == 2 and len(report.log_files) == 4
    assert {r.region for r in report.digests} == {"eu-west-1"}


def test_local_dir_mirror(private_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    signer = DigestChainSigner(private_key, bucket=BUCKET, sink=mirror, trail_name=TRAIL)
    digests = signer.run_hours(T0, 3)
    key = tmp_path / "key.pem"
    key.write_bytes(signer.public_key_pem())
    result = cli("--local-dir", mirror, key=key, end="2026-11-01T03:00:00Z")
    assert result.exit_code == 0, result.output
    assert "3/3 digest files valid\n" in result.stdout and "6/6 log files valid\n" in result.stdout

    victim = digests[1].logs[0].key
    (mirror / victim).write_bytes(gzip.compress(b'{"Records":[]}'))
    (mirror / digests[0].logs[1].key).unlink()
    result = cli("--local-dir", mirror, key=key, end="2026-11-01T03:00:00Z")
    assert result.exit_code == 1
    # reported by their S3 location, not the local path
    assert stderr_lines(result) == [
        f"Log file\t{uri(victim)}\tINVALID: hash value doesn't match",
        f"Log file\t{uri(digests[0].logs[1].key)}\tINVALID: not found",
    ]


def test_local_dir_with_bucket_folder(private_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    signer = DigestChainSigner(private_key, bucket=BUCKET, sink=tmp_path / BUCKET, trail_name=TRAIL)
    signer.run_hours(T0, 2)
    report = validate(
        ARN,
        BUCKET,
        T0,
        T0 + dt.timedelta(hours=2),
        local_dir=tmp_path,
        public_keys=[signer.public_key_pem()],
    )
    assert report.ok and len(report.digests) == 2


def test_subprocess_entry_point(signer: DigestChainSigner, key_file: Path, s3: Any) -> None:
    digests = signer.run_hours(T0, 2)
    s3.delete_object(Bucket=BUCKET, Key=digests[1].logs[0].key)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trailproc.integrity._cli",
            "--trail-arn",
            ARN,
            "--s3-bucket",
            BUCKET,
            "--start-time",
            "2026-11-01",
            "--end-time",
            "2026-11-01T02:00:00Z",
            "--public-key-file",
            str(key_file),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == f"Log file\t{uri(digests[1].logs[0].key)}\tINVALID: not found"
    assert "Results requested for 2026-11-01T00:00:00Z to 2026-11-01T02:00:00Z" in proc.stdout
    assert "2/2 digest files valid\n" in proc.stdout
    assert "3/4 log files valid, 1/4 log files INVALID" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--trail-arn", ARN, "--s3-bucket", BUCKET],  # no start time
        ["--trail-arn", ARN, "--s3-bucket", BUCKET, "--start-time", "yesterday"],
        ["--trail-arn", "not-an-arn", "--s3-bucket", BUCKET, "--start-time", START],
        ["--trail-arn", ARN, "--s3-bucket", BUCKET, "--start-time", END, "--end-time", START],
    ],
)
def test_usage_errors_exit_2(aws_env: MotoServer, args: list[str]) -> None:
    assert CliRunner().invoke(validate_command, args).exit_code == 2


def test_no_digests_found_exits_1(s3: Any, key_file: Path) -> None:
    result = cli(key=key_file)
    assert result.exit_code == 1
    assert "No digest files were found" in result.stdout


def test_list_public_keys_failure_is_reported(
    signer: DigestChainSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto does not implement CloudTrail ListPublicKeys: the lookup error is reported per
    # digest instead of crashing the run.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    digests = signer.run_hours(T0, 1)
    result = cli(end="2026-11-01T01:00:00Z")
    assert result.exit_code == 1
    prefix = f"Digest file\t{uri(digests[0].key)}\tERROR: unable to get public keys: "
    assert [line for line in stderr_lines(result) if line.startswith(prefix)]
    assert "0/1 digest files valid, 1/1 digest files INVALID" in result.stdout


def test_unreadable_bucket_exits_1(aws_env: MotoServer, tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_bytes(
        new_private_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    result = cli(key=key)  # the bucket was never created
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot list s3://trail-bucket/AWSLogs/")


def _run_on_a_terminal(argv: list[str], timeout: float = 120) -> tuple[int, bytes, str]:
    """Run `argv` with stderr on a pseudo-terminal (120 columns) and stdout on a pipe, as
    in an interactive shell piping the report somewhere: (exit code, every byte written
    to the terminal, stdout)."""
    import fcntl
    import pty
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=slave, cwd=REPO,
                            env=dict(os.environ))  # fmt: skip
    os.close(slave)
    terminal = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side of the terminal
                break
            if not chunk:
                break
            terminal += chunk
        else:
            pytest.fail(f"still running after {timeout} s: {bytes(terminal)!r}")
        assert proc.stdout is not None
        stdout = proc.stdout.read().decode()
        return proc.wait(timeout=30), bytes(terminal), stdout
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_progress_bar_on_a_terminal(signer: DigestChainSigner, key_file: Path) -> None:
    """With stderr on a terminal, `trailproc validate` draws a "log files" bar there: it
    starts before any total is known, grows its total as digests are read (2 log files
    per digest here), never counts past it, and is erased when validation ends, so the
    report (on stdout, here a pipe) is all that stays. Off a terminal there is no bar
    (`test_subprocess_entry_point`: stderr holds only the report's error line)."""
    import re

    signer.run_hours(T0, 3)  # 3 digests, 6 log files
    argv = [sys.executable, "-m", "trailproc.integrity._cli", "--trail-arn", ARN,
            "--s3-bucket", BUCKET, "--start-time", "2026-11-01",
            "--end-time", "2026-11-01T03:00:00Z", "--public-key-file", str(key_file)]  # fmt: skip
    code, terminal, stdout = _run_on_a_terminal(argv)

    assert code == 0, terminal
    text = terminal.decode()
    frames = [frame.strip() for frame in text.split("\r") if frame.strip()]
    assert frames[0] == "log files: 0file [00:00, ?file/s]"  # nothing listed yet
    shown = [
        re.fullmatch(r"log files:\s+(\d+)%\|[^|]*\| (\d+)/(\d+) \[[^\]]*\]", frame)
        for frame in frames[1:]
    ]
    assert all(shown), frames
    counts = [(int(m[2]), int(m[3]), int(m[1])) for m in shown if m]
    totals = [total for _done, total, _pct in counts]
    assert totals == sorted(totals) and totals[-1] == 6 and set(totals) <= {2, 4, 6}
    assert all(
        done <= total and f"{pct}" == f"{done * 100 / total:.0f}" for done, total, pct in counts
    )
    assert [done for done, *_ in counts] == sorted(done for done, *_ in counts)
    # Erased at the end (blank line, cursor back at its start), nothing else after it.
    assert re.search(r"\r {100,}\r$", text), text[-200:]
    # The bar never reaches stdout: the report there is clean.
    assert "\r" not in stdout and "file/s" not in stdout
    assert "3/3 digest files valid\n6/6 log files valid\n" in stdout


# --- review findings: the range past --end-time, moved digests, local times, damaged
# signature files, a trail's previous bucket -------------------------------------------

HOUR = dt.timedelta(hours=1)
# Real digests are not on the hour: CloudTrail's end times drift (e.g. 05:01:31).
OFFSET = dt.timedelta(minutes=1, seconds=31)


def cli_range(start: str, end: str, key: Path, *args: str | Path) -> Any:
    argv = ["--trail-arn", ARN, "--s3-bucket", BUCKET, "--start-time", start, "--end-time", end]
    return CliRunner().invoke(
        validate_command, [*argv, "--public-key-file", str(key), *map(str, args)]
    )


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
    result = cli_range("2026-11-01T00:00:00Z", "2026-11-01T06:00:00Z", key_file)
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
    result = cli_range("2026-11-01T00:00:00Z", "2026-11-01T05:30:00Z", key_file)
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
    result = cli_range("2026-11-01T00:00:00Z", "2026-11-01T06:00:00Z", key_file)
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
    result = cli_range(
        "2026-11-01T00:00:00Z", "2026-11-01T03:00:00Z", key_file, "--local-dir", mirror
    )
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
    result = cli_range("2026-11-01T00:00:00Z", "2026-11-01T04:00:00Z", key_file, "--verbose")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "4/4 digest files valid\n" in result.stdout
    assert "8/8 log files valid\n" in result.stdout
    assert f"Digest file\ts3://old-bucket/{old[0].key}\tvalid" in result.stdout
    assert f"Log file\ts3://old-bucket/{old[0].logs[0].key}\tvalid" in result.stdout

    # A digest missing from the old bucket is still reported, under that bucket.
    s3.delete_object(Bucket="old-bucket", Key=old[1].key)
    result = cli_range("2026-11-01T00:00:00Z", "2026-11-01T04:00:00Z", key_file)
    assert result.exit_code == 1
    assert stderr_lines(result) == [
        f"Digest file\ts3://old-bucket/{old[1].key}\tINVALID: not found"
    ]
