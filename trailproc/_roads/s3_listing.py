"""The S3 listing source: CloudTrail log keys already in a bucket, found by their layout.

CloudTrail writes ``[prefix/]AWSLogs/[o-org/]ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/`` with
file names ``ACCOUNT_CloudTrail_REGION_YYYYMMDDTHHmmZ_UNIQUE.json.gz``. So a time range
never needs a scan of the whole bucket:

* accounts, organization folders and regions are discovered with ``Delimiter="/"``
  listings (one small call per level) unless given;
* only the date folders of the range are listed (discovered year → month → day when the
  range has no start);
* inside a folder keys sort by their delivery timestamp, so ``StartAfter`` skips to the
  range's start and listing stops at its end;
* each key is filtered by the delivery timestamp in its name (``start <= t < end``).

Objects that are not log files (digests, Config checks, folder markers) are never
returned. Everything here only lists; nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, replace
from typing import Any

from .._errors import retry_transient
from .._observe import get_logger
from .._pipeline.keys import FileRef, ObjectKind
from .._ports.objects import ListPage, ObjectPort
from .._timeparse import parse_time, to_utc

__all__ = [
    "DIGEST_LAG",
    "DayFolder",
    "FolderCache",
    "Lister",
    "ListingQuery",
    "Stream",
    "iter_day_folders",
    "iter_digest_refs",
    "iter_log_refs",
    "list_streams",
    "parse_time",
]

log = get_logger("trailproc.s3_listing")

_ACCOUNT = re.compile(r"^\d{12}$")
_ORG = re.compile(r"^o-[a-z0-9]{10,32}$")
_REGION = re.compile(r"^[a-z0-9-]+$")
_FOLDERS = {ObjectKind.LOG: "CloudTrail", ObjectKind.INSIGHT: "CloudTrail-Insight"}


def _utc(value: dt.datetime | dt.date | str | None) -> dt.datetime | None:
    if value is None:
        return None
    return parse_time(value) if isinstance(value, str) else to_utc(value)


@dataclass(frozen=True)
class ListingQuery:
    """What to list. Empty `account_ids`/`regions` mean "every one found in the bucket"."""

    bucket: str
    root: str = "AWSLogs/"  # the folder holding the account folders: "[prefix/]AWSLogs/"
    account_ids: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    start: dt.datetime | None = None  # inclusive, by file-name delivery time
    end: dt.datetime | None = None  # exclusive
    kinds: frozenset[ObjectKind] = frozenset({ObjectKind.LOG})

    @classmethod
    def build(
        cls,
        bucket: str,
        *,
        prefix: str | None = None,
        account_ids: Iterable[str] = (),
        regions: Iterable[str] = (),
        start: dt.datetime | dt.date | str | None = None,
        end: dt.datetime | dt.date | str | None = None,
        insights: bool = False,
    ) -> ListingQuery:
        """Validate and normalise the user's selection."""
        if not bucket:
            raise ValueError("a bucket is required")
        accounts = tuple(dict.fromkeys(a.strip() for a in account_ids if a.strip()))
        for account in accounts:
            if not _ACCOUNT.match(account):
                raise ValueError(f"account id {account!r} is not 12 digits")
        region_list = tuple(dict.fromkeys(r.strip() for r in regions if r.strip()))
        for region in region_list:
            if not _REGION.match(region):
                raise ValueError(f"region {region!r} is not a region name like us-east-1")
        start_at, end_at = _utc(start), _utc(end)
        if start_at and end_at and end_at <= start_at:
            raise ValueError(
                f"end time {end_at.isoformat()} is not after start time {start_at.isoformat()}"
            )
        kinds = frozenset({ObjectKind.LOG, ObjectKind.INSIGHT} if insights else {ObjectKind.LOG})
        return cls(bucket, _root(prefix), accounts, region_list, start_at, end_at, kinds)


def _root(prefix: str | None) -> str:
    """The folder holding `AWSLogs/` given a trail prefix (`p`, `p/`, `p/AWSLogs/`...)."""
    text = (prefix or "").strip("/")
    if text == "AWSLogs":
        return "AWSLogs/"
    if text.endswith("/AWSLogs"):
        text = text[: -len("/AWSLogs")]
    return f"{text}/AWSLogs/" if text else "AWSLogs/"


