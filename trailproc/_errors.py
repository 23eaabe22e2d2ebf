"""The error taxonomy and the one retry policy.

Every failure trailproc reports is a `TrailprocError` carrying where it happened (message
id, bucket, key), so a single log line tells an operator what broke and where. Errors are
either *transient* (worth retrying now: throttling, 5xx, resets) or *permanent* (the same
call would fail again: missing object, access denied, bad content). Permanent errors are
never retried in-process; the SQS message stays and comes back later or goes to the DLQ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = [
    "BadLogFile",
    "BadMessage",
    "CheckpointError",
    "DecompressedTooLarge",
    "DigestMismatch",
    "FetchError",
    "HandlerError",
    "InternalError",
    "MemoryContended",
    "OverMemoryBudget",
    "QuarantineError",
    "Refused",
    "RetryAgain",
    "SetupError",
    "TrailprocError",
    "error_code",
    "is_transient",
    "retry_transient",
    "setup_error",
]

T = TypeVar("T")


class TrailprocError(Exception):
    """Base class. `where` names the message id, bucket and key involved, when known."""

    reason = "error"

    def __init__(
        self,
        message: str,
        *,
        message_id: str | None = None,
        bucket: str | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.message_id = message_id
        self.bucket = bucket
        self.key = key

    def located(
        self, *, message_id: str | None = None, bucket: str | None = None, key: str | None = None
    ) -> TrailprocError:
        """Fill in location fields that are still unknown (returns self)."""
        self.message_id = self.message_id or message_id
        self.bucket = self.bucket or bucket
        self.key = self.key or key
        return self

    @property
    def location(self) -> str:
        """The object: `s3://bucket/key`, or a local file's path (no bucket); "" if unknown."""
        if self.bucket:
            return f"s3://{self.bucket}/{self.key or ''}"
        return self.key or ""

    @property
    def where(self) -> str:
        parts = []
        if self.message_id:
            parts.append(f"message {self.message_id}")
        if self.location:
            parts.append(self.location)
        return ", ".join(parts)

    def __str__(self) -> str:
        return f"{self.message} ({self.where})" if self.where else self.message


class FetchError(TrailprocError):
    """GetObject failed (after retries, if it was transient)."""

    reason = "fetch_failed"

    def __init__(self, message: str, *, code: str | None = None, **where: Any) -> None:
        super().__init__(message, **where)
        self.code = code


class BadLogFile(TrailprocError):
    """The object is not a CloudTrail log file we can read: corrupt gzip, not JSON, ..."""

    reason = "bad_log_file"


class DecompressedTooLarge(BadLogFile):
    """Decompressing would exceed `max_decompressed_bytes` (a gzip bomb or a huge file)."""

    reason = "too_large"


class OverMemoryBudget(DecompressedTooLarge):
    """A file would need more memory than the whole `memory_budget_mb`: it can never be
    held at once, so it fails (kept for retry/DLQ) instead of waiting forever."""

    reason = "over_memory_budget"


class MemoryContended(TrailprocError):
    """Files holding memory were all waiting for more of it at once: the newest gave its
    share back and failed, to be retried later (a wait could never have ended)."""

    reason = "memory_contended"


class BadMessage(TrailprocError):
    """An SQS message body trailproc cannot understand (kept for retry/DLQ, never deleted)."""

    reason = "bad_notification"


class Refused(TrailprocError):
    """A notification outside the configured allow-lists (bucket, account, topic)."""

    reason = "refused"


class CheckpointError(TrailprocError):
    """The checkpoint store failed (after retries): the file is kept for a later attempt."""

    reason = "checkpoint_failed"


class InternalError(TrailprocError):
    """An exception nobody expected (a bug, here or in a hook such as `filter_source`):
    the message or file is kept for retry, and the one error line carries the traceback."""

    @classmethod
    def of(
        cls,
        exc: BaseException,
        *,
        message_id: str | None = None,
        bucket: str | None = None,
        key: str | None = None,
    ) -> InternalError:
        error = cls(f"internal error: {exc!r}", message_id=message_id, bucket=bucket, key=key)
        error.__cause__ = exc
        return error


class HandlerError(TrailprocError):
    """User code raised while processing a batch."""

    reason = "handler_failed"


