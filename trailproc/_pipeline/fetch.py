"""Stage 3: a file reference → its bytes (through the object port, or a local file).

Transient failures (throttling, 5xx, resets mid-body) are retried with backoff; anything
else becomes one `FetchError` naming the bucket, key and the S3 error code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .._config import Config
from .._errors import (
    DecompressedTooLarge,
    FetchError,
    TrailprocError,
    error_code,
    is_transient,
    retry_transient,
)
from .._observe import get_logger
from .._ports.objects import ObjectPort
from .budget import Reservation
from .keys import FileRef

__all__ = ["Fetched", "Fetcher", "LocalFetcher", "ObjectFetcher"]

log = get_logger("trailproc.fetch")


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    etag: str | None
    version_id: str | None = None


class Fetcher(Protocol):
    """Reads one object. With `held`, the object's size is reserved in it (the memory
    budget) before its body is read."""

    async def fetch(self, ref: FileRef, held: Reservation | None = None) -> Fetched: ...


_PERMANENT_HINTS = {
    "NoSuchKey": "object not found (deleted, or the notification is forged or stale)",
    "NoSuchBucket": "bucket does not exist",
    "AccessDenied": "access denied: the worker's role needs s3:GetObject on this bucket "
    "(and kms:Decrypt for SSE-KMS objects)",
    "403": "access denied: the worker's role needs s3:GetObject on this bucket "
    "(and kms:Decrypt for SSE-KMS objects)",
    "404": "object not found",
    "KMS.AccessDeniedException": "KMS denied decryption: grant kms:Decrypt on the trail's key",
}


class ObjectFetcher:
    """Downloads whole objects (log files are ≤ 50 MB compressed) through the object port
    (`S3Objects` in production, `MemoryObjects` in tests), with bounded concurrency.

    A reference with a version id (S3 event notifications of a versioned bucket) is read
    by version, which needs `s3:GetObjectVersion`. Without that permission the current
    object is read instead (plain `s3:GetObject`, as documented) and accepted only if it
    is that same version; an older version fails with an error naming the permission.
    """

    def __init__(
        self,
        objects: ObjectPort,
        *,
        concurrency: int = 8,
        attempts: int = 5,
        max_bytes: int | None = None,
        bucket_owners: Mapping[str, str] | None = None,
    ) -> None:
        self.objects = objects
        # Named in the error when S3 refuses a bucket of another owner (`bucket_owners`).
        self._owners = dict(bucket_owners or {})
        # An object larger than this is refused before its body is read: a log file's
        # gzip is never larger than its JSON, so it would fail max_decompressed_bytes
        # anyway, after holding the whole download in memory.
        self._max_bytes = max_bytes
        self._limit = asyncio.Semaphore(concurrency)
        self._attempts = attempts
        self._by_version = True  # False once GetObject with VersionId was denied

    @classmethod
    def for_config(cls, objects: ObjectPort, config: Config) -> ObjectFetcher:
        """A fetcher with the configuration's limits."""
        return cls(objects, concurrency=config.limits().download_concurrency,
                   max_bytes=config.max_decompressed_bytes,
                   bucket_owners=config.bucket_owners)  # fmt: skip

    async def _get(self, ref: FileRef, held: Reservation | None) -> Fetched:
        if not ref.version_id or not self._by_version:
            return await self._read(ref, ref.version_id, held)
        try:
            return await self._read(ref, None, held, version_id=ref.version_id)
        except Exception as exc:
            if error_code(exc) not in ("AccessDenied", "403"):
                raise
        fetched = await self._read(ref, ref.version_id, held)  # denied too: the usual error
        log.info("reading objects without their version id: s3:GetObjectVersion is not "
                 "granted; the current version is checked instead")  # fmt: skip
        self._by_version = False
        return fetched

    async def _read(
        self,
        ref: FileRef,
        expected_version: str | None,
        held: Reservation | None,
        *,
        version_id: str | None = None,
    ) -> Fetched:
        """GetObject, by `version_id` if given; with `expected_version`, the current
        object must be that version."""
        async with self.objects.open(ref.bucket, ref.key, version_id=version_id,
                                     account_id=ref.info.account_id) as opened:  # fmt: skip
            info = opened.info
            if expected_version and info.version_id != expected_version:
                raise FetchError(
                    f"the notified version {expected_version} is no longer the current one "
                    f"({info.version_id}); reading it needs s3:GetObjectVersion",
                    code="AccessDenied", bucket=ref.bucket, key=ref.key,
                )  # fmt: skip
            size = info.size
            if self._max_bytes is not None and size is not None and size > self._max_bytes:
                raise DecompressedTooLarge(
                    f"object is {size} bytes, over max_decompressed_bytes={self._max_bytes}; "
                    "not downloaded", bucket=ref.bucket, key=ref.key,
                )  # fmt: skip
            if held is not None and size is not None:
                # Waits while the budget is full: the body is read once it fits.
                await held.resize(size, why="its download")
            data = await opened.read()
        if held is not None and held.held < len(data):  # no or a wrong Content-Length
            await held.resize(len(data), why="its download")
        return Fetched(data, info.etag, info.version_id)

    async def fetch(self, ref: FileRef, held: Reservation | None = None) -> Fetched:
        async with self._limit:
            try:
                return await retry_transient(lambda: self._get(ref, held), attempts=self._attempts)
            except TrailprocError:
                raise
            except Exception as exc:
                if error_code(exc) == "InvalidObjectState":
                    storage_class = await self._class_of(ref)
                    raise _as_fetch_error(exc, ref, storage_class=storage_class) from exc
                raise _as_fetch_error(exc, ref, self._owners.get(ref.bucket)) from exc

    async def _class_of(self, ref: FileRef) -> str | None:
        """The object's storage class (HeadObject), to name it in the error; None if
        S3 does not tell."""
        try:
            head = await self.objects.head(ref.bucket, ref.key, account_id=ref.info.account_id)
        except Exception:
            return None
        return head.storage_class


