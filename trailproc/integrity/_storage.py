"""Where digests and log files are read from: S3 (boto3) or a local mirror of the bucket."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from .._errors import error_code
from ._signing import Readable

__all__ = ["SIGNATURE_SUFFIX", "LocalStore", "NotFound", "ObjectStore", "ReadError", "S3Store"]

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


class S3Store:
    """Reads from S3 through a boto3 client (thread-safe)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(**kwargs)
        except ClientError as exc:
            code = error_code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(kwargs.get("Key", "")) from exc
            raise ReadError(f"{code or 'error'}: {exc}") from exc
        except BotoCoreError as exc:
            raise ReadError(str(exc)) from exc

    def get(self, bucket: str, key: str) -> tuple[bytes, dict[str, str]]:
        response = self._call("get_object", Bucket=bucket, Key=key)
        try:
            body = response["Body"].read()
        except Exception as exc:  # connection reset mid-body and the like
            raise ReadError(str(exc)) from exc
        metadata = {k.lower(): v for k, v in (response.get("Metadata") or {}).items()}
        return body, metadata

    @contextmanager
    def open(self, bucket: str, key: str) -> Iterator[Readable]:
        response = self._call("get_object", Bucket=bucket, Key=key)
        body = response["Body"]
        try:
            yield body
        finally:
            body.close()

    def list_keys(self, bucket: str, prefix: str) -> Iterator[str]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2", **kwargs)
            for item in page.get("Contents", []):
                yield item["Key"]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def list_folders(self, bucket: str, prefix: str) -> list[str]:
        out: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2", **kwargs)
            for item in page.get("CommonPrefixes", []):
                out.append(item["Prefix"][len(prefix) :].rstrip("/"))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return out


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
