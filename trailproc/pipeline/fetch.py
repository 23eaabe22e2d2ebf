"""Stage 3: a file reference → its bytes (S3 GetObject, or a local file).

Transient failures (throttling, 5xx, resets mid-body) are retried with backoff; anything
else becomes one `FetchError` naming the bucket, key and the S3 error code.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import FetchError, is_transient, retry_transient
from .keys import FileRef

__all__ = ["Fetched", "Fetcher", "LocalFetcher", "S3Fetcher"]


@dataclass(frozen=True, slots=True)
class Fetched:
    data: bytes
    etag: str | None
    version_id: str | None = None


class Fetcher(Protocol):
    async def fetch(self, ref: FileRef) -> Fetched: ...


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


class S3Fetcher:
    """Downloads whole objects (log files are ≤ 50 MB compressed) with bounded concurrency.

    `client` is an S3 client, or an awaitable that gives one (a client still being built
    while the first messages are received); it is awaited on the first download.
    """

    def __init__(self, client: Any, *, concurrency: int = 8, attempts: int = 5) -> None:
        self._client = client
        self._pending: Awaitable[Any] | None = None
        if inspect.isawaitable(client):
            self._pending = asyncio.ensure_future(client)
        self._limit = asyncio.Semaphore(concurrency)
        self._attempts = attempts

    async def _get(self, ref: FileRef) -> Fetched:
        kwargs: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
        if ref.version_id:
            kwargs["VersionId"] = ref.version_id
        if self._pending is not None:
            self._client = await self._pending  # a failure here is the download's failure
            self._pending = None
        response = await self._client.get_object(**kwargs)
        async with response["Body"] as body:
            data = await body.read()
        etag = str(response.get("ETag") or "").strip('"') or None
        return Fetched(data, etag, response.get("VersionId"))

    async def fetch(self, ref: FileRef) -> Fetched:
        async with self._limit:
            try:
                return await retry_transient(lambda: self._get(ref), attempts=self._attempts)
            except Exception as exc:
                raise _as_fetch_error(exc, ref) from exc


def _as_fetch_error(exc: BaseException, ref: FileRef) -> FetchError:
    code = None
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code") or "") or None
    transient = is_transient(exc)
    if code and code in _PERMANENT_HINTS:
        text = _PERMANENT_HINTS[code]
    elif transient:
        text = f"download failed after retries: {type(exc).__name__}: {exc}"
        code = code or "connection"
    else:
        text = f"download failed: {type(exc).__name__}: {exc}"
    return FetchError(text, code=code, bucket=ref.bucket, key=ref.key)


class LocalFetcher:
    """Reads files from disk; `ref.bucket` is empty and `ref.key` is the path."""

    async def fetch(self, ref: FileRef) -> Fetched:
        path = Path(ref.key)
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise FetchError(
                f"cannot read file: {exc.strerror}", code="local", bucket=ref.bucket, key=ref.key
            ) from exc
        stat = path.stat()
        return Fetched(data, f"{stat.st_size}-{stat.st_mtime_ns}")
