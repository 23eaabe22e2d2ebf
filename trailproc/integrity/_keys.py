"""CloudTrail public keys: loading (PEM/DER, SPKI/PKCS#1), fingerprints and sources.

A fingerprint is the MD5 hex of a key's DER bytes. CloudTrail has shipped both DER forms,
so a key is indexed under the MD5 of each.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "CloudTrailPublicKeys",
    "KeyNotUsable",
    "PublicKeyRing",
    "PublicKeySource",
    "fingerprints",
    "load_public_key",
]

log = structlog.get_logger(__name__)


class KeyNotUsable(ValueError):
    """Key bytes that are not an RSA public key in any accepted encoding."""


def load_public_key(data: bytes) -> rsa.RSAPublicKey:
    """An RSA public key from PEM or DER, SubjectPublicKeyInfo or PKCS#1 RSAPublicKey."""
    stripped = data.strip()
    key: Any = None
    errors: list[str] = []
    if stripped.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(stripped)
        except ValueError as exc:
            errors.append(str(exc))
    else:
        try:
            key = serialization.load_der_public_key(data)
        except ValueError as exc:
            errors.append(str(exc))
    if key is None:
        raise KeyNotUsable("unable to load PKCS #1 key: " + "; ".join(errors))
    if not isinstance(key, rsa.RSAPublicKey):
        raise KeyNotUsable(f"not an RSA public key: {type(key).__name__}")
    return key


def fingerprints(key: rsa.RSAPublicKey, *raw: bytes) -> set[str]:
    """MD5 hex of the key's SPKI DER and PKCS#1 DER (and of any raw DER given)."""
    forms = [
        key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1),
        *raw,
    ]
    return {hashlib.md5(b, usedforsecurity=False).hexdigest() for b in forms}


@runtime_checkable
class PublicKeySource(Protocol):
    """Where the validator gets the key for a digest."""

    def get(self, region: str, fingerprint: str, when: dt.datetime) -> rsa.RSAPublicKey | None:
        """The key with this fingerprint for digests delivered from `region` at `when`.

        Returns None when no such key is known; raises KeyNotUsable when the key exists but
        cannot be loaded.
        """
        ...


@dataclass
class PublicKeyRing:
    """Keys given offline (files or bytes), matched by fingerprint in every region."""

    keys: dict[str, rsa.RSAPublicKey]

    @classmethod
    def empty(cls) -> PublicKeyRing:
        return cls({})

    def add(self, data: bytes) -> set[str]:
        """Add one key (PEM or DER bytes); returns the fingerprints it answers to."""
        key = load_public_key(data)
        raw = [data] if not data.strip().startswith(b"-----BEGIN") else []
        prints = fingerprints(key, *raw)
        for fp in prints:
            self.keys[fp] = key
        return prints

    @classmethod
    def from_files(cls, paths: Iterable[str | os.PathLike[str]]) -> PublicKeyRing:
        ring = cls.empty()
        for path in paths:
            with open(path, "rb") as f:
                ring.add(f.read())
        return ring

    def get(self, region: str, fingerprint: str, when: dt.datetime) -> rsa.RSAPublicKey | None:
        return self.keys.get(fingerprint.lower())


class CloudTrailPublicKeys:
    """Keys from CloudTrail `ListPublicKeys`, asked in the delivering region, cached.

    One call (paginated) per region covers the whole validation range; a fingerprint
    still unknown afterwards triggers one more call without a time range (currently
    active keys). `client_factory(region)` returns a boto3 `cloudtrail` client.
    """

    def __init__(
        self,
        client_factory: Callable[[str], Any],
        start: dt.datetime,
        end: dt.datetime,
    ) -> None:
        self._factory = client_factory
        self._start = start
        self._end = end
        self._lock = threading.Lock()
        self._cache: dict[str, dict[str, rsa.RSAPublicKey | KeyNotUsable]] = {}
        self._refreshed: set[str] = set()

    def _fetch(self, region: str, ranged: bool) -> dict[str, rsa.RSAPublicKey | KeyNotUsable]:
        client = self._factory(region)
        kwargs: dict[str, Any] = {}
        if ranged:
            kwargs = {"StartTime": self._start, "EndTime": self._end}
        found: dict[str, rsa.RSAPublicKey | KeyNotUsable] = {}
        while True:
            page = client.list_public_keys(**kwargs)
            for item in page.get("PublicKeyList", []):
                value = item.get("Value") or b""
                if isinstance(value, str):  # a base64 rendering, as the AWS CLI prints it
                    import base64

                    value = base64.b64decode(value)
                entry: rsa.RSAPublicKey | KeyNotUsable
                try:
                    entry = load_public_key(value)
                    prints = fingerprints(entry, value)
                except KeyNotUsable as exc:
                    entry = exc
                    prints = {hashlib.md5(value, usedforsecurity=False).hexdigest()}
                if item.get("Fingerprint"):
                    prints.add(str(item["Fingerprint"]).lower())
                for fp in prints:
                    found[fp] = entry
            token = page.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
        log.debug("cloudtrail public keys", region=region, count=len(found), ranged=ranged)
        return found

    def get(self, region: str, fingerprint: str, when: dt.datetime) -> rsa.RSAPublicKey | None:
        fingerprint = fingerprint.lower()
        with self._lock:
            if region not in self._cache:
                self._cache[region] = self._fetch(region, ranged=True)
            entry = self._cache[region].get(fingerprint)
            if entry is None and region not in self._refreshed:
                self._refreshed.add(region)
                self._cache[region].update(self._fetch(region, ranged=False))
                entry = self._cache[region].get(fingerprint)
        if isinstance(entry, KeyNotUsable):
            raise entry
        return entry
