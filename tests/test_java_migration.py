"""Migrating from the Java CloudTrail Processing Library: every property maps or is
refused with a reason, regions stay separate, and the Java metadata has a home."""

from __future__ import annotations

import asyncio
import gzip
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED
from helpers import run_in_process

import trailproc
from trailproc import ConfigError, load_config
from trailproc._app import process_paths
from trailproc._aws import AwsClients
from trailproc._config import JAVA_PROPERTIES
from trailproc._pipeline.processor import ProgressInfo, ProgressState
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records

DOCS = Path(__file__).resolve().parent.parent / "docs"
REFERENCE = SHARED / "reference" / "cloudtrail-format.md"


def _properties(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "app.properties"
    path.write_text(text)
    return path


def test_num_of_parallel_readers_is_accepted_and_checked(tmp_path: Path) -> None:
    config = load_config(_properties(tmp_path, "sqsUrl=https://q\nnumOfParallelReaders=15\n"),
                         env={})  # fmt: skip
    assert config.queue_url == "https://q"
    # Unchanged (see docs/migration.md): still unset, so derived from the memory budget.
    assert config.max_in_flight_messages is None
    assert config.limits(budget=1 << 30).max_in_flight_messages == 16
    with pytest.raises(ConfigError, match="numOfParallelReaders: expected a whole number"):
        load_config(_properties(tmp_path, "numOfParallelReaders=many\n"), env={})


@pytest.mark.parametrize("order", ["sqs first", "s3 first"])
def test_s3_region_no_longer_overrides_the_sqs_region(tmp_path: Path, order: str) -> None:
    lines = ["sqsRegion=us-east-1", "s3Region=eu-west-1"]
    if order == "s3 first":
        lines.reverse()
    config = load_config(_properties(tmp_path, "\n".join(lines) + "\n"), env={})
    assert config.region == "us-east-1"
    assert config.s3_region == "eu-west-1"


def test_s3_region_is_the_s3_clients_region_only(aws_env: Any) -> None:
    config = load_config(env={}, region="us-east-1", s3_region="eu-west-1")

    async def regions() -> tuple[str, str]:
        async with AwsClients(config) as clients:
            s3 = await clients.client("s3")
            sqs = await clients.client("sqs")
            return s3.meta.region_name, sqs.meta.region_name

    assert asyncio.run(regions()) == ("eu-west-1", "us-east-1")
    unset = load_config(env={}, region="ap-south-1")

    async def default_region() -> str:
        async with AwsClients(unset) as clients:
            return str((await clients.client("s3")).meta.region_name)

    assert asyncio.run(default_region()) == "ap-south-1"


@pytest.mark.parametrize("form", ["properties", "toml"])
def test_delete_message_upon_failure_true_is_refused_with_the_difference(
    tmp_path: Path, form: str
) -> None:
    if form == "properties":
        path = _properties(tmp_path, "deleteMessageUponFailure = TRUE\n")
    else:
        path = tmp_path / "c.toml"
        path.write_text("deleteMessageUponFailure = true\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert "deleteMessageUponFailure=true is refused" in message
    assert "never one whose download failed" in message  # what Java does
    assert "download failures included" in message  # what delete_on_failure does
    assert "delete_on_failure = true" in message  # the way out


def test_delete_message_upon_failure_false_means_the_same_in_both(tmp_path: Path) -> None:
    config = load_config(_properties(tmp_path, "deleteMessageUponFailure=false\n"), env={})
    assert config.delete_on_failure is False


def test_every_java_property_in_a_file_is_accepted(tmp_path: Path) -> None:
    values = {
        "accessKey": "AKIAEXAMPLE", "secretKey": "x", "sqsUrl": "https://q",
        "sqsRegion": "us-east-1", "s3Region": "eu-west-1", "visibilityTimeout": "90",
        "threadCount": "4", "numOfParallelReaders": "2", "threadTerminationDelaySeconds": "45",
        "maxEventsPerEmit": "10", "enableRawEventInfo": "true",
        "deleteMessageUponFailure": "false",
    }  # fmt: skip
    assert set(values) == set(JAVA_PROPERTIES)
    text = "".join(f"{k}={v}\n" for k, v in values.items())
    config = load_config(_properties(tmp_path, text), env={})
    for java, prop in JAVA_PROPERTIES.items():
        if prop.key:
            assert str(getattr(config, prop.key)).lower() in (values[java], values[java] + ".0")


def _docs_table() -> dict[str, tuple[str | None, str]]:
    """{java property: (trailproc key or None, notes)} from docs/migration.md."""
    text = (DOCS / "migration.md").read_text()
    section = text.split("| Java property | trailproc key | Notes |", 1)[1].split("\n\n", 1)[0]
    rows: dict[str, tuple[str | None, str]] = {}
    for line in section.splitlines()[2:]:
        java, ours, notes = (cell.strip() for cell in line.strip("|").split("|", 2))
        key = re.fullmatch(r"`(\w+)`", ours)
        assert key or ours == "(none)", line
        rows[java.strip("`")] = (key.group(1) if key else None, notes)
    return rows


def test_migration_docs_table_matches_the_code() -> None:
    table = _docs_table()
    assert list(table) == list(JAVA_PROPERTIES)
    for java, prop in JAVA_PROPERTIES.items():
        key, notes = table[java]
        assert key == prop.key, java
        if prop.refused_values:
            assert "refused" in notes, java
        if prop.key is None:
            assert notes, java  # why nothing is set


def test_every_documented_java_property_is_covered() -> None:
    if not REFERENCE.is_file():
        pytest.skip(f"format reference not found at {REFERENCE}: put shared/ beside the "
                    "checkout or set TRAILPROC_SHARED_DIR")  # fmt: skip
    text = REFERENCE.read_text()
    section = text.split("## 6. CloudTrail Processing Library (Java)", 1)[1].split("\n## ", 1)[0]
    table = section.split("| Property |", 1)[1].split("\n\n", 1)[0]
    documented = {
        name
        for line in table.splitlines()[2:]
        for name in re.findall(r"`(\w+)`", line.split("|")[1])
    }
    assert len(documented) >= 11
    assert documented <= set(JAVA_PROPERTIES), documented - set(JAVA_PROPERTIES)


def test_log_file_size_and_record_position(tmp_path: Path) -> None:
    records = make_records(5, seed=3)
    path = tmp_path / "a.json.gz"
    path.write_bytes(encode_log(records))
    seen: list[tuple[int | None, int, str | None]] = []
    handler = trailproc.Handlers()
    handler.on()(lambda e: seen.append((e.delivery.size, e.index, e.event_id)))
    process_paths([path], handler, config=load_config(env={}))
    size = path.stat().st_size
    assert seen == [(size, i, r["eventID"]) for i, r in enumerate(records)]


def test_log_file_size_from_s3_is_the_objects_size(sandbox: TrailSandbox, tmp_path: Path) -> None:
    records = make_records(4, seed=4)
    body = encode_log(records)
    sandbox.put(key := log_key(unique="javasize00000001"), body)
    sandbox.notify([key])
    sizes: list[int | None] = []
    handler = trailproc.Handlers()
    handler.on()(lambda e: sizes.append(e.delivery.size))
    run_in_process(sandbox, tmp_path, handler)
    assert sizes == [len(body)] * 4
    assert len(gzip.decompress(body)) != len(body)  # the stored (compressed) size


class Reporter(trailproc.EventProcessor):
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.ends: list[tuple[ProgressState, ProgressInfo]] = []

    def filter_source(self, source: Any) -> bool:
        if self.fail:
            raise RuntimeError("bug in filter_source")
        return False

    def process(self, events: list[Any]) -> None:
        pass

    def report_end(self, state: ProgressState, info: ProgressInfo, token: Any) -> None:
        self.ends.append((state, info))


def test_uncaught_exception_is_reported_and_the_message_kept(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    sandbox.deliver(make_records(2, seed=5), key=log_key(unique="javabug000000001"))
    reporter = Reporter(fail=True)
    run_in_process(sandbox, tmp_path, reporter)
    uncaught = [info for state, info in reporter.ends
                if state is ProgressState.UNCAUGHT_EXCEPTION]  # fmt: skip
    assert len(uncaught) == 1
    assert uncaught[0].success is False and "bug in filter_source" in uncaught[0].detail["error"]
    assert uncaught[0].message_id
    assert not any(state is ProgressState.DELETE for state, _ in reporter.ends)


def test_progress_states_cover_the_java_ones() -> None:
    java = ["pollQueue", "parseMessage", "processSource", "downloadLog", "processLog",
            "deleteMessage", "deleteFilteredMessage", "uncaughtException"]  # fmt: skip
    assert len(ProgressState) == len(java)
    assert ProgressState.DELETE_FILTERED.value == "delete_filtered"
    assert ProgressState.UNCAUGHT_EXCEPTION.value == "uncaught_exception"