@dataclass(frozen=True)
class DayFolder:
    """One `.../CloudTrail/REGION/YYYY/MM/DD/` folder to list."""

    path: str
    account_id: str
    region: str
    day: dt.date
    kind: ObjectKind
    org_id: str | None = None


FolderCache = dict[str, list[str]]
"""Sub-folder names by folder path, filled by one listing and reused by the next."""


class _Lister:
    def __init__(
        self, objects: ObjectPort, bucket: str, folders: FolderCache | None = None
    ) -> None:
        self.objects_port = objects
        self.bucket = bucket
        # Shared by the walks of one run (log files, then their digests), so the account,
        # region and date folders are listed once. Object listings are never cached.
        self.folders: FolderCache = {} if folders is None else folders
        self.calls = 0  # ListObjectsV2 requests made (the cost a round reports)

    async def _page(
        self, folder: str, *, start_after: str | None = None, token: str | None = None
    ) -> ListPage:
        self.calls += 1
        return await retry_transient(
            lambda: self.objects_port.list_page(
                self.bucket, folder, delimiter="/", start_after=start_after, token=token
            )
        )

    async def children(self, folder: str) -> list[str]:
        """Names of the sub-folders of `folder` (which ends with '/')."""
        known = self.folders.get(folder)
        if known is not None:
            return known
        names = await self._list_children(folder)
        self.folders[folder] = names
        return names

    async def _list_children(self, folder: str) -> list[str]:
        names: list[str] = []
        token: str | None = None
        while True:
            page = await self._page(folder, token=token)
            for prefix in page.folders:
                name = prefix[len(folder) :].rstrip("/")
                if name:
                    names.append(name)
            if page.next_token is None:
                return names
            token = page.next_token

    async def objects(
        self, folder: str, start_after: str | None = None
    ) -> AsyncIterator[tuple[str, int, str | None]]:
        """`(key, size, etag)` of the objects directly in `folder` (keys in S3's
        lexicographic order), page by page."""
        token: str | None = None
        while True:
            page = await self._page(folder, start_after=None if token else start_after,
                                    token=token)  # fmt: skip
            for item in page.objects:
                yield item
            if page.next_token is None:
                return
            token = page.next_token


async def _account_folders(
    lister: _Lister, query: ListingQuery
) -> list[tuple[str, str, str | None]]:
    """(folder, account, org) for each account folder selected, org trails included."""
    top = await lister.children(query.root)
    wanted = set(query.account_ids)
    found: list[tuple[str, str, str | None]] = []
    for name in sorted(top):
        if _ACCOUNT.match(name):
            if not wanted or name in wanted:
                found.append((f"{query.root}{name}/", name, None))
        elif _ORG.match(name):
            org_folder = f"{query.root}{name}/"
            for member in sorted(await lister.children(org_folder)):
                if _ACCOUNT.match(member) and (not wanted or member in wanted):
                    found.append((f"{org_folder}{member}/", member, name))
    missing = wanted - {account for _f, account, _o in found}
    if missing:
        log.warning("no log folder for account(s) in the bucket", bucket=query.bucket,
                    root=query.root, accounts=sorted(missing))  # fmt: skip
    return found


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


async def _discover_days(lister: _Lister, region_folder: str, last: dt.date) -> list[dt.date]:
    """Date folders that exist under a region folder, up to `last` (no start given)."""
    days: list[dt.date] = []
    for year in sorted(y for y in await lister.children(region_folder) if y.isdigit()):
        if int(year) > last.year:
            break
        months = await lister.children(f"{region_folder}{year}/")
        for month in sorted(m for m in months if m.isdigit()):
            if (int(year), int(month)) > (last.year, last.month):
                break
            for day in sorted(await lister.children(f"{region_folder}{year}/{month}/")):
                try:
                    date = dt.date(int(year), int(month), int(day))
                except ValueError:
                    continue
                if date <= last:
                    days.append(date)
    return days


