"""The `trailproc backfill` command (see `trailproc._backfill` for what it does)."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from typing import Any

import click

from ._app import install_signal_handlers
from ._backfill import BackfillJob, BackfillResult, backfill_async, enqueue_backfill_async
from ._cli_common import (
    TimeParam,
    fail_cleanly,
    filter_options,
    load_cli_config,
    processing_options,
    trail_options,
    trust_options,
)
from ._config import Config
from ._enqueue import EnqueueResult
from ._restore import RestoreSettings

__all__ = ["backfill_command"]


@click.command("backfill")
@trail_options("every account in the bucket, organization trails included.")
@click.option(
    "--start-time",
    type=TimeParam(),
    help="First delivery time to include (UTC unless an offset is given).",
)
@click.option(
    "--end-time",
    type=TimeParam(),
    help="Time to stop before (exclusive); files delivered up to late_delivery_minutes "
    "(15) later are read too, as they can hold events from before it.",
)
@click.option(
    "--late-delivery-minutes",
    type=click.FloatRange(min=0, max=1440),
    help="Minutes after --end-time whose deliveries are read too (default 15; 0: select "
    "files by delivery time only).",
)
@click.option(
    "--restore-days",
    type=click.IntRange(min=1),
    metavar="N",
    help="Request a restore (N days) of archived files (Glacier classes) and process them "
    "once readable; the command waits for the restores (hours).",
)
@click.option("--restore-poll-seconds", type=click.FloatRange(min=0.1), default=300.0,
              show_default=True, help="Seconds between checks of pending restores.")  # fmt: skip
@click.option("--insights", is_flag=True, help="Also process CloudTrail Insights files.")
@click.option(
    "--force",
    is_flag=True,
    help="Process files again even if done before (fresh checkpoint namespace).",
)
@click.option(
    "--namespace",
    metavar="NAME",
    help="Keep this replay's progress under NAME (run again with it to resume).",
)
@click.option("--concurrency", type=click.IntRange(min=1), help="Files in flight at once.")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: when stderr is a terminal).",
)
@click.option(
    "--verify-digests/--no-verify-digests",
    default=None,
    help="Also list the range's digest files and check each processed log file against "
    "its hash (default: the verify_digests setting). A mismatch exits 1.",
)
@click.option(
    "--enqueue",
    "enqueue_url",
    metavar="QUEUE_URL",
    help="Do not process: queue one S3-event message per file not done yet, for "
    "`trailproc run` workers sharing this checkpoint store (--force: every file).",
)
@processing_options
@trust_options
@filter_options(omit=("account_id", "region"))  # --account-id/--region select folders here
@fail_cleanly
def backfill_command(  # noqa: PLR0913 - click passes each command-line option as a keyword of its own
    *,
    bucket: str,
    prefix: str | None,
    account_ids: tuple[str, ...],
    regions: tuple[str, ...],
    start_time: dt.datetime | None,
    end_time: dt.datetime | None,
    insights: bool,
    force: bool,
    namespace: str | None,
    concurrency: int | None,
    config_path: str | None,
    handlers: tuple[str, ...],
    progress: bool | None,
    verify_digests: bool | None,
    enqueue_url: str | None,
    restore_days: int | None,
    restore_poll_seconds: float,
    **flags: Any,
) -> None:
    """Process log files already in a bucket (history loads, replays, new handlers)."""

    config = load_cli_config(config_path, handlers=handlers, verify_digests=verify_digests, **flags)
    restore = (
        RestoreSettings(restore_days, poll_seconds=restore_poll_seconds) if restore_days else None
    )
    job = BackfillJob(
        bucket, prefix=prefix, account_ids=account_ids, regions=regions,
        start_time=start_time, end_time=end_time, insights=insights, force=force,
        namespace=namespace, concurrency=concurrency, restore=restore,
    )  # fmt: skip
    if enqueue_url:
        if namespace or restore_days:
            raise click.UsageError("--namespace and --restore-days do not apply to "
                                   "--enqueue: the workers read the files")  # fmt: skip
        _enqueue(job, config, enqueue_url, progress)
        return
    _backfill(job, config, progress)


def _enqueue(job: BackfillJob, config: Config, queue_url: str, progress: bool | None) -> None:
    """`--enqueue`: one message per file for the workers; exit 1 if any was not queued."""

    async def enqueue() -> EnqueueResult:
        stopping = asyncio.Event()
        install_signal_handlers(stopping)
        return await enqueue_backfill_async(
            job, config, queue_url, progress=progress, stopping=stopping
        )

    queued = asyncio.run(enqueue())
    click.echo(f"{queued.listed} file(s) listed: {queued.sent} queued, "
               f"{queued.skipped_done} already done, {len(queued.unsent)} not queued",
               err=True)  # fmt: skip
    if not queued.ok:
        sys.exit(1)


def _backfill(job: BackfillJob, config: Config, progress: bool | None) -> None:
    """Processes the files here, then one summary on stderr; exit 1 unless all went well."""

    async def main() -> BackfillResult:
        stopping = asyncio.Event()
        install_signal_handlers(stopping)
        return await backfill_async(job, config, progress=progress, stopping=stopping)

    result = asyncio.run(main())  # errors become one clean line via @fail_cleanly
    click.echo(
        f"{result.listed} file(s) listed: {result.files_done} processed, "
        f"{result.files_skipped} already done, {result.files_failed} failed; "
        f"{result.records} record(s) handed over"
        + (f" (checkpoint namespace {result.namespace})" if result.namespace else "")
        + (" - interrupted" if result.interrupted else "")
        + (
            f"; {len(result.unrestored)} file(s) still being restored (run again)"
            if result.unrestored
            else ""
        ),
        err=True,
    )
    if config.verify_digests:
        click.echo(
            f"{result.digests_listed} of them digest file(s): "
            f"{result.digest_matches + result.digest_mismatches} log file(s) checked, "
            f"{result.digest_mismatches} not matching their digest",
            err=True,
        )
    if not result.ok:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    backfill_command()
