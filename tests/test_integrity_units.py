"""Pure parts of trailproc.integrity: signing string, keys, gzip hashing, inline checks."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import hashlib
import io
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from trailproc._pipeline.gunzip import NotGzipError
from trailproc._pipeline.gunzip import gunzip_exact as gunzip
from trailproc._pipeline.keys import ObjectKind, classify_key
from trailproc.integrity import (
    KeyNotUsable,
    PublicKeyRing,
    Status,
    TrailArn,
    ValidationError,
    fingerprints,
    load_public_key,
    parse_time,
    signing_string,
    verify_signature,
)
from trailproc.integrity._signing import gunzip_sha256
from trailproc.integrity._storage import LocalStore, NotFound
from trailproc.integrity._testing import DigestChainSigner, new_private_key

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return new_private_key()


def test_signing_string_is_four_lines_no_trailing_newline() -> None:
    s = signing_string("2015-08-12T04:01:31Z", "bucket", "AWSLogs/x.json.gz", "AB12", "cafe")
    assert s == b"2015-08-12T04:01:31Z\nbucket/AWSLogs/x.json.gz\nab12\ncafe"
    assert signing_string("t", "b", "k", "00", None).endswith(b"\nnull")


def test_verify_signature(private_key: rsa.RSAPrivateKey) -> None:
    message = signing_string("t", "b", "k", "00", None)
    sig = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256()).hex()
    public = private_key.public_key()
    assert verify_signature(public, sig, message)
    assert verify_signature(public, sig.upper(), message)
    assert not verify_signature(public, sig, message + b"x")
    assert not verify_signature(public, "zz-not-hex", message)
    assert not verify_signature(public, "", message)


def test_fingerprints_cover_both_der_forms(private_key: rsa.RSAPrivateKey) -> None:
    public = private_key.public_key()
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pkcs1 = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    assert fingerprints(public) == {
        hashlib.md5(spki).hexdigest(),
        hashlib.md5(pkcs1).hexdigest(),
    }


@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
@pytest.mark.parametrize(
    "form", [serialization.PublicFormat.SubjectPublicKeyInfo, serialization.PublicFormat.PKCS1]
)
def test_key_ring_loads_every_form(
    private_key: rsa.RSAPrivateKey,
    tmp_path: Path,
    encoding: serialization.Encoding,
    form: serialization.PublicFormat,
) -> None:
    public = private_key.public_key()
    path = tmp_path / "key"
    path.write_bytes(public.public_bytes(encoding, form))
    ring = PublicKeyRing.from_files([path])
    for fp in fingerprints(public):
        found = ring.get("eu-west-1", fp.upper(), T0)
        assert found is not None and found.public_numbers() == public.public_numbers()
    assert ring.get("us-east-1", "0" * 32, T0) is None


def test_cloudtrail_sample_key_value_forms_load(private_key: rsa.RSAPrivateKey) -> None:
    # ListPublicKeys' Value is raw DER in boto3 (the AWS CLI shows it base64): both forms load.
    public = private_key.public_key()
    for form in (serialization.PublicFormat.PKCS1, serialization.PublicFormat.SubjectPublicKeyInfo):
        der = public.public_bytes(serialization.Encoding.DER, form)
        assert load_public_key(der).public_numbers() == public.public_numbers()
        assert hashlib.md5(der).hexdigest() in fingerprints(load_public_key(der))
        assert base64.b64encode(der)[:4] in (b"MIIB", b"MIIC")


def test_unusable_keys_rejected() -> None:
    with pytest.raises(KeyNotUsable):
        load_public_key(b"not a key")
    with pytest.raises(KeyNotUsable):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(KeyNotUsable, match="not an RSA"):
        load_public_key(
            ec_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def test_gunzip_hashes_exact_bytes() -> None:
    plain = b'{"Records":[{"a": 1}]}\n' * 50_000
    assert gunzip_sha256(io.BytesIO(gzip.compress(plain))) == hashlib.sha256(plain).hexdigest()
    two = gzip.compress(b"ab") + gzip.compress(b"cd")  # multi-member, as gzip(1) allows
    assert gunzip(two) == b"abcd"
    for bad in (b"", b"{}", b"\x1f", gzip.compress(plain)[:-4], gzip.compress(b"x") + b"junk"):
        with pytest.raises(NotGzipError):
            gunzip(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01T00:00:00Z", T0),
        ("2026-11-01T01:00:00+01:00", T0),
        ("2026-11-01T00:00Z", T0),
        ("2026-11-01", T0),
        ("2026-11-01T00:00:00", T0),
        ("20261101T000000Z", T0),
    ],
)
def test_parse_time(text: str, expected: dt.datetime) -> None:
    assert parse_time(text) == expected


def test_parse_time_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_trail_arn() -> None:
    arn = TrailArn.parse("arn:aws:cloudtrail:eu-west-1:123456789012:trail/my_trail-1.x")
    assert (arn.region, arn.account_id, arn.name) == ("eu-west-1", "123456789012", "my_trail-1.x")
    assert TrailArn.parse("arn:aws-us-gov:cloudtrail:us-gov-west-1:123456789012:trail/t").partition
    with pytest.raises(ValidationError):
        TrailArn.parse("arn:aws:s3:::bucket")


def test_status_wording() -> None:
    from trailproc.integrity import FileKind, FileResult

    r = FileResult(FileKind.LOG, "b", "k", Status.HASH_MISMATCH)
    assert r.line() == "Log file\ts3://b/k\tINVALID: hash value doesn't match"
    assert FileResult(FileKind.DIGEST, "b", "k", Status.MOVED).message == (
        "INVALID: has been moved from its original location"
    )


def test_signer_local_layout(private_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    signer = DigestChainSigner(
        private_key,
        bucket="bkt",
        sink=tmp_path,
        trail_name="my_trail",
        region="ap-south-1",
        home_region="us-east-1",
    )
    digests = signer.run_hours(T0, 2, logs_per_hour=1)
    d = digests[1]
    info = classify_key(d.key)
    assert info.kind is ObjectKind.DIGEST
    assert (info.trail_name, info.region, info.home_region) == (
        "my_trail",
        "ap-south-1",
        "us-east-1",
    )
    assert info.delivered_at == T0 + dt.timedelta(hours=2)
    assert classify_key(d.logs[0].key).kind is ObjectKind.LOG
    doc = json.loads(gzip.decompress((tmp_path / d.key).read_bytes()))
    assert list(doc) == [
        "awsAccountId",
        "digestStartTime",
        "digestEndTime",
        "digestS3Bucket",
        "digestS3Object",
        "digestPublicKeyFingerprint",
        "digestSignatureAlgorithm",
        "newestEventTime",
        "oldestEventTime",
        "previousDigestS3Bucket",
        "previousDigestS3Object",
        "previousDigestHashValue",
        "previousDigestHashAlgorithm",
        "previousDigestSignature",
        "logFiles",
    ]
    assert doc["previousDigestHashValue"] == hashlib.sha256(digests[0].raw).hexdigest()
    assert doc["digestPublicKeyFingerprint"] == signer.fingerprint
    body, metadata = LocalStore(tmp_path).get("bkt", d.key)
    assert body == d.body and metadata["signature"] == d.signature
    message = signing_string(
        doc["digestEndTime"],
        "bkt",
        d.key,
        hashlib.sha256(d.raw).hexdigest(),
        digests[0].signature,
    )
    assert verify_signature(signer.public_key, d.signature, message)
    with pytest.raises(NotFound):
        LocalStore(tmp_path).get("bkt", "../etc/passwd")


def test_pending_digest_checks_meet_in_either_order(
    private_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    """Hashes of processed logs and a digest's entries meet in the store, in any order."""
    import asyncio

    from trailproc.checkpoint import MemoryStore
    from trailproc.integrity import HashCheck, PendingDigestChecks, parse_digest

    signer = DigestChainSigner(private_key, bucket="bkt", sink=tmp_path)
    good = signer.put_log(
        [{"eventTime": "2026-11-01T00:01:00Z"}], when=T0 + dt.timedelta(minutes=5)
    )
    bad = signer.put_log([{"eventTime": "2026-11-01T00:02:00Z"}], when=T0 + dt.timedelta(minutes=9))
    late = signer.put_log([], when=T0 + dt.timedelta(minutes=20))
    digest = signer.write_digest(T0 + dt.timedelta(hours=1))
    reported: list[HashCheck] = []

    async def scenario() -> None:
        store = MemoryStore()
        pending = PendingDigestChecks(store, reported.append, wait_seconds=60)
        sha = hashlib.sha256
        good_sha = sha(gzip.decompress(good.body)).hexdigest()
        assert await pending.log_processed("bkt", good.key, good_sha) is None
        tampered = sha(b'{"Records":[{"eventTime":"tampered"}]}').hexdigest()
        assert await pending.log_processed("bkt", bad.key, tampered) is None
        checks = await pending.digest_processed(parse_digest(digest.body))  # digest after logs
        assert sorted((c.key, c.matched) for c in checks) == sorted(
            [(good.key, True), (bad.key, False)]
        )
        mismatch = next(c for c in checks if not c.matched)
        assert mismatch.expected == bad.sha256 and mismatch.actual == tampered
        assert mismatch.digest_key == digest.key and mismatch.uri == f"s3://bkt/{bad.key}"
        # The third log came after its digest: compared when it is processed.
        late_check = await pending.log_processed("bkt", late.key, late.sha256.upper())
        assert late_check is not None and late_check.matched
        assert parse_digest(digest.raw).log_files == parse_digest(digest.body).log_files
        with pytest.raises(ValueError):
            parse_digest(b'{"not": "a digest"}')

    asyncio.run(scenario())
    assert len(reported) == 3
