"""Where digests and log files are read from: S3 through the object port, or a local
mirror of the bucket."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, AsyncExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .._errors import error_code
from .._ports.objects import ListPage, ObjectPort, OpenObject
from ._signing import CHUNK, Readable

__all__ = ["SIGNATURE_SUFFIX", "LocalStore", "NotFound", "ObjectStore", "PortStore", "ReadError"]

_T = TypeVar("_T")

# Local mirrors keep each digest's S3 `signature` metadata in a sidecar file next to it.
SIGNATURE_SUFFIX = ".signature"


class NotFound(Exception):
    """The object does not exist."""


class ReadError(Exception):
    """The object could not be read for another reason (access denied, throttled, ...)."""


class ObjectStore(Protocol):
    def get(self, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
        """Whole object bytes and its user metadata (`signature`, ...)."""
        ...

    def open(self, bucket: str, key: str) -> AbstractContextManager[Readable]:
        """A stream over the object (for large log files)."""
        ...

    def list_keys(self, bucket: str, prefix: str) -> Iterator[str]:
        """Every key under `prefix`."""
        ...

    def list_folders(self, bucket: str, prefix: str) -> list[str]:
        """Names of the immediate "folders" under `prefix` (which ends in `/`)."""
        ...


class PortStore:
    """Reads S3 through the object port (the pipeline's `S3Objects`) from the
    validator's worker threads: every request runs on the event loop the port's clients
    belong to, through `run` (which runs a coroutine there and waits for its result)."""

    def __init__(self, port: ObjectPort, run: Callable[[Awaitable[Any]], Any]) -> None:
        self.port = port
        self.run = run

    def _call(self, step: Awaitable[_T], key: str) -> _T:
        try:
            result: _T = self.run(step)
        except Exception as exc:
            code = error_code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(key) from exc
            raise ReadError(f"{code}: {exc}" if code else str(exc) or type(exc).__name__) from exc
        return result

    def get(self, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
        async def read() -> tuple[bytes, dict[str, str]]:
            async with self.port.open(bucket, key) as obj:
                return await obj.read(), dict(obj.info.metadata or {})

        return self._call(read(), key)

    @contextmanager
    def open(self, bucket: str, key: str) -> Iterator[Readable]:
        held = AsyncExitStack()
        obj = self._call(held.enter_async_context(self.port.open(bucket, key)), key)
        try:
            yield _PortReader(obj, self.run)
        finally:
            # Releasing the connection cannot change what was read; a failure there
            # must not hide the read's own outcome.
            with suppress(Exception):
                self.run(held.aclose())

    def _pages(self, bucket: str, prefix: str, delimiter: str | None) -> Iterator[ListPage]:
        token: str | None = None
        while True:
            page = self._call(
                self.port.list_page(bucket, prefix, delimiter=delimiter, token=token), prefix
            )
            yield page
            token = page.next_token
            if not token:
                return

    def list_keys(self, bucket: str, prefix: str) -> Iterator[str]:
        for page in self._pages(bucket, prefix, None):
            for key, _size, _etag in page.objects:
                yield key

    def list_folders(self, bucket: str, prefix: str) -> list[str]:
        return [
            folder[len(prefix) :].rstrip("/")
            for page in self._pages(bucket, prefix, "/")
            for folder in page.folders
        ]


class _PortReader:
    """An open object of the port as a blocking stream, read from a worker thread."""

    def __init__(self, obj: OpenObject, run: Callable[[Awaitable[Any]], Any]) -> None:
        self._obj = obj
        self._run = run

    def read(self, size: int = CHUNK, /) -> bytes:
        data: bytes = self._run(self._obj.read_chunk(size))
        return data


class LocalStore:
    """A local copy of the bucket: `<root>/<key>` (or `<root>/<bucket>/<key>`).

    The bucket and key stay the S3 ones everywhere (the signing string needs them); only
    reads are mapped. A digest's signature is read from `<file>.signature` (hex), the
    value of its S3 `signature` metadata saved when the copy was made.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, bucket: str, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise NotFound(key)
        for candidate in (self.root / key, self.root / bucket / key):
            if candidate.is_file():
                return candidate
        raise NotFound(key)

    def get(self, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
        path = self._path(bucket, key)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ReadError(str(exc)) from exc
        metadata: dict[str, str] = {}
        sidecar = path.with_name(path.name + SIGNATURE_SUFFIX)
        if sidecar.is_file():
            try:
                raw = sidecar.read_bytes()
            except OSError as exc:
                raise ReadError(str(exc)) from exc
            # Damaged text (not ASCII) is kept as it is: it then fails verification.
            metadata["signature"] = raw.decode("ascii", errors="replace").strip()
            metadata["signature-algorithm"] = "SHA256withRSA"
        return data, metadata

    @contextmanager
    def open(self, bucket: str, key: str) -> Iterator[Readable]:
        path = self._path(bucket, key)
        try:
            f = path.open("rb")
        except OSError as exc:
            raise ReadError(str(exc)) from exc
        with f:
            yield f

    def _base(self, bucket: str, folder: str) -> Path:
        for base in (self.root, self.root / bucket):
            if (base / folder).is_dir():
                return base
        return self.root

    def list_keys(self, bucket: str, prefix: str) -> Iterator[str]:
        """Keys starting with `prefix` (a string prefix, as in S3, not only a folder)."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self._base(bucket, folder)
        top = base / folder
        if not top.is_dir():
            return
        for dirpath, _dirs, files in os.walk(top):
            for name in files:
                if name.endswith(SIGNATURE_SUFFIX):
                    continue
                key = Path(dirpath, name).relative_to(base).as_posix()
                if key.startswith(prefix):
                    yield key

    def list_folders(self, bucket: str, prefix: str) -> list[str]:
        top = self._base(bucket, prefix) / prefix
        if not top.is_dir():
            return []
        return sorted(p.name for p in top.iterdir() if p.is_dir())
