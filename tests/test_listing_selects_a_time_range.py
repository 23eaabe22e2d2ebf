"""Listing a bucket for a time range returns exactly the log files delivered in it, for
the selected accounts and regions, and lists only the date folders of the range.

The listing runs on the in-memory object port (`MemoryObjects`, pages of 2 keys, so
paging is exercised too); no network."""

from __future__ import annotations

import asyncio
import datetime as dt

from trailproc._ports.objects import MemoryObjects
from trailproc._roads.s3_listing import ListingQuery, iter_log_refs
from trailproc._sandbox import log_key

BUCKET = "trail-bucket"
A, B = "111111111111", "222222222222"


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=dt.timezone.utc)


def bucket_with(keys: list[str]) -> MemoryObjects:
    objects = MemoryObjects(page_size=2)
    for key in keys:
        objects.put(BUCKET, key, b"x")
    # Not log files: a digest and a folder marker beside them.
    objects.put(BUCKET, f"AWSLogs/{A}/CloudTrail-Digest/us-east-1/2026/11/02/d.json.gz", b"d")
    objects.put(BUCKET, f"AWSLogs/{A}/CloudTrail/us-east-1/2026/11/02/", b"")
    return objects


def listed(objects: MemoryObjects, query: ListingQuery) -> list[str]:
    async def collect() -> list[str]:
        return [ref.key async for ref in iter_log_refs(objects, query, now=at(5, 0))]

    return asyncio.run(collect())


def test_only_files_delivered_in_the_range_are_listed() -> None:
    inside = [log_key(A, "us-east-1", at(2, h), unique=f"in{h:02d}") for h in (0, 6, 23)]
    before = log_key(A, "us-east-1", at(1, 23, 59), unique="before")
    after = log_key(A, "us-east-1", at(3, 0), unique="after")
    objects = bucket_with([before, *inside, after])
    query = ListingQuery.build(BUCKET, start=at(2, 0), end=at(3, 0))
    assert listed(objects, query) == inside
    folders = {prefix for _bucket, prefix, *_ in objects.made("list")}
    assert not any("/2026/11/01/" in f or "/2026/11/03/" in f for f in folders)


def test_accounts_and_regions_select_their_folders_only() -> None:
    wanted = log_key(A, "eu-west-1", at(2, 1), unique="wanted")
    keys = [
        wanted,
        log_key(A, "us-east-1", at(2, 1), unique="other-region"),
        log_key(B, "eu-west-1", at(2, 1), unique="other-account"),
    ]
    query = ListingQuery.build(BUCKET, account_ids=[A], regions=["eu-west-1"],
                               start=at(2, 0), end=at(3, 0))  # fmt: skip
    assert listed(bucket_with(keys), query) == [wanted]
