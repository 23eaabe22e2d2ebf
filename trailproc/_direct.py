"""The daemon's hot requests in one signed request each, once the SDK has shown the way.

botocore spends about a millisecond of CPU on every request (events, endpoint rules,
serialisation, signing, parsing): more than the rest of the pipeline spends on a small
CloudTrail file. The requests a daemon repeats thousands of times (S3 GetObject, SQS
ReceiveMessage and DeleteMessageBatch) change in nothing but their key or body from one
call to the next. The wrappers here let the first call of each kind go through the SDK
and, while the SDK signs it, note what it resolved: the URL, the signing region and
name, the headers it adds. Later calls build the same request with their own key or
body, and hand it to the SDK's own signer and the SDK's own HTTP session (the same
connection pool, proxies, TLS settings and timeouts).

Only a plain 200 is taken from that short path. Anything else (an error status, a
redirect to another region, a connection failure) is asked again through the SDK, which
retries, follows redirects and raises exactly what it always raises: the short path
never changes what a failure looks like, it only costs one more request then. Calls with
other parameters (an object version, a byte range) always go through the SDK, as does
everything when a handler answers requests in place of the network (a stub, an
in-process mock).
"""

from __future__ import annotations

import base64
import contextvars
import email.utils
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

__all__ = ["DirectGetClient", "DirectQueueClient", "wrap_client"]

# Headers the signer sets per request: never copied from the learned one.
_PER_REQUEST = frozenset({
    "authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256",
    "amz-sdk-invocation-id", "amz-sdk-request", "content-length",
})  # fmt: skip
# After a short call fails, this many calls go through the SDK (with its backoff) before
# the next short one: a lasting refusal (throttling, a skewed clock) costs at most one
# extra request per this many calls.
_COOLDOWN = 50
# Routes kept per client (buckets, queues): notifications naming endless buckets must not
# grow memory without end; the oldest route is forgotten first.
_MAX_ROUTES = 256
# Request context the signer and the checksum reader look at; the rest is per request.
_CONTEXT = ("auth_type", "signing", "checksum", "client_config", "has_streaming_input",
            "unsigned_payload", "payload_signing_enabled")  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Route:
    """How the SDK sent one kind of request: its URL (around the key, for S3), the
    headers it added, and what signs it."""

    head: str
    tail: str
    headers: tuple[tuple[str, str], ...]
    context: dict[str, Any]
    signer: Any


class _Lesson:
    """What one SDK call showed, filled in while the SDK signs its request."""

    __slots__ = ("key", "route")

    def __init__(self, key: str | None) -> None:
        self.key = key  # the S3 key at the end of the path; None: the URL as it is
        self.route: _Route | None = None


_lesson: contextvars.ContextVar[_Lesson | None] = contextvars.ContextVar(
    "trailproc_request_lesson", default=None
)


def encoded_key(key: str) -> str:
    """The key as botocore puts it in a URL path (slashes and tildes kept)."""
    return urllib.parse.quote(key, safe="/~")


def route_from(request: Any, key: str | None, signer: Any, service: str) -> _Route | None:
    """The route of a request the SDK is about to sign, or None when its shape is not
    one a short call can repeat (another signature scheme, the key not at the end of
    the path)."""
    context = request.context
    signing = context.get("signing") or {}
    if context.get("auth_type") not in ("v4", "s3v4", None) or signing.get("identity_cache"):
        return None
    if signing.get("request_credentials") or signing.get("signing_name", service) != service:
        return None
    head, tail = request.url, ""
    if key is not None:
        path, sep, query = request.url.partition("?")
        encoded = encoded_key(key)
        if not encoded or not path.endswith("/" + encoded):
            return None
        head, tail = path[: -len(encoded)], sep + query
    headers = tuple(
        (name, str(value))
        for name, value in request.headers.items()
        if name.lower() not in _PER_REQUEST
    )
    kept = {name: context[name] for name in _CONTEXT if name in context}
    return _Route(head, tail, headers, kept, signer)


