"""`trailproc demo`: the real pipeline end to end on a local moto server.

Creates a trail bucket, an SNS topic and an SQS queue subscribed to it, delivers sample
log files the way CloudTrail does (gzip object + SNS notification), runs the daemon's
code path until the queue is empty, and prints what a small security handler found.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import os
import tempfile
import time
from typing import TYPE_CHECKING, Any

from ._config import load_config
from ._pipeline.events import Event
from ._pipeline.processor import EventProcessor
from ._sandbox import TrailSandbox, log_key, make_records, moto_server

if TYPE_CHECKING:
    from ._app import RunResult

SUSPICIOUS = {"StopLogging", "DeleteTrail", "AttachRolePolicy", "PutUserPolicy"}
# CloudTrail delivers a log file about every five minutes, a few minutes after its events.
DELIVERY_EVERY = dt.timedelta(minutes=5)
DELIVERY_DELAY = dt.timedelta(minutes=3)


class DemoProcessor(EventProcessor):
    """Counts events per service and notes the ones a security team would look at."""

    def __init__(self) -> None:
        self.by_source: collections.Counter[str] = collections.Counter()
        self.findings: list[tuple[str, str, str]] = []  # (event time, what, by whom)
        self.records = 0
        self.files: set[str] = set()

    def process(self, events: list[Event]) -> None:
        for event in events:
            self.records += 1
            self.files.add(event.delivery.key)
            self.by_source[event.event_source or "?"] += 1
            name = event.event_name
            no_mfa = (event.additional_event_data or {}).get("MFAUsed") == "No"
            if name in SUSPICIOUS:
                what = name
            elif name == "ConsoleLogin" and no_mfa:
                what = "ConsoleLogin no MFA"
            else:
                continue
            self.findings.append((event.event_time_text or "?", what, event.principal_arn or "?"))

    @property
    def alerts(self) -> list[str]:
        """The findings as lines, in columns as wide as their longest entry."""
        width = max((len(what) for _, what, _ in self.findings), default=0)
        return [f"{when}  {what:<{width}}  by {who}" for when, what, who in self.findings]


def deliver_samples(
    sandbox: TrailSandbox, files: int, records: int, now: dt.datetime | None = None
) -> list[str]:
    """Deliver `files` sample log files as CloudTrail would have over the last minutes:
    each key's timestamp a few minutes after its events, every five minutes up to `now`.
    Returns the keys."""
    now = (now or dt.datetime.now(dt.timezone.utc)).replace(second=0, microsecond=0)
    keys = []
    for i in range(files):
        delivered = now - (files - 1 - i) * DELIVERY_EVERY
        # make_records spaces events about 3 s apart: the last one lands before delivery.
        first = delivered - DELIVERY_DELAY - dt.timedelta(seconds=3 * records)
        batch = make_records(records, seed=i, region=sandbox.region, start=first)
        keys.append(sandbox.deliver(batch, key=log_key(region=sandbox.region, when=delivered)))
    return keys


async def run_on_sample_data(
    processor: EventProcessor, *, files: int = 4, records: int = 25, echo: Any = print
) -> RunResult:
    """Run `processor` over sample deliveries in a throw-away local sandbox."""
    from ._app import run_async

    with moto_server() as server, tempfile.TemporaryDirectory() as state:
        os.environ.update(server.env())
        sandbox = TrailSandbox(server.url).create()
        deliver_samples(sandbox, files, records)
        echo(f"delivered {files} sample log files to a local moto server at {server.url}")
        config = load_config(
            env={}, queue_url=sandbox.queue_url, endpoint_url=server.url, region=sandbox.region,
            wait_time_seconds=1, exit_when_idle=True, state_dir=state, stats_interval=0,
        )  # fmt: skip
        return await run_async(config, processor)


async def run_demo(*, files: int = 4, records: int = 25, echo: Any = print) -> int:
    from ._app import run_async

    echo("trailproc demo: starting a local moto server on 127.0.0.1 ...")
    with moto_server() as server, tempfile.TemporaryDirectory() as state:
        # Only the local server is ever contacted: fake credentials, loopback endpoint.
        os.environ.update(server.env())
        sandbox = TrailSandbox(server.url).create()
        echo(f"  bucket s3://{sandbox.bucket}, topic {sandbox.topic_arn}")
        echo(f"  queue  {sandbox.queue_url}")
        for key in deliver_samples(sandbox, files, records):
            echo(f"  delivered {key}")
        sandbox.send_raw('{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"trail-bucket"}')
        echo(f"  + one s3:TestEvent; queue depth now {sandbox.queue_depth()}")

        processor = DemoProcessor()
        config = load_config(
            env={},
            queue_url=sandbox.queue_url,
            endpoint_url=server.url,
            region=sandbox.region,
            wait_time_seconds=1,
            exit_when_idle=True,
            state_dir=state,
            stats_interval=0,
        )
        started = time.perf_counter()
        result = await run_async(config, processor)
        elapsed = time.perf_counter() - started

        echo("")
        echo(
            f"Processed {processor.records} records from {len(processor.files)} log files "
            f"in {elapsed:.2f}s; queue depth now {sandbox.queue_depth()}."
        )
        echo("Events by service:")
        for source, count in processor.by_source.most_common():
            echo(f"  {count:5d}  {source}")
        echo(f"Findings ({len(processor.alerts)}):")
        for line in processor.alerts[:15]:
            echo(f"  {line}")
        if len(processor.alerts) > 15:
            echo(f"  ... and {len(processor.alerts) - 15} more")
        ok = processor.records == files * records and result.files_failed == 0
        echo("demo OK" if ok else "demo FAILED: not every record was handed over")
        return 0 if ok else 1


def main() -> None:  # pragma: no cover
    raise SystemExit(asyncio.run(run_demo()))
