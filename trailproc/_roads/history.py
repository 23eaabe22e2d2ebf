"""The event-history road: CloudTrail's `LookupEvents` API → the same handlers.

Accounts without a trail (or before one existed) still have 90 days of management events
in CloudTrail's event history. `history_async` pages through `LookupEvents` for a time
window in each region asked for and hands each event's `CloudTrailEvent` (the record as
CloudTrail stores it, a JSON string: its UTF-8 bytes, unchanged) to the pipeline.

- **Rate.** `LookupEvents` allows 2 requests per second per account and region; a token
  bucket per region keeps to that, and throttling answers are retried with backoff
  (`retry_transient`, tenacity).
- **Checkpoints.** Each page is one checkpoint unit, named by its first event id and a
  hash of all of its event ids, so a page seen again is skipped. The position in the
  window (the `NextToken` of the next page) is kept in the checkpoint store's key-value
  part under the account, region, window and lookup attribute, so a rerun of the same
  command resumes where the last one stopped. A token the API no longer accepts restarts
  the window from its newest page; pages done already are skipped by their checkpoints.
- **Trust.** The records come from CloudTrail's own API, over TLS, with the caller's
  credentials, as log files come from S3: no opt-in is needed.

Pages are asked for one after the other (each needs the previous page's token); regions
run side by side, each with its own rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec

from .._config import Config
from .._errors import (
    BadLogFile,
    DecompressedTooLarge,
    FetchError,
    TrailprocError,
    error_code,
    retry_transient,
)
from .._observe import Metrics, get_logger
from .._pipeline.engine import FilePipeline
from .._pipeline.fetch import Fetched
from .._pipeline.keys import FileRef, KeyInfo, ObjectKind, StreamOrigin
from .._pipeline.trust import TrustPolicy, check_account
from ..checkpoint import CheckpointStore, KeyValueStore

__all__ = [
    "LOOKUP_ATTRIBUTES",
    "HistoryResult",
    "HistoryWindow",
    "TokenBucket",
    "history_async",
    "page_records",
    "page_ref",
    "parse_lookup_attribute",
    "run_region",
]

log = get_logger("trailproc.history")

LOOKUP_ATTRIBUTES = (
    "EventId", "EventName", "ReadOnly", "Username", "ResourceType", "ResourceName",
    "EventSource", "AccessKeyId",
)  # fmt: skip
REQUESTS_PER_SECOND = 2.0
PAGE_SIZE = 50  # the API's maximum
POSITION_TTL_SECONDS = 90 * 86400.0  # as long as the history itself
DONE = "done"


class TokenBucket:
    """At most `rate` acquisitions per second, at most `burst` at once.

    With `burst=1` no two acquisitions are closer than `1/rate` seconds, so no window of
    one second ever holds more than `rate` of them. `clock`/`sleep` are injectable.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.sleep = sleep
        self.tokens = burst
        self.updated = clock()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self.clock()
                self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await self.sleep((1.0 - self.tokens) / self.rate)


def parse_lookup_attribute(text: str) -> dict[str, str]:
    """`KEY=VALUE` → LookupEvents' `{"AttributeKey", "AttributeValue"}` (ValueError if bad)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not value:
        raise ValueError(f"lookup attribute {text!r} is not KEY=VALUE")
    if key not in LOOKUP_ATTRIBUTES:
        known = ", ".join(LOOKUP_ATTRIBUTES)
        raise ValueError(f"lookup attribute key {key!r} is not one of {known}")
    return {"AttributeKey": key, "AttributeValue": value}


@dataclass(frozen=True)
class HistoryWindow:
    """What to look up: a time window and at most one attribute (the API takes one)."""

    start: dt.datetime
    end: dt.datetime
    attribute: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.start >= self.end:
            raise ValueError("--start-time must be before --end-time")

    def position_key(self, account: str, region: str) -> str:
        attribute = ""
        if self.attribute:
            attribute = f"{self.attribute['AttributeKey']}={self.attribute['AttributeValue']}"
        return (f"history-position:{account}:{region}:{self.start.isoformat()}:"
                f"{self.end.isoformat()}:{attribute}")  # fmt: skip

    def request(self, token: str | None) -> dict[str, Any]:
        request: dict[str, Any] = {
            "StartTime": self.start, "EndTime": self.end, "MaxResults": PAGE_SIZE,
        }  # fmt: skip
        if self.attribute:
            request["LookupAttributes"] = [self.attribute]
        if token:
            request["NextToken"] = token
        return request


@dataclass
class HistoryResult:
    """What a history run did, per region and in total."""

    metrics: Metrics
    pages: int = 0
    pages_skipped: int = 0
    records: int = 0
    regions_done: list[str] = field(default_factory=list)
    regions_already_done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # region → why
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


class _AnyObject(msgspec.Struct):
    pass


_object_checker = msgspec.json.Decoder(_AnyObject)


def page_records(events: Sequence[Any], max_bytes: int) -> tuple[list[bytes], list[str]]:
    """A page's `Events` → (record bytes, event ids); BadLogFile if one is unusable or
    the page's records together exceed `max_bytes` (max_decompressed_bytes)."""
    records: list[bytes] = []
    ids: list[str] = []
    size = 0
    for index, item in enumerate(events):
        text = item.get("CloudTrailEvent") if isinstance(item, dict) else None
        if not isinstance(text, str):
            raise BadLogFile(f"LookupEvents item {index} has no CloudTrailEvent string")
        try:
            record = text.encode("utf-8")
            _object_checker.decode(record)
        except (UnicodeEncodeError, msgspec.DecodeError, RecursionError):
            raise BadLogFile(
                f"LookupEvents item {index}: CloudTrailEvent is not a JSON object"
            ) from None
        size += len(record)
        if size > max_bytes:
            raise DecompressedTooLarge(
                f"LookupEvents page holds over max_decompressed_bytes={max_bytes} of records"
            )
        records.append(record)
        ids.append(str(item.get("EventId") or ""))
    return records, ids