def _archived(exc: BaseException, storage_class: str | None) -> str:
    """Why an archived object cannot be read, naming its storage class when known."""
    error = (getattr(exc, "response", None) or {}).get("Error", {})
    storage_class = storage_class or error.get("StorageClass") or "an archive storage class"
    return (f"InvalidObjectState: the object is in {storage_class} (moved there by a "
            "lifecycle rule?) and must be restored before it can be read: run "
            "`trailproc backfill --restore-days N` over its time range, which requests "
            "the restores and processes the files once they are back")  # fmt: skip


def _as_fetch_error(
    exc: BaseException, ref: FileRef, owner: str | None = None, storage_class: str | None = None
) -> FetchError:
    code = error_code(exc) or None
    transient = is_transient(exc)
    if code == "InvalidObjectState":
        text = _archived(exc, storage_class)
    elif code in ("AccessDenied", "403") and owner:
        text = (f"access denied: either the bucket is not owned by account {owner} "
                "(bucket_owners; S3 refuses a look-alike bucket in another account) or "
                "the worker's role lacks s3:GetObject on it")  # fmt: skip
    elif code and code in _PERMANENT_HINTS:
        text = _PERMANENT_HINTS[code]
    elif transient:
        text = f"download failed after retries: {type(exc).__name__}: {exc}"
        code = code or "connection"
    else:
        text = f"download failed: {type(exc).__name__}: {exc}"
    return FetchError(text, code=code, bucket=ref.bucket, key=ref.key)


class LocalFetcher:
    """Reads files from disk; `ref.bucket` is empty and `ref.key` is the path."""

    async def fetch(self, ref: FileRef, held: Reservation | None = None) -> Fetched:
        path = Path(ref.key)
        try:
            if held is not None:
                await held.resize(path.stat().st_size, why="its bytes")
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise FetchError(
                f"cannot read file: {exc.strerror}", code="local", bucket=ref.bucket, key=ref.key
            ) from exc
        stat = path.stat()
        return Fetched(data, f"{stat.st_size}-{stat.st_mtime_ns}")