class _Direct:
    """What both wrappers share: the learning, and signing and sending a short call."""

    SERVICE = ""

    def __init__(self, client: Any, operations: tuple[str, ...]) -> None:
        self._client = client
        self._routes: dict[tuple[Any, ...], _Route] = {}
        self._http: Any = getattr(getattr(client, "_endpoint", None), "http_session", None)
        self._usable = self._http is not None
        self._events = client.meta.events
        self._cooldown = 0
        self.direct_calls = 0
        self.sdk_calls = 0
        if self._usable:
            for operation in operations:
                self._events.register(f"before-sign.{self.SERVICE}.{operation}", self._learn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _learn(self, request: Any = None, request_signer: Any = None, **_: Any) -> None:
        lesson = _lesson.get()
        if lesson is not None and request is not None:
            # The last request signed wins: after a redirect, the one that reached the
            # resource's own region.
            lesson.route = route_from(request, lesson.key, request_signer, self.SERVICE)

    def _route(self, slot: Any) -> _Route | None:
        """The learned route of `slot`, unless short calls are off or cooling down."""
        if slot is None or not self._usable:
            return None
        if self._cooldown:
            self._cooldown -= 1
            return None
        return self._routes.get(slot)

    def _failed(self, slot: Any) -> None:
        """A short call was refused or never answered: forget its route (the SDK's next
        call learns it again) and leave the next calls to the SDK."""
        self._routes.pop(slot, None)
        self._cooldown = _COOLDOWN

    async def _through_sdk(self, slot: Any, key: str | None, call: Any, **kwargs: Any) -> Any:
        """`call(**kwargs)` through the SDK, learning the route of `slot` from it."""
        lesson = _Lesson(key)
        token = _lesson.set(lesson)
        try:
            response = await call(**kwargs)
        finally:
            _lesson.reset(token)
        self.sdk_calls += 1
        if slot is not None and lesson.route is not None:
            if slot not in self._routes and len(self._routes) >= _MAX_ROUTES:
                del self._routes[next(iter(self._routes))]
            self._routes[slot] = lesson.route
        return response

    async def _send(self, route: _Route, operation: str, url: str, body: bytes | None,
                    stream: bool) -> Any:  # fmt: skip
        """The SDK's HTTP response to a short call, or None to ask through the SDK."""
        from botocore.awsrequest import AWSRequest

        method = "GET" if body is None else "POST"
        request = AWSRequest(method=method, url=url, headers=dict(route.headers), data=body)
        request.context = dict(route.context)
        await route.signer.sign(operation, request)
        prepared = request.prepare()
        prepared.stream_output = stream
        # Counted like every SDK request (trailproc_aws_requests_total); a handler that
        # answers here (a stub, an in-process mock) means requests must not reach the
        # network from this client: the SDK serves it from now on.
        _, answer = await self._events.emit_until_response(
            f"before-send.{self.SERVICE}.{operation}", request=prepared
        )
        if answer is not None:
            self._usable = False
            return None
        try:
            http = await self._http.send(prepared)
        except Exception:  # the SDK asks again, retries and raises its own error
            return None
        if http.status_code != 200:
            if stream:
                http.raw.release()
            return None
        self.direct_calls += 1
        return http


# --- S3 ----------------------------------------------------------------------------------

# The parameters a short read can carry: they are the same for every read of a bucket
# (S3Objects sets the last two per bucket), so they are part of what is learned.
_PLAIN_GET = frozenset({"Bucket", "Key", "RequestPayer", "ExpectedBucketOwner"})
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


class DirectGetClient(_Direct):
    """An aiobotocore S3 client whose plain `get_object` calls are short after the first
    read of each bucket; everything else is the client's own. `direct_calls` and
    `sdk_calls` count the reads each way (for tests and probes)."""

    SERVICE = "s3"

    def __init__(self, client: Any) -> None:
        super().__init__(client, ("GetObject",))

    async def get_object(self, **kwargs: Any) -> Any:
        slot = _get_slot(kwargs)
        route = self._route(slot)
        if route is not None:
            url = route.head + encoded_key(kwargs["Key"]) + route.tail
            http = await self._send(route, "GetObject", url, None, stream=True)
            if http is not None:
                return await _parsed_get(http, route.context)
            self._failed(slot)
        return await self._through_sdk(slot, kwargs.get("Key", ""), self._client.get_object,
                                       **kwargs)  # fmt: skip


def _get_slot(kwargs: dict[str, Any]) -> tuple[str, ...] | None:
    if not kwargs.keys() <= _PLAIN_GET or "Bucket" not in kwargs or "Key" not in kwargs:
        return None
    return (kwargs["Bucket"], kwargs.get("RequestPayer", ""), kwargs.get("ExpectedBucketOwner", ""))


async def _parsed_get(http: Any, context: dict[str, Any]) -> dict[str, Any]:
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
    parsed: dict[str, Any] = {"ResponseMetadata": _metadata(headers), "Body": raw["body"]}
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


def _metadata(headers: dict[str, str]) -> dict[str, Any]:
    return {
        "RequestId": headers.get("x-amz-request-id") or headers.get("x-amzn-requestid"),
        "HostId": headers.get("x-amz-id-2", ""),
        "HTTPStatusCode": 200,
        "HTTPHeaders": headers,
        "RetryAttempts": 0,
    }


# --- SQS ---------------------------------------------------------------------------------

_QUEUE_OPERATIONS = {
    "receive_message": "ReceiveMessage",
    "delete_message_batch": "DeleteMessageBatch",
}


class DirectQueueClient(_Direct):
    """An aiobotocore SQS client (JSON protocol) whose `receive_message` and
    `delete_message_batch` calls are short after the first of each per queue."""

    SERVICE = "sqs"

    def __init__(self, client: Any) -> None:
        super().__init__(client, tuple(_QUEUE_OPERATIONS.values()))

    async def receive_message(self, **kwargs: Any) -> Any:
        response = await self._call("receive_message", kwargs)
        for message in response.get("Messages", ()):
            _decode_binary(message.get("MessageAttributes"))
        return response

    async def delete_message_batch(self, **kwargs: Any) -> Any:
        return await self._call("delete_message_batch", kwargs)

    async def _call(self, method: str, kwargs: dict[str, Any]) -> Any:
        operation = _QUEUE_OPERATIONS[method]
        slot = (operation, kwargs.get("QueueUrl"))
        route = self._route(slot)
        if route is not None:
            body = json.dumps(kwargs, separators=(",", ":")).encode()
            http = await self._send(route, operation, route.head, body, stream=False)
            parsed = _json_answer(await http.content) if http is not None else None
            if parsed is not None:
                parsed["ResponseMetadata"] = _metadata(http.headers)
                return parsed
            self._failed(slot)  # refused, or an answer the SDK would not parse either
        return await self._through_sdk(slot, None, getattr(self._client, method), **kwargs)


def _json_answer(content: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(content or b"{}")
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _decode_binary(attributes: dict[str, Any] | None) -> None:
    """Binary message attributes as the SDK hands them over: bytes, not base64 text.
    (Only the short path's answers need it; the SDK's are decoded already.)"""
    for value in (attributes or {}).values():
        if isinstance(value.get("BinaryValue"), str):
            value["BinaryValue"] = base64.b64decode(value["BinaryValue"])
        if value.get("BinaryListValues"):
            value["BinaryListValues"] = [
                base64.b64decode(item) if isinstance(item, str) else item
                for item in value["BinaryListValues"]
            ]


def wrap_client(service: str, client: Any) -> Any:
    """`client` with its hot calls made short where this module knows them."""
    if service == "s3":
        return DirectGetClient(client)
    if service == "sqs" and client.meta.service_model.protocol == "json":
        return DirectQueueClient(client)
    return client
