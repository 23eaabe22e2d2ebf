"""Inline verification: hash log files while processing them, check them when their digest
arrives (an hour or so later).

Pure and synchronous; the pipeline owns persistence (`pending` is a plain dict it can
save in its checkpoint store and hand back through the constructor).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from .signing import GZIP_MAGIC, gunzip

__all__ = ["InlineVerifier", "Mismatch"]


@dataclass(frozen=True)
class Mismatch:
    """A processed log file whose bytes differ from what its digest says CloudTrail wrote."""

    bucket: str
    key: str
    expected: str  # hashValue in the digest
    actual: str  # SHA-256 of the bytes we processed
    digest_bucket: str | None
    digest_key: str | None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class InlineVerifier:
    """Remembers `(bucket, key) → sha256 hex` of processed logs until a digest lists them.

    This checks content only; it does not verify the digest's signature (run
    `trailproc.integrity.validate` for that).
    """

    def __init__(self, pending: dict[tuple[str, str], str] | None = None) -> None:
        self.pending: dict[tuple[str, str], str] = pending if pending is not None else {}
        self.verified = 0  # log files whose hash matched their digest
        self.mismatched = 0

    def note_log(self, bucket: str, key: str, data: bytes) -> str:
        """Record the decompressed bytes of a processed log file; returns their SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        self.pending[(bucket, key)] = digest
        return digest

    def note_hash(self, bucket: str, key: str, sha256_hex: str) -> None:
        """Record a hash computed elsewhere (e.g. while streaming)."""
        self.pending[(bucket, key)] = sha256_hex.lower()

    def check_digest(self, digest_bytes: bytes) -> list[Mismatch]:
        """Compare every log file the digest lists and we have seen; forget those checked.

        `digest_bytes` is the digest object as stored (gzip) or already decompressed.
        Raises ValueError if it is not a digest document.
        """
        raw = gunzip(digest_bytes) if digest_bytes[:2] == GZIP_MAGIC else digest_bytes
        doc: Any = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("logFiles"), list):
            raise ValueError("not a CloudTrail digest document")
        mismatches: list[Mismatch] = []
        for entry in doc["logFiles"]:
            if not isinstance(entry, dict):
                continue
            ident = (str(entry.get("s3Bucket")), str(entry.get("s3Object")))
            actual = self.pending.pop(ident, None)
            if actual is None:
                continue
            expected = str(entry.get("hashValue") or "").lower()
            if actual == expected:
                self.verified += 1
                continue
            self.mismatched += 1
            mismatches.append(
                Mismatch(
                    ident[0],
                    ident[1],
                    expected,
                    actual,
                    doc.get("digestS3Bucket"),
                    doc.get("digestS3Object"),
                )
            )
        return mismatches

    def __len__(self) -> int:
        return len(self.pending)
