"""Every file shape, read by content wherever a file is read; unknown shapes fail clearly.

Each shape has a small synthetic file written here, so these tests need no corpus; the
corpus test at the end runs `trailproc process` on the whole real corpus folder.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from corpus_loader import load_corpus
from helpers import run_in_process

import trailproc
from trailproc._cli import main
from trailproc._errors import BadLogFile
from trailproc._pipeline import decode, shapes
from trailproc._pipeline.decode import DELIVERY_SHAPE, decode_log_lines, split_document
from trailproc._pipeline.gunzip import decompress
from trailproc._sandbox import TrailSandbox, log_key, make_records

RECORDS = make_records(4, seed=21)
COMPACT = [json.dumps(r, separators=(",", ":")).encode() for r in RECORDS]


def _eventbridge(record: bytes, detail_type: str = "AWS API Call via CloudTrail") -> bytes:
    head = json.dumps({"version": "0", "id": "e-1", "detail-type": detail_type,
                       "source": "aws.iam", "account": "123456789012"})[:-1]  # fmt: skip
    return head.encode() + b', "detail": ' + record + b"}"


def _lookup_item(record: bytes) -> dict[str, Any]:
    return {"EventId": "x", "EventName": "E", "CloudTrailEvent": record.decode()}


# name → (file bytes, expected records as exact bytes, shape name in the logs)
SHAPES: dict[str, tuple[bytes, list[bytes], str]] = {
    "delivery-gzip": (
        gzip.compress(b'{"Records":[' + b",".join(COMPACT) + b"]}"), COMPACT, DELIVERY_SHAPE,
    ),
    "delivery-pretty": (
        b'{\n  "Records": [\n    ' + b",\n    ".join(COMPACT) + b"\n  ]\n}\n",
        COMPACT, DELIVERY_SHAPE,
    ),
    "array": (b"[\n" + b",\n".join(COMPACT) + b"\n]", COMPACT, "JSON array of records"),
    "single-pretty-crlf": (
        json.dumps(RECORDS[0], indent=2).replace("\n", "\r\n").encode(),
        [json.dumps(RECORDS[0], indent=2).replace("\n", "\r\n").encode()],
        "single record",
    ),
    "ndjson-blank-lines-no-final-newline": (
        b"\n" + COMPACT[0] + b"\r\n\n  \n" + b"\n".join(COMPACT[1:]),
        COMPACT, "NDJSON of records",
    ),
    "eventbridge-one": (_eventbridge(COMPACT[0]), COMPACT[:1], "EventBridge CloudTrail event"),
    "eventbridge-array": (
        b"[" + b",".join(_eventbridge(c) for c in COMPACT) + b"]",
        COMPACT, "JSON array of EventBridge CloudTrail events",
    ),
    "eventbridge-ndjson": (
        b"\n".join(_eventbridge(c) for c in COMPACT) + b"\n",
        COMPACT, "NDJSON of EventBridge CloudTrail events",
    ),
    "lookup-events-output": (
        json.dumps({"Events": [_lookup_item(c) for c in COMPACT]}, indent=4).encode(),
        COMPACT, "LookupEvents item(s)",
    ),
    "lookup-events-ndjson": (
        b"\n".join(json.dumps(_lookup_item(c)).encode() for c in COMPACT),
        COMPACT, "NDJSON of LookupEvents items",
    ),
    # The console's event-history download (Download events > JSON) is a pretty-printed
    # {"Records": [...]} document.
    "console-download": (
        json.dumps({"Records": RECORDS}, indent=4).encode(),
        [json.dumps(r, indent=4).replace("\n", "\n        ").encode() for r in RECORDS],
        DELIVERY_SHAPE,
    ),
    "bom-ndjson": (b"\xef\xbb\xbf" + b"\n".join(COMPACT), COMPACT, "NDJSON of records"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_shape_hands_over_its_records_unchanged(name: str) -> None:
    data, expected, shape = SHAPES[name]
    document = decompress(data, max_bytes=1 << 20)
    got_shape, records, _ = split_document(document)
    assert got_shape == shape
    assert [bytes(r) for r in records] == expected
    assert all(json.loads(r) in RECORDS for r in expected)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_process_reads_each_shape_by_content(name: str, tmp_path: Path) -> None:
    """Whatever the file is called: `process` on a folder hands over every record of
    every shape once, with `event.raw` the exact bytes."""
    data, expected, _ = SHAPES[name]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "events.log").write_bytes(data)
    seen: list[bytes] = []
    result = trailproc.process_paths([folder], _Collect(seen), config=trailproc.load_config(env={}))
    assert result.files_failed == 0 and result.failed_files == []
    assert seen == expected


class _Collect(trailproc.EventProcessor):
    def __init__(self, into: list[bytes]) -> None:
        self.into = into

    def process(self, events: list[trailproc.Event]) -> None:
        self.into.extend(e.raw for e in events)


def test_ndjson_lines_with_line_breaks_are_compacted_in_output(tmp_path: Path) -> None:
    """LookupEvents records are text of their own: a record holding a line break must not
    split an --output line."""
    record = b'{"eventID": "a",\n "eventName": "X", "eventTime": "2026-01-01T00:00:00Z"}'
    path = tmp_path / "lookup.json"
    path.write_bytes(json.dumps({"Events": [_lookup_item(record)]}).encode())
    records, _, one_line = decode_log_lines(path.read_bytes(), max_bytes=1 << 20)
    assert [bytes(r) for r in records] == [record] and one_line is False
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, ["process", str(path), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().count(b"\n") == 1 and json.loads(out.read_bytes())["eventID"] == "a"


# --- CloudWatch Logs documents as Firehose writes them to S3 -----------------------------


def _subscription(records: list[bytes], *, control: bool = False) -> bytes:
    document: dict[str, Any] = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": "aws-cloudtrail-logs",
        "logStream": "123456789012_CloudTrail_us-east-1",
        "subscriptionFilters": ["f"],
        "logEvents": [
            {"id": str(i), "timestamp": 1, "message": r.decode()} for i, r in enumerate(records)
        ],
    }
    if control:
        control_event = {"id": "", "timestamp": 1, "message": "CWL CONTROL MESSAGE"}
        document.update(messageType="CONTROL_MESSAGE", owner="CloudwatchLogs", logGroup="",
                        logStream="", subscriptionFilters=[],
                        logEvents=[control_event])  # fmt: skip
    return json.dumps(document).encode()


NON_ASCII = (
    b'{"eventID":"n","eventName":"PutObject","eventTime":"2026-01-01T00:00:00Z",'
    b'"k":"caf\xc3\xa9 \xe2\x9c\x93"}'
)
FIREHOSE = {
    "gzip-members": b"".join(
        gzip.compress(d) for d in (_subscription(COMPACT[:2]), _subscription([], control=True),
                                   _subscription([*COMPACT[2:], NON_ASCII]))
    ),
    "gzip-members-in-gzip": gzip.compress(
        b"".join(gzip.compress(_subscription(c)) for c in (COMPACT[:1], [*COMPACT[1:], NON_ASCII]))
    ),
    "ndjson": b"\n".join((_subscription(COMPACT[:3]), _subscription([*COMPACT[3:], NON_ASCII])))
    + b"\n",
    "concatenated": _subscription(COMPACT) + _subscription([NON_ASCII]),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FIREHOSE))
def test_firehose_objects_are_read_by_content(name: str, tmp_path: Path) -> None:
    """Each log event's message is one record, with its exact bytes (the string's text);
    control messages hold none."""
    records, _, one_line = decode_log_lines(FIREHOSE[name], max_bytes=1 << 20)
    assert [bytes(r) for r in records] == [*COMPACT, NON_ASCII] and one_line is False
    path = tmp_path / "firehose-object"
    path.write_bytes(FIREHOSE[name])
    seen: list[bytes] = []
    result = trailproc.process_paths([path], _Collect(seen), config=trailproc.load_config(env={}))
    assert result.files_failed == 0 and seen == [*COMPACT, NON_ASCII]


def test_firehose_object_in_the_daemon(sandbox: TrailSandbox, tmp_path: Path) -> None:
    key = log_key(unique="firehoseobje")
    sandbox.put(key, FIREHOSE["gzip-members"])
    sandbox.notify([key])
    seen: list[bytes] = []
    run = run_in_process(sandbox, tmp_path, _Collect(seen))
    assert run.files_failed == 0 and seen == [*COMPACT, NON_ASCII]
    assert sandbox.queue_depth() == 0


def test_firehose_object_of_other_logs_fails_clearly() -> None:
    data = gzip.compress(_subscription([b"2026-01-01 GET /index.html 200"]))
    with pytest.raises(BadLogFile, match="not a JSON object \\(not a CloudTrail record\\)"):
        decode_log_lines(data, max_bytes=1 << 20)


# --- files that are not CloudTrail records: one clear error naming what they are ---------

S3_RECORD = {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
             "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}  # fmt: skip
NOT_RECORDS = {
    "s3-notification": (json.dumps({"Records": [S3_RECORD]}), "S3 event notification records"),
    "s3-notification-gz": (json.dumps({"Records": [S3_RECORD] * 3}), "S3 event notification"),
    "lambda-sqs-event": (
        json.dumps({"Records": [{"messageId": "1", "body": "{}", "eventSource": "aws:sqs"}]}),
        "SQS messages",
    ),
    "lambda-sns-event": (
        json.dumps({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "{}"}}]}),
        "SNS messages",
    ),
    "digest": (
        json.dumps(
            {"awsAccountId": "1", "digestStartTime": "2026-01-01T00:00:00Z", "logFiles": []}
        ),
        "trailproc validate",
    ),
    "eventbridge-s3": (
        json.dumps({"detail-type": "Object Created", "source": "aws.s3", "detail": {}}),
        "only 'via CloudTrail' events carry a record",
    ),
    "s3-test-event": (
        json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}),
        "s3:TestEvent",
    ),
    "unknown-object": (
        json.dumps({"input": {"message": "x"}, "expected": {}}),
        "unknown shape (keys: 'input', 'expected')",
    ),
    "array-of-numbers": ("[1, 2]", "array item 0 is a JSON number"),
    "empty": ("  \n", "the file is empty"),
    "html": ("<html></html>", "not valid JSON: the file starts with b'<html>"),
    "ndjson-bad-line": ('{"eventID": "a"}\n{"eventID": \n', "NDJSON line 2"),
}


@pytest.mark.parametrize("name", sorted(NOT_RECORDS))
def test_what_is_not_cloudtrail_fails_naming_what_it_is(name: str) -> None:
    text, message = NOT_RECORDS[name]
    data = text.encode()
    if name.endswith("-gz"):
        data = gzip.compress(data)
    with pytest.raises(BadLogFile, match=None) as caught:
        decode_log_lines(data, max_bytes=1 << 20)
    assert message in str(caught.value)


def test_notification_records_fail_in_the_daemon_too(sandbox: TrailSandbox, tmp_path: Path) -> None:
    """The shared decode refuses S3 event records in a trail-bucket file (they would be
    handed over as CloudTrail events); the message is kept."""
    key = log_key(unique="s3notificati")
    sandbox.put(key, gzip.compress(json.dumps({"Records": [S3_RECORD]}).encode()))
    sandbox.notify([key])
    seen: list[Any] = []
    run = run_in_process(sandbox, tmp_path, _Collect(seen))
    assert seen == [] and run.files_failed == 1
    assert sandbox.queue_depth() == 1  # kept for retry / DLQ


def test_shapes_in_the_daemon(sandbox: TrailSandbox, tmp_path: Path) -> None:
    """A file in the trail bucket of another shape (NDJSON of EventBridge events) is read
    by content by the SQS daemon as by `process`."""
    data, expected, _ = SHAPES["eventbridge-ndjson"]
    key = log_key(unique="eventbridgen")
    sandbox.put(key, gzip.compress(data))
    sandbox.notify([key])
    seen: list[bytes] = []
    run = run_in_process(sandbox, tmp_path, _Collect(seen))
    assert run.files_failed == 0 and seen == expected
    assert sandbox.queue_depth() == 0


# --- lenient, never silent -------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        b'{"Records":[' + COMPACT[0] + b'],"Records":[' + COMPACT[1] + b"]}",
        b'{"Records": [' + COMPACT[0] + b'],\n "Records": []}',
        b'{"Records":[],"Records":[' + COMPACT[1] + b"]}",
    ],
    ids=["compact", "pretty", "first-empty"],
)
def test_a_repeated_records_key_fails_the_file(document: bytes) -> None:
    with pytest.raises(BadLogFile, match="repeats the key\\(s\\) 'Records'"):
        split_document(document)


def test_a_repeated_key_in_an_eventbridge_event_fails() -> None:
    event = _eventbridge(COMPACT[0])[:-1] + b', "detail": ' + COMPACT[1] + b"}"
    with pytest.raises(BadLogFile, match="repeats the key\\(s\\) 'detail'"):
        split_document(event)


def test_compact_delivery_is_not_parsed_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """CloudTrail's own compact layout leaves no room for another key: the second parse
    that looks for repeated keys is skipped (the fast path stays fast)."""
    calls: list[Any] = []
    monkeypatch.setattr(shapes, "duplicate_keys", lambda d: calls.append(d) or [])
    split_document(b'{"Records":[' + b",".join(COMPACT) + b"]}")
    split_document(b'{"Records":[]}')
    assert calls == []
    split_document(b'{"Records":[' + b",".join(COMPACT) + b'],"x":1}')
    assert len(calls) == 1


def test_trailing_garbage_after_gzip_fails_but_zero_padding_is_fine() -> None:
    good = gzip.compress(b'{"Records":[' + COMPACT[0] + b"]}")
    assert len(decode.decode_log(good + b"\0" * 100, max_bytes=1 << 20)[0]) == 1
    with pytest.raises(BadLogFile, match="5 bytes of trailing data after the last gzip member"):
        decompress(good + b"junk!", max_bytes=1 << 20)
    with pytest.raises(BadLogFile, match="trailing data"):
        decompress(good + b"\0\0x", max_bytes=1 << 20)


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\udc00", b"\\uD83D x"])
def test_lone_surrogate_gets_an_accurate_message(escape: bytes) -> None:
    document = b'{"Records":[{"eventID":"a","userAgent":"x' + escape + b'"}]}'
    with pytest.raises(BadLogFile) as caught:
        split_document(document)
    message = str(caught.value)
    assert "lone UTF-16 surrogate escape" in message and "truncated" not in message
    # A valid pair is a character: accepted.
    pair = b'{"Records":[{"eventID":"a","userAgent":"\\ud83d\\ude00"}]}'
    assert len(split_document(pair)[1]) == 1


def test_a_truly_truncated_file_says_so() -> None:
    with pytest.raises(BadLogFile, match="truncated"):
        split_document(b'{"Records":[' + COMPACT[0][:-10])


# --- the real corpus: every record exactly once, unchanged -----------------------------

SUPPORTED = {"ENVELOPE", "ENVELOPE-GZ", "ARRAY", "SINGLE", "NDJSON", "LOOKUP-NDJSON",
             "EVENTBRIDGE-CT", "CWL-SUBSCRIPTION"}  # fmt: skip


def test_process_on_the_whole_corpus_folder(corpus: Path, tmp_path: Path) -> None:
    """Every record of every supported shape is handed over exactly once with its exact
    bytes; every other file fails, named in the summary with what it is."""
    expected = {f.path.as_posix(): f for f in load_corpus(corpus)}
    by_file: dict[str, list[bytes]] = {}

    class ByFile(trailproc.EventProcessor):
        def process(self, events: list[trailproc.Event]) -> None:
            for e in events:
                by_file.setdefault(e.delivery.key, []).append(e.raw)

    result = trailproc.process_paths([corpus], ByFile(), config=trailproc.load_config(env={}))
    failed = {o.ref.key: o.error.message for o in result.failed_files if o.error}
    for path, f in expected.items():
        if f.shape in SUPPORTED:
            assert by_file.get(path) == f.records, path
        else:
            assert path in failed, (path, f.shape)
    assert set(by_file) <= set(expected)
    handed = sum(len(v) for v in by_file.values())
    assert (
        handed
        == result.records
        == sum(len(f.records) for f in expected.values() if f.shape in SUPPORTED)
    )
    for path, message in failed.items():
        assert path not in by_file
        assert message  # one clear reason per file
    # The summary names every failed file.
    summary = CliRunner().invoke(main, ["process", str(corpus), "--output", str(tmp_path / "o")])
    assert summary.exit_code == 1
    for path in failed:
        assert f"failed:  {path}:" in summary.stderr
