"""Inline verification: hash log files while processing them, check them when their digest
arrives (an hour or so later).

`PendingDigestChecks` is what the pipeline uses with `verify_digests`. Pending hashes
live in the checkpoint store (`KeyValueStore`), so they survive restarts and are shared by
every worker, and log files and digests may arrive in either order.

How the two halves meet: one key per log file, ``digest-check:s3://bucket/key``. Whichever
side comes first (the processed log's hash, or the digest's expected hash) stores itself
there with `only_new`; the second finds the key taken, removes the value in one atomic
step (`forget`) and compares. Of two workers racing, exactly one stores and the other
compares, so each log file is checked once. A value from the same side (the log file
processed again, e.g. rewritten under the same key) replaces the older one.

It checks content only; it does not verify the digest's signature or the chain
(`trailproc.integrity.validate` does).

A hash whose digest never arrives is not forgotten silently. The process that stored it
keeps its key and deadline (in store order, so a queue suffices) and, once
`wait_seconds` have passed, takes the value back with `forget`: if it is still its own
log-side value, no digest ever met it, and the check is reported with the outcome
"unverified". Log-side values live `UNVERIFIED_GRACE` seconds longer in the store than
the wait, so that step finds them. These sweeps run whenever this process checks a log
file or a digest. Limits: a hash stored by a process that stopped before its deadline
expires unreported, and at most `MAX_TRACKED` pending hashes are tracked per process
(one warning when that is reached).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .._errors import retry_transient
from .._observe import get_logger
from ..checkpoint import KeyValueStore
from .gunzip import decompress

# A digest lists each log file of one hour of one region: far below this, however big
# the organisation. A larger "digest" is refused rather than inflated.
MAX_DIGEST_BYTES = 64 * 1024 * 1024

__all__ = [
    "DEFAULT_WAIT_SECONDS",
    "DigestListing",
    "HashCheck",
    "PendingDigestChecks",
    "parse_digest",
]

T = TypeVar("T")

DEFAULT_WAIT_SECONDS = 7 * 86400.0
KEY_PREFIX = "digest-check:"
UNVERIFIED_GRACE = 3600.0
MAX_TRACKED = 200_000  # about 400 bytes each

log = get_logger("trailproc.integrity")


# --- persistent, order-independent checks ------------------------------------------------


@dataclass(frozen=True)
class HashCheck:
    """One log file compared with its digest entry."""

    bucket: str
    key: str
    expected: str  # hashValue in the digest ("" when no digest came: unverified)
    actual: str  # SHA-256 of the decompressed bytes that were processed
    digest_bucket: str | None
    digest_key: str | None

    @property
    def matched(self) -> bool:
        return self.expected == self.actual

    @property
    def outcome(self) -> str:
        """ "match", "mismatch", or "unverified" (the digest never arrived)."""
        if not self.expected:
            return "unverified"
        return "match" if self.matched else "mismatch"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def digest_uri(self) -> str:
        return f"s3://{self.digest_bucket or '?'}/{self.digest_key or '?'}"


@dataclass(frozen=True)
class DigestListing:
    """What a digest says: where it was delivered and `(bucket, key, sha256)` per log file."""

    bucket: str | None
    key: str | None
    log_files: tuple[tuple[str, str, str], ...]


def parse_digest(data: bytes | bytearray) -> DigestListing:
    """Read a digest document (gzip or already decompressed). ValueError if it is not one."""
    try:
        raw = decompress(data, max_bytes=MAX_DIGEST_BYTES)  # plain JSON comes back as it is
    except Exception as exc:  # corrupt gzip: whatever the inflater raised
        raise ValueError(f"digest is not readable gzip: {exc}") from None
    try:
        doc: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"digest is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("logFiles"), list):
        raise ValueError("not a CloudTrail digest document (no logFiles list)")
    entries = []
    for i, entry in enumerate(doc["logFiles"]):
        if not isinstance(entry, dict):
            raise ValueError(f"digest logFiles[{i}] is not an object")
        bucket, key, value = entry.get("s3Bucket"), entry.get("s3Object"), entry.get("hashValue")
        if not (isinstance(bucket, str) and isinstance(key, str) and isinstance(value, str)):
            raise ValueError(f"digest logFiles[{i}] lacks s3Bucket, s3Object or hashValue")
        algorithm = entry.get("hashAlgorithm", "SHA-256")
        if algorithm != "SHA-256":
            raise ValueError(f"digest logFiles[{i}] uses hashAlgorithm {algorithm!r}")
        entries.append((bucket, key, value.lower()))
    bucket, key = doc.get("digestS3Bucket"), doc.get("digestS3Object")
    return DigestListing(
        bucket if isinstance(bucket, str) else None,
        key if isinstance(key, str) else None,
        tuple(entries),
    )


class PendingDigestChecks:
    """Meets processed log files and digest entries in a `KeyValueStore`, in either order.

    `log_processed` and `digest_processed` hand each completed comparison to `report`
    as soon as it is made (before the next store call), so a failure later in a large
    digest loses no result. Store calls are retried on transient errors; other errors
    propagate (the caller keeps the file or digest for a later attempt).
    """

    def __init__(
        self,
        store: KeyValueStore,
        report: Callable[[HashCheck], None],
        *,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        concurrency: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(store, KeyValueStore):
            raise TypeError(
                f"{store!r} cannot keep pending digest checks (it is not a KeyValueStore)"
            )
        self.store = store
        self.report = report
        self.wait_seconds = wait_seconds
        self.concurrency = concurrency
        self.clock = clock
        # (deadline, bucket, key) of the log-side hashes this process stored, oldest first.
        self._tracked: collections.deque[tuple[float, str, str]] = collections.deque()
        self._full_warned = False
        self._sweeping = False

    @staticmethod
    def key(bucket: str, key: str) -> str:
        return f"{KEY_PREFIX}s3://{bucket}/{key}"

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        return await retry_transient(call, attempts=5)

    async def _meet(self, key: str, mine: dict[str, Any]) -> dict[str, Any] | None:
        """Store `mine` under `key`, or take the other side's value if it is there."""
        text = json.dumps(mine, separators=(",", ":"))
        ttl = self.wait_seconds + (UNVERIFIED_GRACE if mine["from"] == "log" else 0.0)
        for _ in range(5):
            stored = await self._call(lambda: self.store.remember(key, text, ttl, only_new=True))
            if stored:
                return None
            held = await self._call(lambda: self.store.forget(key))
            if held is None:
                continue  # expired or taken by another worker a moment ago
            other = _load(held)
            if other is not None and other["from"] != mine["from"]:
                return other
            # Our own side (or unreadable): drop it, ours replaces it on the next turn.
        await self._call(lambda: self.store.remember(key, text, ttl))
        return None

    async def log_processed(self, bucket: str, key: str, sha256: str) -> HashCheck | None:
        """A log file was processed; compare now if its digest came first."""
        await self.sweep()
        actual = sha256.lower()
        other = await self._meet(self.key(bucket, key), {"from": "log", "sha256": actual})
        if other is None:
            self._track(bucket, key)
            return None
        check = HashCheck(
            bucket, key, other["sha256"], actual, other.get("digest_bucket"),
            other.get("digest_key"),
        )  # fmt: skip
        self.report(check)
        return check

    async def digest_processed(
        self,
        listing: DigestListing,
        on_unseen: Callable[[str, str], None] | None = None,
    ) -> list[HashCheck]:
        """A digest arrived; compare the listed log files already processed, remember the
        expected hashes of the others (each passed to `on_unseen(bucket, key)`)."""
        await self.sweep()
        limit = asyncio.Semaphore(self.concurrency)
        checks: list[HashCheck] = []

        async def one(bucket: str, key: str, expected: str) -> None:
            mine = {"from": "digest", "sha256": expected,
                    "digest_bucket": listing.bucket, "digest_key": listing.key}  # fmt: skip
            async with limit:
                other = await self._meet(self.key(bucket, key), mine)
            if other is None:
                if on_unseen is not None:
                    on_unseen(bucket, key)
                return
            check = HashCheck(bucket, key, expected, other["sha256"], listing.bucket, listing.key)
            checks.append(check)
            self.report(check)

        results = await asyncio.gather(
            *(one(*entry) for entry in listing.log_files), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return checks

    def _track(self, bucket: str, key: str) -> None:
        if len(self._tracked) >= MAX_TRACKED:
            if not self._full_warned:
                self._full_warned = True
                log.warning("too many log file hashes wait for their digest; later ones "
                            "expire unreported if none comes", tracked=MAX_TRACKED)  # fmt: skip
            return
        self._tracked.append((self.clock() + self.wait_seconds, bucket, key))

    async def sweep(self) -> list[HashCheck]:
        """Report the tracked hashes whose wait is over and that no digest met."""
        found: list[HashCheck] = []
        if self._sweeping:
            return found  # one sweep at a time; the running one covers the due entries
        self._sweeping = True
        try:
            now = self.clock()
            while self._tracked and self._tracked[0][0] <= now:
                entry = self._tracked.popleft()
                try:
                    check = await self._expire(entry[1], entry[2])
                except BaseException:
                    self._tracked.appendleft(entry)  # the store failed: try again later
                    raise
                if check is not None:
                    found.append(check)
                    self.report(check)
        finally:
            self._sweeping = False
        return found

    async def _expire(self, bucket: str, key: str) -> HashCheck | None:
        """Take a due log-side value back; a check with outcome "unverified" if it was."""
        name = self.key(bucket, key)
        held = await self._call(lambda: self.store.forget(name))
        value = _load(held) if held is not None else None
        if value is None:
            return None  # met by a digest meanwhile (possibly in another worker)
        if value["from"] != "log":
            # A digest's value that arrived after ours was taken: put it back.
            text = held or ""
            await self._call(
                lambda: self.store.remember(name, text, self.wait_seconds, only_new=True)
            )
            return None
        return HashCheck(bucket, key, "", value["sha256"], None, None)


def _load(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if (
        not isinstance(value, dict)
        or value.get("from") not in ("log", "digest")
        or not isinstance(value.get("sha256"), str)
    ):
        return None
    return value


# --- gap filling ---------------------------------------------------------------------------
