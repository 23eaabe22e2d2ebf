"""The object port answers alike in memory and on S3 (moto's server over real HTTP):
open (headers before the body), head, a missing key as S3's NoSuchKey, and listing by
prefix with folders and pages. What the fast core tests learn on `MemoryObjects` holds
for `S3Objects`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import boto3
import pytest

from trailproc._config import load_config
from trailproc._errors import error_code
from trailproc._ports.objects import MemoryObjects, ObjectPort, S3Objects

BUCKET = "port-bucket"
OBJECTS = {
    "AWSLogs/111/CloudTrail/a.json.gz": b"a" * 10,
    "AWSLogs/111/CloudTrail/b.json.gz": b"bb",
    "AWSLogs/222/CloudTrail/c.json.gz": b"ccc",
    "AWSLogs/top.txt": b"t",
}

Scenario = Callable[[ObjectPort], Awaitable[Any]]


def on_port(kind: str, scenario: Scenario) -> Any:
    """Run `scenario` on a port of `kind` holding OBJECTS in BUCKET."""
    if kind == "memory":
        memory = MemoryObjects(page_size=2)
        for key, data in OBJECTS.items():
            memory.put(BUCKET, key, data)
        return asyncio.run(scenario(memory))
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    for key, data in OBJECTS.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data)

    async def on_s3() -> Any:
        from trailproc._aws import AwsClients

        async with AwsClients(load_config(env={}, region="us-east-1")) as clients:
            return await scenario(S3Objects(await clients.client("s3")))

    return asyncio.run(on_s3())


@pytest.fixture(params=["memory", "s3"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "s3":
        request.getfixturevalue("aws_env")
    return str(request.param)


def test_open_tells_size_and_etag_before_the_body(kind: str) -> None:
    async def scenario(port: ObjectPort) -> tuple[Any, ...]:
        async with port.open(BUCKET, "AWSLogs/111/CloudTrail/a.json.gz") as opened:
            info = opened.info
            data = await opened.read()
        head = await port.head(BUCKET, "AWSLogs/111/CloudTrail/a.json.gz")
        return info.size, bool(info.etag), data, head.size, head.etag == info.etag

    assert on_port(kind, scenario) == (10, True, b"a" * 10, 10, True)


def test_a_missing_key_is_no_such_key(kind: str) -> None:
    async def scenario(port: ObjectPort) -> str:
        try:
            async with port.open(BUCKET, "AWSLogs/nothing.json.gz") as opened:
                await opened.read()
        except Exception as exc:
            return error_code(exc)
        return "no error"

    assert on_port(kind, scenario) == "NoSuchKey"


async def every_page(port: ObjectPort, delimiter: str | None) -> tuple[list[str], list[str]]:
    """Keys and folders under AWSLogs/, page after page."""
    keys: list[str] = []
    folders: list[str] = []
    token = None
    while True:
        page = await port.list_page(BUCKET, "AWSLogs/", delimiter=delimiter, token=token)
        keys += [key for key, _size, _etag in page.objects]
        folders += page.folders
        token = page.next_token
        if token is None:
            return keys, folders


def test_listing_by_prefix_with_folders_and_pages(kind: str) -> None:
    async def scenario(port: ObjectPort) -> tuple[Any, Any]:
        return await every_page(port, "/"), await every_page(port, None)

    (top, folders), (keys, none) = on_port(kind, scenario)
    assert top == ["AWSLogs/top.txt"]
    assert folders == ["AWSLogs/111/", "AWSLogs/222/"]
    assert keys == sorted(OBJECTS) and none == []


def test_read_chunk_streams_the_body_in_pieces(kind: str) -> None:
    async def scenario(port: ObjectPort) -> list[bytes]:
        pieces = []
        async with port.open(BUCKET, "AWSLogs/111/CloudTrail/a.json.gz") as opened:
            while chunk := await opened.read_chunk(4):
                pieces.append(chunk)
        return pieces

    pieces = on_port(kind, scenario)
    assert b"".join(pieces) == b"a" * 10
    assert all(len(p) <= 4 for p in pieces) and len(pieces) >= 3


def test_user_metadata_is_told_with_lower_case_names(kind: str) -> None:
    key = "AWSLogs/111/CloudTrail-Digest/d.json.gz"

    async def scenario(port: ObjectPort) -> Any:
        if isinstance(port, MemoryObjects):
            port.put(BUCKET, key, b"d", metadata={"Signature": "ab12"})
        else:
            boto3.client("s3", region_name="us-east-1").put_object(
                Bucket=BUCKET, Key=key, Body=b"d", Metadata={"Signature": "ab12"}
            )
        async with port.open(BUCKET, key) as opened:
            return dict(opened.info.metadata or {})

    assert on_port(kind, scenario) == {"signature": "ab12"}