class DigestMismatch(TrailprocError):
    """A processed log file's SHA-256 differs from the one its CloudTrail digest lists.

    The file changed after CloudTrail delivered it. `bucket`/`key` name the log file;
    `digest_bucket`/`digest_key` the digest; `expected` is the digest's hash, `actual`
    the hash of the bytes trailproc processed. An integrity finding, reported once: the
    records were handed over already and no message is kept because of it.
    """

    reason = "digest_mismatch"

    def __init__(
        self,
        message: str,
        *,
        expected: str,
        actual: str,
        digest_bucket: str | None,
        digest_key: str | None,
        **where: Any,
    ) -> None:
        super().__init__(message, **where)
        self.expected = expected
        self.actual = actual
        self.digest_bucket = digest_bucket
        self.digest_key = digest_key


class SetupError(TrailprocError):
    """The run cannot start or go on as configured: no credentials, a queue that does not
    exist, a permission missing. The message names the fix; `code` is the AWS error code
    (or the botocore error's name) and `cause` the original exception, for debugging."""

    reason = "setup_failed"

    def __init__(
        self, message: str, *, code: str = "", cause: BaseException | None = None, **where: Any
    ) -> None:
        super().__init__(message, **where)
        self.code = code
        self.cause = cause


_NO_QUEUE_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)
_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "AuthorizationError", "KMS.AccessDeniedException"}
)
_BAD_CREDENTIAL_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "InvalidToken",
    }
)
# API operation → the IAM action to grant (the service prefix is not on the exception).
_ACTIONS = {
    "ReceiveMessage": "sqs:ReceiveMessage",
    "DeleteMessage": "sqs:DeleteMessage",
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibility": "sqs:ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "GetQueueAttributes": "sqs:GetQueueAttributes",
    "GetQueueUrl": "sqs:GetQueueUrl",
    "GetObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "GetItem": "dynamodb:GetItem",
    "PutItem": "dynamodb:PutItem",
    "UpdateItem": "dynamodb:UpdateItem",
    "Decrypt": "kms:Decrypt",
}


def _client_setup_error(exc: BaseException, queue_url: str | None) -> SetupError | None:
    code = error_code(exc)
    operation = str(getattr(exc, "operation_name", "") or "")
    queue = queue_url or "the configured queue"
    detail = _short(exc)
    if code in _NO_QUEUE_CODES:
        return SetupError(
            f"queue {queue} does not exist: check queue_url (--queue-url, TRAILPROC_QUEUE_URL);"
            " a queue URL names its region and account, so also check you use the right ones",
            code=code,
            cause=exc,
        )
    if code in _BAD_CREDENTIAL_CODES:
        return SetupError(
            f"AWS rejected the credentials ({code}): they are wrong or expired; refresh them"
            f" (aws sso login, new keys) or check AWS_PROFILE [{detail}]",
            code=code,
            cause=exc,
        )
    response = getattr(exc, "response", None)
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") if response else None
    # A 403 without a parseable code (an XML error body to a JSON call) is a denial too.
    if code in _DENIED_CODES or status == 403:
        action = _ACTIONS.get(operation, f"the permission for {operation or 'this call'}")
        return SetupError(
            f"access denied calling {operation or 'AWS'} on {queue}: grant {action} to the"
            f" credentials in use (policy in docs/iam.md) [{detail}]",
            code=code if code in _DENIED_CODES else "AccessDenied",
            cause=exc,
        )
    return None


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def setup_error(exc: BaseException, *, queue_url: str | None = None) -> SetupError | None:
    """The `SetupError` (with its fix) for an exception that stops a run at start-up or
    polling: missing or rejected credentials, no region, a queue that does not exist,
    access denied, an endpoint that cannot be reached. None for anything else."""
    if isinstance(exc, SetupError):
        return exc
    from botocore import exceptions as bx  # lazily: botocore is heavy

    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return SetupError(
            "no AWS credentials found: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY), or run with an instance, task or Lambda role",
            code=type(exc).__name__,
            cause=exc,
        )
    if isinstance(exc, bx.NoRegionError):
        return SetupError(
            "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or give a full SQS queue URL",
            code=type(exc).__name__,
            cause=exc,
        )
    if isinstance(exc, bx.EndpointConnectionError):
        return SetupError(
            f"cannot reach AWS ({_short(exc)}): check the network, the region and"
            " AWS_ENDPOINT_URL if you set one",
            code=type(exc).__name__,
            cause=exc,
        )
    if isinstance(exc, bx.ClientError):
        return _client_setup_error(exc, queue_url)
    return None


