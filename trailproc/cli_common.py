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

from .config import Config, ConfigError, load_config
from .errors import SetupError
from .observe import configure_logging
from .timeparse import parse_time

__all__ = ["TimeParam", "fail_cleanly", "load_cli_config", "processing_options"]


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


def processing_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command that hands events to handlers shares."""
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False), metavar="PATH",
                     help="TOML (or Java .properties) file; default $TRAILPROC_CONFIG."),
        click.option("--handler", "handlers", multiple=True, metavar="MODULE:ATTR",
                     help="Processor or handler registry to load (repeatable), or an entry "
                          "point name in the 'trailproc.handlers' group."),
        click.option("--output", metavar="PATH|-",
                     help="Append each record as one line of JSON to PATH ('-' = stdout)."),
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


def load_cli_config(config_path: str | None, **flags: Any) -> Config:
    """The configuration from file, environment and flags; a bad value is a usage error."""
    handlers = flags.pop("handlers", ())
    if handlers:
        flags["handlers"] = list(handlers)
    try:
        config = load_config(config_path, **flags)
    except ConfigError as exc:
        raise click.UsageError(f"invalid configuration: {exc}") from None
    configure_logging(config.log_level, config.log_format)
    return config


def fail_cleanly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures into one clear line and exit 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, KeyboardInterrupt):
            raise
        except (ValueError, OSError, SetupError) as exc:
            raise click.ClickException(str(exc)) from None
        except Exception as exc:
            if type(exc).__module__.startswith(("botocore", "aiobotocore")):
                raise click.ClickException(f"AWS error: {exc}") from None
            raise

    return wrapper
