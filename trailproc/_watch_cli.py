"""`trailproc watch`: follow a bucket without notifications (see `sources.watch`).

trailproc watch --bucket org-trail-bucket --interval 60 --handler myapp.rules:handlers
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import click

from ._app import RunResult
from ._cli_common import (
    TimeParam,
    fail_cleanly,
    load_cli_config,
    processing_options,
    trail_options,
    trust_options,
)
from ._config import Config
from ._observe import Metrics, ensure_logging, get_logger
from ._pipeline.processor import EventProcessor
from ._roads.watch import DEFAULT_OVERLAP, Watcher, WatchOptions

__all__ = ["WatchResult", "watch_async", "watch_command", "watching"]

log = get_logger("trailproc.watch")


@dataclass
class WatchResult(RunResult):
    """What a watcher did (files/records from the metrics, like `RunResult`)."""

    rounds: int = 0


@contextlib.asynccontextmanager
async def watching(
    options: WatchOptions,
    config: Config,
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    metrics: Metrics | None = None,
) -> AsyncIterator[Watcher]:
    """A `Watcher` wired like `run`: handlers, checkpoint store, trust settings, S3
    access rules, metrics and ops ports; everything is closed on exit."""
    from ._app import run_refs, serve_ops_for
    from ._pipeline.trust import TrustPolicy, check_bucket
    from ._runtime import open_runtime

    ensure_logging(config.log_level, config.log_format)
    refusal = check_bucket(TrustPolicy.of(config), options.bucket)
    if refusal is not None:
        raise ValueError(refusal.reason)
    query = options.query(config.allowed_accounts)
    metrics = metrics or Metrics()
    async with (
        serve_ops_for(config, metrics),
        open_runtime(config, processor, metrics=metrics) as runtime,
    ):
        s3 = await runtime.s3().for_object(options.bucket)
        # Each listed file passes the trust boundary (account of its key).
        downloads = runtime.config.limits().download_concurrency
        hand_over = functools.partial(run_refs, runtime.pipeline, trust=runtime.trust,
                                      concurrency=downloads)  # fmt: skip
        yield Watcher(options, query, s3, runtime.store, metrics, owner=runtime.owner,
                      hand_over=hand_over)  # fmt: skip


async def watch_async(
    options: WatchOptions,
    config: Config,
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    stopping: asyncio.Event | None = None,
    metrics: Metrics | None = None,
) -> WatchResult:
    """Watch `options.bucket` until `stopping` (or an idle round with exit_when_idle),
    with the same handlers, checkpoint store, trust settings and metrics as `run`."""
    metrics = metrics or Metrics()
    result = WatchResult(metrics)
    async with watching(options, config, processor, metrics=metrics) as watcher:
        log.info("watching", bucket=options.bucket, root=watcher.query.root,
                 interval=options.interval, overlap_minutes=options.overlap.seconds // 60,
                 lease_seconds=options.lease_ttl, owner=watcher.owner)  # fmt: skip
        try:
            await watcher.run(stopping or asyncio.Event())
        finally:
            result.rounds = watcher.rounds
            result.failed_files.extend(watcher.failed)
    log.info("stopped", rounds=result.rounds, **metrics.brief())
    return result


@click.command("watch")
@trail_options("every account found.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds between listing rounds.")  # fmt: skip
@click.option("--overlap-minutes", type=click.FloatRange(min=1), show_default=True,
              default=DEFAULT_OVERLAP.total_seconds() / 60,
              help="Minutes listed again behind the cursor each round (late files).")  # fmt: skip
@click.option("--start-time", type=TimeParam(),
              help="Where a stream with no cursor yet starts; default: today (UTC).")  # fmt: skip
@click.option("--lease-seconds", type=click.FloatRange(min=1),
              help="Watcher lease; a standby takes over this long after the active "
                   "watcher stops renewing (default: 3 intervals, at least 30).")  # fmt: skip
@click.option("--insights", is_flag=True, help="Also process CloudTrail Insights files.")
@click.option("--exit-when-idle", is_flag=True, help="Exit once a round finds nothing new.")
@click.option("--metrics-port", type=int, help="Serve Prometheus /metrics on this port.")
@click.option("--health-port", type=int, help="Serve /livez and /readyz on this port.")
@processing_options
@trust_options
@fail_cleanly
def watch_command(  # noqa: PLR0913 - click passes each command-line option as a keyword of its own
    *,
    bucket: str,
    prefix: str | None,
    account_ids: tuple[str, ...],
    regions: tuple[str, ...],
    interval: float,
    overlap_minutes: float,
    start_time: dt.datetime | None,
    lease_seconds: float | None,
    insights: bool,
    exit_when_idle: bool,
    config_path: str | None,
    **flags: Any,
) -> None:
    """Follow a bucket that has no notifications (lists new files every interval)."""
    from ._app import install_signal_handlers

    config = load_cli_config(config_path, **flags)
    options = WatchOptions(
        bucket, prefix=prefix, account_ids=account_ids, regions=regions, interval=interval,
        overlap=dt.timedelta(minutes=overlap_minutes), start_time=start_time,
        lease_seconds=lease_seconds, insights=insights, exit_when_idle=exit_when_idle,
    )  # fmt: skip

    async def main() -> WatchResult:
        stopping = asyncio.Event()
        install_signal_handlers(stopping)
        return await watch_async(options, config, stopping=stopping)

    result = asyncio.run(main())
    click.echo(f"{result.rounds} round(s): {result.files_done} file(s) processed, "
               f"{result.files_failed} failed; {result.records} record(s) handed over",
               err=True)  # fmt: skip
    if result.files_failed:
        sys.exit(1)
