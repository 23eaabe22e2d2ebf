"""The object port: what trailproc asks of an object store (S3), and nothing more.

- `open`: one object's body, with what its response headers say (size, ETag, version,
  storage class) before the body is read, so a reader can refuse or reserve memory for
  it first;
- `head`: the same headers without the body;
- `list_page`: one page of keys (and folders, with a delimiter) under a prefix.

Failures travel as S3 shapes them: the S3 side raises what the SDK raises, and the
in-memory side raises `ObjectError`, which carries an S3 error code the same way
(`exc.response["Error"]["Code"]`), so the fetcher maps both alike. `S3Objects` is the
production side (aiobotocore clients, or botocore's on threads); `MemoryObjects` keeps
objects in a dict for fast tests of the pipeline, with the failures a test asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "ClientRouter",
    "ListPage",
    "MemoryObjects",
    "ObjectError",
    "ObjectInfo",
    "ObjectPort",
    "OpenObject",
    "S3Objects",
]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What the store says of one object before its body is read."""

    size: int | None
    etag: str | None
    version_id: str | None = None
    storage_class: str | None = None
    # The object's user metadata (`x-amz-meta-*`), names in lower case: a CloudTrail
    # digest's signature travels there.
    metadata: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a listing: `(key, size, etag)` per object, the folders one level down
    (with a delimiter), and the token of the next page (None: the last one)."""

    objects: tuple[tuple[str, int, str | None], ...]
    folders: tuple[str, ...] = ()
    next_token: str | None = None


class OpenObject(Protocol):
    info: ObjectInfo

    async def read(self) -> bytes:
        """The whole body."""

    async def read_chunk(self, size: int) -> bytes:
        """The next at most `size` bytes of the body; b"" at its end (for streaming a
        large object with bounded memory)."""


class ObjectPort(Protocol):
    def open(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        account_id: str | None = None,
    ) -> contextlib.AbstractAsyncContextManager[OpenObject]:
        """The object (a given version of it), its body not read yet; closed on exit.
        `account_id`: whose log file it is, for a store that reads each account's bucket
        with its own role."""

    async def head(self, bucket: str, key: str, *, account_id: str | None = None) -> ObjectInfo:
        """The object's headers."""

    async def list_page(
        self,
        bucket: str,
        prefix: str,
        *,
        delimiter: str | None = None,
        start_after: str | None = None,
        token: str | None = None,
    ) -> ListPage:
        """Up to 1,000 keys under `prefix`, in key order, after `start_after`."""


