"""The `trailproc` command: thin shells over the library (see `trailproc._app`)."""

from __future__ import annotations

import asyncio
import atexit
import gc
import sys
from typing import Any

import click

from ._cli_common import (
    fail_cleanly,
    filter_options,
    load_cli_config,
    processing_options,
    trust_options,
)
from ._observe import configure_logging, get_logger

log = get_logger("trailproc.cli")


class _LazyGroup(click.Group):
    """Commands that live with their feature are imported only when named (or listed),
    so `trailproc run` does not pay for cryptography, S3 listings or the ops checks."""

    lazy = {
        "validate": ("trailproc.integrity._cli", "validate_command"),
        "backfill": ("trailproc._backfill_cli", "backfill_command"),
        "check": ("trailproc._check_cli", "check_command"),
        "watch": ("trailproc._watch_cli", "watch_command"),
        "audit": ("trailproc._recovery_cli", "audit_command"),
        "redrive": ("trailproc._recovery_cli", "redrive_command"),
        "history": ("trailproc._history_cli", "history_command"),
        "quarantine": ("trailproc._quarantine_cli", "quarantine_command"),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            import importlib

            module, attr = self.lazy[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="trailproc")
def main() -> None:
    """Process AWS CloudTrail log deliveries: SQS → S3 → your handlers."""
    # Registered first, so it runs after every other exit handler: objects still alive
    # then are left to the OS instead of being walked by the interpreter's final garbage
    # collections, which take ~0.2 s once botocore's service models are loaded. Output
    # and stores are closed explicitly before this; only finalizers of objects caught in
    # reference cycles are skipped, which Python never promises to run at exit anyway.
    atexit.unregister(gc.freeze)  # once, however often the group is invoked in-process
    atexit.register(gc.freeze)


@main.command()
@processing_options
@trust_options
@filter_options
@click.option("--queue-url", help="SQS queue with the trail's notifications.")
@click.option("--visibility-timeout", type=int, help="Seconds; extended while working.")
@click.option("--wait-time", "wait_time_seconds", type=int, help="Long-poll seconds (0-20).")
@click.option("--exit-when-idle", is_flag=True, default=None,
              help="Exit 0 once the queue is empty and nothing is in flight.")  # fmt: skip
@click.option("--delete-on-failure", is_flag=True, default=None,
              help="Delete messages even when processing failed (not recommended).")  # fmt: skip
@click.option("--shutdown-timeout", type=float, help="Seconds to finish work on SIGTERM.")
@click.option("--max-decompressed-bytes", type=int, help="Fail files inflating beyond this.")
@click.option("--dlq-url", help="Queue to move poison messages to (with --max-receive-count).")
@click.option("--max-receive-count", type=int, help="Receives before a failing message moves.")
@click.option("--verify-digests", is_flag=True, default=None,
              help="Check each log file against its hourly digest as both arrive.")  # fmt: skip
@click.option("--metrics-port", type=int, help="Serve Prometheus /metrics on this port.")
@click.option("--health-port", type=int, help="Serve /livez and /readyz on this port.")
@click.option("--ops-bind", help="Address for those ports (0.0.0.0 in a container).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes sharing the queue and the checkpoint store.")  # fmt: skip
@fail_cleanly
def run(config_path: str | None, workers: int, **flags: Any) -> None:
    """Poll SQS and hand every CloudTrail record to the handlers (daemon).

    Exits 0 when stopped by a signal with nothing abandoned (or idle with
    --exit-when-idle), 75 when the shutdown deadline abandoned a batch still in a
    handler (it may be handed over again), 1 on an error.
    """
    config = load_cli_config(config_path, **flags)
    if not config.queue_url:
        raise click.UsageError("no queue: give --queue-url or set TRAILPROC_QUEUE_URL")
    if workers > 1:
        from ._parallel import run_workers

        result: Any = run_workers(config, workers)
        failed_workers = sum(1 for code in result.exit_codes if code)
        if failed_workers:
            raise click.ClickException(f"{failed_workers} of {workers} workers failed")
    else:
        # Start-up (the SDK's imports, its service models) allocates about a million
        # objects that live as long as the process; the collections they trigger find
        # nothing to free and cost ~25 ms of CPU. The daemon collects again once its
        # clients exist (`_app.startup_over`).
        gc.disable()
        from ._app import run as run_daemon

        result = run_daemon(config=config)
    if result.files_failed:
        log.warning("some files failed; their messages stay on the queue for retry",
                    failed=result.files_failed)  # fmt: skip
    if result.abandoned_batches:
        from ._app import EXIT_ABANDONED, exit_if_stuck

        exit_if_stuck(result)
        sys.exit(EXIT_ABANDONED)


class JobsParam(click.ParamType):
    """`--jobs`: a number of processes (at least 1), or `auto`."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        try:
            number = int(text)
        except ValueError:
            self.fail(f"{value!r} is neither a number of processes nor 'auto'", param, ctx)
        if number < 1:
            self.fail(f"{number} is not a number of processes (at least 1)", param, ctx)
        return number


JOBS = JobsParam()


@main.command()
@processing_options
@filter_options
@click.option("--jobs", type=JOBS, default="auto", show_default=True,
              help="Processes to spread the files over, or 'auto': one per core when "
                   "--output is a file, no --handler is given and there are at least "
                   "16 MB of files; else one (which keeps the files' order).")  # fmt: skip
@click.option("--append", is_flag=True,
              help="Append to the --output file instead of replacing it.")  # fmt: skip
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@fail_cleanly
def process(
    paths: tuple[str, ...],
    config_path: str | None,
    jobs: int | str,
    append: bool,
    **flags: Any,
) -> None:
    """Run local log files or folders through the handlers (no AWS needed).

    Files are read by content, whatever their names: every CloudTrail shape (the
    {"Records": [...]} delivery, gzip or not, arrays, single records, NDJSON,
    EventBridge events, LookupEvents items, Firehose objects of CloudWatch Logs
    documents). Inside folders, hidden and binary files are skipped; the summary names
    every file skipped or failed.

    --output PATH is replaced unless --append is given (`run` always appends).
    """
    from ._allocator import reuse_freed_memory
    from ._pipeline.processor import OutputClosed

    reuse_freed_memory()  # a batch command owns its process; inherited by forked --jobs
    config = load_cli_config(config_path, **flags)
    result: Any
    if jobs == "auto":
        from ._parallel import auto_jobs

        jobs = auto_jobs(paths, config)
    try:
        if int(jobs) > 1:
            from ._parallel import process_parallel

            result = process_parallel(paths, config, int(jobs), append_output=append)
        else:
            from ._app import process_paths

            result = process_paths(paths, config=config, append_output=append)
    except OutputClosed:
        sys.exit(0)  # the reader of stdout went away, as `cat` ends in a pipe
    _echo_summary(result)
    if result.files_failed:
        sys.exit(1)


def _echo_summary(result: Any) -> None:
    """One line of counts, then one line per file failed or skipped (on stderr)."""
    skipped = list(result.skipped_files)
    filtered = result.records_filtered
    click.echo(
        f"{result.files_ok} file(s), {result.records} record(s) handed over, "
        f"{result.files_failed} file(s) failed"
        + (f", {filtered} record(s) filtered out" if filtered else "")
        + (f", {len(skipped)} skipped" if skipped else ""),
        err=True,
    )
    for failure in result.failed_files:
        if isinstance(failure, dict):  # from `--jobs` processes
            key, message = failure.get("key"), failure.get("message")
        else:
            key = failure.ref.key
            message = failure.error.message if failure.error else failure.status
        click.echo(f"  failed:  {key}: {message}", err=True)
    for entry in skipped:
        click.echo(f"  skipped: {entry.path}: {entry.reason}", err=True)


@main.command()
@click.option("--files", default=4, show_default=True, help="Log files to deliver.")
@click.option("--records", default=25, show_default=True, help="Records per file.")
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]), default="auto")
@fail_cleanly
def demo(files: int, records: int, log_format: str) -> None:
    """Start a local moto server, deliver sample CloudTrail logs, process them."""
    from ._demo import run_demo

    configure_logging("warning", log_format)
    sys.exit(asyncio.run(run_demo(files=files, records=records, echo=click.echo)))


if __name__ == "__main__":  # pragma: no cover
    main()
