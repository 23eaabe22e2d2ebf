"""Quarantine one record, not the file: the daemon on moto's server with a handler that
raises on chosen records, a folder or S3-prefix quarantine, `quarantine list|replay`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner

import trailproc
from trailproc._app import RunResult, run_async
from trailproc._cli import main
from trailproc._config import load_config
from trailproc._observe import Metrics
from trailproc._pipeline.quarantine import QuarantinedRecord
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records


def compact(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


class RaisesOn(trailproc.EventProcessor):
    """Raises `error` for a batch holding a chosen eventID, before acting on any of it
    (so a record handed over twice could only come from trailproc)."""

    def __init__(self, bad_ids: set[str], error: type[Exception] = ValueError) -> None:
        self.bad_ids = bad_ids
        self.error = error
        self.seen: list[bytes] = []

    def process(self, events: list[trailproc.Event]) -> None:
        for event in events:
            if event.event_id in self.bad_ids:
                raise self.error(f"cannot take {event.event_id}")
        self.seen.extend(event.raw for event in events)


def deliver(sandbox: TrailSandbox, count: int = 40) -> tuple[list[dict[str, Any]], str]:
    records = make_records(count, seed=7)
    key = log_key(unique="poison00abcdefgh")
    sandbox.put(key, encode_log(records))
    sandbox.notify([key])
    return records, key


def run_once(
    sandbox: TrailSandbox, tmp_path: Path, processor: Any, **overrides: Any
) -> tuple[RunResult, list[dict[str, Any]]]:
    settings: dict[str, Any] = {
        "queue_url": sandbox.queue_url,
        "exit_when_idle": True,
        "wait_time_seconds": 0,
        "visibility_timeout": 5,
        "stats_interval": 0,
        "state_dir": str(tmp_path / "state"),
        "max_events_per_emit": 7,
        **overrides,
    }
    config = load_config(env={}, **settings)
    with structlog.testing.capture_logs() as logs:
        result = asyncio.run(run_async(config, processor, metrics=Metrics()))
    return result, [dict(line) for line in logs]


def entries_in(folder: Path) -> list[QuarantinedRecord]:
    return [QuarantinedRecord.from_json(p.read_bytes()) for p in sorted(folder.glob("*.json"))]


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_one_bad_record_is_quarantined_the_rest_handed_over_once_and_replayed(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    records, key = deliver(sandbox)
    bad = records[17]
    handler = RaisesOn({bad["eventID"]})
    folder = tmp_path / "quarantine"
    result, logs = run_once(sandbox, tmp_path, handler, quarantine=str(folder))

    # Every other record exactly once; the file completed and its message was deleted.
    expected = [compact(r) for r in records if r is not bad]
    assert sorted(handler.seen) == sorted(expected)
    assert len(handler.seen) == len(set(handler.seen))
    assert result.files_failed == 0
    assert sandbox.queue_depth() == 0
    # The one record, with its exact bytes, error and delivery info.
    [entry] = entries_in(folder)
    assert entry.raw == compact(bad)
    assert (entry.bucket, entry.key, entry.index) == (sandbox.bucket, key, 17)
    assert entry.event_id == bad["eventID"] and entry.message_id
    assert entry.error_type == "ValueError" and bad["eventID"] in entry.error_message
    assert "Traceback" in entry.traceback and "RaisesOn" not in entry.error_type
    metric = result.metrics.value("trailproc_records_quarantined_total", reason="ValueError")
    assert metric == 1
    [line] = [e for e in logs if e.get("event") == "record quarantined"]
    assert line["log_level"] == "error"
    assert (line["bucket"], line["key"], line["index"]) == (sandbox.bucket, key, 17)
    assert line["message_id"] == entry.message_id

    listed = cli("quarantine", "list", "--json", "--quarantine", str(folder))
    assert listed.exit_code == 0, listed.output
    [row] = [json.loads(text) for text in listed.stdout.splitlines()]
    assert (row["key"], row["index"], row["event_id"]) == (key, 17, bad["eventID"])

    # A replay through a handler that now takes it hands it over and empties the quarantine.
    out = tmp_path / "replayed.jsonl"
    replayed = cli("quarantine", "replay", "--quarantine", str(folder), "--output", str(out))
    assert replayed.exit_code == 0, replayed.output
    assert out.read_bytes().splitlines() == [compact(bad)]
    assert entries_in(folder) == []


def test_a_replay_through_a_still_broken_handler_keeps_the_record(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    records, _key = deliver(sandbox, count=10)
    folder = tmp_path / "quarantine"
    run_once(sandbox, tmp_path, RaisesOn({records[3]["eventID"]}), quarantine=str(folder))
    assert len(entries_in(folder)) == 1
    replayed = cli("quarantine", "replay", "--quarantine", str(folder),
                   "--handler", "quarantine_handlers:AlwaysFails")  # fmt: skip
    assert replayed.exit_code == 1
    assert [e.raw for e in entries_in(folder)] == [compact(records[3])]


def test_without_quarantine_a_handler_error_keeps_the_message(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    records, _key = deliver(sandbox)
    handler = RaisesOn({records[17]["eventID"]})
    result, _logs = run_once(sandbox, tmp_path, handler)
    assert result.files_failed == 1
    assert sandbox.queue_depth() == 1
    assert result.metrics.value("trailproc_records_quarantined_total", reason="ValueError") == 0
    assert not (tmp_path / "quarantine").exists()


def test_more_bad_records_than_the_cap_fail_the_file(sandbox: TrailSandbox, tmp_path: Path) -> None:
    records, _key = deliver(sandbox)
    handler = RaisesOn({r["eventID"] for r in records[:4]})
    folder = tmp_path / "quarantine"
    result, logs = run_once(sandbox, tmp_path, handler, quarantine=str(folder),
                            quarantine_max_records_per_file=3,
                            max_events_per_emit=100)  # fmt: skip
    assert result.files_failed == 1
    assert sandbox.queue_depth() == 1
    assert entries_in(folder) == []
    assert any("quarantine_max_records_per_file" in str(e.get("event")) for e in logs)


def test_the_cap_counts_records_quarantined_by_earlier_batches(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    records, key = deliver(sandbox)
    # Batches of 7 ([0-6], [7-13], [14-20], [21-27]): one bad record in each of the first
    # four; the cap is met by the third batch and exceeded by the fourth.
    bad = (2, 10, 20, 21)
    handler = RaisesOn({records[i]["eventID"] for i in bad})
    folder = tmp_path / "quarantine"
    result, _logs = run_once(sandbox, tmp_path, handler, quarantine=str(folder),
                             quarantine_max_records_per_file=3)  # fmt: skip
    assert result.files_failed == 1
    assert sandbox.queue_depth() == 1
    # The first three batches settled (their bad records quarantined, their progress
    # committed); the fourth failed the file.
    assert sorted(e.index for e in entries_in(folder)) == [2, 10, 20]
    assert sorted(handler.seen) == sorted(compact(records[i]) for i in range(21) if i not in bad)
    # A second message naming the file: it resumes at the fourth batch and still counts
    # the three already quarantined, so the cap holds across attempts.
    sandbox.notify([key])
    again, _logs = run_once(sandbox, tmp_path, handler, quarantine=str(folder),
                            quarantine_max_records_per_file=3)  # fmt: skip
    assert again.files_failed == 1
    assert sandbox.queue_depth() == 2
    assert sorted(e.index for e in entries_in(folder)) == [2, 10, 20]
    assert len(handler.seen) == 21 - 3


def test_a_transient_error_is_not_quarantined(sandbox: TrailSandbox, tmp_path: Path) -> None:
    records, _key = deliver(sandbox)
    handler = RaisesOn({records[17]["eventID"]}, error=ConnectionResetError)
    folder = tmp_path / "quarantine"
    result, _logs = run_once(sandbox, tmp_path, handler, quarantine=str(folder))
    assert result.files_failed == 1
    assert sandbox.queue_depth() == 1
    assert entries_in(folder) == []


def test_an_s3_prefix_quarantine(sandbox: TrailSandbox, tmp_path: Path) -> None:
    s3 = sandbox.client("s3")
    s3.create_bucket(Bucket="quarantine-bucket")
    records, key = deliver(sandbox)
    bad = records[30]
    handler = RaisesOn({bad["eventID"]})
    where = "s3://quarantine-bucket/held/records/"
    result, _logs = run_once(sandbox, tmp_path, handler, quarantine=where)
    assert result.files_failed == 0
    assert sandbox.queue_depth() == 0
    assert len(handler.seen) == len(records) - 1
    [obj] = s3.list_objects_v2(Bucket="quarantine-bucket", Prefix="held/records/")["Contents"]
    entry = QuarantinedRecord.from_json(
        s3.get_object(Bucket="quarantine-bucket", Key=obj["Key"])["Body"].read()
    )
    assert (entry.raw, entry.key, entry.index) == (compact(bad), key, 30)

    out = tmp_path / "replayed.jsonl"
    replayed = cli("quarantine", "replay", "--quarantine", where, "--output", str(out))
    assert replayed.exit_code == 0, replayed.output
    assert out.read_bytes().splitlines() == [compact(bad)]
    assert "Contents" not in s3.list_objects_v2(Bucket="quarantine-bucket", Prefix="held/")


def test_a_quarantine_that_cannot_be_written_fails_the_file(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    records, _key = deliver(sandbox)
    handler = RaisesOn({records[17]["eventID"]})
    result, _logs = run_once(sandbox, tmp_path, handler,
                            quarantine="s3://no-such-quarantine-bucket/q/")  # fmt: skip
    assert result.files_failed == 1
    assert sandbox.queue_depth() == 1
    assert result.metrics.value("trailproc_errors_total", reason="quarantine_failed") == 1


def test_local_files_are_quarantined_too(tmp_path: Path) -> None:
    records = make_records(12, seed=2)
    log_file = tmp_path / "log.json.gz"
    log_file.write_bytes(encode_log(records))
    handler = RaisesOn({records[5]["eventID"]})
    folder = tmp_path / "quarantine"
    config = load_config(env={}, quarantine=str(folder), max_events_per_emit=4,
                         state_dir=str(tmp_path / "state"))  # fmt: skip
    result = trailproc.process_paths([str(log_file)], config=config, processor=handler)
    assert result.files_failed == 0
    assert len(handler.seen) == 11
    [entry] = entries_in(folder)
    assert (entry.bucket, entry.key, entry.raw) == ("", str(log_file), compact(records[5]))


@pytest.mark.parametrize("location", ["ftp://host/q", "s3:///q"])
def test_a_quarantine_location_that_is_neither_folder_nor_s3_is_refused(
    location: str, tmp_path: Path
) -> None:
    listed = CliRunner().invoke(main, ["quarantine", "list", "--quarantine", location])
    assert listed.exit_code == 2
    assert "quarantine" in listed.output


def test_check_probes_the_quarantine(sandbox: TrailSandbox, tmp_path: Path) -> None:
    from trailproc._check_cli import check_command

    s3 = sandbox.client("s3")
    s3.create_bucket(Bucket="quarantine-bucket")
    common = ["--queue-url", sandbox.queue_url, "--checkpoint", "memory"]
    good = CliRunner().invoke(check_command, [*common, "--quarantine", "s3://quarantine-bucket/q/"])
    assert "quarantine: write s3://quarantine-bucket/q/" in good.output
    line = next(x for x in good.output.splitlines() if "quarantine: write" in x)
    assert " pass " in f" {line} ", good.output
    assert "Contents" not in s3.list_objects_v2(Bucket="quarantine-bucket")  # probe removed
    bad = CliRunner().invoke(check_command, [*common, "--quarantine", "s3://no-such-bucket-q/q/"])
    assert bad.exit_code == 1
    line = next(x for x in bad.output.splitlines() if "quarantine: write" in x)
    assert "FAIL" in line
