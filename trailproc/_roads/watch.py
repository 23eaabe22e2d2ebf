"""Follow a bucket that has no notifications: list new CloudTrail files every interval.

Each round lists, for every account / region folder of the selection (discovered once
and cached, found again every `rediscover_seconds`), only the day folders from the
stream's cursor to today, with `StartAfter` at the cursor's minute. CloudTrail names a
file after its delivery minute plus a random suffix, and files land out of order, so a
cursor at the newest key seen would skip a file landing just behind it. The cursor is
therefore kept `overlap` behind the round's start: every round lists the last minutes
again. Files already handed over are skipped (in memory, and through the per-file
checkpoints after a restart), so the overlap costs listing only, never duplicates.

Cursors and per-file progress live in the checkpoint store, so a restarted watcher
resumes. One watcher per bucket and prefix is active at a time: it holds a lease in the
store, renewed while it works; a second watcher stands by and takes over once the lease
expires (the active one stopped renewing: killed, hung, or partitioned).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .._observe import Metrics, get_logger
from .._pipeline.engine import FileOutcome
from .._pipeline.keys import FileRef
from .._ports.objects import S3Objects
from ..checkpoint import CheckpointStore, KeyValueStore, LeaseStore
from .s3_listing import Lister, ListingQuery, Stream, list_streams

__all__ = ["DEFAULT_OVERLAP", "WatchOptions", "Watcher"]

log = get_logger("trailproc.watch")

DEFAULT_OVERLAP = dt.timedelta(minutes=20)
CURSOR_TTL = 400 * 86400.0  # a cursor outlives any pause in watching
CURSOR_WRITE_STEP = dt.timedelta(minutes=5)
LEASE_PREFIX = "watch-lease:"
CURSOR_PREFIX = "watch-cursor:"


@dataclass(frozen=True)
class WatchOptions:
    """What to follow and how often (see the module docstring)."""

    bucket: str
    prefix: str | None = None
    account_ids: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    interval: float = 60.0
    overlap: dt.timedelta = DEFAULT_OVERLAP
    start_time: dt.datetime | None = None  # first round of a new stream; default: today
    lease_seconds: float | None = None  # default: max(30 s, 3 intervals)
    rediscover_seconds: float = 600.0
    insights: bool = False
    exit_when_idle: bool = False

    @property
    def lease_ttl(self) -> float:
        return self.lease_seconds or max(30.0, 3 * self.interval)

    def query(self, allowed_accounts: Iterable[str] = ()) -> ListingQuery:
        accounts = list(self.account_ids)
        allowed = list(allowed_accounts)
        if allowed:
            accounts = [a for a in accounts if a in allowed] if accounts else allowed
            if not accounts:
                raise ValueError("none of the --account-id values is in allowed_accounts")
        return ListingQuery.build(self.bucket, prefix=self.prefix, account_ids=accounts,
                                  regions=self.regions, insights=self.insights)  # fmt: skip


@dataclass
class RoundResult:
    streams: int = 0
    list_calls: int = 0
    new: int = 0  # files never attempted before by this watcher
    failed: list[FileOutcome] = field(default_factory=list)
    newest: dt.datetime | None = None


def _parse_cursor(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


class Watcher:
    """Runs rounds while it holds the bucket's lease; stands by otherwise."""

    def __init__(
        self,
        options: WatchOptions,
        query: ListingQuery,
        s3: Any,
        store: CheckpointStore,
        metrics: Metrics,
        *,
        owner: str,
        hand_over: Callable[..., Awaitable[Any]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`hand_over(refs, failed=..., stopping=...)` runs files through the pipeline
        (`run_refs` with its pipeline, concurrency and trust bound)."""
        if not isinstance(store, KeyValueStore) or not isinstance(store, LeaseStore):
            raise TypeError(f"{type(store).__name__} keeps no cursors or leases")
        self.options = options
        self.query = query
        self.lister = Lister(S3Objects(s3), options.bucket)
        self.store = store
        self.kv: KeyValueStore = store
        self.leases: LeaseStore = store
        self.metrics = metrics
        self.owner = owner
        self.hand_over = hand_over
        self.clock = clock
        self.lease_key = f"{LEASE_PREFIX}{options.bucket}/{query.root}"
        self.attempted: set[str] = set()
        self.done: dict[str, dt.datetime | None] = {}  # key → delivery, inside the window
        self.failed: list[FileOutcome] = []
        self.cursors: dict[Stream, dt.datetime] = {}  # everything before is done
        self.stored: dict[Stream, dt.datetime] = {}  # the cursors last written
        self.rounds = 0
        self._streams: list[Stream] = []
        self._discovered_at = -float("inf")
        self._active = False
        self._announced: bool | None = None  # the role last logged
        self._lost = asyncio.Event()

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.timezone.utc)

    # --- the lease ------------------------------------------------------------------------
    async def _hold(self) -> bool:
        held = await self.leases.hold(self.lease_key, self.owner, self.options.lease_ttl)
        if held is not self._announced:
            self._announced = held
            log.info("watching: this watcher is active" if held else
                     "standing by: another watcher holds the lease",
                     bucket=self.options.bucket, lease=self.lease_key,
                     owner=self.owner)  # fmt: skip
        self._active = held
        return held

    async def _keep_lease(self) -> None:
        """Renew the lease while a round works; a lost lease stops starting files."""
        while True:
            await asyncio.sleep(self.options.lease_ttl / 3)
            if not await self._hold():
                self._lost.set()
                return

    # --- rounds ---------------------------------------------------------------------------
    async def run(self, stopping: asyncio.Event) -> None:
        """Rounds every `interval` until `stopping` (or an idle round, exit_when_idle)."""
        try:
            while not stopping.is_set():
                if await self._hold():
                    result = await self._round_with_lease(stopping)
                    if self.options.exit_when_idle and result.new == 0:
                        log.info("no new files: exiting (exit_when_idle)")
                        return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.options.interval)
        finally:
            if self._active:
                await self.leases.hold(self.lease_key, self.owner, 0)  # hand over now

    async def _round_with_lease(self, stopping: asyncio.Event) -> RoundResult:
        self._lost.clear()
        keeper = asyncio.create_task(self._keep_lease())
        halt = asyncio.Event()
        relay = asyncio.create_task(_first_of(halt, stopping, self._lost))
        try:
            return await self.round(halt)
        finally:
            keeper.cancel()
            relay.cancel()
            await asyncio.gather(keeper, relay, return_exceptions=True)

    async def _current_streams(self) -> list[Stream]:
        if time.monotonic() - self._discovered_at >= self.options.rediscover_seconds:
            self.lister.folders.clear()
            self._streams = await list_streams(self.lister, self.query)
            self._discovered_at = time.monotonic()
        return self._streams

    async def round(self, halt: asyncio.Event) -> RoundResult:
        """List every stream from its cursor, hand the files over, move the cursors."""
        started = self._now()
        calls_before = self.lister.calls
        result = RoundResult()
        streams = await self._current_streams()
        result.streams = len(streams)
        by_stream: dict[Stream, list[FileRef]] = {}
        cursors: dict[Stream, dt.datetime] = {}
        for stream in streams:
            cursors[stream] = await self._cursor(stream, started)
            by_stream[stream] = await self._list(stream, cursors[stream], started)
        refs = [ref for listed in by_stream.values() for ref in listed]
        result.new = sum(1 for ref in refs if ref.key not in self.attempted)
        self.attempted.update(ref.key for ref in refs)
        await self.hand_over(refs, failed=result.failed, stopping=halt)
        failed = {outcome.ref.key for outcome in result.failed}
        for ref in refs:
            if ref.key not in failed:
                self.done[ref.key] = ref.info.delivered_at
        interrupted = halt.is_set()
        for stream, listed in by_stream.items():
            if not interrupted:
                await self._advance(stream, cursors[stream], listed, failed, started)
        result.newest = max((t for t in self.done.values() if t is not None), default=None)
        result.list_calls = self.lister.calls - calls_before
        self._report(result, refs, started)
        self.rounds += 1
        return result

    def _report(self, result: RoundResult, refs: list[FileRef], started: dt.datetime) -> None:
        self.failed.extend(result.failed)
        lag = None
        if result.newest is not None:
            lag = max(0.0, (started - result.newest).total_seconds())
            self.metrics.queue_lag.observe(lag)
        log.info("watch round", bucket=self.options.bucket, streams=result.streams,
                 list_calls=result.list_calls, files=len(refs), new=result.new,
                 failed=len(result.failed),
                 newest_file_age_seconds=None if lag is None else round(lag, 1))  # fmt: skip

    # --- cursors --------------------------------------------------------------------------
    def _cursor_key(self, stream: Stream) -> str:
        return f"{CURSOR_PREFIX}{self.options.bucket}/{stream.folder}"

    async def _cursor(self, stream: Stream, now: dt.datetime) -> dt.datetime:
        if stream in self.cursors:
            return self.cursors[stream]
        stored = _parse_cursor(await self.kv.recall(self._cursor_key(stream)))
        if stored is not None:
            self.stored[stream] = stored
            return stored
        if self.options.start_time is not None:
            return self.options.start_time
        return dt.datetime.combine(now.date(), dt.time(), dt.timezone.utc)

    async def _advance(
        self,
        stream: Stream,
        cursor: dt.datetime,
        listed: list[FileRef],
        failed: set[str],
        started: dt.datetime,
    ) -> None:
        """Everything delivered before the new cursor is done: it is `overlap` before
        this round's start, and never after a file that failed (listed again until it
        succeeds)."""
        new = started - self.options.overlap
        for ref in listed:
            when = ref.info.delivered_at
            if ref.key in failed and when is not None:
                new = min(new, when)
        new = max(new, cursor).replace(second=0, microsecond=0)
        self.cursors[stream] = new
        # The stored cursor may lag the one in memory (a restart lists a little more and
        # skips what is done): one write per stream every few minutes, not every round.
        last = self.stored.get(stream)
        if last is None or new - last >= CURSOR_WRITE_STEP:
            await self.kv.remember(self._cursor_key(stream), new.isoformat(), CURSOR_TTL)
            self.stored[stream] = new
        # Keys delivered before the window start can no longer be listed again.
        for key, when in list(self.done.items()):
            if when is not None and when < new - dt.timedelta(minutes=1):
                del self.done[key]

    # --- listing --------------------------------------------------------------------------
    async def _list(self, stream: Stream, cursor: dt.datetime, now: dt.datetime) -> list[FileRef]:
        """Files of `stream` delivered from `cursor`'s minute on, not yet handed over."""
        refs: list[FileRef] = []
        day = cursor.date()
        while day <= now.date():
            start_after = stream.start_after(cursor) if day == cursor.date() else None
            async for key, size, etag in self.lister.objects(stream.day_folder(day), start_after):
                if key in self.done or key.endswith("/"):
                    continue
                ref = FileRef.of(self.options.bucket, key, etag=etag, size=size)
                if ref.kind is stream.kind:
                    refs.append(ref)
            day += dt.timedelta(days=1)
        return refs


async def _first_of(target: asyncio.Event, *sources: asyncio.Event) -> None:
    """Set `target` once any of `sources` is set."""
    waits = [asyncio.ensure_future(source.wait()) for source in sources]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        target.set()
    finally:
        for wait in waits:
            wait.cancel()
