"""File shapes besides CloudTrail's own delivery, recognised by content (never by name).

CloudTrail writes `{"Records": [...]}`; `decode` reads that on its fast path. Records are
also kept and passed around in other shapes, all read here:

- a bare JSON array of records;
- a single record object;
- NDJSON: one JSON value per line (blank lines and a missing final newline are fine);
- EventBridge events whose detail type ends in "via CloudTrail" ("AWS API Call via
  CloudTrail", ...): the record is `detail`; one event, an array of them, or NDJSON;
- LookupEvents items (what `aws cloudtrail lookup-events` prints, `{"Events": [...]}`,
  or its items one per line): the record is the JSON text of `CloudTrailEvent`;
- CloudWatch Logs subscription documents as Firehose writes them to S3 (concatenated
  gzip members, or the documents one after another or one per line): the records are
  the `logEvents[].message` strings, parsed by `cwlogs`;
- arrays and NDJSON lines may also be `{"Records": [...]}` documents.

Records are handed over as found: `msgspec.Raw` slices of the document (an NDJSON line
without its line break and the blanks around it), except LookupEvents and CloudWatch Logs
records, which are the text of their JSON string (the record as CloudTrail wrote it).

A file that holds no CloudTrail record fails with one error saying what it is instead:
S3, SQS or SNS event records, other EventBridge events, a digest file, or JSON of an
unknown shape (naming the keys seen).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import msgspec

from .._errors import BadLogFile

__all__ = ["Split", "duplicate_keys", "json_error", "split_other"]

Split = tuple[str, list[Any], bool]  # (shape name, records, records are document slices)

_ABSENT = msgspec.Raw(b"")


class _Probe(msgspec.Struct):
    """The keys that tell the shapes apart. Containers stay `Raw` (never built); the
    scalars are `Any` so that no value can fail validation."""

    Records: msgspec.Raw = _ABSENT
    detail: msgspec.Raw = _ABSENT
    detail_type: Any = msgspec.field(default=None, name="detail-type")
    source: Any = None
    CloudTrailEvent: Any = None
    Events: msgspec.Raw = _ABSENT
    eventVersion: Any = None
    eventTime: Any = None
    eventSource: Any = None
    eventName: Any = None
    eventType: Any = None
    eventID: Any = None
    EventSource: Any = None
    messageType: Any = None
    logEvents: msgspec.Raw = _ABSENT
    digestStartTime: Any = None
    digestPublicKeyFingerprint: Any = None
    Type: Any = None
    Event: Any = None


class _EventSource(msgspec.Struct):
    eventSource: Any = None
    EventSource: Any = None


_probe_decoder = msgspec.json.Decoder(_Probe)
_source_decoder = msgspec.json.Decoder(_EventSource)
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
_raw_decoder = msgspec.json.Decoder(msgspec.Raw)
_keys_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])

_NOTIFICATION_SOURCES = {
    "aws:s3": "S3 event notification records",
    "aws:sqs": "SQS messages (a Lambda SQS event)",
    "aws:sns": "SNS messages (a Lambda SNS event)",
    "aws:kinesis": "Kinesis records (a Lambda Kinesis event)",
}
_DIGEST_HINT = "check it with `trailproc validate`"
_BLANK = re.compile(rb"[ \t\r\n]*")
_EMPTY_LIST = re.compile(rb"\[[ \t\r\n]*\]")
_LONE_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
_KIND_NAMES = {
    "record": "records",
    "eventbridge": "EventBridge CloudTrail events",
    "lookup": "LookupEvents items",
    "delivery": '{"Records": [...]} documents',
    "cwlogs": "CloudWatch Logs subscription documents",
}


def notification_kind(record: Any) -> str | None:
    """What a `Records` item is when it is an S3/SQS/SNS/Kinesis event record, else None."""
    try:
        probe = _source_decoder.decode(record)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    for value in (probe.eventSource, probe.EventSource):
        if isinstance(value, str) and value.startswith("aws:"):
            return _NOTIFICATION_SOURCES.get(value, f"{value!r} event records")
    return None


def refuse_notification_records(records: list[Any]) -> None:
    """Fail a `Records` list of S3/SQS/SNS event records: they name files (or carry
    messages), they are not CloudTrail records. The first and last are checked: such
    files hold nothing else, and a CloudTrail `eventSource` never starts with `aws:`."""
    for record in (records[:1] + records[-1:]) if records else ():
        kind = notification_kind(record)
        if kind:
            raise BadLogFile(
                f"this file holds {kind}, not CloudTrail records: point trailproc at the "
                "log files they name (or at the queue that receives them)"
            )


class _Duplicated:
    __slots__ = ("keys",)

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _Duplicated | None:
    keys = [key for key, _ in pairs]
    if len(set(keys)) == len(keys):
        return None  # nested objects are dropped as soon as they are read
    return _Duplicated(sorted({key for key in keys if keys.count(key) > 1}))


def duplicate_keys(document: Any) -> list[str]:
    """Keys repeated in the top-level object of `document` (valid JSON, valid UTF-8).

    Parsers disagree on which of two equal keys counts (msgspec and Python keep the
    last, others the first), so a repeated key would let two tools see different
    records. Python's parser keeps only a marker per object, so memory stays small.
    """
    try:
        result = json.loads(bytes(document), object_pairs_hook=_pairs_hook)
    except RecursionError:
        raise BadLogFile("JSON nested too deeply to be CloudTrail's") from None
    return result.keys if isinstance(result, _Duplicated) else []


def refuse_duplicate_keys(document: Any, what: str = "the file") -> None:
    keys = duplicate_keys(document)
    if keys:
        raise BadLogFile(
            f"{what} repeats the key(s) {', '.join(map(repr, keys[:5]))} in its top-level "
            "object: parsers disagree on which one counts, so it is refused rather than "
            "read with records silently dropped"
        )


def json_error(exc: msgspec.DecodeError, document: Any) -> BadLogFile:
    """An accurate message for a document msgspec could not read."""
    text = str(exc)
    if "truncated" in text or "surrogate" in text or "escape" in text:
        found = _LONE_SURROGATE.search(bytes(document))
        if found:
            return BadLogFile(
                f"JSON holds a lone UTF-16 surrogate escape ({found.group(1).decode()} at "
                f"byte {found.start(1)}): it encodes no character, so the record cannot be "
                "read as text; the file is refused"
            )
        if "truncated" in text:
            return BadLogFile("JSON ends before its last value does (truncated file?)")
    return BadLogFile(f"not valid JSON: {text}")


def _json_type(raw: Any) -> str:
    first = bytes(memoryview(raw)[:1])
    return {b"[": "a JSON array", b'"': "a JSON string", b"{": "a JSON object"}.get(
        first, "a JSON number, boolean or null"
    )


def _unknown(raw: Any, where: str) -> BadLogFile:
    try:
        keys = list(_keys_decoder.decode(raw))
    except (msgspec.ValidationError, msgspec.DecodeError):
        keys = []
    shown = ", ".join(repr(key[:40]) for key in keys[:8]) + (", ..." if len(keys) > 8 else "")
    return BadLogFile(
        f"not a CloudTrail log file: {where} is JSON of an unknown shape (keys: "
        f'{shown or "none"}), not CloudTrail records, a {{"Records": [...]}} delivery, '
        'EventBridge "via CloudTrail" events or LookupEvents items'
    )


def _objects(raws: list[Any], where: str) -> list[Any]:
    for index, raw in enumerate(raws):
        if bytes(memoryview(raw)[:1]) != b"{":
            raise BadLogFile(f"{where}: record {index} is {_json_type(raw)}, not a JSON object")
    return raws


def _lookup_record(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise BadLogFile(f"{where}: CloudTrailEvent is not a JSON string")
    record = text.encode("utf-8", "surrogatepass")
    try:
        raw = _raw_decoder.decode(record)
    except msgspec.DecodeError as exc:
        raise BadLogFile(f"{where}: CloudTrailEvent is not JSON: {exc}") from None
    if bytes(memoryview(raw)[:1]) != b"{":
        raise BadLogFile(f"{where}: CloudTrailEvent is not a JSON object")
    return bytes(raw)


def _refuse_non_records(probe: _Probe, where: str) -> None:
    if probe.digestStartTime is not None or probe.digestPublicKeyFingerprint is not None:
        raise BadLogFile(f"{where} is a CloudTrail digest file, not a log file: {_DIGEST_HINT}")
    kind = notification_kind_of(probe)
    if kind:
        raise BadLogFile(f"{where} is one of the {kind}, not a CloudTrail record")
    if probe.Event == "s3:TestEvent":
        raise BadLogFile(f"{where} is an s3:TestEvent message, not a CloudTrail record")
    if probe.Type == "Notification":
        raise BadLogFile(f"{where} is an SNS notification, not a CloudTrail record")


def notification_kind_of(probe: _Probe) -> str | None:
    for value in (probe.eventSource, probe.EventSource):
        if isinstance(value, str) and value.startswith("aws:"):
            return _NOTIFICATION_SOURCES.get(value, f"{value!r} event records")
    return None


def _eventbridge(raw: Any, probe: _Probe, where: str) -> list[Any]:
    detail_type = probe.detail_type
    if not (isinstance(detail_type, str) and detail_type.endswith("via CloudTrail")):
        raise BadLogFile(
            f"{where} is an EventBridge {str(detail_type)[:60]!r} event from "
            f"{str(probe.source)[:40]!r}: only 'via CloudTrail' events carry a record"
        )
    refuse_duplicate_keys(raw, where)
    return _objects([probe.detail], where)


def _records_of_value(raw: Any, where: str) -> tuple[str, list[Any]]:
    """One JSON value of a file → (kind of item, its records)."""
    try:
        probe = _probe_decoder.decode(raw)
    except msgspec.ValidationError:
        raise BadLogFile(f"{where} is {_json_type(raw)}, not a CloudTrail record") from None
    _refuse_non_records(probe, where)
    if probe.messageType is not None:
        return "cwlogs", _subscription_records([raw], where)
    if len(probe.Records):
        refuse_duplicate_keys(raw, where)
        try:
            records = _raw_list_decoder.decode(probe.Records)
        except msgspec.ValidationError:
            raise BadLogFile(f"{where}: Records is not a JSON array") from None
        refuse_notification_records(records)
        return "delivery", _objects(records, where)
    if len(probe.detail) or probe.detail_type is not None:
        return "eventbridge", _eventbridge(raw, probe, where)
    if probe.CloudTrailEvent is not None:
        refuse_duplicate_keys(raw, where)
        return "lookup", [_lookup_record(probe.CloudTrailEvent, where)]
    if len(probe.Events) and not _EMPTY_LIST.fullmatch(bytes(probe.Events)):
        # An empty list shows nothing to recognise the shape by: unknown.
        refuse_duplicate_keys(raw, where)
        return "lookup", _lookup_items(probe.Events, where)
    head = (probe.eventVersion, probe.eventTime, probe.eventName, probe.eventType, probe.eventID)
    if any(value is not None for value in head):
        return "record", [raw]
    raise _unknown(raw, where)


def _subscription_records(documents: list[Any], where: str) -> list[bytes]:
    """The records of CloudWatch Logs subscription documents (as Firehose writes them to
    S3): each DATA_MESSAGE log event's message; CONTROL_MESSAGE documents hold none."""
    from .cwlogs import parse_document  # imports this package's decode: not at load time

    records: list[bytes] = []
    for index, document in enumerate(documents):
        try:
            parsed = parse_document(document)
        except BadLogFile as exc:
            raise BadLogFile(f"{where}, document {index}: {exc.message}") from None
        if parsed.is_control:  # CloudWatch Logs checking the destination: no records
            continue
        # cwlogs refuses messages that are not JSON objects (not a trail's log group).
        records.extend(event.record for event in parsed.log_events)
    return records