class ObjectError(Exception):
    """A refusal of the in-memory store, shaped as S3 reports one (`NoSuchKey`, ...)."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.response = {"Error": {"Code": code, "Message": message}}


# --- S3 ----------------------------------------------------------------------------------


class ClientRouter(Protocol):
    async def for_object(
        self, bucket: str, account_id: str | None = None, *, detect: bool = True
    ) -> Any:
        """The S3 client to read `bucket` with (its region; the account's role); with
        `detect=False` no request is made to learn the bucket's region first."""


def _info(response: Mapping[str, Any]) -> ObjectInfo:
    size = response.get("ContentLength")
    metadata = response.get("Metadata") or {}
    return ObjectInfo(
        size=size if isinstance(size, int) else None,
        etag=str(response.get("ETag") or "").strip('"') or None,
        version_id=response.get("VersionId"),
        storage_class=response.get("StorageClass") or response.get("ArchiveStatus"),
        metadata={str(k).lower(): str(v) for k, v in metadata.items()},
    )


@dataclass
class _S3Body:
    info: ObjectInfo
    body: Any  # what entering the SDK's body gave (aiohttp's response: the whole body)
    stream: Any  # the SDK's body itself (reads a number of bytes, checks the length)

    async def read(self) -> bytes:
        data: bytes = await self.body.read()
        return data

    async def read_chunk(self, size: int) -> bytes:
        data: bytes = await self.stream.read(size)
        return data


class S3Objects:
    """The object port over S3: one client (`client`; an awaitable is awaited on first
    use), or a `router` giving the client per bucket (region, role). Every request to a
    bucket in `requester_pays` says the reader pays; one to a bucket in `bucket_owners`
    names its expected owner (S3 refuses a look-alike bucket in another account)."""

    def __init__(
        self,
        client: Any = None,
        *,
        router: ClientRouter | None = None,
        requester_pays: Iterable[str] = (),
        bucket_owners: Mapping[str, str] | None = None,
    ) -> None:
        if (client is None) == (router is None):
            raise ValueError("give one of client and router")
        self._client = client
        self._router = router
        self._pending: asyncio.Future[Any] | None = None
        if inspect.isawaitable(client):
            self._pending = asyncio.ensure_future(client)
        self._requester_pays = frozenset(requester_pays)
        self.owners = dict(bucket_owners or {})

    def access_args(self, bucket: str) -> dict[str, str]:
        """RequestPayer / ExpectedBucketOwner for a request to `bucket`."""
        extra = {}
        if bucket in self._requester_pays:
            extra["RequestPayer"] = "requester"
        owner = self.owners.get(bucket)
        if owner:
            extra["ExpectedBucketOwner"] = owner
        return extra

    async def client_for(
        self, bucket: str, account_id: str | None = None, *, detect: bool = True
    ) -> Any:
        """`detect=False` for object reads: S3's redirect names a foreign bucket's
        region and botocore follows it, so no HeadBucket goes ahead of the first read
        (see `S3Router.for_object`)."""
        if self._router is not None:
            return await self._router.for_object(bucket, account_id, detect=detect)
        if self._pending is not None:
            self._client = await self._pending  # a failure here is the request's failure
            self._pending = None
        return self._client

    @contextlib.asynccontextmanager
    async def open(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        account_id: str | None = None,
    ) -> AsyncIterator[OpenObject]:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, **self.access_args(bucket)}
        if version_id:
            kwargs["VersionId"] = version_id
        client = await self.client_for(bucket, account_id, detect=False)
        response = await client.get_object(**kwargs)
        async with response["Body"] as body:
            yield _S3Body(_info(response), body, response["Body"])

    async def head(self, bucket: str, key: str, *, account_id: str | None = None) -> ObjectInfo:
        client = await self.client_for(bucket, account_id, detect=False)
        return _info(await client.head_object(Bucket=bucket, Key=key, **self.access_args(bucket)))

    async def list_page(
        self,
        bucket: str,
        prefix: str,
        *,
        delimiter: str | None = None,
        start_after: str | None = None,
        token: str | None = None,
    ) -> ListPage:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, **self.access_args(bucket)}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if start_after:
            kwargs["StartAfter"] = start_after
        if token:
            kwargs["ContinuationToken"] = token
        client = await self.client_for(bucket)
        page = await client.list_objects_v2(**kwargs)
        objects = tuple(
            (o["Key"], int(o.get("Size", 0)), str(o.get("ETag") or "").strip('"') or None)
            for o in page.get("Contents", [])
        )
        folders = tuple(p["Prefix"] for p in page.get("CommonPrefixes", []))
        return ListPage(objects, folders, page.get("NextContinuationToken"))


# --- in memory -------------------------------------------------------------------------


@dataclass
class _Stored:
    data: bytes
    etag: str
    version_id: str | None = None
    storage_class: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class _MemoryBody:
    info: ObjectInfo
    data: bytes
    on_read: Callable[[], None]
    offset: int = 0

    async def read(self) -> bytes:
        self.on_read()
        return self.data

    async def read_chunk(self, size: int) -> bytes:
        if self.offset == 0:
            self.on_read()
        chunk = self.data[self.offset : self.offset + max(size, 0)]
        self.offset += len(chunk)
        return chunk


