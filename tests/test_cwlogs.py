"""CloudWatch Logs subscription payloads: parsing, splitting, and bad input."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest

from trailproc._errors import BadLogFile, DecompressedTooLarge
from trailproc._pipeline.cwlogs import (
    CONTROL_MESSAGE,
    decode_base64_payload,
    decode_documents,
    looks_like_subscription,
    parse_document,
    split_documents,
)

REAL = "DataDog__datadog-serverless-functions/cloudwatch_log_cloudtrail.json"
MAX = 10 * 1024 * 1024

# A record with non-ASCII, an escaped surrogate pair and odd spacing: its bytes must
# come back exactly as written into the log group.
RECORD_A = '{"eventID": "a", "eventName":"CreateUser","userName":"Jürgen \U0001f600"}'
RECORD_B = '{"eventID":"b","n":0.0000882145,"s":"}{ \\" ]["}'


def document(*records: str, owner: str = "111122223333", group: str = "trail-group") -> bytes:
    return json.dumps(
        {
            "messageType": "DATA_MESSAGE",
            "owner": owner,
            "logGroup": group,
            "logStream": f"{owner}_CloudTrail_eu-west-1",
            "subscriptionFilters": ["all"],
            "logEvents": [
                {"id": f"3{i:055d}", "timestamp": 1600361930988 + i, "message": r}
                for i, r in enumerate(records)
            ],
        }
    ).encode()


CONTROL = json.dumps(
    {
        "messageType": "CONTROL_MESSAGE",
        "owner": "CloudwatchLogs",
        "logGroup": "",
        "logStream": "",
        "subscriptionFilters": [],
        "logEvents": [
            {"id": "", "timestamp": 1431113059000,
             "message": "CWL CONTROL MESSAGE: Checking health of destination Firehose."}
        ],
    }
).encode()  # fmt: skip


def test_real_payload_gives_each_message_string_as_record_bytes(corpus: Path) -> None:
    raw = (corpus / REAL).read_bytes()
    expected = json.loads(raw)
    parsed = parse_document(raw)
    assert parsed.message_type == "DATA_MESSAGE" and not parsed.is_control
    assert parsed.owner == "123456789123"
    assert parsed.log_group == "aws-cloudtrail-logs-123456789123-c81b5193"
    assert parsed.log_stream == "123456789123_CloudTrail_us-east-1"
    assert parsed.subscription_filters == ("testFilter",)
    assert len(parsed.log_events) == len(expected["logEvents"]) > 0
    for event, wire in zip(parsed.log_events, expected["logEvents"], strict=True):
        assert event.id == wire["id"]
        assert event.timestamp == wire["timestamp"]
        assert event.record == wire["message"].encode("utf-8")
        assert json.loads(event.record)["eventVersion"]


def test_real_payload_through_base64_gzip_as_lambda_receives_it(corpus: Path) -> None:
    raw = (corpus / REAL).read_bytes()
    data = base64.b64encode(gzip.compress(raw)).decode()
    assert decode_base64_payload(data, max_bytes=MAX) == parse_document(raw)


def test_records_keep_their_exact_bytes_non_ascii_included() -> None:
    parsed = parse_document(document(RECORD_A, RECORD_B))
    assert [e.record for e in parsed.log_events] == [
        RECORD_A.encode("utf-8"),
        RECORD_B.encode("utf-8"),
    ]
    # json.dumps escaped the non-ASCII (ensure_ascii): unescaping still gives UTF-8.
    assert b"\\u" in document(RECORD_A)


def test_plain_base64_document_only_when_gzip_is_optional() -> None:
    data = base64.b64encode(document(RECORD_A))
    with pytest.raises(BadLogFile, match="not gzip"):
        decode_base64_payload(data, max_bytes=MAX)
    parsed = decode_base64_payload(data, max_bytes=MAX, gzip_only=False)
    assert parsed.log_events[0].record == RECORD_A.encode()


def test_control_message_is_recognised() -> None:
    parsed = parse_document(CONTROL)
    assert parsed.is_control and parsed.message_type == CONTROL_MESSAGE


def test_split_concatenated_gzip_members_as_firehose_writes_them() -> None:
    docs = [document(RECORD_A), CONTROL, document(RECORD_B, RECORD_A)]
    data = b"".join(gzip.compress(d) for d in docs)
    assert [bytes(v) for v in split_documents(data, max_bytes=MAX)] == docs
    parsed = decode_documents(data, max_bytes=MAX)
    assert [len(p.log_events) for p in parsed] == [1, 1, 2]


def test_split_outer_gzip_around_members() -> None:
    docs = [document(RECORD_A), document(RECORD_B)]
    inner = b"".join(gzip.compress(d) for d in docs)
    split = split_documents(gzip.compress(inner), max_bytes=MAX)
    assert [bytes(v) for v in split] == docs


@pytest.mark.parametrize("separator", [b"", b"\n", b"\r\n", b" \n\t"])
def test_split_plain_documents_concatenated_or_newline_delimited(separator: bytes) -> None:
    docs = [document(RECORD_B), document(RECORD_A), CONTROL]
    data = separator.join(docs) + separator
    assert [bytes(v) for v in split_documents(data, max_bytes=MAX)] == docs


def test_split_empty_buffer_gives_no_documents() -> None:
    assert split_documents(b"", max_bytes=MAX) == []
    assert split_documents(b"\n\n", max_bytes=MAX) == []


def test_split_returns_views_into_one_buffer() -> None:
    data = document(RECORD_A) + b"\n" + document(RECORD_B)
    views = split_documents(data, max_bytes=MAX)
    assert all(isinstance(v, memoryview) and v.obj is data for v in views)


def test_sniff() -> None:
    assert looks_like_subscription(document(RECORD_A))
    assert looks_like_subscription(b'\n { "messageType":"CONTROL_MESSAGE"}')
    assert not looks_like_subscription(b'{"Records":[]}')
    assert not looks_like_subscription(b"")


def with_event(event: bytes) -> bytes:
    head = b'{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s",'
    return head + b'"logEvents":[' + event + b"]}"


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "not a CloudWatch Logs subscription payload"),
        (b'{"messageType":"OTHER"}', "not a CloudWatch Logs subscription payload"),
        (with_event(b'{"id":"1","timestamp":1,"message":{"a":1}}'), "not a JSON string"),
        (with_event(b'{"id":"1","timestamp":"soon","message":"{}"}'), "not a CloudWatch Logs"),
        (b'{"messageType":"DATA_MESSAGE","logEvents":[]}', "lacks owner"),
        (with_event(b'{"id":"1","timestamp":1,"message":"\xff"}'), "not valid"),
        (with_event(b'{"id":"1","timestamp":1,"message":"\\ud800"}'), "not valid"),
        (b'{"messageType":"DATA_MESSAGE","x":' + b"[" * 100_000, "payload"),
        (with_event(b'{"id":"1","timestamp":1,"message":"START RequestId: 1"}'), "JSON object"),
        (with_event(b'{"id":"1","timestamp":1,"message":"[1,2]"}'), "JSON object"),
        (with_event(b'{"id":"1","timestamp":1,"message":"{\\"a\\":"}'), "JSON object"),
    ],
)
def test_wrong_shapes_are_one_clear_error(payload: bytes, words: str) -> None:
    with pytest.raises(BadLogFile, match=words):
        parse_document(payload)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"%%% not base64 %%%", "not valid base64"),
        (base64.b64encode(b'{"messageType":"DATA_MESSAGE"}'), "not gzip"),
        (base64.b64encode(b"\x1f\x8b\x08\x00garbage"), "corrupt gzip|truncated gzip"),
        (base64.b64encode(gzip.compress(b"{nope", mtime=0)), "not valid JSON"),
    ],
    ids=["not-base64", "not-gzip", "corrupt-gzip", "not-json"],
)
def test_bad_base64_payloads(data: bytes, words: str) -> None:
    with pytest.raises(BadLogFile, match=words):
        decode_base64_payload(data, max_bytes=MAX)


def test_gzip_bomb_in_base64_payload_stops_at_the_cap() -> None:
    bomb = gzip.compress(
        b'{"messageType":"DATA_MESSAGE","owner":"' + b"1" * 5_000_000 + b'"}', mtime=0
    )
    with pytest.raises(DecompressedTooLarge):
        decode_base64_payload(base64.b64encode(bomb), max_bytes=1_000_000)


def test_oversized_base64_string_refused_before_decoding() -> None:
    with pytest.raises(DecompressedTooLarge, match="base64 payload"):
        decode_base64_payload("A" * 2_000_000, max_bytes=1_000_000)


def test_split_caps_total_decompressed_size_over_all_members() -> None:
    member = gzip.compress(document("{" + '"x":"' + "y" * 400_000 + '"}'))
    with pytest.raises(DecompressedTooLarge):
        split_documents(member * 3, max_bytes=1_000_000)
    assert len(split_documents(member * 2, max_bytes=1_000_000)) == 2


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b'{"messageType":"DATA_MESSAGE"', "truncated"),
        (b'{"a":1} garbage {"b":2}', "expected a JSON object"),
        (b'{"a":1}\n[1]', "expected a JSON object"),
        (b'{"a":"unterminated', "unterminated"),
        (b'{"a":1}}', "expected a JSON object"),
        (b'{"a":1} 5', "malformed"),
    ],
)
def test_split_malformed_buffers(data: bytes, words: str) -> None:
    with pytest.raises(BadLogFile, match=words):
        split_documents(data, max_bytes=MAX)


def test_split_many_unterminated_escaped_quotes_stays_linear() -> None:
    # Each `\"` could restart a string token; one open string must be one scan, not n.
    data = b'{"a":"' + b'x\\"' * 200_000
    with pytest.raises(BadLogFile, match="unterminated"):
        split_documents(data, max_bytes=MAX)


def test_decode_documents_names_the_bad_document() -> None:
    data = document(RECORD_A) + b"\n" + b'{"messageType":"DATA_MESSAGE"}'
    with pytest.raises(BadLogFile, match=r"document 1: .*lacks owner"):
        decode_documents(data, max_bytes=MAX)
