"""`trailproc validate`: the `aws cloudtrail validate-logs` command, concurrent and scriptable."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
import structlog

from .._cli_common import TimeParam
from ._keys import KeyNotUsable, PublicKeyRing
from ._model import FileResult, ValidationReport, format_time
from ._validator import TrailArn, ValidationError, validate

__all__ = ["validate_command"]


class _Progress:
    """tqdm on stderr, only when stderr is a terminal."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=0, unit="file", desc="log files", file=sys.stderr, leave=False)

    def add_total(self, n: int) -> None:
        self.bar.total = (self.bar.total or 0) + n
        self.bar.refresh()

    def advance(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


@contextmanager
def _quiet_logging() -> Iterator[None]:
    """Unless the application configured structlog, send only warnings, to stderr.

    structlog's defaults print every level to stdout, which would corrupt `--json`; the
    temporary configuration is undone when the command ends.
    """
    if structlog.is_configured():
        yield
        return
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    try:
        yield
    finally:
        structlog.reset_defaults()


def _print_text(report: ValidationReport, verbose: bool) -> None:
    logs_by_digest: dict[str | None, list[FileResult]] = defaultdict(list)
    for lf in report.log_files:
        logs_by_digest[lf.digest_key].append(lf)

    def emit(result: FileResult) -> None:
        if not result.ok:
            click.echo(result.line(), err=True)
        elif verbose:
            click.echo(result.line())

    for digest in report.digests:
        emit(digest)
        for lf in logs_by_digest.pop(digest.key, []):
            emit(lf)
    for rest in logs_by_digest.values():
        for lf in rest:
            emit(lf)
    for gap in report.gaps:
        click.echo(gap.line(), err=True)
    for tail in report.missing_tails:
        click.echo(tail.line(), err=True)

    click.echo("")
    click.echo(
        f"Results requested for {format_time(report.requested_start)} to "
        f"{format_time(report.requested_end)}"
    )
    if not report.digests:
        click.echo("No digest files were found for this trail in the requested range")
        return
    click.echo(
        f"Results found for {format_time(report.found_start or report.requested_start)} to "
        f"{format_time(report.found_end or report.requested_end)}:"
    )
    click.echo("")
    for line in report.summary_lines():
        click.echo(line)


@click.command("validate")
@click.option("--trail-arn", required=True, help="ARN of the trail whose logs to validate.")
@click.option("--s3-bucket", required=True, help="Bucket the trail delivers to.")
@click.option("--s3-prefix", default="", help="The trail's S3 key prefix, if any.")
@click.option(
    "--account-id", default=None, help="Account whose logs to validate (default: the ARN's)."
)
@click.option(
    "--start-time", required=True, type=TimeParam(), help="ISO 8601 time or YYYY-MM-DD (UTC)."
)
@click.option(
    "--end-time", default=None, type=TimeParam(), help="ISO 8601 time or YYYY-MM-DD (default: now)."
)
@click.option(
    "--public-key-file",
    "public_key_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    metavar="PATH",
    help="PEM or DER public key (SPKI or PKCS#1); repeatable. Skips ListPublicKeys.",
)
@click.option(
    "--local-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    metavar="DIR",
    help="Read from a local mirror of the bucket (digest signatures in <file>.signature).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@click.option("--verbose", is_flag=True, help="Also print valid files.")
@click.option(
    "--max-workers",
    default=16,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Log files downloaded and hashed at once (threads; each holds one open S3 read).",
)
@click.option(
    "--trail-status/--no-trail-status",
    default=None,
    help="Ask CloudTrail GetTrailStatus when the trail last delivered a digest, to tell "
    "deleted trailing digests from a trail that stopped delivering (default: on, off with "
    "--local-dir). Without it, the hourly cadence and the clock decide.",
)
def validate_command(  # noqa: PLR0913 - click passes each command-line option as a keyword of its own
    *,
    trail_arn: str,
    s3_bucket: str,
    s3_prefix: str,
    account_id: str | None,
    start_time: dt.datetime,
    end_time: dt.datetime | None,
    public_key_files: tuple[str, ...],
    local_dir: str | None,
    as_json: bool,
    verbose: bool,
    max_workers: int,
    trail_status: bool | None,
) -> None:
    """Validate CloudTrail log files against their signed digest chain.

    Exit status: 0 when every digest and log file in range is valid, 1 when anything is
    invalid or missing (or nothing was found), 2 for usage errors. Digests missing after
    a chain's newest one (deleted from the end of the range) are named from the hourly
    cadence and, where it answers, GetTrailStatus.
    """
    try:
        TrailArn.parse(trail_arn)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--trail-arn") from None
    end = end_time or dt.datetime.now(dt.timezone.utc)
    if end < start_time:
        raise click.UsageError("--end-time is before --start-time")
    ring = _read_key_files(public_key_files)
    if not as_json:
        click.echo(
            f"Validating log files for trail {trail_arn} between {format_time(start_time)} "
            f"and {format_time(end)}"
        )
        click.echo("")

    def run(progress: _Progress | None) -> ValidationReport:
        return validate(
            trail_arn, s3_bucket, start_time, end, s3_prefix=s3_prefix, account_id=account_id,
            public_keys=ring, local_dir=local_dir, max_workers=max_workers, progress=progress,
            trail_status=trail_status,
        )  # fmt: skip

    report = _run_or_exit(run)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_text(report, verbose)
    sys.exit(0 if report.ok else 1)


def _read_key_files(paths: tuple[str, ...]) -> PublicKeyRing | None:
    """The `--public-key-file`s as one key ring; None when there are none (ask CloudTrail)."""
    if not paths:
        return None
    ring = PublicKeyRing.empty()
    for path in paths:
        try:
            with open(path, "rb") as f:
                ring.add(f.read())
        except KeyNotUsable as exc:
            raise click.BadParameter(f"{path}: {exc}", param_hint="--public-key-file") from None
    return ring


def _run_or_exit(run: Callable[[_Progress | None], ValidationReport]) -> ValidationReport:
    """Runs the validation with its logs quiet and a progress bar on a terminal; a
    `ValidationError` (nothing to validate, no access) is one line on stderr and exit 1."""
    progress = _Progress() if sys.stderr.isatty() else None
    try:
        with _quiet_logging():
            return run(progress)
    except ValidationError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        if progress is not None:
            progress.close()


if __name__ == "__main__":
    validate_command()
