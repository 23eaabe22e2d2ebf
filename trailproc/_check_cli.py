"""The `trailproc check` command (the checks themselves: `trailproc._ops.check`)."""

from __future__ import annotations

from typing import Any

import click

from ._config import ConfigError, load_config
from ._observe import configure_logging
from ._ops.check import Checker, Row, format_table

__all__ = ["check_command"]


@click.command("check")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="TOML (or Java .properties) file; default $TRAILPROC_CONFIG.",
)
@click.option("--queue-url", help="SQS queue with the trail's notifications.")
@click.option(
    "--bucket",
    "buckets",
    multiple=True,
    help="Trail bucket to test s3:GetObject/kms:Decrypt on (repeatable); default: allowed_buckets.",
)
@click.option("--key", help="One log file's key to read (default: found by listing the bucket).")
@click.option(
    "--checkpoint",
    metavar="SPEC",
    help="sqlite | sqlite:///PATH | memory | dynamodb://TABLE (?ttl_days=N)",
)
@click.option("--state-dir", metavar="DIR", help="Folder for the checkpoint database (.trailproc).")
@click.option("--region", help="AWS region.")
@click.option("--profile", help="AWS shared-config profile.")
@click.option(
    "--receive-probe",
    is_flag=True,
    help="Probe ReceiveMessage even when messages are waiting (adds one to the "
    "receive count of the message it sees; the message stays visible).",
)
@click.option(
    "--history",
    is_flag=True,
    help="Also probe cloudtrail:LookupEvents (what `trailproc history` needs).",
)
@click.option(
    "--audit-bucket",
    "audit_buckets",
    multiple=True,
    metavar="BUCKET",
    help="Also probe what `trailproc audit` needs on this bucket (repeatable).",
)
@click.option(
    "--redrive-from",
    metavar="DLQ_URL",
    help="Also probe what `trailproc redrive --from DLQ_URL` needs.",
)
@click.option(
    "--quarantine",
    metavar="DIR|s3://BUCKET/PREFIX/",
    help="The quarantine to probe (default: the `quarantine` setting).",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", type=click.Choice(["auto", "console", "json"]))
def check_command(
    *,
    config_path: str | None,
    buckets: tuple[str, ...],
    key: str | None,
    receive_probe: bool,
    history: bool,
    audit_buckets: tuple[str, ...] = (),
    redrive_from: str | None = None,
    **flags: Any,
) -> None:
    """Validate the configuration and try each permission the daemon needs.

    Prints a pass/fail table with the fix for each failure; exits 1 if any check failed.
    Never deletes or hides a message.
    """
    try:
        config = load_config(config_path, **flags)
    except ConfigError as exc:
        click.echo(format_table([Row("configuration", "fail", str(exc),
                                     "fix the named key in the file, TRAILPROC_* variable "
                                     "or flag")]))  # fmt: skip
        raise SystemExit(1) from None
    configure_logging(flags.get("log_level") or "warning", config.log_format)
    checker = Checker(config, buckets=buckets, key=key, receive_probe=receive_probe,
                      history=history)  # fmt: skip
    rows = checker.run()
    if audit_buckets or redrive_from:
        from ._ops.check_recovery import check_audit, check_redrive

        for bucket in audit_buckets:
            check_audit(checker, bucket)
        if redrive_from:
            check_redrive(checker, redrive_from)
    if config.quarantine:
        from ._ops.check_quarantine import check_quarantine

        check_quarantine(checker, config.quarantine)
    click.echo(f"trailproc check: queue {config.queue_url or '(none)'}")
    click.echo(format_table(rows))
    if any(r.status == "fail" for r in rows):
        raise SystemExit(1)
