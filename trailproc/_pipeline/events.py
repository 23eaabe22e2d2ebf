"""Stage 5: raw record bytes → `Event`, a lossless view decoded only as far as asked.

An `Event` holds the record's original bytes. The common scalar fields (event id, name,
source, time, region, ...) are decoded together on first access by one msgspec call that
skips everything else; nested fields and `to_dict()` decode the whole record once. Nothing
is ever dropped or re-typed: unknown fields stay in `to_dict()` and in `raw`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, is_
from typing import Any

import msgspec

from .keys import FileRef, KeyInfo, StreamOrigin

__all__ = ["Delivery", "Event", "json_lines"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where a batch of events came from: the log file and the message that named it."""

    ref: FileRef
    message_id: str | None = None
    # Set by the pipeline when the decompressed file holds no CR or LF at all (how
    # CloudTrail writes logs): then no record spans lines and `json_lines` skips its scan.
    one_line: bool = field(default=False, repr=False, compare=False)
    # The log file's size in bytes as read (compressed, as stored in S3), like the Java
    # library's `logFileSize`; None when the records did not come from a file.
    size: int | None = field(default=None, compare=False)

    @property
    def bucket(self) -> str:
        return self.ref.bucket

    @property
    def key(self) -> str:
        return self.ref.key

    @property
    def etag(self) -> str | None:
        return self.ref.etag

    @property
    def info(self) -> KeyInfo:
        return self.ref.info

    @property
    def account_id(self) -> str | None:
        return self.ref.info.account_id

    @property
    def region(self) -> str | None:
        return self.ref.info.region

    @property
    def org_id(self) -> str | None:
        return self.ref.info.org_id

    @property
    def origin(self) -> StreamOrigin | None:
        """How records that came without an S3 object travelled (None for log files)."""
        return self.ref.origin

    @property
    def log_group(self) -> str | None:
        """The CloudWatch Logs group the records came through, if they did."""
        return self.ref.origin.log_group if self.ref.origin else None

    @property
    def log_stream(self) -> str | None:
        """The CloudWatch Logs stream the records came through, if they did."""
        return self.ref.origin.log_stream if self.ref.origin else None


class _Header(msgspec.Struct):
    # `Any` on purpose: a sanitised or future record with an odd type in one of these
    # fields must still be handed over, so nothing here can fail validation.
    eventID: Any = None
    eventName: Any = None
    eventSource: Any = None
    eventTime: Any = None
    eventVersion: Any = None
    eventType: Any = None
    eventCategory: Any = None
    awsRegion: Any = None
    sourceIPAddress: Any = None
    userAgent: Any = None
    errorCode: Any = None
    errorMessage: Any = None
    requestID: Any = None
    readOnly: Any = None
    managementEvent: Any = None
    recipientAccountId: Any = None
    sharedEventID: Any = None


