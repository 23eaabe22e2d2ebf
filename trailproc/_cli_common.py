"""What every `trailproc` subcommand shares: options, config loading, clean failures.

A module of its own (not `cli`) so that feature modules defining commands (backfill,
validate, check) can use it without importing the command group.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

import click

from ._config import Config, ConfigError, load_config, warn_unknown_env
from ._errors import CheckpointError, SetupError
from ._observe import configure_logging
from ._timeparse import parse_time, parse_time_or_ago

__all__ = [
    "FilterTimeParam",
    "TimeParam",
    "fail_cleanly",
    "filter_options",
    "load_cli_config",
    "processing_options",
    "trust_options",
]


class TimeParam(click.ParamType):
    """A click type for `--start-time` and friends (see `timeparse.parse_time`)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dt.datetime):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class FilterTimeParam(click.ParamType):
    """`--since`/`--until`: a time or an age (`24h`), fixed once as an ISO 8601 text so
    that every worker process of one command filters on the same instant."""

    name = "TIME|AGE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return parse_time_or_ago(str(value)).isoformat()
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


_FILTER_OPTIONS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "event_source": click.option(
        "--event-source", "filter_event_sources", multiple=True, metavar="GLOB",
        help="Only records whose eventSource matches (glob, case-sensitive; repeatable)."),
    "event_name": click.option(
        "--event-name", "filter_event_names", multiple=True, metavar="GLOB",
        help="Only records whose eventName matches, e.g. 'Delete*' (repeatable)."),
    "account_id": click.option(
        "--account-id", "filter_account_ids", multiple=True, metavar="GLOB",
        help="Only records of this account: recipientAccountId (repeatable)."),
    "region": click.option(
        "--region", "filter_regions", multiple=True, metavar="GLOB",
        help="Only records whose awsRegion matches (repeatable). Not the AWS client's "
             "region: that is AWS_REGION or the region setting."),
    "error_code": click.option(
        "--error-code", "filter_error_codes", multiple=True, metavar="GLOB",
        help="Only failed calls whose errorCode matches, e.g. 'AccessDenied*' (repeatable)."),
    "errors_only": click.option(
        "--errors-only", "filter_errors_only", is_flag=True, default=None,
        help="Only failed calls (records with an errorCode)."),
    "since": click.option(
        "--since", "filter_since", type=FilterTimeParam(),
        help="Only records with eventTime at or after this: ISO 8601 or an age (24h, 7d)."),
    "until": click.option(
        "--until", "filter_until", type=FilterTimeParam(),
        help="Only records with eventTime before this: ISO 8601 or an age (1h)."),
}  # fmt: skip


def filter_options(func: Callable[..., Any] | None = None, *, omit: tuple[str, ...] = ()) -> Any:
    """The record filter flags (`--event-name 'Delete*'`, `--since 24h`, ...).

    They land in the `filter_*` settings through `load_cli_config`, and every pipeline
    built from that configuration applies them (`trailproc._pipeline.filters`), so a
    command needs only this decorator. `omit` leaves out flags the command already has
    with another meaning, e.g. `@filter_options(omit=("account_id", "region"))` where
    those select S3 folders.
    """

    unknown = set(omit) - set(_FILTER_OPTIONS)
    if unknown:
        raise ValueError(f"filter_options(omit=...): no filter option {sorted(unknown)[0]!r}")

    def decorate(target: Callable[..., Any]) -> Callable[..., Any]:
        for name, option in reversed(_FILTER_OPTIONS.items()):
            if name not in omit:
                target = option(target)
        return target

    return decorate(func) if func is not None else decorate


def processing_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command that hands events to handlers shares."""
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="PATH",
                     help="TOML (or Java .properties) file; default $TRAILPROC_CONFIG."),
        click.option("--handler", "handlers", multiple=True, metavar="MODULE:ATTR",
                     help="Processor or handler registry to load (repeatable), or an entry "
                          "point name in the 'trailproc.handlers' group."),
        click.option("--output", metavar="PATH|-",
                     help="Write each record as one line of JSON to PATH ('-' = stdout): "
                          "`process` replaces PATH unless --append; `run` and `backfill` "
                          "append to it."),
        click.option("--quarantine", metavar="DIR|s3://BUCKET/PREFIX/",
                     help="Keep a record whose handler raises (non-transient) here and "
                          "hand over the rest of its file; default: the file fails."),
        click.option("--max-events-per-emit", type=int, help="Most events per process() call."),
        click.option("--state-dir", metavar="DIR",
                     help="Folder for the checkpoint database (.trailproc)."),
        click.option("--checkpoint", metavar="SPEC",
                     help="sqlite | sqlite:///PATH | memory | dynamodb://TABLE (?ttl_days=N)"),
        click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"])),
        click.option("--log-format", type=click.Choice(["auto", "console", "json"])),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def trail_options(accounts: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--bucket, --prefix, --account-id and --region: where the commands that list a
    trail's bucket look; `accounts` ends the help of --account-id (its default)."""
    options = [
        click.option("--bucket", required=True, help="The trail's S3 bucket."),
        click.option("--prefix", help="The trail's S3 key prefix (the part before AWSLogs/)."),
        click.option("--account-id", "account_ids", multiple=True, metavar="ACCOUNT",
                     help=f"Only this account (repeatable); default: {accounts}"),
        click.option("--region", "regions", multiple=True, metavar="REGION",
                     help="Only this region (repeatable); default: every region found."),
    ]  # fmt: skip

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def trust_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The allow-list flags of the commands that read buckets or queues (repeatable; an
    empty value is an error, never "allow any")."""
    options = [
        click.option("--allowed-bucket", "allowed_buckets", multiple=True, metavar="BUCKET",
                     help="Read log files only from this bucket (repeatable)."),
        click.option("--allowed-account", "allowed_accounts", multiple=True, metavar="ACCOUNT",
                     help="Accept log files and records only of this account (repeatable)."),
        click.option("--allowed-topic-arn", "allowed_topic_arns", multiple=True, metavar="ARN",
                     help="Accept SNS notifications only from this topic (repeatable)."),
        click.option("--verify-sns-signatures", is_flag=True, default=None,
                     help="Check every SNS envelope's signature (see docs/security.md)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def load_cli_config(config_path: str | None, **flags: Any) -> Config:
    """The configuration from file, environment and flags; a bad value is a usage error."""
    for name, value in flags.items():
        if isinstance(value, tuple):  # repeatable options: not given means not set
            flags[name] = list(value) or None
    try:
        config = load_config(config_path, **flags)
    except ConfigError as exc:
        raise click.UsageError(f"invalid configuration: {exc}") from None
    configure_logging(config.log_level, config.log_format)
    warn_unknown_env()
    return config


def fail_cleanly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into one clear line and exit 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, KeyboardInterrupt):
            raise
        except (ValueError, OSError, SetupError, CheckpointError) as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            if type(exc).__module__.startswith(("botocore", "aiobotocore")):
                raise click.ClickException(f"AWS error: {exc}") from None
            raise

    return wrapper
