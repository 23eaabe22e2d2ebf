"""The digest signing string, SHA-256 over gunzipped bytes, and RSA verification."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

__all__ = [
    "GZIP_MAGIC",
    "NotGzipError",
    "Readable",
    "gunzip",
    "gunzip_sha256",
    "signing_string",
    "verify_signature",
]

GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20


class NotGzipError(ValueError):
    """The object is not a (complete, well-formed) gzip stream."""


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _chunks(stream: Readable) -> Iterable[bytes]:
    while True:
        chunk = stream.read(CHUNK)
        if not chunk:
            return
        yield chunk


def _inflate(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress a (possibly multi-member) gzip stream exactly, yielding plain chunks."""
    d: Any = None  # the current member's decompressor
    members = 0
    try:
        for chunk in chunks:
            data = chunk
            while data:
                if d is None:
                    if members == 0 and len(data) >= 2 and data[:2] != GZIP_MAGIC:
                        raise NotGzipError("no gzip magic bytes")
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out = d.decompress(data)
                if out:
                    yield out
                if d.eof:
                    data = d.unused_data
                    d = None
                    members += 1
                else:
                    data = b""
        if d is not None:
            tail = d.flush()
            if tail:
                yield tail
            if not d.eof:
                raise NotGzipError("truncated gzip stream")
            members += 1
    except zlib.error as exc:
        raise NotGzipError(str(exc)) from exc
    if members == 0:
        raise NotGzipError("empty object")


def gunzip(data: bytes) -> bytes:
    """Decompress gzip bytes exactly; NotGzipError if they are not gzip."""
    return b"".join(_inflate([data]))


def gunzip_sha256(stream: Readable) -> str:
    """Lowercase hex SHA-256 of the decompressed content of a gzip stream, streamed."""
    h = hashlib.sha256()
    for chunk in _inflate(_chunks(stream)):
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