def _firehose(document: bytes | bytearray) -> Split | None:
    """Concatenated or newline-delimited subscription documents (Firehose to S3), when
    the file starts with one; else None."""
    from .cwlogs import looks_like_subscription, split_documents

    if not looks_like_subscription(document):
        return None
    documents = split_documents(document, max_bytes=len(document))
    records = _subscription_records(documents, "the file")
    return f"CloudWatch Logs subscription documents ({len(documents)})", records, False


def _lookup_items(events: Any, where: str) -> list[Any]:
    try:
        items = _raw_list_decoder.decode(events)
    except msgspec.ValidationError:
        raise BadLogFile(f"{where}: Events is not a JSON array") from None
    records = []
    for index, item in enumerate(items):
        try:
            probe = _probe_decoder.decode(item)
        except msgspec.ValidationError:
            raise BadLogFile(f"{where}: Events item {index} is not a JSON object") from None
        records.append(_lookup_record(probe.CloudTrailEvent, f"{where}, Events item {index}"))
    return records


def _shape_name(container: str, kinds: list[str]) -> str:
    if not kinds:
        return f"{container} (empty)"
    names = ", ".join(_KIND_NAMES[kind] for kind in dict.fromkeys(kinds))
    return f"{container} of {names}"


def _collect(values: list[tuple[Any, str]], container: str) -> Split:
    kinds: list[str] = []
    records: list[Any] = []
    for raw, where in values:
        kind, found = _records_of_value(raw, where)
        kinds.append(kind)
        records.extend(found)
    slices = "lookup" not in kinds and "cwlogs" not in kinds
    return _shape_name(container, kinds), records, slices


