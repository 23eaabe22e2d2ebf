"""The fast paths stay exact: raw slices, lazy fields, compact lines, capped gunzip, jobs.

Record boundaries are found here by an independent, deliberately naive JSON scanner (not
msgspec), so `split_records` is checked against something that shares no code with it.
Every record-bearing file of the shared corpus is used, after turning it into a delivery
envelope per its shape (SOURCES.md).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from trailproc._errors import BadLogFile, DecompressedTooLarge
from trailproc._pipeline import decode, gunzip
from trailproc._pipeline.batches import iter_batches
from trailproc._pipeline.decode import decode_log, decode_log_lines, is_one_line, split_records
from trailproc._pipeline.events import Delivery, Event, json_lines
from trailproc._pipeline.gunzip import decompress
from trailproc._pipeline.keys import FileRef, KeyInfo, ObjectKind

# --- an independent scanner ---------------------------------------------------------------

_WS = b" \t\r\n"


def _skip_ws(doc: bytes, i: int) -> int:
    while doc[i] in _WS:
        i += 1
    return i


def _value_end(doc: bytes, i: int) -> int:
    """Index just past the JSON value starting at `i` (no validation)."""
    first = doc[i]
    if first == 0x22:  # string
        i += 1
        while doc[i] != 0x22:
            i += 2 if doc[i] == 0x5C else 1
        return i + 1
    if first in b"{[":
        depth, i = 0, i
        while True:
            c = doc[i]
            if c == 0x22:
                i = _value_end(doc, i)
                continue
            if c in b"{[":
                depth += 1
            elif c in b"}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
    while i < len(doc) and doc[i] not in b",]} \t\r\n":  # number, true, false, null
        i += 1
    return i


def _elements(doc: bytes, i: int) -> list[tuple[int, int]]:
    """Spans of the elements of the array starting at `i`."""
    assert doc[i] == 0x5B
    spans, i = [], _skip_ws(doc, i + 1)
    while doc[i] != 0x5D:
        end = _value_end(doc, i)
        spans.append((i, end))
        i = _skip_ws(doc, end)
        if doc[i] == 0x2C:
            i = _skip_ws(doc, i + 1)
    return spans


def _member(doc: bytes, i: int, name: bytes) -> int:
    """Start of the value of member `name` in the object starting at `i`."""
    assert doc[i] == 0x7B
    i = _skip_ws(doc, i + 1)
    while doc[i] != 0x7D:
        key_end = _value_end(doc, i)
        key = doc[i + 1 : key_end - 1]
        i = _skip_ws(doc, _skip_ws(doc, key_end) + 1)  # past ':'
        if key == name:
            return i
        i = _skip_ws(doc, _value_end(doc, i))
        if doc[i] == 0x2C:
            i = _skip_ws(doc, i + 1)
    raise KeyError(name)


# --- the corpus as envelopes --------------------------------------------------------------

RECORD_SHAPES = {
    "ENVELOPE", "ENVELOPE-GZ", "ARRAY", "SINGLE", "NDJSON", "LOOKUP-NDJSON",
    "CWL-SUBSCRIPTION", "EVENTBRIDGE-CT", "WRAPPER-SEKOIA", "WRAPPER-STREAMALERT",
}  # fmt: skip


def _wrap(records: list[bytes]) -> bytes:
    # Pretty separators on purpose: the split must drop the whitespace between records.
    return b'{"Records": [\n  ' + b",\n  ".join(records) + b"\n]}\n"


def _documents(path: Path, shape: str) -> list[tuple[bytes, list[bytes]]]:
    """(envelope document, expected raw record bytes) pairs for one corpus file."""
    data = path.read_bytes()
    if shape == "ENVELOPE-GZ":
        data = gzip.decompress(data)
    if shape in ("ENVELOPE", "ENVELOPE-GZ"):
        spans = _elements(data, _member(data, _skip_ws(data, 0), b"Records"))
        return [(data, [data[s:e] for s, e in spans])]
    if shape == "ARRAY":
        document = b'{"Records":' + data + b"}"
        spans = _elements(document, _skip_ws(document, len(b'{"Records":')))
        return [(document, [document[s:e] for s, e in spans])]
    if shape == "WRAPPER-STREAMALERT":
        out = []
        for s, _e in _elements(data, _skip_ws(data, 0)):
            start = _member(data, s, b"data")
            envelope = data[start : _value_end(data, start)]
            spans = _elements(envelope, _member(envelope, 0, b"Records"))
            out.append((envelope, [envelope[a:b] for a, b in spans]))
        return out
    lines = [line for line in data.splitlines() if line.strip()]
    if shape == "SINGLE":
        records = [data.strip()]
    elif shape == "NDJSON":
        records = [line.strip() for line in lines]
    elif shape == "LOOKUP-NDJSON":
        records = [json.loads(line)["CloudTrailEvent"].strip().encode() for line in lines]
    elif shape == "CWL-SUBSCRIPTION":
        records = [e["message"].strip().encode() for e in json.loads(data)["logEvents"]]
    elif shape == "EVENTBRIDGE-CT":
        start = _member(data, _skip_ws(data, 0), b"detail")
        records = [data[start : _value_end(data, start)]]
    elif shape == "WRAPPER-SEKOIA":
        records = [json.loads(data)["input"]["message"].strip().encode()]
    else:  # pragma: no cover
        raise ValueError(shape)
    return [(_wrap(records), records)]


def _corpus_cases(corpus: Path) -> list[tuple[str, bytes, list[bytes]]]:
    cases = []
    for line in (corpus.parent / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| real/") or len(cells) < 8 or cells[5] not in RECORD_SHAPES:
            continue
        for document, records in _documents(corpus.parent / cells[0], cells[5]):
            cases.append((cells[0], document, records))
    return cases


@pytest.fixture(scope="module")
def cases(request: pytest.FixtureRequest) -> list[tuple[str, bytes, list[bytes]]]:
    corpus: Path = request.getfixturevalue("corpus")
    found = _corpus_cases(corpus)
    assert found, "no record-bearing files found in the corpus"
    return found


_DELIVERY = Delivery(FileRef("bucket", "key.json.gz", etag="e", info=KeyInfo(ObjectKind.LOG)))

_SCALARS = {
    "event_id": "eventID",
    "event_name": "eventName",
    "event_source": "eventSource",
    "event_time_text": "eventTime",
    "event_version": "eventVersion",
    "event_type": "eventType",
    "event_category": "eventCategory",
    "aws_region": "awsRegion",
    "source_ip_address": "sourceIPAddress",
    "user_agent": "userAgent",
    "error_code": "errorCode",
    "error_message": "errorMessage",
    "request_id": "requestID",
    "recipient_account_id": "recipientAccountId",
    "shared_event_id": "sharedEventID",
}
_NESTED = {
    "request_parameters": "requestParameters",
    "response_elements": "responseElements",
    "additional_event_data": "additionalEventData",
    "tls_details": "tlsDetails",
    "addendum": "addendum",
    "insight_details": "insightDetails",
    "service_event_details": "serviceEventDetails",
}


def _eager_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _eager_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    for form in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):
        try:
            return dt.datetime.strptime(value, form).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    return "other"  # type: ignore[return-value]  # a form these two don't cover


# --- corpus-wide equivalence ----------------------------------------------------------------


def test_corpus_covers_every_record(cases: list[tuple[str, bytes, list[bytes]]]) -> None:
    assert sum(len(records) for _, _, records in cases) >= 2300


def test_split_records_are_the_original_bytes(
    cases: list[tuple[str, bytes, list[bytes]]],
) -> None:
    for name, document, expected in cases:
        got = [bytes(r) for r in split_records(document)]
        assert got == expected, name
        # The same through gzip (one member) and the capped decoder.
        records, size = decode_log(gzip.compress(document), max_bytes=len(document))
        assert size == len(document)
        assert [bytes(r) for r in records] == expected, name


def test_lazy_fields_equal_eager_decoding(cases: list[tuple[str, bytes, list[bytes]]]) -> None:
    checked = 0
    for name, document, _expected in cases:
        for index, raw in enumerate(split_records(document)):
            eager = json.loads(bytes(raw))
            where = f"{name}#{index}"
            event = Event(raw, _DELIVERY, index)
            for attr, field in _SCALARS.items():
                value = eager.get(field)
                assert getattr(event, attr) == (value if isinstance(value, str) else None), where
            assert event.read_only == _eager_bool(eager.get("readOnly")), where
            assert event.management_event == _eager_bool(eager.get("managementEvent")), where
            parsed = _eager_time(eager.get("eventTime"))
            if parsed != "other":
                assert event.event_time == parsed, where
            # A fresh event, so the nested fields do not reuse the header's decode.
            full = Event(raw, _DELIVERY, index)
            assert full.to_dict() == eager, where
            for attr, field in _NESTED.items():
                assert getattr(full, attr) == eager.get(field), where
            identity = eager.get("userIdentity")
            assert full.user_identity == (identity if isinstance(identity, dict) else None)
            resources = eager.get("resources")
            assert full.resources == (resources if isinstance(resources, list) else None)
            assert full.idempotency_key == (
                eager["eventID"] if isinstance(eager.get("eventID"), str) and eager["eventID"]
                else f"bucket/key.json.gz/e/{index}"
            )  # fmt: skip
            checked += 1
    assert checked >= 2300


def test_compact_is_one_line_of_the_same_json(
    cases: list[tuple[str, bytes, list[bytes]]],
) -> None:
    multi_line = 0
    for name, document, _expected in cases:
        events = [Event(r, _DELIVERY, i) for i, r in enumerate(split_records(document))]
        for event in events:
            line = event.compact()
            assert b"\n" not in line and b"\r" not in line, name
            assert json.loads(line) == json.loads(event.raw), name
            if b"\n" in event.raw or b"\r" in event.raw:
                multi_line += 1
                # Only whitespace between tokens is gone: same as a compact json.dumps.
                assert json.loads(line) == json.loads(
                    json.dumps(json.loads(event.raw), separators=(",", ":"))
                )
            else:
                assert line == event.raw, name
        assert json_lines(events) == b"".join(e.compact() + b"\n" for e in events), name
    assert multi_line > 0, "the corpus has pretty-printed records; they must be covered"


def test_compact_equals_compact_json_dumps_for_plain_records() -> None:
    record = {"eventID": "x", "n": 1, "f": 0.5, "s": "caf\u00e9 \u2603", "a": [1, {"b": None}]}
    raw = json.dumps(record, indent=2, ensure_ascii=False).encode()
    event = Event(raw, _DELIVERY, 0)
    expected = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    assert event.compact() == expected
    assert json_lines([event, Event(expected, _DELIVERY, 1)]) == expected + b"\n" + expected + b"\n"
    assert json_lines([]) == b""


def test_json_lines_with_a_carriage_return_only() -> None:
    raw = b'{"a":\r1}'
    assert json_lines([Event(raw, _DELIVERY, 0)]) == b'{"a":1}\n'


@pytest.mark.parametrize("where", [0, 1, 2, 4])
@pytest.mark.parametrize(
    "odd",
    [b'{"a":\n1}', b'{\n"a":1}', b'{"a":1\n}', b'{"a":\n\n1}', b'{"a":[1,\n2]}'],
)
def test_json_lines_finds_a_line_feed_in_any_record(odd: bytes, where: int) -> None:
    """The per-record line-feed check catches a multi-line record at any position,
    including the first and the last, and right next to a separator."""
    plain = [b'{"b":%d}' % i for i in range(5)]
    raws: list[Any] = list(plain)
    raws[where] = odd
    # As the pipeline hands them over: zero-copy Raw views, and plain bytes.
    document = b'{"Records":[' + b",".join(raws) + b"]}"
    for records in (split_records(document), raws):
        events = [Event(r, _DELIVERY, i) for i, r in enumerate(records)]
        expected = b"".join(msgspec.json.format(bytes(r), indent=-1) + b"\n" for r in raws)
        assert json_lines(events) == expected
        assert json_lines(events).count(b"\n") == len(events)


def test_json_lines_of_one_line_records_is_one_join() -> None:
    raws = [b'{"eventID":"%d","s":"a\\nb"}' % i for i in range(300)]  # escaped \n only
    events = [Event(r, _DELIVERY, i) for i, r in enumerate(raws)]
    assert json_lines(events) == b"\n".join(raws) + b"\n"
    assert json_lines(events[:1]) == raws[0] + b"\n"


@pytest.mark.parametrize(
    ("document", "flat"),
    [
        (b'{"Records":[{"a":1},{"b":"x\\ny"}]}', True),  # an escaped \n is not a line feed
        (b'{"Records":[{"a":1},\n{"b":2}]}', False),  # between records: still not flat
        (b'{"Records":[{"a":\n1}]}', False),
        (b'{"Records":[{"a":\r1}]}', False),
    ],
)
def test_one_line_flag_is_exact(document: bytes, flat: bool) -> None:
    assert is_one_line(document) is flat
    records, size, got = decode_log_lines(gzip.compress(document), max_bytes=len(document))
    assert (got, size) == (flat, len(document))
    assert [bytes(r) for r in records] == [bytes(r) for r in split_records(document)]


def test_json_lines_trusts_one_line_only_for_a_whole_batch_of_its_delivery() -> None:
    """`Delivery.one_line` skips the scan only when every event of the batch shares that
    delivery; a batch mixing in an event from elsewhere is scanned as before."""
    flat = Delivery(_DELIVERY.ref, "m", one_line=True)
    plain = [b'{"b":%d}' % i for i in range(4)]
    events = [Event(r, flat, i) for i, r in enumerate(plain)]
    assert json_lines(events) == b"\n".join(plain) + b"\n"
    odd = Event(b'{"a":\n1}', _DELIVERY, 9)  # another delivery, not known flat
    for where in (0, 2, 4):
        mixed = [*events[:where], odd, *events[where:]]
        expected = b"".join(e.compact() + b"\n" for e in mixed)
        assert json_lines(mixed) == expected
        assert expected.count(b"\n") == len(mixed)
    assert flat == Delivery(_DELIVERY.ref, "m")  # the flag takes no part in equality


def test_pipeline_marks_flat_files_and_keeps_multi_line_ones_exact(tmp_path: Path) -> None:
    """End to end through `process_paths`: a CloudTrail-style file (no CR/LF) and a
    pretty-printed one both come out as one compact line per record."""
    from trailproc._app import process_paths

    records = [{"eventID": str(i), "n": i, "s": "a\nb"} for i in range(250)]
    flat = json.dumps({"Records": records}).encode()
    (tmp_path / "flat.json.gz").write_bytes(gzip.compress(flat))
    pretty = json.dumps({"Records": records[:7]}, indent=2).encode()
    (tmp_path / "pretty.json.gz").write_bytes(gzip.compress(pretty))
    out = tmp_path / "out.jsonl"
    result = process_paths([tmp_path], output=str(out), checkpoint="memory")
    assert (result.files_ok, result.files_failed) == (2, 0)
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""
    got = Counter(json.dumps(json.loads(line), sort_keys=True) for line in lines[:-1])
    want = Counter(json.dumps(r, sort_keys=True) for r in records + records[:7])
    assert got == want


def test_event_is_a_cheap_struct_with_identity_semantics() -> None:
    """Event is a msgspec Struct for speed; it must still behave like a plain object."""
    raw = b'{"eventID":"e","eventName":"N"}'
    a, b = Event(raw, _DELIVERY, 3), Event(raw, _DELIVERY, 3)
    assert a == a and a != b  # identity, not field equality (eq=False)
    assert len({a, b}) == 2  # hashable by identity
    assert (a.delivery, a.index, a.raw) == (_DELIVERY, 3, raw)
    assert a.event_name == "N" and a.to_dict() is a.to_dict()
    assert "Event(" in repr(a) and "#3" in repr(a)
    view = split_records(b'{"Records":[' + raw + b"]}")[0]
    c = Event(view, _DELIVERY, 0)
    assert c.raw == raw and isinstance(c.raw, bytes) and c.to_dict() == json.loads(raw)


def test_fast_batches_keep_positions_and_delivery() -> None:
    records = [b'{"i":%d}' % i for i in range(250)]
    batches = list(iter_batches(records, _DELIVERY, start=30, size=100))
    assert [(len(b), nxt, dropped) for b, nxt, dropped in batches] == [
        (100, 130, 0),
        (100, 230, 0),
        (20, 250, 0),
    ]
    events = [e for b, _, _ in batches for e in b]
    assert [e.index for e in events] == list(range(30, 250))
    assert all(e.delivery is _DELIVERY and e.raw == records[e.index] for e in events)
    assert list(iter_batches(records, _DELIVERY, start=250, size=100)) == []


# --- decompression ---------------------------------------------------------------------------

BODY = b'{"Records":[' + b",".join(b'{"eventID":"%d"}' % i for i in range(200)) + b"]}"


@pytest.fixture(params=["default", "zlib"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run decompression tests with the installed backend and with plain zlib."""
    if request.param == "zlib":
        import zlib

        monkeypatch.setattr(gunzip, "_new_decompressor", lambda: zlib.decompressobj(31))
        monkeypatch.setattr(gunzip, "_ERRORS", (zlib.error,))
    return str(request.param)


