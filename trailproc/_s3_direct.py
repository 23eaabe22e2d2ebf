"""GetObject in one signed request, once the SDK has shown how to reach the bucket.

botocore spends about a millisecond of CPU on every request (events, endpoint rules,
serialisation, signing, parsing); a GetObject of a small CloudTrail file needs little of
it. `DirectGetClient` wraps an aiobotocore S3 client: the first read of a bucket goes
through the SDK, and while it is signed the wrapper notes what the SDK resolved (the
URL up to the key, the signing region and name, the headers it adds). Later reads of
that bucket build the same request with the key in place and hand it to the SDK's own
signer and the SDK's own HTTP session (same connection pool, proxies, TLS settings and
timeouts), and check the response's checksum with the SDK's checksum reader.

Only a plain 200 is taken from that short path. Anything else (an error status, a
redirect to another region, a connection failure) is asked again through the SDK,
which retries, follows redirects and raises exactly what it always raises: the short
path never changes what a failure looks like, it only costs one more request then. A
read with other parameters (a version, a range) always goes through the SDK.
"""

from __future__ import annotations

import contextvars
import email.utils
import urllib.parse
from dataclasses import dataclass
from typing import Any

__all__ = ["DirectGetClient"]

# The parameters a short read can carry: they are the same for every read of a bucket
# (S3Objects sets the last two per bucket), so they are part of what is learned.
_PLAIN = frozenset({"Bucket", "Key", "RequestPayer", "ExpectedBucketOwner"})
# Headers the signer sets per request: never copied from the learned one.
_PER_REQUEST = frozenset({
    "authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256",
    "amz-sdk-invocation-id", "amz-sdk-request",
})  # fmt: skip
# Request context the signer and the checksum reader look at; the rest is per request.
_CONTEXT = ("auth_type", "signing", "checksum", "client_config", "has_streaming_input",
            "unsigned_payload", "payload_signing_enabled")  # fmt: skip
_HEADER_FIELDS = {
    "etag": "ETag",
    "content-type": "ContentType",
    "content-encoding": "ContentEncoding",
    "x-amz-version-id": "VersionId",
    "x-amz-storage-class": "StorageClass",
    "x-amz-archive-status": "ArchiveStatus",
    "x-amz-server-side-encryption": "ServerSideEncryption",
    "x-amz-checksum-crc32": "ChecksumCRC32",
    "x-amz-checksum-crc32c": "ChecksumCRC32C",
    "x-amz-checksum-crc64nvme": "ChecksumCRC64NVME",
    "x-amz-checksum-sha1": "ChecksumSHA1",
    "x-amz-checksum-sha256": "ChecksumSHA256",
}


@dataclass(frozen=True, slots=True)
class _Route:
    """How the SDK reached one bucket: the URL around the key, and what signs it."""

    head: str
    tail: str
    headers: tuple[tuple[str, str], ...]
    context: dict[str, Any]
    signer: Any


class _Lesson:
    """What one SDK read of `key` showed, filled in while the SDK signs it."""

    __slots__ = ("key", "route")

    def __init__(self, key: str) -> None:
        self.key = key
        self.route: _Route | None = None


_lesson: contextvars.ContextVar[_Lesson | None] = contextvars.ContextVar(
    "trailproc_s3_lesson", default=None
)


def encoded_key(key: str) -> str:
    """The key as botocore puts it in a URL path (slashes and tildes kept)."""
    return urllib.parse.quote(key, safe="/~")


def route_from(request: Any, key: str, signer: Any) -> _Route | None:
    """The route of a request the SDK is about to sign for `key`, or None when its shape
    is not one a short read can repeat (another signature scheme, the key not at the
    end of the path)."""
    context = request.context
    signing = context.get("signing") or {}
    if context.get("auth_type") not in ("v4", "s3v4", None) or signing.get("identity_cache"):
        return None
    if signing.get("request_credentials") or signing.get("signing_name", "s3") != "s3":
        return None
    path, sep, query = request.url.partition("?")
    encoded = encoded_key(key)
    if not encoded or not path.endswith("/" + encoded):
        return None
    headers = tuple(
        (name, str(value))
        for name, value in request.headers.items()
        if name.lower() not in _PER_REQUEST
    )
    kept = {name: context[name] for name in _CONTEXT if name in context}
    return _Route(path[: -len(encoded)], sep + query, headers, kept, signer)