async def iter_day_folders(
    objects: ObjectPort,
    query: ListingQuery,
    *,
    now: dt.datetime | None = None,
    folder_cache: FolderCache | None = None,
) -> AsyncIterator[DayFolder]:
    """Every date folder of the selection, account by account, region by region.

    `folder_cache`: pass the same dict to the walks of one run to list each folder once.
    """
    lister = _Lister(objects, query.bucket, folder_cache)
    now = now or dt.datetime.now(dt.timezone.utc)
    # The end is exclusive: a range ending at midnight does not need that day's folder.
    end = query.end or now
    last = (end - dt.timedelta(microseconds=1)).date()
    for account_folder, account, org in await _account_folders(lister, query):
        for kind in sorted(query.kinds, key=lambda k: k.value):
            kind_folder = f"{account_folder}{_FOLDERS[kind]}/"
            present = await lister.children(kind_folder)
            regions = [r for r in sorted(present) if _REGION.match(r)]
            if query.regions:
                regions = [r for r in regions if r in query.regions]
            for region in regions:
                region_folder = f"{kind_folder}{region}/"
                if query.start is not None:
                    days = _days(query.start.date(), last)
                else:
                    days = await _discover_days(lister, region_folder, last)
                for day in days:
                    yield DayFolder(
                        f"{region_folder}{day:%Y/%m/%d}/", account, region, day, kind, org
                    )


@dataclass(frozen=True)
class Stream:
    """One account's files of one kind in one region: `folder` is
    `.../CloudTrail/REGION/`, and its files are named `name_start` + delivery stamp + ..."""

    folder: str
    account_id: str
    region: str
    kind: ObjectKind
    org_id: str | None = None

    @property
    def name_start(self) -> str:
        return f"{self.account_id}_{_FOLDERS[self.kind]}_{self.region}_"

    def day_folder(self, day: dt.date) -> str:
        return f"{self.folder}{day:%Y/%m/%d}/"

    def start_after(self, when: dt.datetime) -> str:
        """The StartAfter key from which the day folder lists files delivered at or
        after `when`'s minute (every key of that minute sorts after it)."""
        return self.day_folder(when.date()) + self.name_start + _stamp(when)


Lister = _Lister  # one bucket's listings, with cached folder discovery


async def list_streams(lister: _Lister, query: ListingQuery) -> list[Stream]:
    """Every (account, kind, region) folder of the selection, from the lister's folder
    cache where it knows the folders (clear `lister.folders` to discover again)."""
    streams: list[Stream] = []
    for account_folder, account, org in await _account_folders(lister, query):
        for kind in sorted(query.kinds, key=lambda k: k.value):
            kind_folder = f"{account_folder}{_FOLDERS[kind]}/"
            for region in sorted(await lister.children(kind_folder)):
                if _REGION.match(region) and (not query.regions or region in query.regions):
                    streams.append(Stream(f"{kind_folder}{region}/", account, region, kind, org))
    return streams


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y%m%dT%H%MZ")


async def _folder_refs(
    lister: _Lister, query: ListingQuery, folder: DayFolder
) -> AsyncIterator[FileRef]:
    name_prefix = f"{folder.path}{folder.account_id}_{_FOLDERS[folder.kind]}_{folder.region}_"
    start_after = None
    if query.start is not None and query.start.date() == folder.day:
        # Keys in a folder share this prefix and then sort by delivery time: everything
        # strictly before the start minute sorts before "<prefix><start stamp>".
        floor = query.start.replace(second=0, microsecond=0)
        if floor > dt.datetime.combine(folder.day, dt.time(), dt.timezone.utc):
            start_after = name_prefix + _stamp(floor)
    async for key, size, etag in lister.objects(folder.path, start_after):
        ref = FileRef.of(query.bucket, key, etag=etag, size=size)
        info = ref.info
        if info.kind not in query.kinds or key.endswith("/"):
            continue
        when = info.delivered_at
        if when is None:  # unusual file name: the folder's day already matched
            yield ref
            continue
        if query.start is not None and when < query.start.replace(second=0, microsecond=0):
            continue
        if query.end is not None and when >= query.end:
            if key.startswith(name_prefix):
                return  # time-ordered from here on: nothing later can be in range
            continue
        yield ref