def test_multi_member_gzip(backend: str) -> None:
    first, second = BODY[:1000], BODY[1000:]
    data = gzip.compress(first) + gzip.compress(second, compresslevel=1)
    assert decompress(data, max_bytes=len(BODY)) == BODY
    # Zero padding after the last member (some writers pad) is ignored.
    assert decompress(data + b"\0" * 16, max_bytes=len(BODY)) == BODY
    # Many tiny members.
    many = b"".join(gzip.compress(BODY[i : i + 7]) for i in range(0, len(BODY), 7))
    assert decompress(many, max_bytes=len(BODY)) == BODY
    records, size = decode_log(data, max_bytes=len(BODY))
    assert size == len(BODY) and len(records) == 200


def test_cap_boundaries(backend: str) -> None:
    data = gzip.compress(BODY)
    assert decompress(data, max_bytes=len(BODY)) == BODY
    with pytest.raises(DecompressedTooLarge):
        decompress(data, max_bytes=len(BODY) - 1)
    # Across members: each fits, the sum does not.
    two = gzip.compress(BODY) + gzip.compress(BODY)
    assert decompress(two, max_bytes=2 * len(BODY)) == BODY + BODY
    with pytest.raises(DecompressedTooLarge):
        decompress(two, max_bytes=2 * len(BODY) - 1)
    # Plain JSON is capped too.
    assert decompress(BODY, max_bytes=len(BODY)) is BODY
    with pytest.raises(DecompressedTooLarge):
        decompress(BODY, max_bytes=len(BODY) - 1)