def page_ref(account: str, region: str, ids: Sequence[str]) -> FileRef:
    """The checkpoint unit of one page (see the module docstring)."""
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
    first = ids[0] if ids else "empty"
    return FileRef(
        bucket="",
        key=f"cloudtrail-history:{account}:{region}:{first}",
        etag=digest,
        info=KeyInfo(ObjectKind.LOG, account_id=account, region=region),
        origin=StreamOrigin(road="history"),
    )


@dataclass
class _Region:
    """One region's walk through the window."""

    pipeline: FilePipeline
    kv: KeyValueStore
    client: Any
    account: str
    region: str
    window: HistoryWindow
    limiter: TokenBucket
    on_page: Callable[[], None] = lambda: None

    @property
    def key(self) -> str:
        return self.window.position_key(self.account, self.region)

    async def lookup(self, token: str | None) -> dict[str, Any]:
        request = self.window.request(token)

        async def call() -> dict[str, Any]:
            await self.limiter.acquire()  # retries wait their turn too
            return dict(await self.client.lookup_events(**request))

        return await retry_transient(call, attempts=8, max_wait=10.0)

    async def start_token(self) -> tuple[str | None, bool]:
        """(token to start from, whether the window is done already)."""
        saved = await self.kv.recall(self.key)
        if saved == DONE:
            return None, True
        if saved:
            token = json.loads(saved).get("next_token")
            log.info("resuming event history", region=self.region, account=self.account)
            return token, False
        return None, False

    async def save(self, token: str | None) -> None:
        value = json.dumps({"next_token": token}) if token else DONE
        await self.kv.remember(self.key, value, POSITION_TTL_SECONDS)


async def _first_page(walk: _Region, token: str | None) -> dict[str, Any]:
    try:
        return await walk.lookup(token)
    except Exception as exc:
        if token is None or error_code(exc) != "InvalidNextTokenException":
            raise
    log.warning("saved position no longer accepted; starting the window again (pages "
                "done already are skipped)", region=walk.region)  # fmt: skip
    return await walk.lookup(None)


async def run_region(walk: _Region, result: HistoryResult, stopping: asyncio.Event) -> None:
    """Walk one region's pages from the saved position to the end of the window."""
    token, done = await walk.start_token()
    if done:
        log.info("event history window already done", region=walk.region)
        result.regions_already_done.append(walk.region)
        return
    metrics = walk.pipeline.observer.metrics
    page = await _first_page(walk, token)
    while True:
        try:
            records, ids = page_records(page.get("Events") or [], walk.pipeline.max_bytes)
        except BadLogFile as exc:
            walk.pipeline.observer.fail(exc.located(key=f"LookupEvents in {walk.region}"))
            metrics.road_units.labels("history", "bad_payload").inc()
            raise _RegionFailed(exc.message) from None
        outcome = await walk.pipeline.run_records(page_ref(walk.account, walk.region, ids),
                                                  records)  # fmt: skip
        walk.on_page()
        if not outcome.ok:
            metrics.road_units.labels("history", "failed").inc()
            why = outcome.error.message if outcome.error else outcome.status
            raise _RegionFailed(why)
        metrics.road_units.labels("history", "ok").inc()
        result.pages += 1
        result.pages_skipped += outcome.status == "already_done"
        result.records += outcome.records
        token = page.get("NextToken") or None
        await walk.save(token)  # after the page: a crash before this repeats no record
        if token is None:
            result.regions_done.append(walk.region)
            return
        if stopping.is_set():
            result.interrupted = True
            return
        page = await walk.lookup(token)


class _RegionFailed(Exception):
    pass


class _NoObjects:
    """The pipeline's fetcher here: history records come in the API's answers, so no
    object is ever fetched (asking would be a bug)."""

    async def fetch(self, ref: FileRef, held: object = None) -> Fetched:
        raise FetchError("the event history road reads no objects", code="none",
                         bucket=ref.bucket, key=ref.key)  # fmt: skip


