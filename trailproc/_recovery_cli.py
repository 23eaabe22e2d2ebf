"""The `trailproc audit` and `trailproc redrive` commands (shells over `trailproc._audit`
and `trailproc._redrive`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from typing import Any

import click

from ._cli_common import (
    TimeParam,
    fail_cleanly,
    load_cli_config,
    processing_options,
    trail_options,
    trust_options,
)
from ._config import Config

__all__ = ["audit_command", "redrive_command"]


def _report(result: Any) -> None:
    """Human-readable audit report on stdout: one line per missing file."""
    for m in result.missing:
        when = m.delivered_at.strftime("%Y-%m-%dT%H:%MZ") if m.delivered_at else "?"
        where = "" if m.in_bucket else "  (listed by a digest, not in the bucket)"
        click.echo(f"MISSING {m.account_id or '?'} {m.region or '?'} {when} "
                   f"s3://{m.bucket}/{m.key}{where}")  # fmt: skip
    for error in result.digest_errors:
        click.echo(f"UNREADABLE DIGEST {error}", err=True)
    click.echo(
        f"{result.expected} file(s) expected ({result.digests_read} digest(s) read): "
        f"{result.handed_over} handed over, {len(result.missing)} missing",
        err=True,
    )


@click.command("audit")
@trail_options("every account in the bucket.")
@click.option(
    "--start-time",
    type=TimeParam(),
    required=True,
    help="First delivery time to check (UTC unless an offset is given).",
)
@click.option(
    "--end-time", type=TimeParam(), required=True, help="Delivery time to stop before (exclusive)."
)
@click.option(
    "--digests/--no-digests",
    default=True,
    show_default=True,
    help="Also expect every log file the range's digest files list.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.option(
    "--fix",
    is_flag=True,
    help="Hand the missing files over (same handlers, output, checkpoints as run).",
)
@click.option(
    "--enqueue",
    "enqueue_url",
    metavar="QUEUE_URL",
    help="With --fix: put one S3 event per missing file on this queue instead.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: when stderr is a terminal).",
)
@processing_options
@trust_options
@fail_cleanly
def audit_command(  # noqa: PLR0913 - click passes each command-line option as a keyword of its own
    *,
    bucket: str, prefix: str | None, account_ids: tuple[str, ...], regions: tuple[str, ...],
    start_time: dt.datetime, end_time: dt.datetime, digests: bool, as_json: bool, fix: bool,
    enqueue_url: str | None, progress: bool | None, config_path: str | None, **flags: Any,
) -> None:  # fmt: skip
    """Find log files of a time range that were never handed over (exit 1 if any)."""
    from ._audit import audit_async
    from ._roads.s3_listing import ListingQuery

    if enqueue_url and not fix:
        raise click.UsageError("--enqueue goes with --fix")
    config = load_cli_config(config_path, **flags)
    if fix and not enqueue_url and not (config.handlers or config.output):
        raise click.UsageError("--fix hands files over: give --handler or --output "
                               "(or --enqueue QUEUE_URL)")  # fmt: skip
    query = ListingQuery.build(bucket, prefix=prefix, account_ids=account_ids,
                               regions=regions, start=start_time, end=end_time)  # fmt: skip
    result = asyncio.run(audit_async(query, config, digests=digests, progress=progress))
    fixed = _fix(result, config, enqueue_url, progress) if fix and result.missing else {}
    if as_json:
        click.echo(json.dumps({**result.as_dict(), **({"fix": fixed} if fix else {})}))
    else:
        _report(result)
        if fixed:
            click.echo("fix: " + ", ".join(f"{k} {v}" for k, v in fixed.items()), err=True)
    if result.missing and not _all_fixed(result, fixed):
        sys.exit(1)


def _fix(
    result: Any, config: Config, enqueue_url: str | None, progress: bool | None
) -> dict[str, Any]:
    """`--fix`: the missing files still in the bucket handed over here, or queued for the
    workers with `--enqueue`; returns what was done, for the report."""
    from ._audit import enqueue_missing_async, fix_missing_async

    if enqueue_url:
        sent = asyncio.run(enqueue_missing_async(result.missing, enqueue_url, config))
        return {"enqueued": sent, "queue_url": enqueue_url}
    run = asyncio.run(fix_missing_async(result.missing, config, progress=progress))
    return {"handed_over": run.files_done, "failed": run.files_failed, "records": run.records}


def _all_fixed(result: Any, fixed: dict[str, Any]) -> bool:
    """--fix handed (or enqueued) every missing file still in the bucket, and no missing
    file is beyond repair. A fresh audit says whether handed-over files are done."""
    if not fixed or any(not m.in_bucket for m in result.missing):
        return False
    if "enqueued" in fixed:
        return bool(fixed["enqueued"] == len(result.missing))
    return not fixed["failed"] and fixed["handed_over"] == len(result.missing)


@click.command("redrive")
@click.option(
    "--from", "source", required=True, metavar="DLQ_URL", help="The dead-letter queue to empty."
)
@click.option(
    "--to",
    "destination",
    metavar="QUEUE_URL",
    help="Where to move them (default: the queue that dead-letters into it).",
)
@click.option(
    "--max",
    "max_messages",
    type=click.IntRange(min=1),
    help="Move at most this many (uses receive, send, delete).",
)
@click.option(
    "--method",
    type=click.Choice(["auto", "move-task", "copy"]),
    default="auto",
    show_default=True,
    help="SQS's message move task, receive/send/delete, or the first that works.",
)
@click.option(
    "--wait",
    "wait_seconds",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds to wait for a move task to finish.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="TOML (or Java .properties) file; default $TRAILPROC_CONFIG.",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]))
@fail_cleanly
def redrive_command(
    *,
    source: str, destination: str | None, max_messages: int | None, method: str,
    wait_seconds: float, as_json: bool, config_path: str | None, **flags: Any,
) -> None:  # fmt: skip
    """Move dead-lettered messages back to the queue (exit 1 unless all went well)."""
    from ._redrive import redrive_async

    config = load_cli_config(config_path, **flags)
    result = asyncio.run(redrive_async(
        source, config, to=destination, max_messages=max_messages, method=method,
        wait_seconds=wait_seconds,
    ))  # fmt: skip
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        where = result.destination or "their source queues"
        click.echo(f"{result.moved} message(s) moved from {result.source} to {where} "
                   f"({result.method}, {result.status})"
                   + (f": {result.failure}" if result.failure else ""))  # fmt: skip
    if not result.ok:
        sys.exit(1)