def test_bomb_stops_at_the_cap(backend: str) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB from ~64 KiB
    with pytest.raises(DecompressedTooLarge):
        decompress(bomb, max_bytes=1 << 20)


def test_truncated_and_corrupt_gzip_are_bad_log_files(backend: str) -> None:
    data = gzip.compress(BODY)
    with pytest.raises(BadLogFile):
        decompress(data[: len(data) // 2], max_bytes=1 << 20)
    corrupt = data[:12] + bytes(b ^ 0x5A for b in data[12:40]) + data[40:]
    with pytest.raises(BadLogFile):
        decompress(corrupt, max_bytes=1 << 20)
    # A second member that is cut short.
    with pytest.raises(BadLogFile):
        decompress(data + data[:20], max_bytes=1 << 20)


@pytest.mark.parametrize(
    "document",
    [
        b'{"Records":[{"a":1},2]}',
        b'{"Records":[{"a":1},"x"]}',
        b'{"Records":[[]]}',
        b'{"Records":{"a":1}}',
        b'{"records":[]}',
        b'{"Records":[{"a":1}',
        b"[]",
        b"",
    ],
)
def test_split_rejects_what_is_not_a_log_file(document: bytes) -> None:
    with pytest.raises(BadLogFile):
        split_records(document)


def test_split_empty_and_whitespace() -> None:
    assert split_records(b'{"Records":[]}') == []
    got = split_records(b' \n{ "Records" : [ \n {"a" : 1} ,\t{"b":[2]}\n ] , "x": 1}\n')
    assert [bytes(r) for r in got] == [b'{"a" : 1}', b'{"b":[2]}']


# --- batches -----------------------------------------------------------------------------


@pytest.mark.parametrize("start", [0, 1, 99, 100, 250, 251])
def test_fast_and_filtered_batches_agree(start: int) -> None:
    records = [msgspec.Raw(b'{"eventID":"%d"}' % i) for i in range(251)]

    def everything(_event: Event) -> bool:
        return True

    fast = list(iter_batches(records, _DELIVERY, start=start, size=100))
    slow = list(iter_batches(records, _DELIVERY, start=start, size=100, keep=everything))
    shape = [([e.index for e in batch], pos, dropped) for batch, pos, dropped in fast]
    assert shape == [([e.index for e in batch], pos, d) for batch, pos, d in slow]
    assert [e.event_id for batch, _, _ in fast for e in batch] == [
        str(i) for i in range(start, 251)
    ]


def test_default_filter_takes_the_fast_path() -> None:
    from trailproc._pipeline.processor import EventProcessor

    records = [msgspec.Raw(b"{}")] * 5
    batches = list(
        iter_batches(records, _DELIVERY, start=0, size=2, keep=EventProcessor().filter_event)
    )
    assert [(len(b), pos, d) for b, pos, d in batches] == [(2, 2, 0), (2, 4, 0), (1, 5, 0)]


# --- several processes -------------------------------------------------------------------------


def _write_logs(folder: Path, files: int, per_file: int) -> list[str]:
    ids = []
    for f in range(files):
        records = []
        for i in range(per_file):
            event_id = f"{f:03d}-{i:05d}"
            ids.append(event_id)
            # Long-ish records so each batch write is well over a pipe's 4 KiB atomic size.
            records.append({"eventID": event_id, "eventName": "GetObject", "pad": "x" * 400})
        (folder / f"log-{f:03d}.json.gz").write_bytes(
            gzip.compress(json.dumps({"Records": records}).encode())
        )
    return ids


def test_process_parallel_hands_every_record_over_exactly_once(tmp_path: Path) -> None:
    from trailproc._config import load_config
    from trailproc._parallel import process_parallel

    logs = tmp_path / "logs"
    logs.mkdir()
    ids = _write_logs(logs, files=7, per_file=1500)
    out = tmp_path / "out.jsonl"
    config = load_config(output=str(out), checkpoint="memory", log_level="warning")
    result = process_parallel([logs], config, jobs=2)
    assert result.records == len(ids) and result.files_ok == 7 and result.files_failed == 0
    assert len({job["pid"] for job in result.jobs}) == 2  # really two processes
    lines = out.read_bytes().splitlines()
    # Every line is a whole record (appends of whole batches never interleave) ...
    seen = Counter(json.loads(line)["eventID"] for line in lines)
    # ... and every record is there exactly once.
    assert seen == Counter(ids)


_RECORDER = """
import os

import trailproc

MARK = "fresh"  # a forked child sees what the parent set; a spawned one imports anew


class Recorder(trailproc.EventProcessor):
    def start(self):
        with open(os.environ["RECORDER_FILE"], "a") as f:
            f.write(f"{os.getpid()} {MARK}\\n")

    def process(self, events):
        pass
"""


def _stop_tqdm_monitor() -> None:
    """tqdm starts a monitor thread with its first bar, and it outlives the bar."""
    import tqdm

    monitor = getattr(tqdm.tqdm, "monitor", None)
    if monitor is not None:
        monitor.exit()
        tqdm.tqdm.monitor = None


@pytest.mark.parametrize("situation", ["alone", "thread running", "spawn asked for"])
def test_jobs_children_are_forked_only_when_that_is_safe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, situation: str
) -> None:
    """`process --jobs` forks its children (ready at once, imports inherited) only from
    a process running nothing else; with another thread alive, or when asked, they are
    spawned (a fresh interpreter that imports everything itself)."""
    import importlib
    import threading

    from trailproc._config import load_config
    from trailproc._parallel import process_parallel

    logs = tmp_path / "logs"
    logs.mkdir()
    _write_logs(logs, files=4, per_file=10)
    (tmp_path / "forkmark.py").write_text(_RECORDER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # for a spawned child
    monkeypatch.setenv("RECORDER_FILE", str(tmp_path / "started.txt"))
    module = importlib.import_module("forkmark")
    monkeypatch.setattr(module, "MARK", "parent")
    config = load_config(checkpoint="memory", log_level="warning", handlers=["forkmark:Recorder"])
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, daemon=True)
    if situation == "thread running":
        other.start()
    else:
        _stop_tqdm_monitor()  # a progress bar of an earlier test in this process started it
    assert situation != "alone" or threading.active_count() == 1, threading.enumerate()
    try:
        result = process_parallel(
            [logs], config, jobs=2, start_method="spawn" if situation == "spawn asked for" else None
        )
    finally:
        stop.set()
    assert result.files_ok == 4 and result.records == 40
    marks = dict(line.split() for line in (tmp_path / "started.txt").read_text().splitlines())
    import os

    child = {pid: mark for pid, mark in marks.items() if int(pid) != os.getpid()}
    assert len(child) == 1, marks
    assert list(child.values()) == ["parent" if situation == "alone" else "fresh"]


def test_parallel_refuses_shared_stdout(tmp_path: Path) -> None:
    from trailproc._config import load_config
    from trailproc._parallel import process_parallel, run_workers

    logs = tmp_path / "logs"
    logs.mkdir()
    _write_logs(logs, files=2, per_file=1)
    config = load_config(output="-", checkpoint="memory")
    with pytest.raises(ValueError, match="stdout"):
        process_parallel([logs], config, jobs=2)
    with pytest.raises(ValueError, match="memory"):
        run_workers(config.replace(output=None), 2)


@pytest.mark.parametrize(
    ("char", "offset"), [("\u20ac", -2), ("\u20ac", -1), ("\U0001f600", -3), ("\U0001f600", -1)]
)
def test_utf8_check_passes_characters_across_its_chunks(char: str, offset: int) -> None:
    """The UTF-8 check reads non-ASCII documents in 1 MiB chunks: a multi-byte character
    cut by a chunk boundary is still valid, and the records come out unchanged."""
    head = b'{"Records":[{"p": "'
    pad = "x" * (decode._UTF8_CHUNK + offset - len(head))
    records = [
        json.dumps({"p": pad + char}, ensure_ascii=False).encode(),
        json.dumps({"userName": "j\u00fcrgen"}, ensure_ascii=False).encode(),
    ]
    document = b'{"Records":[' + b",".join(records) + b"]}"
    start = decode._UTF8_CHUNK + offset  # where the character's bytes begin
    assert document[start:].startswith(char.encode()) and not document.isascii()
    assert [bytes(r) for r in split_records(document)] == records