_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestThrottled",
        "AWS.SimpleQueueService.RequestThrottled",
        "KMS.ThrottlingException",
        "BandwidthLimitExceeded",
        "TransactionInProgressException",
        "InternalServerError",
        "InternalServerException",
        "KMS.KMSInternalException",
        "IDPCommunicationError",
        "PriorRequestNotComplete",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "MemoryContended",
        "OverMemoryBudget",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
        "503",
        "500",
        "502",
        "504",
    }
)


class RetryAgain(Exception):
    """Raised by a `retry_transient` call to ask for another attempt: a partial failure
    no SDK exception shows (some entries of a batch call failed on the service's side)."""


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("AccessDenied", ...); "" otherwise."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or "")
    return ""


def is_transient(exc: BaseException) -> bool:
    """True for failures that a retry may cure (throttling, 5xx, timeouts, resets)."""
    if isinstance(exc, FetchError):
        return exc.code in _TRANSIENT_CODES or exc.code == "connection"
    # Imported lazily: botocore is heavy and this module is imported at start-up.
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        HTTPClientError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    if isinstance(exc, RetryAgain):
        return True
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in _TRANSIENT_CODES or int(status or 0) >= 500
    if isinstance(
        exc,
        HTTPClientError  # includes ConnectionClosedError (reset, response lost)
        | ConnectTimeoutError
        | EndpointConnectionError
        | ReadTimeoutError
        | ResponseStreamingError  # the body read was cut
        | IncompleteReadError,  # fewer body bytes than Content-Length
    ):
        return True
    if isinstance(exc, BotoCoreError):
        return "connection" in str(exc).lower()
    # aiohttp raises its own errors for resets mid-body (ClientPayloadError,
    # ServerDisconnectedError, ClientOSError, ...); asyncio streams raise EOFError
    # subclasses (IncompleteReadError). Treat every connection-level error alike.
    if isinstance(exc, ConnectionError | TimeoutError | EOFError):
        return True
    if isinstance(exc, OSError):
        # FileNotFoundError, PermissionError and friends are not network trouble.
        return not isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError
                              | NotADirectoryError)  # fmt: skip
    return _is_aiohttp_transient(exc)


def _is_aiohttp_transient(exc: BaseException) -> bool:
    module = type(exc).__module__
    if not module.startswith("aiohttp"):
        return False
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - aioboto3 depends on it
        return False
    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status >= 500 or exc.status == 429
    return isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError)


async def retry_transient(
    call: Callable[[], Awaitable[T]], *, attempts: int = 5, max_wait: float = 8.0
) -> T:
    """Run `call`, retrying transient failures with exponential backoff and jitter.

    This sits on top of botocore's own retries, so a burst of throttling that outlasts
    the SDK's few quick attempts is ridden out instead of failing the file.
    """
    # Fast path: one plain await. Checkpoint commits and deletes go through here once per
    # batch, and tenacity's bookkeeping (tens of microseconds a call) showed up in
    # profiles; it only takes over once an attempt failed transiently.
    try:
        return await call()
    except Exception as exc:
        if attempts <= 1 or not is_transient(exc):
            raise
    import tenacity  # only on this slow path: `import trailproc` stays light

    wait = tenacity.wait_exponential(multiplier=0.2, max=max_wait) + tenacity.wait_random(0, 0.3)
    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(is_transient),
        # 0.2 s, 0.4 s, 0.8 s, ... capped, plus up to 0.3 s of jitter so that many
        # workers throttled at once do not retry in lockstep.
        wait=wait,
        stop=tenacity.stop_after_attempt(attempts - 1),
        # The failed fast-path attempt counts: wait before the first retry too.
        reraise=True,
    )

    async def attempt() -> T:
        # A coroutine *function* for tenacity: it only awaits what such functions return.
        return await call()

    await asyncio.sleep(0.2)
    return await retrying(attempt)


class QuarantineError(TrailprocError):
    """The quarantine could not be written: the file fails and its message is kept."""

    reason = "quarantine_failed"