_header_decoder = msgspec.json.Decoder(_Header)
_dict_decoder = msgspec.json.Decoder(dict[str, Any])
_EMPTY_HEADER = _Header()


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse_event_time(value: Any) -> dt.datetime | None:
    """`2023-07-19T21:33:41Z` (or with fractions/offset) → aware UTC datetime, else None."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        try:  # Python 3.10's fromisoformat rejects some valid forms; fall back
            parsed = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


class Event(msgspec.Struct, eq=False, repr_omit_defaults=True):
    """One CloudTrail record: original bytes, lazily decoded fields, and its delivery.

    Created as `Event(raw, delivery, index)`: `raw` is the record's JSON (bytes or a
    zero-copy `msgspec.Raw`), `index` its position in its log file (0-based).

    A msgspec Struct rather than a plain class with `__slots__` because one is built per
    record: the Struct's C `__init__` is ~4x cheaper than a Python one (the pipeline makes
    150,000 of them for 150,000 records). `eq=False` keeps identity equality and hashing.
    """

    _raw: bytes | msgspec.Raw
    delivery: Delivery
    index: int
    _head: _Header | None = None
    _dict: dict[str, Any] | None = None

    # -- raw access --------------------------------------------------------------------
    @property
    def raw(self) -> bytes:
        """The record's JSON exactly as it appears in the log file."""
        if not isinstance(self._raw, bytes):
            self._raw = bytes(self._raw)
        return self._raw

    def compact(self) -> bytes:
        """The original JSON on one line (whitespace between tokens removed if any)."""
        raw = self.raw
        if b"\n" in raw or b"\r" in raw:
            return msgspec.json.format(raw, indent=-1)
        return raw

    def to_dict(self) -> dict[str, Any]:
        """The whole record as a dict (decoded once, then cached; do not mutate)."""
        if self._dict is None:
            self._dict = _dict_decoder.decode(self._raw)
        return self._dict

    def get(self, name: str, default: Any = None) -> Any:
        """A top-level field by its CloudTrail name, e.g. `event.get("tlsDetails")`."""
        return self.to_dict().get(name, default)

    def __getitem__(self, name: str) -> Any:
        return self.to_dict()[name]

    def __contains__(self, name: str) -> bool:
        return name in self.to_dict()

    @property
    def _h(self) -> _Header:
        if self._head is None:
            try:
                self._head = _header_decoder.decode(self._raw)
            except msgspec.DecodeError:  # split_records guarantees valid JSON; be safe
                self._head = _EMPTY_HEADER
        return self._head

    # -- documented scalar fields --------------------------------------------------------
    @property
    def event_id(self) -> str | None:
        return _as_str(self._h.eventID)

    @property
    def event_name(self) -> str | None:
        return _as_str(self._h.eventName)

    @property
    def event_source(self) -> str | None:
        return _as_str(self._h.eventSource)

    @property
    def event_time_text(self) -> str | None:
        """`eventTime` as written; see `event_time` for the parsed value."""
        return _as_str(self._h.eventTime)

    @property
    def event_time(self) -> dt.datetime | None:
        """`eventTime` as an aware UTC datetime; None if absent or unparseable."""
        return parse_event_time(self._h.eventTime)

    @property
    def event_version(self) -> str | None:
        return _as_str(self._h.eventVersion)

    @property
    def event_type(self) -> str | None:
        return _as_str(self._h.eventType)

    @property
    def event_category(self) -> str | None:
        return _as_str(self._h.eventCategory)

    @property
    def aws_region(self) -> str | None:
        return _as_str(self._h.awsRegion)

    @property
    def source_ip_address(self) -> str | None:
        return _as_str(self._h.sourceIPAddress)

    @property
    def user_agent(self) -> str | None:
        return _as_str(self._h.userAgent)

    @property
    def error_code(self) -> str | None:
        return _as_str(self._h.errorCode)

    @property
    def error_message(self) -> str | None:
        return _as_str(self._h.errorMessage)

    @property
    def request_id(self) -> str | None:
        return _as_str(self._h.requestID)

    @property
    def read_only(self) -> bool | None:
        return _as_bool(self._h.readOnly)

    @property
    def management_event(self) -> bool | None:
        return _as_bool(self._h.managementEvent)

    @property
    def recipient_account_id(self) -> str | None:
        return _as_str(self._h.recipientAccountId)

    @property
    def shared_event_id(self) -> str | None:
        return _as_str(self._h.sharedEventID)

    # -- nested fields (decode the whole record) ---------------------------------------
    @property
    def user_identity(self) -> dict[str, Any] | None:
        value = self.to_dict().get("userIdentity")
        return value if isinstance(value, dict) else None

    @property
    def request_parameters(self) -> Any:
        return self.to_dict().get("requestParameters")

    @property
    def response_elements(self) -> Any:
        return self.to_dict().get("responseElements")

    @property
    def additional_event_data(self) -> Any:
        return self.to_dict().get("additionalEventData")

    @property
    def resources(self) -> list[Any] | None:
        value = self.to_dict().get("resources")
        return value if isinstance(value, list) else None

    @property
    def tls_details(self) -> Any:
        return self.to_dict().get("tlsDetails")

    @property
    def addendum(self) -> Any:
        return self.to_dict().get("addendum")

    @property
    def insight_details(self) -> Any:
        return self.to_dict().get("insightDetails")

    @property
    def service_event_details(self) -> Any:
        return self.to_dict().get("serviceEventDetails")

    # -- derived --------------------------------------------------------------------------
    @property
    def principal_arn(self) -> str | None:
        """The caller's ARN (`userIdentity.arn`), or the session issuer's, when present."""
        identity = self.user_identity or {}
        arn = identity.get("arn")
        if isinstance(arn, str):
            return arn
        issuer = (identity.get("sessionContext") or {}).get("sessionIssuer") or {}
        value = issuer.get("arn")
        return value if isinstance(value, str) else None

    @property
    def log_event_id(self) -> str | None:
        """The id of the CloudWatch Logs event that carried this record, if one did."""
        origin = self.delivery.ref.origin
        if origin is None or self.index >= len(origin.log_event_ids):
            return None
        return origin.log_event_ids[self.index]

    @property
    def idempotency_key(self) -> str:
        """Stable per record: the eventID where present, else bucket/key/etag/index."""
        event_id = self.event_id
        if event_id:
            return event_id
        d = self.delivery
        return f"{d.bucket}/{d.key}/{d.etag or ''}/{self.index}"

    def __repr__(self) -> str:
        return (
            f"Event({self.event_source}:{self.event_name} id={self.event_id} "
            f"at {self.delivery.key}#{self.index})"
        )


_raw_of = attrgetter("_raw")
_delivery_of = attrgetter("delivery")


def json_lines(events: Sequence[Event]) -> bytes:
    """`b"".join(e.compact() + b"\n" for e in events)`, without a pass per record in Python.

    The common case (every record already on one line, as CloudTrail writes them) is one
    join of the raw views. When the batch comes from one file known to hold no CR/LF
    (`Delivery.one_line`, checked once per file while decoding) nothing else is needed;
    otherwise one scan for `\r` and one `find` per record look for stray line feeds, all
    in C; only a batch holding a multi-line record falls back to compacting record by
    record.
    """
    if not events:
        return b""
    parts: list[Any] = list(map(_raw_of, events))
    parts.append(b"")
    data = b"\n".join(parts)
    delivery = events[0].delivery
    if delivery.one_line and all(map(is_, map(_delivery_of, events), repeat(delivery))):
        return data
    if b"\r" not in data and _newlines_only_between(data, parts):
        return data
    return b"".join([e.compact() + b"\n" for e in events])


def _newlines_only_between(data: bytes, parts: list[Any]) -> bool:
    """True if the only line feeds in `data` (`b"\\n".join(parts)`) are the separators.

    Each part's first line feed must be its separator: one `find` (memchr) per record,
    ~3x cheaper than `data.count(b"\\n")`, whose single-byte loop is far slower.
    """
    find = data.find
    end = -1
    for size in map(len, parts[:-1]):
        start = end + 1
        end = start + size
        if find(b"\n", start) != end:
            return False
    return True
