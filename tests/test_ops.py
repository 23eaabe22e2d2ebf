"""Operations: metrics and health endpoints, `trailproc check`, logs, generated references."""

from __future__ import annotations

import asyncio
import io
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from trailproc._check_cli import check_command
from trailproc._config import load_config
from trailproc._observe import Metrics, configure_logging, get_logger
from trailproc._ops.check import PROBE_HANDLE
from trailproc._ops.configref import render_config_reference, render_metrics_reference
from trailproc._ops.servers import Liveness, scrape, serve_ops
from trailproc._pipeline.processor import EventProcessor
from trailproc._sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records

REPO = Path(__file__).resolve().parent.parent


def _get(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Counting(EventProcessor):
    def __init__(self) -> None:
        self.records = 0

    def process(self, events: list[Any]) -> None:
        self.records += len(events)


# --- end to end: scrape while the daemon runs against moto ----------------------------------


def test_metrics_endpoint_matches_what_was_delivered(sandbox: TrailSandbox, tmp_path: Path) -> None:
    files, per_file = 3, 7
    for i in range(files):
        sandbox.deliver(make_records(per_file, seed=i))
    sandbox.send_raw('{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"trail-bucket"}')
    config = load_config(
        queue_url=sandbox.queue_url,
        wait_time_seconds=1,
        exit_when_idle=True,
        state_dir=str(tmp_path / "state"),
        stats_interval=0,
        metrics_port=0,
        health_port=0,
    )
    processor = Counting()
    seen: dict[str, Any] = {}

    async def main() -> None:
        from trailproc._app import run_async

        metrics = Metrics()
        async with serve_ops(config, metrics) as ops:
            assert ops.metrics_port and ops.health_port
            base_health = f"http://127.0.0.1:{ops.health_port}"
            seen["ready_before"] = (await asyncio.to_thread(_get, base_health + "/readyz"))[0]
            run = asyncio.create_task(run_async(config, processor, metrics=metrics))
            # Mid-run: ready as soon as the queue answered, and live throughout.
            for _ in range(100):
                status, _body = await asyncio.to_thread(_get, base_health + "/readyz")
                if status == 200 or run.done():
                    break
                await asyncio.sleep(0.05)
            seen["ready_during"] = status
            seen["live_during"] = (await asyncio.to_thread(_get, base_health + "/livez"))[0]
            await run
            status, text = await asyncio.to_thread(
                _get, f"http://127.0.0.1:{ops.metrics_port}/metrics"
            )
            seen["metrics_status"], seen["metrics"] = status, scrape(text)

    asyncio.run(main())
    assert seen["ready_before"] == 503
    assert seen["ready_during"] == 200
    assert seen["live_during"] == 200
    assert seen["metrics_status"] == 200
    m = seen["metrics"]
    assert processor.records == files * per_file
    assert m["trailproc_records_total"] == files * per_file
    assert m["trailproc_files_total{kind=log,outcome=done}"] == files
    assert m["trailproc_files_total{kind=log,outcome=failed}"] == 0
    assert m["trailproc_messages_received_total"] == files + 1
    assert m["trailproc_messages_deleted_total{reason=processed}"] == files
    assert m["trailproc_messages_deleted_total{reason=s3_test_event}"] == 1
    assert sum(v for k, v in m.items() if k.startswith("trailproc_messages_kept_total")) == 0
    assert m["trailproc_bytes_compressed_total"] > 0
    assert m["trailproc_bytes_decompressed_total"] > m["trailproc_bytes_compressed_total"]
    assert m["trailproc_file_processing_seconds_count"] == files
    assert m["trailproc_queue_lag_seconds_count"] == files + 1
    assert m["trailproc_in_flight_messages"] == 0
    assert sandbox.queue_depth() == 0


# --- health endpoints ------------------------------------------------------------------------


def test_health_endpoints_and_routing() -> None:
    config = load_config(env={}, metrics_port=0, health_port=0)
    metrics = Metrics()
    state = {"ready": False, "live": True}
    results: dict[str, tuple[int, str]] = {}

    async def main() -> None:
        async with serve_ops(
            config, metrics, ready=lambda: state["ready"], live=lambda: state["live"]
        ) as ops:
            health = f"http://127.0.0.1:{ops.health_port}"
            metrics_url = f"http://127.0.0.1:{ops.metrics_port}"
            results["ready0"] = await asyncio.to_thread(_get, health + "/readyz")
            state["ready"] = True
            results["ready1"] = await asyncio.to_thread(_get, health + "/readyz")
            results["live1"] = await asyncio.to_thread(_get, health + "/livez")
            state["live"] = False
            results["live0"] = await asyncio.to_thread(_get, health + "/livez")
            results["missing"] = await asyncio.to_thread(_get, health + "/nope")
            results["metrics_on_health"] = await asyncio.to_thread(_get, health + "/metrics")
            results["post"] = await asyncio.to_thread(_get, metrics_url + "/metrics", "POST")
            results["metrics"] = await asyncio.to_thread(_get, metrics_url + "/metrics?x=1")
            results["port"] = (ops.health_port or 0, "")
        # Closed cleanly: the port no longer answers.
        results["after"] = await asyncio.to_thread(_closed, results["port"][0])

    def _closed(port: int) -> tuple[int, str]:
        try:
            _get(f"http://127.0.0.1:{port}/livez")
        except OSError:
            return 0, "closed"
        return 1, "still open"

    asyncio.run(main())
    assert results["ready0"] == (503, "not ready\n")
    assert results["ready1"] == (200, "ok\n")
    assert results["live1"][0] == 200
    assert results["live0"] == (503, "not live\n")
    assert results["missing"][0] == 404
    assert results["metrics_on_health"][0] == 404  # separate ports serve separate paths
    assert results["post"][0] == 405
    assert results["metrics"][0] == 200
    assert "trailproc_records_total 0.0" in results["metrics"][1]
    assert results["after"] == (0, "closed")


def test_one_port_serves_metrics_and_health() -> None:
    config = load_config(env={}, metrics_port=0, health_port=0)
    metrics = Metrics()

    async def main() -> tuple[int, int]:
        async with serve_ops(config.replace(metrics_port=0, health_port=None), metrics) as ops:
            assert ops.health_port is None
            port = ops.metrics_port
        assert port
        # Reuse that port for both.
        both = config.replace(metrics_port=port, health_port=port)
        async with serve_ops(both, metrics, ready=lambda: True) as ops:
            assert ops.metrics_port == ops.health_port == port
            a = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
            b = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/readyz")
            return a[0], b[0]

    assert asyncio.run(main()) == (200, 200)


def test_liveness_follows_polls_and_progress() -> None:
    metrics = Metrics()
    now = [1000.0]
    metrics.started = 1000.0
    live = Liveness(metrics, threshold=100, clock=lambda: now[0])
    assert live()
    now[0] = 1101
    assert not live()  # nothing moved since start
    metrics.last_poll.set(1100)
    assert live()
    now[0] = 1300
    assert not live()  # stuck: no poll, no progress
    metrics.records.inc(10)  # a long file still handing records over
    assert live()
    now[0] = 1401
    assert not live()
    assert Liveness.for_config(load_config(env={}), metrics).threshold == 20 + 60 + 60


# --- trailproc check -------------------------------------------------------------------------


def _kms_log(sandbox: TrailSandbox) -> str:
    key_id = sandbox.client("kms").create_key()["KeyMetadata"]["KeyId"]
    key = log_key()
    sandbox.put(key, encode_log(make_records(2)), ServerSideEncryption="aws:kms",
                SSEKMSKeyId=key_id)  # fmt: skip
    return key


def _rows(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines():
        parts = line.split()
        for status in ("pass", "FAIL", "WARN", "skip"):
            if status in parts:
                i = parts.index(status)
                rows[" ".join(parts[:i])] = status
                break
    return rows


def test_check_passes_on_a_complete_setup(sandbox: TrailSandbox) -> None:
    _kms_log(sandbox)
    sandbox.deliver(make_records(1))  # a waiting message: the receive probe must skip
    result = CliRunner().invoke(
        check_command,
        ["--queue-url", sandbox.queue_url, "--bucket", sandbox.bucket, "--checkpoint", "memory"],
    )
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert rows["sqs queue"] == "pass"
    assert rows["sqs:ReceiveMessage"] == "skip"
    assert rows["sqs:ChangeMessageVisibility"] == "pass"
    assert rows["sqs:DeleteMessage"] == "pass"
    assert rows["dead-letter queue"] == "pass"
    assert rows[f"s3:GetObject s3://{sandbox.bucket}"] == "pass"
    assert rows[f"kms:Decrypt s3://{sandbox.bucket}"] in ("pass", "skip")
    assert rows["checkpoint store memory"] == "pass"
    # The probes never touched the waiting message.
    attrs = sandbox.client("sqs").get_queue_attributes(
        QueueUrl=sandbox.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "1"
    message = sandbox.client("sqs").receive_message(
        QueueUrl=sandbox.queue_url, AttributeNames=["All"]
    )["Messages"][0]
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert message["ReceiptHandle"] != PROBE_HANDLE


def test_check_reports_exactly_the_missing_queue(sandbox: TrailSandbox) -> None:
    sandbox.deliver(make_records(1))
    missing = sandbox.queue_url.rsplit("/", 1)[0] + "/no-such-queue"
    args = ["--queue-url", missing, "--bucket", sandbox.bucket, "--checkpoint", "memory"]
    result = CliRunner().invoke(check_command, args)
    assert result.exit_code == 1, result.output
    rows = _rows(result.output)
    failed = [name for name, status in rows.items() if status == "FAIL"]
    assert failed == ["sqs queue"], result.output
    assert "NonExistentQueue" in result.output
    assert f"fix: the queue {missing} does not exist" in result.output
    # What depends on the queue is skipped, not failed; the rest still ran.
    assert rows["sqs:DeleteMessage"] == "skip"
    assert rows[f"s3:GetObject s3://{sandbox.bucket}"] == "pass"
    assert "1 check(s) failed" in result.output


def test_check_rejects_invalid_configuration(aws_env: MotoServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("visibility_timeout = -5\n")
    result = CliRunner().invoke(check_command, ["--config", str(bad)])
    assert result.exit_code == 1
    assert "visibility_timeout" in result.output and "FAIL" in result.output


# --- logs ------------------------------------------------------------------------------------


def test_logs_redact_secrets_and_truncate_receipt_handles(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging("info", "json")
    handle = "AQEB" + "x" * 300
    get_logger("t").info("hello", receipt_handle=handle, aws_secret_access_key="hunter2",
                         session_token="tok", message_id="m-1")  # fmt: skip
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "hello" and line["message_id"] == "m-1"
    assert "hunter2" not in stream.getvalue() and 'tok"' not in stream.getvalue()
    assert line["receipt_handle"].startswith("AQEB") and len(line["receipt_handle"]) < 20


_LOG_WRITER = """
import sys
from trailproc._observe import configure_logging, get_logger
configure_logging("info", "json")
log = get_logger("w")
for i in range(int(sys.argv[1])):
    log.info("line", worker=sys.argv[2], i=i, pad="x" * 200)
"""


def test_log_lines_of_processes_sharing_stderr_never_interleave(tmp_path: Path) -> None:
    # `run --workers N` (and containers) have several processes writing one stderr; a line
    # and its newline written separately would let another process's line in between.
    import subprocess
    import sys

    script = tmp_path / "writer.py"
    script.write_text(_LOG_WRITER)
    read, write = os.pipe()
    writers = [
        subprocess.Popen([sys.executable, str(script), "3000", str(n)], stderr=write)
        for n in range(3)
    ]
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        output = pipe.read()
    assert all(w.wait(60) == 0 for w in writers)
    lines = output.decode().split("\n")
    assert lines[-1] == ""
    entries = [json.loads(line) for line in lines[:-1]]  # each line one whole JSON object
    assert len(entries) == 3 * 3000
    for n in range(3):
        assert [e["i"] for e in entries if e["worker"] == str(n)] == list(range(3000))


def test_brief_summary_is_short_and_flat() -> None:
    metrics = Metrics()
    metrics.records.inc(5)
    metrics.messages_kept.labels("failed").inc()
    brief = metrics.brief()
    assert brief["records"] == 5 and brief["kept"] == {"failed": 1}
    assert "errors" not in brief  # empty breakdowns are left out


# --- generated references --------------------------------------------------------------------


def test_configuration_reference_is_up_to_date() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render_config_reference(), (
        "docs/configuration.md is stale: run "
        "`python -m trailproc._ops.configref > docs/configuration.md`"
    )


def test_metrics_reference_is_up_to_date() -> None:
    committed = (REPO / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert committed == render_metrics_reference(), (
        "docs/metrics.md is stale: run "
        "`python -m trailproc._ops.configref --metrics > docs/metrics.md`"
    )


def test_configuration_reference_covers_every_field() -> None:
    from trailproc._config import Config

    text = render_config_reference()
    for name in Config.__struct_fields__:
        assert f"| `{name}`<br>" in text, name