class DirectGetClient:
    """An aiobotocore S3 client whose plain `get_object` calls skip botocore's per-request
    pipeline after the first read of each bucket; everything else is the client's own.

    `direct_reads` and `sdk_reads` count the reads each way (for tests and probes).
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._routes: dict[tuple[str, ...], _Route] = {}
        # None until the first short read finds out whether it can be made here.
        self._http: Any = getattr(getattr(client, "_endpoint", None), "http_session", None)
        self._usable = self._http is not None
        self._events = client.meta.events
        self.direct_reads = 0
        self.sdk_reads = 0
        if self._usable:
            self._events.register("before-sign.s3.GetObject", self._learn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _learn(self, request: Any = None, request_signer: Any = None, **_: Any) -> None:
        lesson = _lesson.get()
        if lesson is not None and request is not None:
            # The last request signed wins: after a redirect, the one that reached the
            # bucket's own region.
            lesson.route = route_from(request, lesson.key, request_signer)

    async def get_object(self, **kwargs: Any) -> Any:
        slot = _slot(kwargs) if self._usable else None
        route = self._routes.get(slot) if slot is not None else None
        if route is not None:
            response = await self._direct(route, kwargs["Key"])
            if response is not None:
                self.direct_reads += 1
                return response
        lesson = _Lesson(kwargs.get("Key", ""))
        token = _lesson.set(lesson)
        try:
            response = await self._client.get_object(**kwargs)
        finally:
            _lesson.reset(token)
        self.sdk_reads += 1
        if slot is not None and lesson.route is not None:
            self._routes[slot] = lesson.route
        return response

    async def _direct(self, route: _Route, key: str) -> dict[str, Any] | None:
        """The parsed response of a short read, or None to ask through the SDK."""
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(
            method="GET", url=route.head + encoded_key(key) + route.tail,
            headers=dict(route.headers),
        )  # fmt: skip
        request.context = dict(route.context)
        await route.signer.sign("GetObject", request)
        prepared = request.prepare()
        prepared.stream_output = True
        # Counted like every SDK request (trailproc_aws_requests_total); a handler that
        # answers here (a stub, an in-process mock) means requests must not reach the
        # network from this client: the SDK path serves it from now on.
        _, answer = await self._events.emit_until_response(
            "before-send.s3.GetObject", request=prepared
        )
        if answer is not None:
            self._usable = False
            return None
        try:
            http = await self._http.send(prepared)
        except Exception:  # the SDK asks again, retries and raises its own error
            return None
        if http.status_code != 200:
            http.raw.release()
            return None
        return await _parsed(http, request.context)


def _slot(kwargs: dict[str, Any]) -> tuple[str, ...] | None:
    if not kwargs.keys() <= _PLAIN or "Bucket" not in kwargs or "Key" not in kwargs:
        return None
    return (kwargs["Bucket"], kwargs.get("RequestPayer", ""), kwargs.get("ExpectedBucketOwner", ""))


async def _parsed(http: Any, context: dict[str, Any]) -> dict[str, Any]:
    """GetObject's response as the SDK parses it, for the fields S3 sends as headers."""
    from aiobotocore.httpchecksum import handle_checksum_body
    from aiobotocore.response import StreamingBody

    headers: dict[str, str] = http.headers
    length = headers.get("content-length")
    raw: dict[str, Any] = {
        "headers": headers,
        "status_code": 200,
        "body": StreamingBody(http.raw, length),
        "context": {},
    }
    await handle_checksum_body(http, raw, context, _StreamingOutput)
    parsed: dict[str, Any] = {
        "ResponseMetadata": {
            "RequestId": headers.get("x-amz-request-id"),
            "HostId": headers.get("x-amz-id-2"),
            "HTTPStatusCode": 200,
            "HTTPHeaders": headers,
            "RetryAttempts": 0,
        },
        "Body": raw["body"],
    }
    if length is not None:
        parsed["ContentLength"] = int(length)
    modified = headers.get("last-modified")
    if modified:
        parsed["LastModified"] = email.utils.parsedate_to_datetime(modified)
    for header, field in _HEADER_FIELDS.items():
        if header in headers:
            parsed[field] = headers[header]
    parsed["Metadata"] = {
        name[len("x-amz-meta-") :]: value
        for name, value in headers.items()
        if name.startswith("x-amz-meta-")
    }
    return parsed


class _StreamingOutput:
    """What the SDK's checksum reader asks of GetObject's model: its body is a stream."""

    has_streaming_output = True