async def run_regions(walks: Sequence[_Region], result: HistoryResult,
                      stopping: asyncio.Event) -> None:  # fmt: skip
    """Every region side by side; one failing does not stop the others."""

    async def one(walk: _Region) -> None:
        try:
            await run_region(walk, result, stopping)
        except (_RegionFailed, TrailprocError) as exc:
            result.failed[walk.region] = str(exc)
        except Exception as exc:
            code = error_code(exc)
            result.failed[walk.region] = f"{code or type(exc).__name__}: {exc}"
        if walk.region in result.failed:
            log.error("event history failed in a region; its position is kept",
                      region=walk.region, reason=result.failed[walk.region])  # fmt: skip

    await asyncio.gather(*(one(walk) for walk in walks))


def regions_of(config: Config, regions: Sequence[str], session_region: str | None) -> list[str]:
    chosen = list(dict.fromkeys(r.strip() for r in regions if r.strip()))
    if not chosen:
        region = config.region or session_region
        if not region:
            raise ValueError("no region: give --region (repeatable) or set AWS_REGION")
        chosen = [region]
    return chosen


async def _cloudtrail(stack: contextlib.AsyncExitStack, clients: Any, region: str) -> Any:
    """A CloudTrail client without botocore's own quick retries: each retry must wait
    for the token bucket too, or a throttled burst would exceed the API's rate."""
    from botocore.config import Config as BotoConfig

    from .._aws import botocore_config

    config = clients.config
    boto = botocore_config(config).merge(BotoConfig(retries={"mode": "standard",
                                                             "max_attempts": 1}))  # fmt: skip
    kwargs: dict[str, Any] = {"config": boto, "region_name": region}
    if config.endpoint_url:
        kwargs["endpoint_url"] = config.endpoint_url
    return await stack.enter_async_context(clients.session.client("cloudtrail", **kwargs))


async def _walk_account(
    clients: Any,
    pipeline: FilePipeline,
    store: KeyValueStore,
    *,
    window: HistoryWindow,
    regions: Sequence[str],
    result: HistoryResult,
    stopping: asyncio.Event,
    meter: Any,
) -> None:
    """Every chosen region of the caller's account, each with its own client and rate."""
    chosen = regions_of(clients.config, regions, clients.session.region_name)
    sts = await clients.client("sts", region=chosen[0])
    account = str((await sts.get_caller_identity())["Account"])
    refusal = check_account(TrustPolicy.of(clients.config), account)
    if refusal is not None:  # its events would all be another account's
        raise ValueError(f"event history of {refusal.reason}: nothing read")
    log.info("event history starting", account=account, regions=chosen,
             start=window.start.isoformat(), end=window.end.isoformat(),
             attribute=window.attribute)  # fmt: skip

    def on_page() -> None:
        meter.add_total(1)
        meter.advance()

    async with contextlib.AsyncExitStack() as stack:
        walks = [
            _Region(pipeline, store, await _cloudtrail(stack, clients, region), account,
                    region, window, TokenBucket(REQUESTS_PER_SECOND), on_page)
            for region in chosen
        ]  # fmt: skip
        try:
            await run_regions(walks, result, stopping)
        finally:
            await pipeline.close()


async def history_async(
    config: Config,
    processor: Any = None,
    *,
    window: HistoryWindow,
    regions: Sequence[str] = (),
    progress: bool | None = None,
    stopping: asyncio.Event | None = None,
    metrics: Metrics | None = None,
) -> HistoryResult:
    """Hand every event of `window` (in each region) to the handlers; see module doc."""
    from .._observe import ensure_logging
    from .._progress import Progress
    from .._runtime import StoreOptions, open_runtime

    ensure_logging(config.log_level, config.log_format)
    metrics = metrics or Metrics()
    stopping = stopping or asyncio.Event()
    result = HistoryResult(metrics)

    def positional(store: CheckpointStore) -> CheckpointStore:
        if not isinstance(store, KeyValueStore):
            raise ValueError(f"checkpoint store {config.checkpoint!r} cannot keep a position")
        return store

    started = time.monotonic()
    async with open_runtime(config, processor, metrics=metrics, objects=_NoObjects(),
                            store=StoreOptions(wrap=positional)) as runtime:  # fmt: skip
        meter = Progress(metrics, desc="history", bar=progress)
        try:
            store = cast(KeyValueStore, runtime.store)  # checked by `positional`
            await _walk_account(runtime.aws(), runtime.pipeline, store, window=window,
                                regions=regions, result=result, stopping=stopping,
                                meter=meter)  # fmt: skip
        finally:
            meter.close()
    result.seconds = time.monotonic() - started
    log.info("event history finished", pages=result.pages, pages_skipped=result.pages_skipped,
             records=result.records, failed=result.failed or None,
             interrupted=result.interrupted, seconds=round(result.seconds, 3))  # fmt: skip
    return result
