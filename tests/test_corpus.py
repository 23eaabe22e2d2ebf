"""Every record of the shared real-data corpus parses, keeps its bytes and round-trips."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from corpus_loader import CorpusFile, load_corpus

from trailproc._cli import main
from trailproc._pipeline.decode import split_records
from trailproc._pipeline.events import Delivery, Event
from trailproc._pipeline.keys import FileRef
from trailproc._sandbox import TrailSandbox

TOTAL_RECORDS = 2362  # SOURCES.md: records after unwrapping


@pytest.fixture(scope="module")
def corpus_files(corpus: Path) -> list[CorpusFile]:
    return load_corpus(corpus)


def test_corpus_is_complete(corpus_files: list[CorpusFile]) -> None:
    assert sum(len(f.records) for f in corpus_files) == TOTAL_RECORDS
    for f in corpus_files:
        assert len(f.records) == f.expected, f.path.name


def test_every_record_splits_to_its_original_bytes_and_decodes(
    corpus_files: list[CorpusFile],
) -> None:
    delivery = Delivery(FileRef.of("bucket", "key"), "m-1")
    checked = 0
    for f in corpus_files:
        raws = split_records(f.envelope)
        assert [bytes(r) for r in raws] == f.records, f.path.name
        for index, raw in enumerate(raws):
            original = json.loads(f.records[index])
            event = Event(raw, delivery, index)
            assert event.to_dict() == original
            assert json.loads(event.compact()) == original
            assert b"\n" not in event.compact()
            # Documented fields equal what a plain json.loads sees.
            assert event.event_id == original.get("eventID")
            assert event.event_name == original.get("eventName")
            assert event.event_source == original.get("eventSource")
            assert event.aws_region == original.get("awsRegion")
            assert event.event_time_text == original.get("eventTime")
            assert event.user_identity == original.get("userIdentity")
            assert event.read_only == (
                original["readOnly"] if isinstance(original.get("readOnly"), bool) else None
            )
            assert event.event_time is not None, (f.path.name, original.get("eventTime"))
            assert event.idempotency_key
            checked += 1
    assert checked == TOTAL_RECORDS


def test_numbers_keep_their_types(corpus_files: list[CorpusFile]) -> None:
    """Integers stay int and floats stay float, all the way down."""

    def walk(a: object, b: object) -> None:
        assert type(a) is type(b)
        if isinstance(a, dict):
            assert isinstance(b, dict)
            for k in a:
                walk(a[k], b[k])
        elif isinstance(a, list):
            assert isinstance(b, list)
            for x, y in zip(a, b, strict=True):
                walk(x, y)

    delivery = Delivery(FileRef.of("b", "k"), None)
    for f in corpus_files:
        for index, raw in enumerate(split_records(f.envelope)):
            walk(Event(raw, delivery, index).to_dict(), json.loads(f.records[index]))


def test_process_command_round_trips_whole_corpus(
    corpus_files: list[CorpusFile], tmp_path: Path
) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    expected = []
    for n, f in enumerate(corpus_files):
        (folder / f"{n:03d}.json.gz").write_bytes(gzip.compress(f.envelope))
        expected.extend(json.loads(r) for r in f.records)
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        main, ["process", str(folder), "--output", str(out), "--log-format", "json"]
    )
    assert result.exit_code == 0, result.output
    lines = out.read_bytes().splitlines()
    assert len(lines) == TOTAL_RECORDS
    got = sorted(json.dumps(json.loads(line), sort_keys=True) for line in lines)
    assert got == sorted(json.dumps(r, sort_keys=True) for r in expected)


def test_real_gzip_deliveries_through_s3_and_sqs(
    corpus_files: list[CorpusFile], sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """The delivered .json.gz objects, byte for byte, under their real key layout."""
    name = re.compile(r"^(\d{12})_CloudTrail_([a-z0-9-]+)_(\d{4})(\d{2})(\d{2})T")
    expected: list[bytes] = []
    keys = []
    for f in corpus_files:
        m = name.match(f.path.name)
        if f.shape != "ENVELOPE-GZ" or not m:
            continue
        acct, region, y, mo, d = m.groups()
        key = f"AWSLogs/{acct}/CloudTrail/{region}/{y}/{mo}/{d}/{f.path.name}"
        sandbox.put(key, f.path.read_bytes())
        keys.append(key)
        expected.extend(f.records)
    for i in range(0, len(keys), 5):  # several keys per notification, as CloudTrail does
        sandbox.notify(keys[i : i + 5])
    out = tmp_path / "out.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "trailproc._cli", "run", "--queue-url", sandbox.queue_url,
         "--output", str(out), "--exit-when-idle", "--wait-time", "1",
         "--state-dir", str(tmp_path / "state"), "--log-format", "json"],
        env=sandbox.env(), capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    lines = out.read_bytes().splitlines()
    assert len(lines) == len(expected) > 1900
    assert sorted(json.loads(x)["eventID"] for x in lines) == sorted(
        json.loads(x)["eventID"] for x in expected
    )
    assert sandbox.queue_depth() == 0
