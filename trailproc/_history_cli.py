"""`trailproc history`: CloudTrail's event history (`LookupEvents`) to the handlers."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from typing import Any

import click

from ._cli_common import TimeParam, fail_cleanly, load_cli_config, processing_options
from ._roads.history import (
    HistoryResult,
    HistoryWindow,
    history_async,
    parse_lookup_attribute,
)

__all__ = ["history_command"]


def _attribute(values: tuple[str, ...]) -> dict[str, str] | None:
    if not values:
        return None
    if len(values) > 1:
        raise click.UsageError("LookupEvents takes one --lookup-attribute per run")
    try:
        return parse_lookup_attribute(values[0])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@click.command("history")
@click.option(
    "--start-time",
    type=TimeParam(),
    required=True,
    help="Oldest event time to include (UTC unless an offset is given).",
)
@click.option("--end-time", type=TimeParam(), required=True, help="Newest event time to include.")
@click.option(
    "--lookup-attribute",
    "lookup_attributes",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only events with this attribute, e.g. EventName=ConsoleLogin (one; keys: "
    "EventId, EventName, ReadOnly, Username, ResourceType, ResourceName, "
    "EventSource, AccessKeyId).",
)
@click.option(
    "--region",
    "regions",
    multiple=True,
    metavar="REGION",
    help="Region to read (repeatable); default: the configured region.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar (default: when stderr is a terminal).",
)
@processing_options
@fail_cleanly
def history_command(
    *,
    start_time: dt.datetime,
    end_time: dt.datetime,
    lookup_attributes: tuple[str, ...],
    regions: tuple[str, ...],
    progress: bool | None,
    config_path: str | None,
    handlers: tuple[str, ...],
    **flags: Any,
) -> None:
    """Hand the 90-day event history (LookupEvents) to the handlers, 2 requests/s per
    region; a rerun of the same command resumes where the last one stopped."""  # fmt: skip
    from ._app import install_signal_handlers

    attribute = _attribute(lookup_attributes)
    if start_time >= end_time:
        raise click.UsageError("--start-time must be before --end-time")
    window = HistoryWindow(start_time, end_time, attribute)
    config = load_cli_config(config_path, handlers=handlers, **flags)

    async def main() -> HistoryResult:
        stopping = asyncio.Event()
        install_signal_handlers(stopping)
        return await history_async(config, window=window, regions=regions,
                                   progress=progress, stopping=stopping)  # fmt: skip

    result = asyncio.run(main())
    click.echo(
        f"{result.pages} page(s): {result.records} record(s) handed over, "
        f"{result.pages_skipped} page(s) already done"
        + (f"; {len(result.regions_already_done)} region(s) done before"
           if result.regions_already_done else "")
        + "".join(f"; {region} failed: {why}" for region, why in result.failed.items())
        + (" - interrupted (run again to resume)" if result.interrupted else ""),
        err=True,
    )  # fmt: skip
    if not result.ok:
        sys.exit(1)
