"""An in-process checkpoint store: plain dicts, lost when the process ends.

Good for tests and for AWS Lambda, where SQS redelivery is the only durability needed
and a fresh process starts from nothing anyway. Nothing outlives the process, so no
other release ever reads it: unlike SQLite and DynamoDB it records no schema version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ._base import Claim, ClaimState, FileId, LeaseLost

__all__ = ["MemoryStore"]


@dataclass
class _Entry:
    position: int = 0
    records: int | None = None
    done_at: float | None = None
    lease_owner: str | None = None
    lease_expires: float = 0.0


class MemoryStore:
    """`CheckpointStore` kept in a dict; one instance is one shared view of progress."""

    never_suspends = True  # see CheckpointStore: no call ever awaits anything

    def __init__(self) -> None:
        self._files: dict[FileId, _Entry] = {}
        self._values: dict[str, tuple[str, float]] = {}  # key → (value, expires at)

    async def claim(self, file: FileId, owner: str, lease_seconds: float) -> Claim:
        now = time.time()
        entry = self._files.setdefault(file, _Entry())
        if entry.done_at is not None:
            return Claim(ClaimState.DONE)
        if (
            entry.lease_owner is not None
            and entry.lease_owner != owner
            and entry.lease_expires >= now
        ):
            return Claim(ClaimState.BUSY, entry.position)
        entry.lease_owner = owner
        entry.lease_expires = now + lease_seconds
        if entry.position > 0:
            return Claim(ClaimState.RESUME, entry.position)
        return Claim(ClaimState.NEW, 0)

    async def commit(self, file: FileId, owner: str, position: int) -> None:
        entry = self._files.get(file)
        if entry is None or entry.lease_owner != owner:
            raise LeaseLost(f"{owner} does not hold the lease on {file}")
        entry.position = max(entry.position, position)

    async def complete(self, file: FileId, owner: str, records: int) -> None:
        entry = self._files.setdefault(file, _Entry())
        entry.position = max(entry.position, records)
        entry.records = records
        if entry.done_at is None:
            entry.done_at = time.time()
        entry.lease_owner = None
        entry.lease_expires = 0.0

    async def release(self, file: FileId, owner: str) -> None:
        entry = self._files.get(file)
        if entry is not None and entry.lease_owner == owner:
            entry.lease_owner = None
            entry.lease_expires = 0.0

    async def is_done(self, file: FileId) -> bool:
        entry = self._files.get(file)
        return entry is not None and entry.done_at is not None

    # --- KeyValueStore ----------------------------------------------------------------
    def _live(self, key: str) -> str | None:
        held = self._values.get(key)
        if held is None:
            return None
        if held[1] <= time.time():
            del self._values[key]
            return None
        return held[0]

    async def remember(
        self, key: str, value: str, ttl_seconds: float, *, only_new: bool = False
    ) -> bool:
        if only_new and self._live(key) is not None:
            return False
        self._values[key] = (value, time.time() + ttl_seconds)
        return True

    async def hold(self, key: str, owner: str, ttl_seconds: float) -> bool:
        """Take or renew the lease `key` for `owner` (see `LeaseStore`)."""
        if self._live(key) not in (None, owner):
            return False
        self._values[key] = (owner, time.time() + ttl_seconds)
        return True

    async def recall(self, key: str) -> str | None:
        return self._live(key)

    async def forget(self, key: str) -> str | None:
        value = self._live(key)
        self._values.pop(key, None)
        return value

    async def close(self) -> None:
        """Nothing to flush; the data stays readable until the object is dropped."""
