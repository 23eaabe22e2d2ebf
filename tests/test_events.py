"""The Event model: lazy, lossless, tolerant of odd values."""

from __future__ import annotations

import datetime as dt
import json

from trailproc._pipeline.decode import split_records
from trailproc._pipeline.events import Delivery, Event
from trailproc._pipeline.keys import FileRef

KEY = (
    "AWSLogs/o-abcdefghij/111122223333/CloudTrail/eu-west-1/2026/11/01/"
    "111122223333_CloudTrail_eu-west-1_20261101T0005Z_abcdefABCDEF1234.json.gz"
)


def make(record: dict[str, object] | bytes, index: int = 0) -> Event:
    raw = record if isinstance(record, bytes) else json.dumps(record).encode()
    return Event(raw, Delivery(FileRef.of("bkt", KEY, etag='"e1"'), "msg-1"), index)


def test_fields_are_snake_case_and_typed() -> None:
    e = make({
        "eventID": "abc", "eventName": "GetObject", "eventSource": "s3.amazonaws.com",
        "eventTime": "2023-07-19T21:33:41Z", "awsRegion": "eu-west-1", "readOnly": True,
        "eventCategory": "Data", "managementEvent": False, "userIdentity": {"type": "Root"},
        "errorCode": "AccessDenied", "recipientAccountId": "111122223333",
    })  # fmt: skip
    assert e.event_id == "abc" and e.event_name == "GetObject"
    assert e.event_source == "s3.amazonaws.com" and e.aws_region == "eu-west-1"
    assert e.event_time == dt.datetime(2023, 7, 19, 21, 33, 41, tzinfo=dt.timezone.utc)
    assert e.read_only is True and e.management_event is False
    assert e.event_category == "Data" and e.error_code == "AccessDenied"
    assert e.user_identity == {"type": "Root"}
    assert e.recipient_account_id == "111122223333"


def test_delivery_information() -> None:
    e = make({"eventID": "x"}, index=7)
    assert e.delivery.bucket == "bkt" and e.delivery.key == KEY
    assert e.delivery.etag == "e1" and e.delivery.message_id == "msg-1"
    assert e.delivery.account_id == "111122223333" and e.delivery.region == "eu-west-1"
    assert e.delivery.org_id == "o-abcdefghij"
    assert e.index == 7


def test_odd_values_never_fail() -> None:
    e = make({"eventID": 12, "eventTime": "yesterday", "readOnly": "true", "eventName": None})
    assert e.event_id is None and e.event_time is None and e.event_time_text == "yesterday"
    assert e.read_only is True and e.event_name is None
    assert e.idempotency_key == f"bkt/{KEY}/e1/0"  # no usable eventID: location-based


def test_event_time_variants() -> None:
    assert make({"eventTime": "2023-07-19T21:33:41.123Z"}).event_time == dt.datetime(
        2023, 7, 19, 21, 33, 41, 123000, tzinfo=dt.timezone.utc
    )
    assert make({"eventTime": "2023-07-19T23:33:41+02:00"}).event_time == dt.datetime(
        2023, 7, 19, 21, 33, 41, tzinfo=dt.timezone.utc
    )


def test_unknown_fields_and_numbers_are_kept() -> None:
    raw = b'{"eventID":"a","futureField":{"n":1,"f":1.0,"big":123456789012345678901234567890}}'
    e = make(raw)
    assert e.raw == raw and e.compact() == raw
    assert e.to_dict()["futureField"] == {"n": 1, "f": 1.0, "big": 123456789012345678901234567890}
    assert isinstance(e["futureField"]["f"], float) and "futureField" in e
    assert e.get("missing", 5) == 5


def test_compact_removes_whitespace_but_keeps_number_text() -> None:
    (raw,) = split_records(b'{"Records": [ {\n  "a": 1.50,\n  "b": "x y"\n} ]}')
    e = Event(raw, Delivery(FileRef.of("b", "k")), 0)
    assert e.raw == b'{\n  "a": 1.50,\n  "b": "x y"\n}'
    assert e.compact() == b'{"a":1.50,"b":"x y"}'


def test_principal_arn_falls_back_to_session_issuer() -> None:
    e = make({"userIdentity": {"sessionContext": {"sessionIssuer": {"arn": "arn:role"}}}})
    assert e.principal_arn == "arn:role"
