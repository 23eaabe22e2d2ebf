"""Record filters: `--event-name 'Delete*'` and friends on run, process and backfill,
as config keys, combined with `filter_event`, on header fields only."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import trailproc
from trailproc import ConfigError, load_config
from trailproc._app import process_paths
from trailproc._backfill_cli import backfill_command
from trailproc._cli import main
from trailproc._cli_common import filter_options
from trailproc._pipeline.events import Delivery, Event
from trailproc._pipeline.filters import RecordFilter
from trailproc._pipeline.keys import FileRef
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records

START = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
NAMES = ["DeleteBucket", "PutObject", "DeleteObject", "deleteLowercase", "GetObject",
         "CreateUser", "XDeleteBucket"]  # fmt: skip
SOURCES = ["s3.amazonaws.com", "iam.amazonaws.com", "ec2.amazonaws.com",
           "s3-outposts.amazonaws.com"]  # fmt: skip
ACCOUNTS = ["111111111111", "222222222222", "333333333333"]
REGIONS = ["us-east-1", "eu-west-1", "eu-central-1", "ap-south-1", "EU-WEST-1"]
ERRORS = [None, None, "AccessDenied", None, "AccessDeniedException", "ThrottlingException"]


def _records(count: int = 70, start: dt.datetime = START) -> list[dict[str, Any]]:
    """Records whose header fields cycle through the lists above (co-prime lengths, so
    every combination shows up), one minute apart from `start`."""
    out = make_records(count, seed=7)
    for i, record in enumerate(out):
        record["eventName"] = NAMES[i % len(NAMES)]
        record["eventSource"] = SOURCES[i % len(SOURCES)]
        record["recipientAccountId"] = ACCOUNTS[i % len(ACCOUNTS)]
        record["awsRegion"] = REGIONS[i % len(REGIONS)]
        record["eventTime"] = (start + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        record.pop("errorCode", None)
        if ERRORS[i % len(ERRORS)]:
            record["errorCode"] = ERRORS[i % len(ERRORS)]
    return out


def _ids(records: list[dict[str, Any]], keep: Any) -> list[str]:
    return [r["eventID"] for r in records if keep(r)]


def _out_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["eventID"] for line in path.read_bytes().splitlines()]


# Each flag, with the records it must select written out by hand (not by the code
# under test): exact values, globs, and what the flag must not match.
CASES: list[tuple[list[str], Any]] = [
    (["--event-name", "Delete*"], lambda r: r["eventName"] in ("DeleteBucket", "DeleteObject")),
    (["--event-name", "Delete*", "--event-name", "Put*"],
     lambda r: r["eventName"] in ("DeleteBucket", "DeleteObject", "PutObject")),
    (["--event-name", "CreateUser"], lambda r: r["eventName"] == "CreateUser"),
    (["--event-source", "s3.*"], lambda r: r["eventSource"] == "s3.amazonaws.com"),
    (["--event-source", "iam.amazonaws.com"], lambda r: r["eventSource"] == "iam.amazonaws.com"),
    (["--account-id", "222222222222"], lambda r: r["recipientAccountId"] == "222222222222"),
    (["--region", "eu-*"], lambda r: r["awsRegion"] in ("eu-west-1", "eu-central-1")),
    (["--region", "us-east-1", "--region", "ap-south-1"],
     lambda r: r["awsRegion"] in ("us-east-1", "ap-south-1")),
    (["--error-code", "AccessDenied*"],
     lambda r: r.get("errorCode") in ("AccessDenied", "AccessDeniedException")),
    (["--error-code", "AccessDenied"], lambda r: r.get("errorCode") == "AccessDenied"),
    (["--errors-only"], lambda r: "errorCode" in r),
    (["--since", "2026-11-01T00:30:00Z"], lambda r: r["eventTime"] >= "2026-11-01T00:30:00Z"),
    (["--until", "2026-11-01T00:30:00Z"], lambda r: r["eventTime"] < "2026-11-01T00:30:00Z"),
    (["--since", "2026-11-01T00:10:00Z", "--until", "2026-11-01T00:20:00Z"],
     lambda r: "2026-11-01T00:10:00Z" <= r["eventTime"] < "2026-11-01T00:20:00Z"),
    (["--event-name", "Delete*", "--region", "us-east-1", "--account-id", "111111111111"],
     lambda r: r["eventName"] in ("DeleteBucket", "DeleteObject")
     and r["awsRegion"] == "us-east-1" and r["recipientAccountId"] == "111111111111"),
]  # fmt: skip


def _case_id(value: Any) -> str:
    return " ".join(value) if isinstance(value, list) else ""


@pytest.mark.parametrize(("flags", "expected"), CASES, ids=_case_id)
def test_process_flag_selects_exactly_the_matching_records(
    tmp_path: Path, flags: list[str], expected: Any
) -> None:
    records = _records()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.json.gz").write_bytes(encode_log(records[:40]))
    (tmp_path / "in" / "b.json.gz").write_bytes(encode_log(records[40:]))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        main, ["process", str(tmp_path / "in"), "--output", str(out), *flags]
    )
    assert result.exit_code == 0, result.output
    want = _ids(records, expected)
    assert 0 < len(want) < len(records)  # the case really selects something, not all
    assert sorted(_out_ids(out)) == sorted(want)
    dropped = len(records) - len(want)
    assert f"{len(want)} record(s) handed over" in result.output
    assert f"{dropped} record(s) filtered out" in result.output


def test_globs_are_case_sensitive_like_the_handlers_registry(tmp_path: Path) -> None:
    records = _records()
    path = tmp_path / "a.json.gz"
    path.write_bytes(encode_log(records))
    lower = process_paths([path], config=load_config(
        env={}, output=str(tmp_path / "lower.jsonl"), filter_event_names=["delete*"]))  # fmt: skip
    assert _out_ids(tmp_path / "lower.jsonl") == _ids(
        records, lambda r: r["eventName"] == "deleteLowercase"
    )
    assert lower.records_filtered == len(records) - lower.records

    handlers = trailproc.Handlers()
    seen: list[str] = []
    handlers.on(event_name="delete*")(lambda e: seen.append(e.event_id))
    process_paths([path], handlers, config=load_config(env={}))
    assert seen == _out_ids(tmp_path / "lower.jsonl")  # the same records either way


def test_relative_since_counts_back_from_now(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    # One record a minute, ending 5 minutes ago and starting 65 minutes ago.
    records = _records(60, start=now - dt.timedelta(minutes=65))
    (tmp_path / "a.json.gz").write_bytes(encode_log(records))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        main, ["process", str(tmp_path / "a.json.gz"), "--output", str(out), "--since", "30m"]
    )
    assert result.exit_code == 0, result.output
    got = _out_ids(out)
    # 30 minutes ago falls between records 34 and 35 (give a minute of slack for the
    # clock moving while the test runs).
    assert got in ([r["eventID"] for r in records[35:]], [r["eventID"] for r in records[36:]])


def test_records_without_a_readable_time_are_left_out_by_a_time_filter(tmp_path: Path) -> None:
    records = _records(6)
    records[1]["eventTime"] = "yesterday"
    del records[2]["eventTime"]
    (tmp_path / "a.json.gz").write_bytes(encode_log(records))
    out = tmp_path / "out.jsonl"
    process_paths([tmp_path / "a.json.gz"], config=load_config(
        env={}, output=str(out), filter_since="2020-01-01"))  # fmt: skip
    assert _out_ids(out) == [records[i]["eventID"] for i in (0, 3, 4, 5)]


def test_account_falls_back_to_the_log_files_key_when_the_record_has_none(
    tmp_path: Path,
) -> None:
    records = _records(6)
    for record in records:
        record.pop("recipientAccountId")
    folder = tmp_path / Path(log_key("444444444444", "us-east-1", START)).parent
    folder.mkdir(parents=True)
    (folder / Path(log_key("444444444444", "us-east-1", START)).name).write_bytes(
        encode_log(records)
    )
    out = tmp_path / "out.jsonl"
    process_paths([tmp_path / "AWSLogs"], config=load_config(
        env={}, output=str(out), filter_account_ids=["4444*"]))  # fmt: skip
    assert len(_out_ids(out)) == 6


class KeepsNames(trailproc.EventProcessor):
    """A user filter (decodes whole records: it reads userIdentity)."""

    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.asked: list[str] = []
        self.got: list[str] = []

    def filter_event(self, event: Event) -> bool:
        self.asked.append(event.event_id or "")
        return event.event_name in self.names and event.user_identity is not None

    def process(self, events: list[Event]) -> None:
        self.got += [e.event_id or "" for e in events]


def test_configured_filter_and_filter_event_must_both_pass(tmp_path: Path) -> None:
    records = _records()
    (tmp_path / "a.json.gz").write_bytes(encode_log(records))
    user = KeepsNames({"DeleteBucket", "PutObject"})
    result = process_paths([tmp_path / "a.json.gz"], user, config=load_config(
        env={}, filter_event_names=["Delete*"]))  # fmt: skip
    assert user.got == _ids(records, lambda r: r["eventName"] == "DeleteBucket")
    # The configured filter runs first: filter_event only sees what it kept.
    assert user.asked == _ids(records, lambda r: r["eventName"].startswith("Delete"))
    assert result.records_filtered == len(records) - len(user.got)


def test_filtering_reads_header_fields_only() -> None:
    record = _records(1)[0]
    record["errorCode"] = "AccessDenied"
    raw = json.dumps(record).encode()
    every = RecordFilter(
        event_sources=("*",), event_names=("*",), account_ids=("*",), regions=("*",),
        error_codes=("*",), since=START - dt.timedelta(days=1), until=START + dt.timedelta(1),
    )  # fmt: skip
    event = Event(raw, Delivery(FileRef("b", "k")), 0)
    assert every(event) is True
    assert event._head is not None  # the header was decoded (one msgspec call)
    assert event._dict is None  # the whole record never was


def test_an_inactive_filter_keeps_everything_and_adds_no_per_record_call() -> None:
    from trailproc._pipeline.filters import keep_both

    assert not RecordFilter().active
    assert keep_both(RecordFilter(), trailproc.EventProcessor()) is None
    user = KeepsNames(set())
    assert keep_both(RecordFilter(), user) == user.filter_event


def test_filter_settings_from_environment_and_toml(tmp_path: Path) -> None:
    config = load_config(env={"TRAILPROC_FILTER_EVENT_NAMES": "Delete*, Put*",
                              "TRAILPROC_FILTER_ERRORS_ONLY": "true"})  # fmt: skip
    assert config.filter_event_names == ["Delete*", "Put*"]
    assert config.filter_errors_only is True
    path = tmp_path / "c.toml"
    path.write_text('filter_regions = ["eu-*"]\nfilter_since = 2026-11-01T00:00:00Z\n'
                    'filter_until = "1h"\n')  # fmt: skip
    config = load_config(path, env={})
    assert config.filter_regions == ["eu-*"]
    made = RecordFilter.from_config(config)
    assert made.since == START and made.regions == ("eu-*",)
    assert made.until is not None and made.until > START


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRAILPROC_FILTER_EVENT_NAMES": "Delete*,"}, "filter_event_names has an empty entry"),
        ({"TRAILPROC_FILTER_REGIONS": " "}, "filter_regions has an empty entry"),
        ({"TRAILPROC_FILTER_SINCE": "yesterday"}, "filter_since: not a time or an age"),
        ({"TRAILPROC_FILTER_UNTIL": "-3h"}, "filter_until: not a time or an age"),
        ({"TRAILPROC_FILTER_SINCE": "1h", "TRAILPROC_FILTER_UNTIL": "2h"},
         "filter_since (1h) is not before filter_until (2h)"),
    ],
)  # fmt: skip
def test_bad_filter_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(env=env)


def test_bad_flag_values_are_usage_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["process", str(tmp_path), "--since", "soon"])
    assert result.exit_code == 2 and "not a time or an age: 'soon'" in result.output
    result = CliRunner().invoke(main, ["process", str(tmp_path), "--event-name", ""])
    assert result.exit_code == 2 and "filter_event_names has an empty entry" in result.output


def test_filter_options_decorator_for_other_commands() -> None:
    @click.command()
    @filter_options(omit=("region",))
    def command(**flags: Any) -> None:
        click.echo(json.dumps(flags, sort_keys=True))

    result = CliRunner().invoke(command, ["--event-name", "Delete*", "--since", "2026-11-01"])
    assert result.exit_code == 0, result.output
    flags = json.loads(result.output)
    assert flags["filter_event_names"] == ["Delete*"]
    assert flags["filter_since"] == "2026-11-01T00:00:00+00:00"
    assert "filter_regions" not in flags
    with pytest.raises(ValueError, match="no filter option 'regions'"):
        filter_options(omit=("regions",))


def test_run_hands_over_only_matching_records_from_sqs(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    records = _records()
    sandbox.deliver(records[:35], key=log_key(unique="filters0000000001"))
    sandbox.deliver(records[35:], key=log_key(unique="filters0000000002"))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(main, [
        "run", "--queue-url", sandbox.queue_url, "--exit-when-idle", "--wait-time", "1",
        "--output", str(out), "--event-name", "Delete*", "--log-format", "json",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    want = _ids(records, lambda r: r["eventName"] in ("DeleteBucket", "DeleteObject"))
    assert sorted(_out_ids(out)) == sorted(want)
    assert sandbox.queue_depth() == 0  # filtered records do not keep messages


def test_backfill_applies_the_filters(sandbox: TrailSandbox, tmp_path: Path) -> None:
    records = _records()
    when = dt.datetime(2026, 11, 1, 1, 0, tzinfo=dt.timezone.utc)
    sandbox.put(log_key(when=when, unique="filters0000000003"), encode_log(records))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(backfill_command, [
        "--bucket", sandbox.bucket, "--start-time", "2026-11-01", "--end-time", "2026-11-02",
        "--output", str(out), "--checkpoint", "memory", "--errors-only", "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(_out_ids(out)) == sorted(_ids(records, lambda r: "errorCode" in r))


def test_uncompressed_files_are_filtered_the_same(tmp_path: Path) -> None:
    records = _records()
    (tmp_path / "a.json").write_bytes(gzip.decompress(encode_log(records)))
    out = tmp_path / "out.jsonl"
    process_paths([tmp_path / "a.json"], config=load_config(
        env={}, output=str(out), filter_event_sources=["ec2.*"]))  # fmt: skip
    assert _out_ids(out) == _ids(records, lambda r: r["eventSource"] == "ec2.amazonaws.com")


def test_time_bounds_are_exact_for_every_time_form() -> None:
    keep = RecordFilter(
        since=dt.datetime(2026, 11, 1, 0, 0, 0, 500000, tzinfo=dt.timezone.utc),
        until=dt.datetime(2026, 11, 1, 0, 0, 2, tzinfo=dt.timezone.utc),
    )
    times = {
        "2026-11-01T00:00:00Z": False,  # before a since with a fraction
        "2026-11-01T00:00:01Z": True,
        "2026-11-01T00:00:01.500Z": True,
        "2026-11-01T00:00:02Z": False,  # until is exclusive
        "2026-11-01T01:00:01+01:00": True,  # an offset: the same instant as 00:00:01Z
        "2026-11-01T00:00:01": True,  # no offset: UTC
        "2026-13-01T00:00:01Z": False,  # impossible date: unreadable, left out
        "2026-11-01 00:00:01Z": True,  # a space instead of T is still ISO 8601
    }
    for text, expected in times.items():
        event = Event(json.dumps({"eventTime": text}).encode(), Delivery(FileRef("b", "k")), 0)
        assert keep(event) is expected, text
