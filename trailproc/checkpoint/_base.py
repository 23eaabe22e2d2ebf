"""The checkpoint store interface: what is done, what is in progress, who holds a file.

A log file is identified by bucket + key + ETag (or version id), so an overwritten object
with new content is a new file, while a redelivered notification for the same object is not.

Beside progress, every store keeps small values that expire (`KeyValueStore`): state that
must outlive a process and be shared by workers, such as the log-file hashes that wait
for their hourly digest (inline digest verification).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .._errors import CheckpointError

__all__ = [
    "CheckpointStore",
    "Claim",
    "ClaimState",
    "FileId",
    "KeyValueStore",
    "LeaseLost",
    "LeaseStore",
    "StateLost",
]


@dataclass(frozen=True, slots=True)
class FileId:
    """The identity of one log file's content."""

    bucket: str
    key: str
    etag: str = ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}#{self.etag}"


class ClaimState(str, enum.Enum):
    NEW = "new"  # never seen: start at record 0
    RESUME = "resume"  # a previous attempt committed `position` records: continue there
    DONE = "done"  # completed before: hand nothing over again
    BUSY = "busy"  # another live worker holds the lease: try later


@dataclass(frozen=True, slots=True)
class Claim:
    state: ClaimState
    position: int = 0  # index of the first record not yet handed over


class LeaseLost(Exception):
    """The caller no longer holds the lease on a file: stop handing its records over.

    Raised by `CheckpointStore.commit` when the lease expired and another owner took the
    file, or when the file was released or completed meanwhile.
    """


class StateLost(CheckpointError):
    """The store's storage vanished under a running process (its file deleted or replaced,
    its folder removed): progress written now would be lost, so nothing more is written.

    Fatal for a run: it stops with this one error instead of failing file after file.
    """

    reason = "state_lost"


@runtime_checkable
class CheckpointStore(Protocol):
    """Where progress lives. Every method is safe to call from one event loop.

    Contract shared by every implementation:

    * `claim` returns DONE for a completed file; BUSY (with the committed position) while
      another owner holds an unexpired lease; otherwise it takes or renews the lease for
      `owner` until now + `lease_seconds` and returns NEW (nothing committed yet) or
      RESUME (start at the committed position). Claiming again is the heartbeat.
    * `commit` only ever moves the position forward; a smaller position is ignored. It
      raises `LeaseLost` unless `owner` is still the recorded lease holder.
    * `complete` marks the file done whoever holds it (all records were handed over) and
      drops the lease; `release` drops `owner`'s lease and keeps the position.

    `never_suspends` is True when none of the store's calls ever awaits anything (all
    work done synchronously) and none fails transiently. The pipeline then awaits its
    commits directly, since no cancellation can land inside one, instead of protecting
    each in a shielded task with retries. Every store declares it.
    """

    never_suspends: bool

    async def claim(self, file: FileId, owner: str, lease_seconds: float) -> Claim:
        """Take (or renew) the lease on `file` for `owner` and say where to start."""

    async def commit(self, file: FileId, owner: str, position: int) -> None:
        """Record that records [0, position) were handed over and returned."""

    async def complete(self, file: FileId, owner: str, records: int) -> None:
        """Mark `file` done for good; its lease ends."""

    async def release(self, file: FileId, owner: str) -> None:
        """Give the lease up after a failure, keeping committed progress."""

    async def is_done(self, file: FileId) -> bool:
        """True if `file` was completed before."""

    async def close(self) -> None:
        """Flush and free resources."""


@runtime_checkable
class KeyValueStore(Protocol):
    """Small string values under string keys, each forgotten after its time to live.

    Contract shared by every implementation (memory, SQLite, DynamoDB):

    * a value whose TTL has passed reads as absent, whether or not it was purged yet
      (SQLite purges lazily; DynamoDB's TTL deletion can lag by days);
    * `remember(..., only_new=True)` stores only if the key is absent (or expired) and
      says whether it did: two workers racing on one key cannot both win;
    * `forget` removes and returns the value in one step, so of several callers racing
      to take the same value exactly one gets it.
    """

    async def remember(
        self, key: str, value: str, ttl_seconds: float, *, only_new: bool = False
    ) -> bool:
        """Store `value` under `key` for `ttl_seconds`; True if it was stored."""

    async def recall(self, key: str) -> str | None:
        """The live value under `key`, or None."""

    async def forget(self, key: str) -> str | None:
        """Remove `key`; returns the live value it held, or None."""


@runtime_checkable
class LeaseStore(Protocol):
    """Named leases for "one active at a time" roles (the bucket watcher), kept with the
    expiring values (the same rows/items, so no schema change is needed).

    * `hold` takes the lease `key` for `owner` until now + `ttl_seconds` when it is free,
      expired, or already `owner`'s (renewal), and says whether `owner` holds it now;
      another owner's live lease is left alone. `ttl_seconds=0` gives it up.
    * Expiry is judged by each caller's wall clock: keep the TTL well above the clock
      skew between hosts and the renewal interval.
    """

    async def hold(self, key: str, owner: str, ttl_seconds: float) -> bool:
        """Take or renew the lease `key` for `owner`; False if another owner holds it."""