def _single(document: Any) -> Split:
    kind, records = _records_of_value(document, "the file")
    names = {
        "record": "single record",
        "eventbridge": "EventBridge CloudTrail event",
        "lookup": "LookupEvents item(s)",
        "delivery": 'CloudTrail delivery ({"Records": [...]})',
        "cwlogs": "CloudWatch Logs subscription document",
    }
    return names[kind], records, kind not in ("lookup", "cwlogs")


def _line_ends(document: bytes | bytearray) -> list[tuple[int, int, int]]:
    """(line number, start, end) of each non-blank line."""
    found = []
    size = len(document)
    start, number = 0, 0
    while start < size:
        number += 1
        end = document.find(b"\n", start)
        end = size if end < 0 else end
        blank = _BLANK.match(document, start, end)
        if blank is None or blank.end() != end:
            found.append((number, start, end))
        start = end + 1
    return found


def _lines(document: bytes | bytearray) -> list[tuple[Any, str]]:
    """The non-blank lines of NDJSON, each read as one JSON value."""
    view = memoryview(document)
    values = []
    for number, start, end in _line_ends(document):
        try:
            values.append((_raw_decoder.decode(view[start:end]), f"line {number}"))
        except msgspec.DecodeError as exc:
            raise BadLogFile(f"NDJSON line {number}: {json_error(exc, view[start:end])}") from None
    return values