@dataclass
class MemoryObjects:
    """Objects in a dict, for tests: every call is recorded in `calls`.

    `put` stores an object (a new ETag each time); `faults` maps an operation ("open",
    "read", "head", "list") to the exceptions its next calls raise, one each. A missing
    object is `ObjectError("NoSuchKey")`, as S3 answers; an object put with a
    `storage_class` of an archive ("GLACIER", "DEEP_ARCHIVE") cannot be read
    (`InvalidObjectState`), as S3 answers until it is restored.
    """

    objects: dict[tuple[str, str], _Stored] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    faults: dict[str, list[BaseException]] = field(default_factory=dict)
    page_size: int = 1000
    _etags: Any = field(default_factory=lambda: itertools.count(1))

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        version_id: str | None = None,
        storage_class: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Store `data` under `bucket`/`key` (with user `metadata`); returns its ETag."""
        etag = f"etag-{next(self._etags)}"
        user = {k.lower(): v for k, v in (metadata or {}).items()}
        self.objects[(bucket, key)] = _Stored(data, etag, version_id, storage_class, user)
        return etag

    def made(self, operation: str) -> list[Any]:
        """The details of every call of `operation` so far."""
        return [detail for name, detail in self.calls if name == operation]

    def _call(self, operation: str, detail: Any) -> None:
        self.calls.append((operation, detail))
        if self.faults.get(operation):
            raise self.faults[operation].pop(0)

    def _stored(self, bucket: str, key: str) -> _Stored:
        stored = self.objects.get((bucket, key))
        if stored is None:
            raise ObjectError("NoSuchKey", f"s3://{bucket}/{key} does not exist")
        return stored

    @staticmethod
    def _info(stored: _Stored) -> ObjectInfo:
        return ObjectInfo(len(stored.data), stored.etag, stored.version_id,
                          stored.storage_class, dict(stored.metadata))  # fmt: skip

    @contextlib.asynccontextmanager
    async def open(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        account_id: str | None = None,
    ) -> AsyncIterator[OpenObject]:
        self._call("open", (bucket, key, version_id))
        stored = self._stored(bucket, key)
        if version_id is not None and version_id != stored.version_id:
            raise ObjectError("NoSuchVersion", f"{version_id} of s3://{bucket}/{key}")
        if stored.storage_class in ("GLACIER", "DEEP_ARCHIVE"):
            raise ObjectError("InvalidObjectState", "the object is archived")
        yield _MemoryBody(
            self._info(stored), stored.data, lambda: self._call("read", (bucket, key))
        )

    async def head(self, bucket: str, key: str, *, account_id: str | None = None) -> ObjectInfo:
        self._call("head", (bucket, key))
        return self._info(self._stored(bucket, key))

    async def list_page(
        self,
        bucket: str,
        prefix: str,
        *,
        delimiter: str | None = None,
        start_after: str | None = None,
        token: str | None = None,
    ) -> ListPage:
        self._call("list", (bucket, prefix, delimiter, start_after, token))
        # Objects and folders in key order, each folder once (S3's CommonPrefixes), both
        # counted towards a page; the token is the offset of the next page.
        entries: list[tuple[str, tuple[str, int, str | None] | None]] = []
        seen: set[str] = set()
        for b, key in sorted(self.objects):
            if b != bucket or not key.startswith(prefix) or key <= (start_after or ""):
                continue
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                folder = prefix + rest.split(delimiter, 1)[0] + delimiter
                if folder not in seen:
                    seen.add(folder)
                    entries.append((folder, None))
                continue
            stored = self.objects[(b, key)]
            entries.append((key, (key, len(stored.data), stored.etag)))
        offset = int(token or 0)
        page = entries[offset : offset + self.page_size]
        more = offset + self.page_size < len(entries)
        return ListPage(
            tuple(item for _, item in page if item is not None),
            tuple(name for name, item in page if item is None),
            str(offset + self.page_size) if more else None,
        )
