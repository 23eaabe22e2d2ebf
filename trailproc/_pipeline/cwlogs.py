"""CloudWatch Logs subscription payloads → typed documents holding CloudTrail records.

A trail that sends its records to a CloudWatch Logs group can stream them on through a
subscription filter to Lambda, Kinesis Data Streams or Firehose. Every road carries the
same document (base64 of gzip of it for Lambda and Kinesis)::

    {"messageType": "DATA_MESSAGE", "owner": "123456789012",
     "logGroup": "...", "logStream": "...", "subscriptionFilters": ["..."],
     "logEvents": [{"id": "...", "timestamp": 1600361930988, "message": "<record>"}]}

Each `message` is one CloudTrail record written as a JSON *string*; its record bytes are
the UTF-8 bytes of that string's value, exactly what CloudTrail put into the log group.
A message that is not a JSON object is refused (the log group is not a trail's).
`CONTROL_MESSAGE` documents are CloudWatch Logs checking that the destination is
reachable: they carry no records.

Firehose delivering such documents to S3 writes several per object: concatenated gzip
members (Firehose keeps the records as CloudWatch Logs compressed them), or plain JSON
documents one after another or one per line when Firehose decompresses them.
`split_documents` cuts such a buffer into documents without copying them (one linear
scan for the documents' ends; about 40 MB/s of decompressed payloads in CPython).

Pure: no I/O, no AWS calls. Malformed input raises `BadLogFile` (`DecompressedTooLarge`
when `max_bytes` would be exceeded); callers add the message id, bucket and key.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Literal

import msgspec

from .._errors import BadLogFile, DecompressedTooLarge
from .gunzip import GZIP_MAGIC, decompress

__all__ = [
    "CONTROL_MESSAGE",
    "DATA_MESSAGE",
    "LogEvent",
    "SubscriptionDocument",
    "decode_base64_payload",
    "decode_documents",
    "looks_like_subscription",
    "parse_document",
    "split_documents",
]

DATA_MESSAGE = "DATA_MESSAGE"
CONTROL_MESSAGE = "CONTROL_MESSAGE"


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One log event: its CloudWatch Logs id and timestamp (epoch ms) and the record bytes."""

    id: str
    timestamp: int
    record: bytes


@dataclass(frozen=True, slots=True)
class SubscriptionDocument:
    """One decoded subscription payload."""

    message_type: Literal["DATA_MESSAGE", "CONTROL_MESSAGE"]
    owner: str
    log_group: str
    log_stream: str
    subscription_filters: tuple[str, ...]
    log_events: tuple[LogEvent, ...]

    @property
    def is_control(self) -> bool:
        return self.message_type == CONTROL_MESSAGE


class _WireEvent(msgspec.Struct):
    id: str
    timestamp: int
    # Raw: each message is decoded to a string one at a time while building LogEvent,
    # so at most one message exists as a str besides the document and the records.
    message: msgspec.Raw


class _WireDocument(msgspec.Struct, rename="camel"):
    message_type: Literal["DATA_MESSAGE", "CONTROL_MESSAGE"]
    owner: str = ""
    log_group: str = ""
    log_stream: str = ""
    subscription_filters: list[str] = []
    log_events: list[_WireEvent] = []


class _AnyObject(msgspec.Struct):
    """Decoding into this checks a record is one well-formed JSON object (fields skipped)."""


_document_decoder = msgspec.json.Decoder(_WireDocument)
_string_decoder = msgspec.json.Decoder(str)
_object_checker = msgspec.json.Decoder(_AnyObject)


def _record_bytes(event: _WireEvent, index: int, control: bool) -> bytes:
    try:
        text = _string_decoder.decode(event.message)
    except msgspec.ValidationError:
        raise BadLogFile(f"log event {index} ({event.id}): message is not a JSON string") from None
    except msgspec.DecodeError as exc:
        raise BadLogFile(f"log event {index} ({event.id}): message is not valid: {exc}") from None
    # msgspec refuses lone surrogate escapes, so this encode cannot fail.
    record = text.encode("utf-8")
    if control:
        return record  # CloudWatch Logs' own text ("CWL CONTROL MESSAGE: ..."), no record
    try:
        _object_checker.decode(record)
    except (msgspec.DecodeError, RecursionError):
        # A CloudTrail log group holds JSON records only; anything else is not ours to
        # hand over as a record.
        raise BadLogFile(
            f"log event {index} ({event.id}): message is not a JSON object "
            "(not a CloudTrail record)"
        ) from None
    return record


