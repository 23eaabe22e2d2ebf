"""Write signed CloudTrail log files and hourly digests, exactly as CloudTrail does.

For tests (ours and other components'): give it an RSA private key and a sink (a boto3
S3 client or a local folder), add log files, then close each hour with `write_digest`.

    signer = DigestChainSigner(private_key, bucket="trail-bucket", sink=s3_client)
    signer.put_log(records, when=t0 + 5 min)
    signer.write_digest(end=t0 + 1 h)          # first digest: previous fields are null
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .._sandbox import log_key
from ._signing import signing_string
from ._storage import SIGNATURE_SUFFIX

__all__ = ["DigestChainSigner", "SignedDigest", "SignedLog", "digest_key", "new_private_key"]

_FMT = "%Y-%m-%dT%H:%M:%SZ"


def new_private_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None:
        return when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc)


def digest_key(
    account: str,
    region: str,
    trail_name: str,
    home_region: str,
    end: dt.datetime,
    *,
    prefix: str = "",
    org_id: str | None = None,
) -> str:
    """`[prefix/]AWSLogs/[org/]<acct>/CloudTrail-Digest/<region>/YYYY/MM/DD/<name>`."""
    end = _utc(end)
    parts = [prefix.strip("/")] if prefix.strip("/") else []
    parts.append("AWSLogs")
    if org_id:
        parts.append(org_id)
    parts += [account, "CloudTrail-Digest", region, end.strftime("%Y/%m/%d")]
    name = (
        f"{account}_CloudTrail-Digest_{region}_{trail_name}_{home_region}_"
        f"{end.strftime('%Y%m%dT%H%M%SZ')}.json.gz"
    )
    return "/".join([*parts, name])


@dataclass(frozen=True)
class SignedLog:
    bucket: str
    key: str
    body: bytes  # as stored (gzip)
    sha256: str  # of the decompressed bytes
    delivered_at: dt.datetime
    oldest_event_time: str | None
    newest_event_time: str | None


@dataclass(frozen=True)
class SignedDigest:
    bucket: str
    key: str
    body: bytes  # as stored (gzip)
    raw: bytes  # the exact JSON bytes that were hashed
    document: dict[str, Any]
    signature: str  # hex, also in the S3 `signature` metadata
    logs: tuple[SignedLog, ...]


@dataclass
class DigestChainSigner:
    """One trail's deliveries from one region: log files plus a signed digest chain."""

    private_key: rsa.RSAPrivateKey
    bucket: str
    sink: Any  # a boto3 S3 client, or a folder (str / Path) mirroring the bucket
    account_id: str = "123456789012"
    trail_name: str = "test-trail"
    region: str = "us-east-1"  # delivering region
    home_region: str | None = None  # defaults to `region`
    prefix: str = ""
    org_id: str | None = None
    key_form: serialization.PublicFormat = serialization.PublicFormat.SubjectPublicKeyInfo
    digests: list[SignedDigest] = field(default_factory=list)
    _pending: list[SignedLog] = field(default_factory=list)
    _previous: SignedDigest | None = None
    _last_end: dt.datetime | None = None

    # -- keys ------------------------------------------------------------------------------

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self.private_key.public_key()

    def public_key_der(self, form: serialization.PublicFormat | None = None) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.DER, form or self.key_form)

    def public_key_pem(self, form: serialization.PublicFormat | None = None) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.PEM, form or self.key_form)

    @property
    def fingerprint(self) -> str:
        """MD5 hex of the public key's DER bytes (in `key_form`), as CloudTrail publishes."""
        return hashlib.md5(self.public_key_der(), usedforsecurity=False).hexdigest()

    # -- writing ---------------------------------------------------------------------------

    def _put(self, key: str, body: bytes, metadata: dict[str, str] | None = None) -> None:
        if isinstance(self.sink, (str, os.PathLike)):
            path = Path(self.sink) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            if metadata and "signature" in metadata:
                sidecar = path.with_name(path.name + SIGNATURE_SUFFIX)
                sidecar.write_text(metadata["signature"], encoding="ascii")
        else:
            extra: dict[str, Any] = {"Metadata": metadata} if metadata else {}
            self.sink.put_object(Bucket=self.bucket, Key=key, Body=body, **extra)

    def put_log(
        self,
        records: list[dict[str, Any]] | bytes,
        *,
        when: dt.datetime,
        key: str | None = None,
    ) -> SignedLog:
        """Deliver one log file at `when`; the next digest will list it.

        `records` are CloudTrail records (written as `{"Records": [...]}`, gzipped) or the
        exact bytes to store (hashed after gunzip when they are gzip, else as they are).
        """
        when = _utc(when)
        key = key or log_key(
            self.account_id,
            self.region,
            when,
            prefix=self.prefix,
            org_id=self.org_id,
            unique=uuid.uuid4().hex[:16],
        )
        oldest = newest = None
        if isinstance(records, bytes):
            body = records
            plain = gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body
            oldest = newest = when.strftime(_FMT)
        else:
            plain = json.dumps({"Records": records}, separators=(",", ":")).encode()
            body = gzip.compress(plain)
            times = sorted(str(r["eventTime"]) for r in records if r.get("eventTime"))
            if times:
                oldest, newest = times[0], times[-1]
        self._put(key, body)
        entry = SignedLog(
            self.bucket, key, body, hashlib.sha256(plain).hexdigest(), when, oldest, newest
        )
        self._pending.append(entry)
        return entry

    def restart_chain(self) -> None:
        """The next digest starts a new chain (validation or logging was turned off and on)."""
        self._previous = None

    def write_digest(self, end: dt.datetime, *, start: dt.datetime | None = None) -> SignedDigest:
        """Sign and deliver the digest for `[start, end]` listing every pending log file."""
        end = _utc(end)
        start = _utc(start) if start else (self._last_end or end - dt.timedelta(hours=1))
        key = digest_key(
            self.account_id,
            self.region,
            self.trail_name,
            self.home_region or self.region,
            end,
            prefix=self.prefix,
            org_id=self.org_id,
        )
        logs = tuple(self._pending)
        self._pending = []
        newest = max((lf.newest_event_time for lf in logs if lf.newest_event_time), default=None)
        oldest = min((lf.oldest_event_time for lf in logs if lf.oldest_event_time), default=None)
        prev = self._previous
        document: dict[str, Any] = {
            "awsAccountId": self.account_id,
            "digestStartTime": start.strftime(_FMT),
            "digestEndTime": end.strftime(_FMT),
            "digestS3Bucket": self.bucket,
            "digestS3Object": key,
            "digestPublicKeyFingerprint": self.fingerprint,
            "digestSignatureAlgorithm": "SHA256withRSA",
            "newestEventTime": newest,
            "oldestEventTime": oldest,
            "previousDigestS3Bucket": prev.bucket if prev else None,
            "previousDigestS3Object": prev.key if prev else None,
            "previousDigestHashValue": hashlib.sha256(prev.raw).hexdigest() if prev else None,
            "previousDigestHashAlgorithm": "SHA-256" if prev else None,
            "previousDigestSignature": prev.signature if prev else None,
            "logFiles": [
                {
                    "s3Bucket": lf.bucket,
                    "s3Object": lf.key,
                    "hashValue": lf.sha256,
                    "hashAlgorithm": "SHA-256",
                    "newestEventTime": lf.newest_event_time,
                    "oldestEventTime": lf.oldest_event_time,
                }
                for lf in logs
            ],
        }
        raw = json.dumps(document, separators=(",", ":")).encode()
        signature = self.sign(document["digestEndTime"], key, raw, prev.signature if prev else None)
        body = gzip.compress(raw)
        self._put(key, body, {"signature": signature, "signature-algorithm": "SHA256withRSA"})
        digest = SignedDigest(self.bucket, key, body, raw, document, signature, logs)
        self.digests.append(digest)
        self._previous = digest
        self._last_end = end
        return digest

    def sign(self, end_time: str, key: str, raw: bytes, previous_signature: str | None) -> str:
        """Hex SHA256withRSA signature of the digest signing string."""
        message = signing_string(
            end_time, self.bucket, key, hashlib.sha256(raw).hexdigest(), previous_signature
        )
        return self.private_key.sign(message, padding.PKCS1v15(), hashes.SHA256()).hex()

    def run_hours(
        self,
        start: dt.datetime,
        hours: int,
        logs_per_hour: int = 2,
        records_per_log: int = 3,
    ) -> list[SignedDigest]:
        """Deliver `hours` hours from `start`: log files every few minutes, a digest an hour."""
        from .._sandbox import make_records

        start = _utc(start)
        out = []
        for h in range(hours):
            hour_start = start + dt.timedelta(hours=h)
            for i in range(logs_per_hour):
                when = hour_start + dt.timedelta(minutes=5 + i * (50 // max(1, logs_per_hour)))
                records = make_records(
                    records_per_log,
                    seed=h * 1000 + i,
                    account=self.account_id,
                    region=self.region,
                    start=when - dt.timedelta(minutes=5),
                )
                self.put_log(records, when=when)
            out.append(self.write_digest(hour_start + dt.timedelta(hours=1), start=hour_start))
        return out