def split_other(document: bytes | bytearray, check_utf8: Callable[[Any], None]) -> Split:
    """Every shape but the plain delivery: (shape name, records, records are slices)."""
    start = _BLANK.match(document)
    first = document[start.end() : start.end() + 1] if start else b""
    if not first:
        raise BadLogFile("the file is empty")
    if first not in b"{[":
        head = document[start.end() if start else 0 :][:16]
        raise BadLogFile(f"not valid JSON: the file starts with {head!r}")
    check_utf8(document)
    firehose = _firehose(document)
    if firehose is not None:
        return firehose
    try:
        whole = _raw_decoder.decode(document)
    except msgspec.DecodeError as exc:
        if b"\n" not in document or not _first_line_is_json(document):
            raise json_error(exc, document) from None
        return _collect(_lines(document), "NDJSON")
    if first == b"[":
        try:
            items = _raw_list_decoder.decode(whole)
        except msgspec.DecodeError as exc:  # pragma: no cover - read once already
            raise json_error(exc, document) from None
        if not items:
            raise BadLogFile("not a CloudTrail log file: an empty JSON array shows no shape")
        return _collect([(item, f"array item {i}") for i, item in enumerate(items)],
                        "JSON array")  # fmt: skip
    return _single(whole)


def _first_line_is_json(document: bytes | bytearray) -> bool:
    """True if the first non-blank line is one JSON value (then the file is NDJSON)."""
    start = 0
    while start < len(document):
        end = document.find(b"\n", start)
        end = len(document) if end < 0 else end
        blank = _BLANK.match(document, start, end)
        if blank is None or blank.end() != end:
            try:
                _raw_decoder.decode(memoryview(document)[start:end])
            except msgspec.DecodeError:
                return False
            return True
        start = end + 1
    return False