def parse_document(document: bytes | bytearray | memoryview) -> SubscriptionDocument:
    """One subscription payload document (JSON, already decompressed) → typed document."""
    try:
        wire = _document_decoder.decode(document)
    except msgspec.ValidationError as exc:
        raise BadLogFile(f"not a CloudWatch Logs subscription payload: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadLogFile(f"subscription payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadLogFile("subscription payload is JSON nested too deeply") from None
    if wire.message_type == DATA_MESSAGE and not (
        wire.owner and wire.log_group and wire.log_stream
    ):
        raise BadLogFile("DATA_MESSAGE subscription payload lacks owner, logGroup or logStream")
    control = wire.message_type == CONTROL_MESSAGE
    events = tuple(
        LogEvent(e.id, e.timestamp, _record_bytes(e, i, control))
        for i, e in enumerate(wire.log_events)
    )
    return SubscriptionDocument(
        message_type=wire.message_type,
        owner=wire.owner,
        log_group=wire.log_group,
        log_stream=wire.log_stream,
        subscription_filters=tuple(wire.subscription_filters),
        log_events=events,
    )


# A JSON string (unrolled loop: no per-character alternation) or a bracket. Everything
# else (numbers, literals, separators) lies between tokens and needs no attention to
# find where a top-level value ends; msgspec validates each document afterwards.
# A string left open runs to the end of the buffer as one token (`close` unset) rather
# than failing and being retried from each later quote, which would be quadratic.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:(?P<close>")|\\?\Z)|[{}\[\]]', re.DOTALL)
_OPEN = frozenset(b"{[")
_WHITESPACE = b" \t\r\n"


def _json_values(buffer: bytes | bytearray) -> list[memoryview]:
    """Cut top-level JSON objects that follow each other (optionally whitespace-separated)."""
    view = memoryview(buffer)
    documents: list[memoryview] = []
    depth = 0
    start = 0
    end = 0  # end of the last complete document
    for match in _TOKEN.finditer(buffer):
        first = buffer[match.start()]
        if depth == 0:
            if buffer[end : match.start()].strip(_WHITESPACE) or first != 0x7B:  # "{"
                raise BadLogFile(f"expected a JSON object at byte {end}")
            start = match.start()
        if first == 0x22:  # '"'
            if match.group("close") is None:
                raise BadLogFile(f"unterminated JSON string at byte {match.start()}")
        elif first in _OPEN:
            depth += 1
        else:  # a closing bracket (not a string)
            depth -= 1
            if depth == 0:
                end = match.end()
                documents.append(view[start:end])
    if depth or buffer[end:].strip(_WHITESPACE):
        raise BadLogFile(f"truncated or malformed JSON after byte {end}")
    return documents


def split_documents(data: bytes | bytearray, *, max_bytes: int) -> list[memoryview]:
    """Bytes holding several subscription documents → one buffer view per document.

    Takes concatenated gzip members (one document each, as Firehose writes the records
    CloudWatch Logs compressed), an outer gzip around those (Firehose compression on top),
    or plain documents concatenated or newline-delimited. The total decompressed size is
    capped at `max_bytes`; the views share one buffer, no document is copied.
    """
    buffer = decompress(data, max_bytes=max_bytes)
    if buffer.startswith(GZIP_MAGIC):
        # Firehose's own GZIP compression around CloudWatch Logs' gzip members.
        buffer = decompress(buffer, max_bytes=max_bytes)
    if not buffer.strip(_WHITESPACE):
        return []
    return _json_values(buffer)


def decode_documents(data: bytes, *, max_bytes: int) -> list[SubscriptionDocument]:
    """`split_documents` then `parse_document` on each (errors name the document index)."""
    documents = []
    for index, document in enumerate(split_documents(data, max_bytes=max_bytes)):
        try:
            documents.append(parse_document(document))
        except BadLogFile as exc:
            raise BadLogFile(f"document {index}: {exc.message}") from None
    return documents


def decode_base64_payload(
    data: str | bytes, *, max_bytes: int, gzip_only: bool = True
) -> SubscriptionDocument:
    """base64(gzip(document)) as Lambda's `awslogs.data` and Kinesis records carry it.

    With `gzip_only=False` a plain JSON document is taken too (a Firehose stream that
    decompresses CloudWatch Logs records before its transformation function).
    """
    # base64 is 4/3 of the bytes it holds; refuse before decoding an oversized string.
    if len(data) > (max_bytes * 4) // 3 + 4:
        raise DecompressedTooLarge(
            f"base64 payload of {len(data)} characters exceeds max_decompressed_bytes={max_bytes}"
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadLogFile(f"payload is not valid base64: {exc}") from None
    if not raw.startswith(GZIP_MAGIC) and gzip_only:
        raise BadLogFile("payload is not gzip data (CloudWatch Logs always compresses it)")
    return parse_document(decompress(raw, max_bytes=max_bytes))


def looks_like_subscription(document: bytes | bytearray | memoryview) -> bool:
    """Cheap sniff of a decompressed buffer: does it start with a subscription document?

    CloudWatch Logs writes `messageType` as the first key. Only picks the parser; the
    parser itself is strict.
    """
    head = bytes(document[:64]).lstrip(_WHITESPACE)
    return head.startswith(b"{") and head[1:].lstrip(_WHITESPACE).startswith(b'"messageType"')
