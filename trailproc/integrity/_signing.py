"""The digest signing string, SHA-256 over gunzipped bytes, and RSA verification."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .._pipeline.gunzip import NotGzipError, gunzip_stream
from .._pipeline.gunzip import gunzip_exact as gunzip

# `NotGzipError` and `gunzip` live in the gunzip module; the two names stay here for
# code importing them from the 0.1 path `trailproc.integrity.signing`.

__all__ = [
    "CHUNK",
    "NotGzipError",
    "Readable",
    "gunzip",
    "gunzip_sha256",
    "signing_string",
    "verify_signature",
]

CHUNK = 1 << 20


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _chunks(stream: Readable) -> Iterable[bytes]:
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return
        yield chunk


def gunzip_sha256(stream: Readable) -> str:
    """Lowercase hex SHA-256 of the decompressed content of a gzip stream, streamed
    (`NotGzipError` when it is not gzip)."""
    h = hashlib.sha256()
    for chunk in gunzip_stream(_chunks(stream)):
        h.update(chunk)
    return h.hexdigest()


def signing_string(
    digest_end_time: str,
    bucket: str,
    key: str,
    digest_sha256_hex: str,
    previous_signature: str | None,
) -> bytes:
    """The four `\\n`-joined lines CloudTrail signs, UTF-8 encoded, no trailing newline."""
    lines = [
        digest_end_time,
        f"{bucket}/{key}",
        digest_sha256_hex.lower(),
        "null" if previous_signature is None else previous_signature,
    ]
    return "\n".join(lines).encode("utf-8")


def verify_signature(public_key: rsa.RSAPublicKey, signature_hex: str, message: bytes) -> bool:
    """SHA256withRSA (RSASSA-PKCS1-v1_5 over SHA-256)."""
    try:
        signature = bytes.fromhex(signature_hex.strip())
    except ValueError:
        return False
    try:
        public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True
