"""`trailproc quarantine list|replay`: look at quarantined records, send them back."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from ._cli_common import fail_cleanly, load_cli_config, processing_options
from ._config import Config
from ._observe import get_logger

__all__ = ["quarantine_command"]

log = get_logger("trailproc.quarantine")


def _store(config: Config) -> Any:
    from ._pipeline.quarantine import open_quarantine
    from ._runtime import quarantine_s3_client

    if not config.quarantine:
        raise click.UsageError("no quarantine: give --quarantine or set TRAILPROC_QUARANTINE")
    try:
        return open_quarantine(config.quarantine, lambda: quarantine_s3_client(config))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _entries(store: Any) -> list[tuple[str, Any]]:
    """Every readable entry; an unreadable one is logged and left where it is."""
    from ._pipeline.quarantine import QuarantinedRecord

    found = []
    for name in store.names():
        try:
            found.append((name, QuarantinedRecord.from_json(store.get(name))))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("unreadable quarantine entry left in place", entry=name,
                      quarantine=store.location, error=str(exc))  # fmt: skip
    return found


@click.group("quarantine")
def quarantine_command() -> None:
    """Records a handler raised on, kept by the `quarantine` setting."""


@quarantine_command.command("list")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="PATH",
              help="TOML (or Java .properties) file; default $TRAILPROC_CONFIG.")  # fmt: skip
@click.option("--quarantine", metavar="DIR|s3://BUCKET/PREFIX/", help="The quarantine to read.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]))
@fail_cleanly
def list_command(config_path: str | None, as_json: bool, **flags: Any) -> None:
    """Show each quarantined record: where it came from and the error it raised."""
    store = _store(load_cli_config(config_path, **flags))
    entries = _entries(store)
    for name, entry in entries:
        if as_json:
            row = {k: v for k, v in vars(entry).items() if k != "raw"}
            click.echo(json.dumps({"entry": name, **row, "raw_bytes": len(entry.raw)}))
        else:
            where = f"s3://{entry.bucket}/{entry.key}" if entry.bucket else entry.key
            click.echo(f"{entry.quarantined_at}  {where}  record {entry.index}  "
                       f"event {entry.event_id or '-'}  {entry.error_type}: "
                       f"{entry.error_message}")  # fmt: skip
    if not as_json:
        click.echo(f"{len(entries)} record(s) in {store.location}", err=True)


@dataclass
class ReplayResult:
    replayed: list[str] = field(default_factory=list)
    still_failing: list[str] = field(default_factory=list)


@quarantine_command.command("replay")
@processing_options
@fail_cleanly
def replay_command(config_path: str | None, **flags: Any) -> None:
    """Hand quarantined records to the handlers again; those that pass are removed.

    Handlers load as for `run` (--handler, --output, the config file). A record that
    still raises stays in the quarantine; the command then exits 1.
    """
    config = load_cli_config(config_path, **flags)
    store = _store(config)
    result = asyncio.run(replay(config, store))
    click.echo(f"{len(result.replayed)} record(s) handed over and removed, "
               f"{len(result.still_failing)} still failing", err=True)  # fmt: skip
    if result.still_failing:
        sys.exit(1)


async def replay(config: Config, store: Any) -> ReplayResult:
    """Each entry goes to the handlers as a batch of one; removed once they returned."""
    from ._pipeline.processor import Dispatcher, maybe_await
    from ._runtime import build_processor

    entries = await asyncio.to_thread(_entries, store)
    user = build_processor(config)
    dispatch = Dispatcher(user, in_thread=config.handlers_in_thread)
    result = ReplayResult()
    bar = _progress_bar(len(entries))
    await maybe_await(user.start())
    try:
        for name, entry in entries:
            await _replay_one(name, entry, dispatch, store, result)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        dispatch.shutdown()
        await maybe_await(user.close())
    return result


def _progress_bar(total: int) -> Any:
    """A tqdm bar on a terminal; None otherwise (tqdm starts a monitor thread even for a
    disabled bar)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="record", desc="replay", file=sys.stderr)


async def _replay_one(
    name: str, entry: Any, dispatch: Any, store: Any, result: ReplayResult
) -> None:
    from ._pipeline.events import Delivery, Event
    from ._pipeline.keys import FileRef

    ref = FileRef.of(entry.bucket, entry.key, etag=entry.etag)
    event = Event(entry.raw, Delivery(ref, entry.message_id), entry.index)
    where = {"bucket": entry.bucket, "key": entry.key, "index": entry.index, "entry": name}
    try:
        await dispatch([event])
    except Exception as exc:
        log.error("quarantined record still fails; kept", **where,
                  error=f"{type(exc).__name__}: {exc}")  # fmt: skip
        result.still_failing.append(name)
        return
    await asyncio.to_thread(store.remove, name)
    log.info("quarantined record handed over and removed", **where)
    result.replayed.append(name)
