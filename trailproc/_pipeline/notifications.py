"""Stage 1: an SQS message body → which S3 objects (or records carried in the message) to process.

Pure and I/O-free. Every input form that can announce a CloudTrail delivery is
accepted: CloudTrail's own SNS notification (wrapped or raw), S3 event
notifications (direct, or through SNS), EventBridge S3 "Object Created" events,
and CloudTrail records routed through EventBridge. Setup noise (the SNS validation
text, ``s3:TestEvent``) is recognised so the source can delete it.

Anything else raises :class:`BadNotification`: the source must then *keep* the
message so that retries and the dead-letter queue preserve it. Deleting a message
we do not understand could silently lose a log delivery.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import msgspec

from trailproc._pipeline.keys import FileRef, ObjectKind

__all__ = [
    "DEFAULT_KINDS",
    "BadNotification",
    "Notification",
    "NotificationKind",
    "SnsEnvelope",
    "parse_notification",
    "parse_payload",
]


class NotificationKind(str, enum.Enum):
    """Which of the supported message shapes a body was."""

    CLOUDTRAIL = "cloudtrail"
    S3_EVENT = "s3_event"
    EVENTBRIDGE_S3 = "eventbridge_s3"
    EVENTBRIDGE_CLOUDTRAIL = "eventbridge_cloudtrail"
    S3_TEST_EVENT = "s3_test_event"
    VALIDATION = "validation"


@dataclass(frozen=True, slots=True)
class SnsEnvelope:
    """The signed fields of an SNS envelope, as received (None when absent).

    SQS deliveries spell the certificate field `SigningCertURL`, Lambda SNS events
    `SigningCertUrl`; both land in `signing_cert_url`. A `Subject` of null (Lambda's way
    of saying "none") counts as absent, as SNS signs it only when present."""

    type: str | None
    message: str | None
    message_id: str | None
    subject: str | None
    timestamp: str | None
    topic_arn: str | None
    signature_version: str | None
    signature: str | None
    signing_cert_url: str | None

    @classmethod
    def of(cls, env: Mapping[str, Any]) -> SnsEnvelope:
        def text(*names: str) -> str | None:
            for name in names:
                value = env.get(name)
                if isinstance(value, str):
                    return value
            return None

        return cls(
            type=text("Type"),
            message=text("Message"),
            message_id=text("MessageId"),
            subject=text("Subject"),
            timestamp=text("Timestamp"),
            topic_arn=text("TopicArn"),
            signature_version=text("SignatureVersion"),
            signature=text("Signature"),
            signing_cert_url=text("SigningCertURL", "SigningCertUrl"),
        )


@dataclass(frozen=True, slots=True)
class Notification:
    """What one message asks for, after the object-kind policy was applied."""

    kind: NotificationKind
    refs: tuple[FileRef, ...] = ()
    skipped: tuple[tuple[FileRef, str], ...] = ()
    # CloudTrail records carried in the message body itself (EventBridge "via CloudTrail").
    carried_records: tuple[bytes, ...] = ()
    sns_message_id: str | None = None
    topic_arn: str | None = None
    raw_delivery: bool = False
    # The EventBridge envelope's `account`: labels carried records that lack
    # recipientAccountId (older event versions).
    account: str | None = None
    # The SNS envelope the payload came in (None for raw deliveries), for signature checks.
    envelope: SnsEnvelope | None = None

    @property
    def is_ack_only(self) -> bool:
        """True when there is nothing to process, so the source should just delete it."""
        return not self.refs and not self.carried_records

    @property
    def inline_records(self) -> tuple[bytes, ...]:
        """Deprecated name of `carried_records`."""
        warnings.warn("Notification.inline_records is deprecated: use carried_records",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        return self.carried_records


class BadNotification(ValueError):
    """A body trailproc cannot understand; the message must be kept (retry/DLQ), never deleted.

    `bucket` and `key` name the object the bad part was about, when the body told them.
    """

    def __init__(self, message: str, *, bucket: str | None = None, key: str | None = None):
        super().__init__(message)
        self.bucket = bucket
        self.key = key


BadNotification.__module__ = "trailproc"  # exported there; tracebacks name it so


DEFAULT_KINDS: frozenset[ObjectKind] = frozenset({ObjectKind.LOG, ObjectKind.INSIGHT})

# CloudTrail publishes this plain text (not JSON) to a topic when it is attached to a trail.
_VALIDATION_TEXT = "CloudTrail validation message."
_VALIDATION_BYTES = _VALIDATION_TEXT.encode()

_KIND_LABEL = {
    ObjectKind.LOG: "log file",
    ObjectKind.INSIGHT: "Insights file",
    ObjectKind.DIGEST: "digest file",
}

# Upper bound on how many keys an "unknown shape" error lists: enough to recognise a
# payload, short enough for a log line.
_MAX_KEYS_SHOWN = 12
# Upper bound on the length of one value quoted from the body in an error message.
_MAX_SHOWN = 60


class _RawDetail(msgspec.Struct):
    # Decoding only `detail` as Raw hands handlers the record's exact bytes: a
    # decode/encode round trip would rewrite numbers such as 0.0000882145 and escapes.
    detail: msgspec.Raw


@dataclass(frozen=True, slots=True)
class _Context:
    process_kinds: frozenset[ObjectKind]
    topic_arn: str | None
    sns_message_id: str | None
    raw_delivery: bool
    envelope: SnsEnvelope | None = None


def parse_notification(
    body: str | bytes, *, process_kinds: frozenset[ObjectKind] = DEFAULT_KINDS
) -> Notification:
    """Parse an SQS message body (SNS-wrapped or raw). Raises BadNotification."""
    # surrogatepass: a lone surrogate becomes bytes that _decode rejects as not UTF-8.
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    # The validation text is not JSON, so it must be recognised before decoding.
    if data.strip() == _VALIDATION_BYTES:
        return Notification(NotificationKind.VALIDATION, raw_delivery=True)
    obj = _decode(data, "SQS body")
    if _is_sns_envelope(obj):
        return _parse_sns_envelope(obj, process_kinds)
    ctx = _Context(process_kinds, None, None, raw_delivery=True)
    return _classify(obj, data, ctx)


def parse_payload(
    payload: Mapping[str, Any],
    *,
    process_kinds: frozenset[ObjectKind] = DEFAULT_KINDS,
    topic_arn: str | None = None,
    sns_message_id: str | None = None,
) -> Notification:
    """Parse an already-decoded payload (e.g. a Lambda S3 or EventBridge trigger event).

    An SNS envelope mapping (such as a Lambda SNS record's ``Sns``) is unwrapped too.
    Without the original bytes, EventBridge CloudTrail records are re-encoded.
    """
    if not isinstance(payload, Mapping):
        raise BadNotification(
            f"payload is a {_json_type(payload)}, not a JSON object; expected a notification"
        )
    if _is_sns_envelope(payload):
        return _parse_sns_envelope(payload, process_kinds)
    wrapped = topic_arn is not None or sns_message_id is not None
    ctx = _Context(process_kinds, topic_arn, sns_message_id, raw_delivery=not wrapped)
    return _classify(payload, None, ctx)


# -- decoding and the SNS envelope -------------------------------------------------


def _decode(data: bytes, what: str) -> Mapping[str, Any]:
    if not data.strip():
        raise BadNotification(f"{what} is empty")
    try:
        obj = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise BadNotification(f"{what} is not JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec decodes strings as strict UTF-8
        raise BadNotification(
            f"{what} is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    except RecursionError:
        raise BadNotification(f"{what} is JSON nested too deeply to be a notification") from None
    if not isinstance(obj, dict):
        raise BadNotification(
            f"{what} is a JSON {_json_type(obj)}, not an object; expected a notification"
        )
    return obj


def _is_sns_envelope(obj: Mapping[str, Any]) -> bool:
    # SNS envelopes carry Type and TopicArn; CloudTrail/S3/EventBridge payloads never have
    # a top-level "Type", so this cannot mistake a payload for an envelope. Non-Notification
    # types are caught too, so they get a clear error instead of "unknown shape".
    return obj.get("Type") == "Notification" or ("Type" in obj and "TopicArn" in obj)


def _parse_sns_envelope(
    env: Mapping[str, Any], process_kinds: frozenset[ObjectKind]
) -> Notification:
    msg_type = env.get("Type")
    topic_arn = _opt_str(env.get("TopicArn"))
    if msg_type != "Notification":
        # SubscriptionConfirmation & co. need a human (or IaC) to act; keep them visible.
        raise BadNotification(
            f"SNS message of Type {_show(msg_type)} from {_clip(str(topic_arn))}; only "
            "Notification messages carry CloudTrail deliveries"
        )
    message = env.get("Message")
    if not isinstance(message, str):
        raise BadNotification(
            f"SNS envelope from {_clip(str(topic_arn))} has no Message string "
            f"(got {_json_type(message)})"
        )
    message_id = _opt_str(env.get("MessageId"))
    envelope = SnsEnvelope.of(env)
    if message.strip() == _VALIDATION_TEXT:
        return Notification(NotificationKind.VALIDATION, sns_message_id=message_id,
                            topic_arn=topic_arn, envelope=envelope)  # fmt: skip
    # Message is JSON inside a JSON string: decode a second time.
    inner_bytes = message.encode("utf-8", "surrogatepass")
    inner = _decode(inner_bytes, "SNS Message")
    ctx = _Context(process_kinds, topic_arn, message_id, raw_delivery=False, envelope=envelope)
    return _classify(inner, inner_bytes, ctx)


# -- payload shapes ---------------------------------------------------------------


def _classify(p: Mapping[str, Any], raw: bytes | None, ctx: _Context) -> Notification:
    if _is_sns_envelope(p):
        # Topic-to-topic fan-out would wrap twice; we unwrap one level only, on purpose.
        raise BadNotification("SNS envelope nested inside another SNS envelope's Message")
    if "s3ObjectKey" in p or "s3Bucket" in p:
        return _cloudtrail(p, ctx)
    if p.get("Event") == "s3:TestEvent":
        return _notification(NotificationKind.S3_TEST_EVENT, ctx)
    if "Records" in p:
        return _s3_event(p["Records"], ctx)
    detail_type = p.get("detail-type")
    if isinstance(detail_type, str) and "detail" in p:
        # Checked before the S3 branch: CloudTrail records of S3 API calls also have
        # source "aws.s3", with detail-type "AWS API Call via CloudTrail".
        if detail_type.endswith("via CloudTrail"):
            return _eventbridge_cloudtrail(p, raw, ctx)
        if p.get("source") == "aws.s3":
            return _eventbridge_s3(p, detail_type, ctx)
    keys = sorted(str(k) for k in p)
    shown = ", ".join(_clip(k) for k in keys[:_MAX_KEYS_SHOWN])
    shown += ", ..." if len(keys) > _MAX_KEYS_SHOWN else ""
    raise BadNotification(
        f"JSON of unknown shape (keys: {shown or 'none'}); "
        "expected a CloudTrail, S3 or EventBridge notification"
    )


def _cloudtrail(p: Mapping[str, Any], ctx: _Context) -> Notification:
    # Strict on purpose: a malformed CloudTrail notification means something upstream is
    # broken, and guessing could acknowledge a delivery we never processed.
    bucket = p.get("s3Bucket")
    if not isinstance(bucket, str) or not bucket:
        raise BadNotification(
            f"CloudTrail notification has a missing or empty s3Bucket (got {_json_type(bucket)})"
        )
    keys = p.get("s3ObjectKey")
    if not isinstance(keys, list):
        raise BadNotification(
            f"CloudTrail notification s3ObjectKey must be a list of keys, got {_json_type(keys)}",
            bucket=bucket,
        )
    if not keys:
        raise BadNotification("CloudTrail notification s3ObjectKey is an empty list", bucket=bucket)
    for i, key in enumerate(keys):
        if not isinstance(key, str) or not key:
            raise BadNotification(
                f"CloudTrail notification s3ObjectKey[{i}] is not a non-empty string "
                f"(got {_json_type(key)})",
                bucket=bucket,
            )
    # CloudTrail's keys are plain, not URL-encoded.
    return _notification(
        NotificationKind.CLOUDTRAIL, ctx, (FileRef.of(bucket, key) for key in keys)
    )


def _s3_event(records: Any, ctx: _Context) -> Notification:
    if not isinstance(records, list) or not records:
        raise BadNotification(
            f"Records must be a non-empty list of S3 event records, got {_json_type(records)}"
            + (" (empty)" if isinstance(records, list) else "")
        )
    first = records[0]
    if not isinstance(first, Mapping):
        raise BadNotification(f"Records[0] is a {_json_type(first)}, not an object")
    if first.get("eventSource") != "aws:s3" or "s3" not in first:
        raise BadNotification(_records_mismatch(first))

    refs: list[FileRef] = []
    skipped: list[tuple[FileRef, str]] = []
    for i, rec in enumerate(records):
        where = f"S3 event Records[{i}]"
        if not isinstance(rec, Mapping) or rec.get("eventSource") != "aws:s3":
            raise BadNotification(f"{where} is not an S3 event record (eventSource aws:s3)")
        s3 = _member(rec, "s3", where)
        bucket = _req_str(_member(s3, "bucket", f"{where}.s3"), "name", f"{where}.s3.bucket")
        obj = _member(s3, "object", f"{where}.s3", bucket=bucket)
        # S3 event keys are form-encoded (space → "+"), unlike CloudTrail's own keys.
        key = unquote_plus(_req_str(obj, "key", f"{where}.s3.object", bucket=bucket))
        event_name = _req_str(rec, "eventName", where, bucket=bucket, key=key)
        ref = FileRef.of(
            bucket,
            key,
            etag=_opt_str(obj.get("eTag")),
            version_id=_opt_str(obj.get("versionId")),
            size=_opt_int(obj.get("size")),
        )
        if event_name.startswith("ObjectCreated:"):
            refs.append(ref)
        else:
            skipped.append((ref, f"S3 event {event_name} is not ObjectCreated"))
    return _notification(NotificationKind.S3_EVENT, ctx, refs, skipped)


def _records_mismatch(first: Mapping[str, Any]) -> str:
    """Say what a Records-bearing body that is not an S3 notification most likely is."""
    source = first.get("eventSource", first.get("EventSource"))
    if source == "aws:sqs":
        return (
            "body is a whole Lambda SQS event (Records[].eventSource aws:sqs); "
            "parse each Records[].body instead"
        )
    if source == "aws:sns":
        return (
            "body is a whole Lambda SNS event (Records[].EventSource aws:sns); "
            "parse each Records[].Sns instead"
        )
    if "eventVersion" in first and ("eventName" in first or "eventTime" in first):
        return (
            "body looks like a CloudTrail log file (Records of events, Records[0].eventSource "
            f"{_show(source)}), not a notification about one"
        )
    return (
        f"Records[0] is not an S3 event notification record (eventSource {_show(source)}, "
        f"has s3 member: {'s3' in first})"
    )


def _eventbridge_s3(p: Mapping[str, Any], detail_type: str, ctx: _Context) -> Notification:
    where = "EventBridge S3 event detail"
    detail = _member(p, "detail", "EventBridge S3 event")
    bucket = _req_str(_member(detail, "bucket", where), "name", f"{where}.bucket")
    obj = _member(detail, "object", where, bucket=bucket)
    ref = FileRef.of(
        bucket,
        # EventBridge carries the key as-is; decoding would corrupt keys containing "+".
        _req_str(obj, "key", f"{where}.object", bucket=bucket),
        etag=_opt_str(obj.get("etag")),
        version_id=_opt_str(obj.get("version-id")),
        size=_opt_int(obj.get("size")),
    )
    if detail_type == "Object Created":
        return _notification(NotificationKind.EVENTBRIDGE_S3, ctx, [ref])
    # Deletions, restores, tag changes... are about objects, but not new deliveries.
    reason = f"EventBridge S3 event {_show(detail_type)} is not Object Created"
    return _notification(NotificationKind.EVENTBRIDGE_S3, ctx, (), [(ref, reason)])


def _eventbridge_cloudtrail(p: Mapping[str, Any], raw: bytes | None, ctx: _Context) -> Notification:
    detail = p.get("detail")
    if not isinstance(detail, Mapping):
        raise BadNotification(
            f"EventBridge {_show(p.get('detail-type'))} event detail is a {_json_type(detail)}, "
            "not a CloudTrail record object"
        )
    record: bytes
    if raw is not None:
        try:
            record = bytes(msgspec.json.decode(raw, type=_RawDetail).detail)
        except msgspec.DecodeError:  # pragma: no cover - raw already decoded once above
            record = msgspec.json.encode(detail)
    else:
        record = msgspec.json.encode(detail)
    account = p.get("account")
    return Notification(
        NotificationKind.EVENTBRIDGE_CLOUDTRAIL,
        carried_records=(record,),
        sns_message_id=ctx.sns_message_id,
        topic_arn=ctx.topic_arn,
        raw_delivery=ctx.raw_delivery,
        account=account if isinstance(account, str) and account else None,
        envelope=ctx.envelope,
    )


# -- policy and small helpers -----------------------------------------------------


def _notification(
    kind: NotificationKind,
    ctx: _Context,
    candidates: Iterable[FileRef] = (),
    skipped: Iterable[tuple[FileRef, str]] = (),
) -> Notification:
    """Apply the object-kind policy and build the result."""
    refs: list[FileRef] = []
    out_skipped = list(skipped)
    seen: set[FileRef] = set()
    for ref in candidates:
        # An object named twice in one message is handed over once: running it twice at
        # the same time would find it busy (leased by ourselves) and keep the message.
        if ref in seen:
            continue
        seen.add(ref)
        reason = _skip_reason(ref, ctx.process_kinds)
        if reason is None:
            refs.append(ref)
        else:
            out_skipped.append((ref, reason))
    return Notification(
        kind,
        refs=tuple(refs),
        skipped=tuple(out_skipped),
        sns_message_id=ctx.sns_message_id,
        topic_arn=ctx.topic_arn,
        raw_delivery=ctx.raw_delivery,
        envelope=ctx.envelope,
    )


def _skip_reason(ref: FileRef, process_kinds: frozenset[ObjectKind]) -> str | None:
    # OTHER is never processed, whatever process_kinds says: downstream stages only know
    # how to read CloudTrail logs, Insights files and digests.
    if ref.key.endswith("/"):
        return "folder marker (key ends with '/'), not a CloudTrail file"
    if ref.kind is ObjectKind.OTHER:
        return "not a CloudTrail log, Insights or digest key (other object in the bucket)"
    if ref.kind in process_kinds:
        return None
    # Declaration order keeps the reason stable and readable ("log,insight").
    allowed = ",".join(k.value for k in ObjectKind if k in process_kinds) or "none"
    return f"{_KIND_LABEL[ref.kind]} (not processed: process_kinds={allowed})"


def _member(
    obj: Mapping[str, Any], name: str, where: str, *, bucket: str | None = None
) -> Mapping[str, Any]:
    value = obj.get(name)
    if not isinstance(value, Mapping):
        raise BadNotification(f"{where}.{name} is missing or not an object", bucket=bucket)
    return value


def _req_str(
    obj: Mapping[str, Any],
    name: str,
    where: str,
    *,
    bucket: str | None = None,
    key: str | None = None,
) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise BadNotification(
            f"{where}.{name} is missing or not a non-empty string", bucket=bucket, key=key
        )
    return value


def _cut(shown: str) -> str:
    return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 3] + "..."


def _clip(text: str) -> str:
    """`text` for an error message: control characters escaped, at most _MAX_SHOWN chars."""
    return _cut(repr(text)[1:-1])


def _show(value: Any) -> str:
    """repr(value), cut to _MAX_SHOWN characters: the body is untrusted and may be huge.

    Containers are only named: their repr could be deep as well as long."""
    if isinstance(value, (Mapping, list, tuple)):
        return f"<JSON {_json_type(value)}>"
    return _cut(repr(value))


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _opt_int(value: Any) -> int | None:
    # bool is an int subclass; a JSON true is not a size.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__