async def iter_log_refs(
    objects: ObjectPort,
    query: ListingQuery,
    *,
    concurrency: int = 8,
    now: dt.datetime | None = None,
    folder_cache: FolderCache | None = None,
) -> AsyncIterator[FileRef]:
    """File references for every log file of the selection.

    Up to `concurrency` date folders are listed at once; references come out folder by
    folder, in key order within a folder, folders in listing order. `folder_cache` as in
    `iter_day_folders`.
    """
    lister = _Lister(objects, query.bucket, folder_cache)

    async def collect(folder: DayFolder) -> list[FileRef]:
        return [ref async for ref in _folder_refs(lister, query, folder)]

    folders = iter_day_folders(objects, query, now=now, folder_cache=lister.folders)
    async for ref in _in_order((collect(folder) async for folder in folders), concurrency):
        yield ref


# A digest lists the log files delivered in the hour (at most) before its end time, the
# time in its key. So the digests of log files delivered before `end` end before
# end + 1 h; the second hour is slack for late digests. Digests that also list files
# outside the range are harmless: those entries wait unchecked and expire.
DIGEST_LAG = dt.timedelta(hours=2)


async def iter_digest_refs(
    objects: ObjectPort,
    query: ListingQuery,
    *,
    concurrency: int = 8,
    now: dt.datetime | None = None,
    folder_cache: FolderCache | None = None,
) -> AsyncIterator[FileRef]:
    """The digest files that can list the log files `query` selects.

    Same accounts (organization members included) and regions as the log files; digest
    end times (from their keys) after `query.start` and up to `query.end + DIGEST_LAG`.
    The date folders come from the log listing's own folder walk, each mapped to its
    `CloudTrail-Digest/` twin; a digest ending after midnight lists the previous day's
    last files, so the day after each log day is listed too when the days were
    discovered rather than computed from a start time. With the `folder_cache` of the log
    listing, that walk lists no folder again.
    """
    until = query.end + DIGEST_LAG if query.end else None
    # Log files are selected from the start's minute on (their names carry minutes).
    after = query.start.replace(second=0, microsecond=0) if query.start else None
    logs = replace(query, end=until, kinds=frozenset({ObjectKind.LOG}))
    lister = _Lister(objects, query.bucket, folder_cache)

    async def digests_in(folder: str) -> list[FileRef]:
        refs = []
        async for key, size, etag in lister.objects(folder):
            ref = FileRef.of(query.bucket, key, etag=etag, size=size)
            when = ref.info.delivered_at
            if ref.kind is not ObjectKind.DIGEST or when is None:
                continue
            if (after is None or when > after) and (until is None or when <= until):
                refs.append(ref)
        return refs

    async def listings() -> AsyncIterator[Coroutine[Any, Any, list[FileRef]]]:
        seen: set[str] = set()
        async for folder in iter_day_folders(objects, logs, now=now, folder_cache=lister.folders):
            tail = f"CloudTrail/{folder.region}/{folder.day:%Y/%m/%d}/"
            base = folder.path[: -len(tail)]
            days = [folder.day]
            if query.start is None:
                days.append(folder.day + dt.timedelta(days=1))
            for day in days:
                path = f"{base}CloudTrail-Digest/{folder.region}/{day:%Y/%m/%d}/"
                if path not in seen:
                    seen.add(path)
                    yield digests_in(path)

    async for ref in _in_order(listings(), concurrency):
        yield ref


async def _in_order(
    listings: AsyncIterator[Coroutine[Any, Any, list[FileRef]]], concurrency: int
) -> AsyncIterator[FileRef]:
    """Run up to `concurrency` folder listings at once; yield their references in the
    order the listings were started (so the output order does not depend on timing)."""
    limit = max(1, concurrency)
    pending: list[asyncio.Task[list[FileRef]]] = []
    try:
        async for listing in listings:
            pending.append(asyncio.ensure_future(listing))
            if len(pending) >= limit:
                for ref in await pending.pop(0):
                    yield ref
        while pending:
            for ref in await pending.pop(0):
                yield ref
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
