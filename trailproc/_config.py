"""One typed configuration, loaded from a TOML file, TRAILPROC_* variables, CLI flags or Python.

Precedence, lowest first: defaults < config file < environment < explicit overrides (CLI
flags or keyword arguments). The Java CloudTrail Processing Library's `.properties` keys
are accepted too, so a migration can start from the old file unchanged.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

from ._memory import (
    DOWNLOAD_SHARE,
    DOWNLOADS_RANGE,
    MESSAGE_SHARE,
    MESSAGES_RANGE,
    InFlightLimits,
    budget_bytes,
    limits_for_budget,
)

__all__ = ["Config", "ConfigError", "load_config", "unknown_env", "warn_unknown_env"]

ENV_PREFIX = "TRAILPROC_"

Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[int, msgspec.Meta(ge=0, le=43200)]


class ConfigError(ValueError):
    """Invalid configuration; the message names the offending key."""


def _doc(text: str) -> msgspec.Meta:
    return msgspec.Meta(description=text)


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every setting trailproc reads. Field docs feed the generated configuration reference."""

    # --- where ---------------------------------------------------------------------------
    queue_url: Annotated[str | None, _doc("SQS queue receiving the notifications.")] = None
    region: Annotated[
        str | None, _doc("AWS region; default: the standard chain (AWS_REGION, profile).")
    ] = None
    profile: Annotated[str | None, _doc("AWS shared-config profile (like AWS_PROFILE).")] = None
    endpoint_url: Annotated[
        str | None, _doc("Endpoint override for every service; AWS_ENDPOINT_URL also works.")
    ] = None

    # --- regions and access (organisation buckets) ----------------------------------------
    sqs_region: Annotated[
        str | None, _doc("Region of the SQS client; default: the one in queue_url, else region.")
    ] = None
    s3_region: Annotated[
        str | None,
        _doc(
            "Region of every S3 client; default: each bucket's own region. Reading "
            "objects, S3's redirect names it on the first read and it is remembered; "
            "listing (backfill, watch) asks once (HeadBucket) and caches it."
        ),
    ] = None
    assume_role_by_bucket: Annotated[
        dict[str, str],
        _doc(
            "Role ARN to assume (STS, refreshed before expiry) to read a bucket: "
            "{bucket = arn} in the config file."
        ),
    ] = msgspec.field(default_factory=dict)
    assume_role_by_account: Annotated[
        dict[str, str],
        _doc(
            "Role ARN to assume to read the log files of an account (by the account in "
            "the key), when its bucket has none in assume_role_by_bucket."
        ),
    ] = msgspec.field(default_factory=dict)
    requester_pays_buckets: Annotated[
        list[str], _doc("Buckets read with RequestPayer=requester (requester pays).")
    ] = msgspec.field(default_factory=list)
    bucket_owners: Annotated[
        dict[str, str],
        _doc(
            "Expected owner account of a bucket ({bucket = account}): every request "
            "sends ExpectedBucketOwner, so a look-alike bucket elsewhere is refused."
        ),
    ] = msgspec.field(default_factory=dict)
    late_delivery_minutes: Annotated[
        float,
        msgspec.Meta(
            ge=0,
            le=1440,
            description="Minutes after an event-time range's end whose deliveries "
            "are still read: CloudTrail delivers an event within about 15 minutes.",
        ),
    ] = 15.0

    # --- receiving -----------------------------------------------------------------------
    visibility_timeout: Annotated[
        Seconds, _doc("Seconds a received message stays hidden; extended while working.")
    ] = 60
    wait_time_seconds: Annotated[
        int, msgspec.Meta(ge=0, le=20, description="SQS long-poll wait per receive.")
    ] = 20
    max_messages_per_receive: Annotated[
        int, msgspec.Meta(ge=1, le=10, description="Messages asked for per ReceiveMessage.")
    ] = 10
    max_in_flight_messages: Annotated[
        Positive | None,
        _doc(
            "Messages being worked on at once; one waiting only for its delete does not "
            f"count. Unset: one per {MESSAGE_SHARE >> 20} MiB of the process's memory "
            f"budget, {MESSAGES_RANGE[0]} to {MESSAGES_RANGE[1]} (16 with the default "
            "1 GiB budget; docs/memory.md)."
        ),
    ] = None
    download_concurrency: Annotated[
        Positive | None,
        _doc(
            f"Concurrent S3 GetObject calls. Unset: one per {DOWNLOAD_SHARE >> 20} MiB of "
            f"the process's memory budget, {DOWNLOADS_RANGE[0]} to {DOWNLOADS_RANGE[1]} "
            "(8 with the default 1 GiB budget; docs/memory.md)."
        ),
    ] = None
    delete_linger_seconds: Annotated[
        float,
        msgspec.Meta(
            ge=0,
            le=10,
            description="Seconds a processed message's delete waits for others to share "
            "its DeleteMessageBatch call; it goes at once when nothing else is in progress.",
        ),
    ] = 0.05
    direct_requests: Annotated[
        bool,
        _doc(
            "After the SDK's first GetObject of a bucket (ReceiveMessage, DeleteMessageBatch "
            "of a queue), send the next ones signed by the SDK straight on its HTTP session, "
            "skipping botocore's per-request pipeline (~1 ms of CPU each); anything but a 200 "
            "is asked again through the SDK. false: every request takes the whole pipeline."
        ),
    ] = True
    process_kinds: Annotated[
        list[Literal["log", "insight", "digest", "other"]],
        _doc("Object kinds handed to user code; others are skipped with a reason."),
    ] = msgspec.field(default_factory=lambda: ["log", "insight"])

    # --- handing over --------------------------------------------------------------------
    max_events_per_emit: Annotated[Positive, _doc("Most events per process() call.")] = 100
    max_decompressed_bytes: Annotated[
        Positive, _doc("A log file inflating beyond this fails (gzip-bomb guard).")
    ] = 1 << 30
    memory_budget_mb: Annotated[
        Annotated[int, msgspec.Meta(ge=64)] | None,
        msgspec.Meta(
            description="Memory (MiB) the files in work may hold at once: downloads, "
            "decompressed bytes and records, split between the processes of --workers or "
            "--jobs. Unset: half the container's cgroup memory limit, or of 2 GiB without "
            "one (docs/memory.md).",
        ),
    ] = None
    handlers: Annotated[
        list[str], _doc("Handlers to load: 'module:attr' or a 'trailproc.handlers' entry point.")
    ] = msgspec.field(default_factory=list)
    output: Annotated[
        str | None, _doc("Write each record as one JSON line to this file ('-' = stdout).")
    ] = None
    handlers_in_thread: Annotated[
        bool, _doc("Run synchronous process() in a worker thread so heartbeats keep going.")
    ] = True

    # --- filtering -----------------------------------------------------------------------
    filter_event_sources: Annotated[
        list[str],
        _doc(
            "Hand over only records whose `eventSource` matches one of these globs "
            "(`iam.amazonaws.com`, `s3.*`); case-sensitive. Flag: `--event-source`."
        ),
    ] = msgspec.field(default_factory=list)
    filter_event_names: Annotated[
        list[str],
        _doc(
            "Only records whose `eventName` matches one of these globs (`Delete*`); "
            "case-sensitive. Flag: `--event-name`."
        ),
    ] = msgspec.field(default_factory=list)
    filter_account_ids: Annotated[
        list[str],
        _doc(
            "Only records of these accounts (globs): `recipientAccountId`, else the "
            "account in the log file's key. Flag: `--account-id`."
        ),
    ] = msgspec.field(default_factory=list)
    filter_regions: Annotated[
        list[str],
        _doc(
            "Only records whose `awsRegion` matches one of these globs (`eu-*`). Flag: `--region`."
        ),
    ] = msgspec.field(default_factory=list)
    filter_error_codes: Annotated[
        list[str],
        _doc(
            "Only failed calls whose `errorCode` matches one of these globs "
            "(`AccessDenied*`). Flag: `--error-code`."
        ),
    ] = msgspec.field(default_factory=list)
    filter_errors_only: Annotated[
        bool, _doc("Only failed calls (records with an `errorCode`). Flag: `--errors-only`.")
    ] = False
    filter_since: Annotated[
        str | None,
        _doc(
            "Only records whose `eventTime` is at or after this time: ISO 8601 "
            "(`2026-11-01T05:00:00Z`, `2026-11-01`) or an age (`24h`, `30m`, `7d`) counted "
            "back from the start. Records without a readable `eventTime` are left out. "
            "Flag: `--since`."
        ),
    ] = None
    filter_until: Annotated[
        str | None,
        _doc(
            "Only records whose `eventTime` is before this time (same forms as "
            "`filter_since`). Flag: `--until`."
        ),
    ] = None

    # --- acknowledging -------------------------------------------------------------------
    delete_on_failure: Annotated[
        bool, _doc("Delete a message even when processing failed (Java parity; off).")
    ] = False
    exit_when_idle: Annotated[
        bool, _doc("Exit 0 once a receive is empty and nothing is in flight.")
    ] = False
    failure_visibility_base: Annotated[
        Seconds, _doc("Visibility after a failure, doubled per receive (backoff).")
    ] = 30
    failure_visibility_max: Annotated[Seconds, _doc("Cap for the failure backoff.")] = 900
    max_receive_count: Annotated[
        int | None, _doc("After this many receives a failing message goes to dlq_url.")
    ] = None
    dlq_url: Annotated[str | None, _doc("Queue trailproc moves poison messages to.")] = None
    shutdown_timeout: Annotated[
        float, msgspec.Meta(ge=0, description="Seconds to finish in-flight work on SIGTERM.")
    ] = 30.0

    # --- trust ---------------------------------------------------------------------------
    allowed_buckets: Annotated[
        list[str], _doc("If set, refuse notifications naming any other bucket.")
    ] = msgspec.field(default_factory=list)
    allowed_accounts: Annotated[
        list[str],
        _doc("If set, refuse log files (and EventBridge-routed records) of other accounts."),
    ] = msgspec.field(default_factory=list)
    allowed_topic_arns: Annotated[
        list[str], _doc("If set, refuse SNS notifications from any other topic.")
    ] = msgspec.field(default_factory=list)
    accept_records_in_messages: Annotated[
        bool,
        _doc(
            "Hand over CloudTrail records carried inside a message (EventBridge 'AWS API "
            "Call via CloudTrail' events; CloudWatch Logs subscription payloads through "
            "Lambda, Kinesis or Firehose). Off: such messages are refused and kept, "
            "because anyone who may send to the queue or topic can write them; see "
            "docs/security.md before turning this on."
        ),
    ] = False

    # --- trust: records through CloudWatch Logs (Lambda, Kinesis, Firehose) --------------
    allowed_log_groups: Annotated[
        list[str],
        _doc("If set, refuse CloudWatch Logs subscription payloads from any other log group."),
    ] = msgspec.field(default_factory=list)
    allowed_log_streams: Annotated[
        list[str],
        _doc("If set, refuse CloudWatch Logs subscription payloads from any other log stream."),
    ] = msgspec.field(default_factory=list)

    # --- trust: SNS signatures -----------------------------------------------------------
    verify_sns_signatures: Annotated[
        bool,
        _doc(
            "Check the signature of every SNS envelope (SignatureVersion 1 and 2) before "
            "anything in it is used; the signing certificate is fetched only from "
            "https://sns.<region>.amazonaws.com (.amazonaws.com.cn in China) and cached. "
            "Proves that SNS delivered the message from the topic it names, so "
            "allowed_topic_arns holds against anyone who can send to the queue. Messages "
            "without an envelope are then refused unless accept_unsigned_messages is set."
        ),
    ] = False
    accept_unsigned_messages: Annotated[
        bool,
        _doc(
            "With verify_sns_signatures: still accept messages that carry no SNS envelope "
            "(raw message delivery, S3 or EventBridge sending straight to the queue or "
            "function). Off: they are refused and kept."
        ),
    ] = False
    sns_test_cert_url_prefix: Annotated[
        str | None,
        _doc(
            "For tests only: one more place signing certificates may come from, an "
            "http(s) URL prefix on a loopback host (127.0.0.1, ::1, localhost), so a test "
            "can sign envelopes with a certificate of its own. Never set it in production."
        ),
    ] = None

    # --- integrity -----------------------------------------------------------------------
    verify_digests: Annotated[
        bool,
        _doc(
            "Hash every log file as it is processed and check it against the SHA-256 in its "
            "CloudTrail digest when the digest's notification arrives (either order; pending "
            "hashes wait in the checkpoint store). Digests go to this check, never to "
            "handlers. A mismatch is reported (on_error, log line, "
            'trailproc_digest_checks_total{outcome="mismatch"}); nothing is withheld.'
        ),
    ] = False
    digest_wait_hours: Annotated[
        float,
        msgspec.Meta(
            gt=0,
            description="How long a log file's hash waits for its digest (then it is "
            "reported with the outcome 'unverified'), and a digest's expected hashes for "
            "their log files (then they are forgotten).",
        ),
    ] = 168.0

    quarantine: Annotated[
        str | None,
        _doc(
            "Folder or s3://bucket/prefix/ where a record whose handler raises a "
            "non-transient error is kept (error, delivery, exact bytes) while the rest of "
            "its file is handed over and the message deleted. Unset: a handler error "
            "fails the whole file (message kept)."
        ),
    ] = None
    quarantine_max_records_per_file: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            description="More failing records than this in one file fail "
            "the file instead of quarantining them (a broken handler must not "
            "quarantine a whole trail).",
        ),
    ] = 10

    # --- state ---------------------------------------------------------------------------
    state_dir: Annotated[str, _doc("Folder for the embedded checkpoint database.")] = ".trailproc"
    checkpoint: Annotated[
        str | None,
        _doc(
            "Checkpoint store: 'sqlite' (default), 'memory' or 'dynamodb://TABLE'; done "
            "entries expire after '?ttl_days=N' (default 30)."
        ),
    ] = None
    worker_id: Annotated[
        str | None, _doc("Lease owner name; default: host name and process id.")
    ] = None

    # --- operations ----------------------------------------------------------------------
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"], _doc("Lowest level logged.")
    ] = "info"
    log_format: Annotated[
        Literal["auto", "console", "json"], _doc("'auto': console on a terminal, else JSON.")
    ] = "auto"
    metrics_port: Annotated[
        int | None, _doc("Serve Prometheus metrics on this port (127.0.0.1 by default).")
    ] = None
    health_port: Annotated[int | None, _doc("Serve /livez and /readyz on this port.")] = None
    ops_bind: Annotated[
        str, _doc("Address the metrics and health ports listen on; '0.0.0.0' in a container.")
    ] = "127.0.0.1"
    stats_interval: Annotated[
        float, msgspec.Meta(ge=0, description="Seconds between summary log lines (0: off).")
    ] = 60.0

    # --- freshness -----------------------------------------------------------------------
    expect_deliveries_from: Annotated[
        list[str],
        _doc(
            "ACCOUNT/REGION pairs (e.g. 111122223333/eu-west-1) that must keep delivering: "
            "/readyz fails while one has had no log file handed over for longer than "
            "silence_threshold_minutes."
        ),
    ] = msgspec.field(default_factory=list)
    silence_threshold_minutes: Annotated[
        float,
        msgspec.Meta(
            gt=0,
            description="Minutes without a delivery from an "
            "expect_deliveries_from pair before readiness fails.",
        ),
    ] = 60.0
    fill_gaps_from_digests: Annotated[
        bool,
        _doc(
            "With verify_digests: a log file its digest lists but no notification named "
            "yet is fetched and handed over (counted in trailproc_missed_deliveries_total). "
            "Off by default: during a backlog a digest can be read before its log files' "
            "notifications, which then find the files done."
        ),
    ] = False

    def __post_init__(self) -> None:
        # An allow-list with a blank entry is a typo or an unset variable, never "allow
        # everything": refusing to start is the only safe reading.
        for name in _ALLOW_LISTS:
            if any(not entry.strip() for entry in getattr(self, name)):
                raise ValueError(f"{name} has an empty entry; remove it, or unset the "
                                 "setting to allow any")  # fmt: skip
        # The same for filters: a blank pattern is a mistake, not "no filter".
        for name in _FILTER_LISTS:
            if any(not entry.strip() for entry in getattr(self, name)):
                raise ValueError(f"{name} has an empty entry; remove it, or unset the "
                                 "setting to keep every record")  # fmt: skip
        self._check_time_range()
        _check_origins(self.expect_deliveries_from)
        if self.sns_test_cert_url_prefix is not None:
            _check_loopback_prefix(self.sns_test_cert_url_prefix)

    def _check_time_range(self) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        since = _point_in_time("filter_since", self.filter_since, now)
        until = _point_in_time("filter_until", self.filter_until, now)
        if since and until and since >= until:
            raise ValueError(f"filter_since ({self.filter_since}) is not before filter_until "
                             f"({self.filter_until}): no record could match")  # fmt: skip

    def limits(self, budget: int | None = None) -> InFlightLimits:
        """`max_in_flight_messages` and `download_concurrency`: as set, and each unset
        one derived from the memory budget, `budget` bytes (default: this config's,
        `memory_budget_mb` or the container's share); see `trailproc._memory`."""
        messages, downloads = self.max_in_flight_messages, self.download_concurrency
        if messages is None or downloads is None:
            total = budget if budget is not None else budget_bytes(self.memory_budget_mb)
            auto = limits_for_budget(total)
            messages = auto.max_in_flight_messages if messages is None else messages
            downloads = auto.download_concurrency if downloads is None else downloads
        return InFlightLimits(messages, downloads)

    def with_limits(self, budget: int | None = None) -> Config:
        """A copy with both in-flight limits filled in (see `limits`)."""
        return self.replace(**self.limits(budget)._asdict())

    def replace(self, **changes: Any) -> Config:
        """A validated copy with `changes` applied."""
        return _convert({**msgspec.structs.asdict(self), **changes})


def parse_origin(entry: str) -> tuple[str, str]:
    """`"111122223333/eu-west-1"` → ("111122223333", "eu-west-1"); ValueError otherwise."""
    account, sep, region = entry.strip().partition("/")
    if not sep or len(account) != 12 or not account.isdigit() or not region:
        raise ValueError(f"{entry!r} is not ACCOUNT/REGION (12 digits, a slash, a region)")
    if not all(c.islower() or c.isdigit() or c == "-" for c in region):
        raise ValueError(f"{entry!r}: {region!r} is not a region name like us-east-1")
    return account, region


def _check_origins(entries: list[str]) -> None:
    """Each expect_deliveries_from entry is ACCOUNT/REGION; a blank one is an error."""
    for entry in entries:
        if not entry.strip():
            raise ValueError("expect_deliveries_from has an empty entry; remove it")
        parse_origin(entry)


_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def _check_loopback_prefix(prefix: str) -> None:
    """The test-only certificate place must be this machine: a remote one set by mistake
    would let whoever serves it sign any message."""
    from urllib.parse import urlsplit

    parts = urlsplit(prefix)
    if parts.scheme not in ("http", "https") or parts.hostname not in _LOOPBACK_HOSTS:
        raise ValueError(f"sns_test_cert_url_prefix must be an http(s) URL on a loopback "
                         f"host (127.0.0.1, ::1, localhost), got {prefix!r}")  # fmt: skip
    if not parts.path.endswith("/"):
        raise ValueError(f"sns_test_cert_url_prefix must end with '/', got {prefix!r}")


def _point_in_time(name: str, value: str | None, now: dt.datetime) -> dt.datetime | None:
    from ._timeparse import parse_time_or_ago

    if value is None:
        return None
    try:
        return parse_time_or_ago(value, now=now)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


class JavaProperty(NamedTuple):
    """How one property of the Java CloudTrail Processing Library is read."""

    key: str | None  # the trailproc key it sets; None: accepted, nothing to set
    note: str  # what a migrating user needs to know (docs/migration.md shows it)
    refused_values: tuple[str, ...] = ()  # values refused (lowercase), with `refusal`
    refusal: str = ""
    integer: bool = False  # checked even when nothing is set


_CREDENTIALS_NOTE = ("not read: credentials come from the AWS standard chain (environment, "
                     "profile, SSO, instance or task role)")  # fmt: skip

# Every property the Java library reads (its PropertiesFileConfiguration), and ours for
# it. A test checks docs/migration.md against this table, and this table against the
# key list of the CloudTrail format reference.
JAVA_PROPERTIES: dict[str, JavaProperty] = {
    "accessKey": JavaProperty(None, _CREDENTIALS_NOTE),
    "secretKey": JavaProperty(None, _CREDENTIALS_NOTE),
    "sqsUrl": JavaProperty("queue_url", "required in both"),
    "sqsRegion": JavaProperty(
        "region",
        "the default region of every client; the SQS client itself follows the queue URL's "
        "region (or `sqs_region`)",
    ),
    "s3Region": JavaProperty(
        "s3_region",
        "the region of every S3 client, no longer also the queue's; without it, each "
        "bucket's region is detected once and cached",
    ),
    "visibilityTimeout": JavaProperty(
        "visibility_timeout", "trailproc also extends it while a message is being worked on"
    ),
    "threadCount": JavaProperty(
        "download_concurrency",
        "concurrent downloads; `max_in_flight_messages` bounds the messages worked on at once",
    ),
    "numOfParallelReaders": JavaProperty(
        None,
        "accepted, no effect: in Java it sizes the pool running the one SQS polling job, "
        "which never runs twice at once; trailproc's receive loop keeps "
        "`max_in_flight_messages` messages in work (for more processes: `run --workers N`)",
        integer=True,
    ),
    "threadTerminationDelaySeconds": JavaProperty("shutdown_timeout", "grace period on SIGTERM"),
    "maxEventsPerEmit": JavaProperty(
        "max_events_per_emit", "Java default 10, trailproc default 100"
    ),
    "enableRawEventInfo": JavaProperty(
        None, "not needed: the original bytes are always in `event.raw`"
    ),
    "deleteMessageUponFailure": JavaProperty(
        "delete_on_failure",
        "`false` (the default in both) is accepted; `true` is refused: trailproc deletes "
        "different failed messages (see the migration guide)",
        refused_values=("true",),
        refusal="deleteMessageUponFailure=true is refused because trailproc cannot honour "
        "it exactly: the Java library then deletes a message whose body it cannot parse and "
        "a message whose log file fails to parse or whose processor raises, but never one "
        "whose download failed; trailproc's delete_on_failure deletes a message whose files "
        "failed for any reason, download failures included, and never deletes a message it "
        "cannot parse or refuses. Remove the key (failed messages stay for retry and the "
        "dead-letter queue), or set delete_on_failure = true knowing the difference (see "
        "docs/migration.md).",
    ),
}


def _java_setting(name: str, value: Any) -> tuple[str, Any] | None:
    """(trailproc key, value) for a Java property, None if it sets nothing; a refused
    value raises ConfigError with the reason."""
    prop = JAVA_PROPERTIES[name]
    text = str(value).strip().lower()
    if text in prop.refused_values:
        raise ConfigError(prop.refusal)
    if prop.integer and not text.isdigit():
        raise ConfigError(f"{name}: expected a whole number, got {value!r}")
    return (prop.key, value) if prop.key else None


def _settings(items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """File entries as trailproc settings, Java property names translated."""
    out: dict[str, Any] = {}
    for name, value in items:
        if name in JAVA_PROPERTIES:
            setting = _java_setting(name, value)
            if setting is not None:
                out[setting[0]] = setting[1]
        elif isinstance(value, (dt.date, dt.datetime)):
            out[name] = value.isoformat()  # a TOML date for filter_since/filter_until
        else:
            out[name] = value
    return out


_FIELDS = set(Config.__struct_fields__)
_ALLOW_LISTS = ("allowed_buckets", "allowed_accounts", "allowed_topic_arns",
                "allowed_log_groups", "allowed_log_streams")  # fmt: skip
_FILTER_LISTS = ("filter_event_sources", "filter_event_names", "filter_account_ids",
                 "filter_regions", "filter_error_codes")  # fmt: skip
# Lists whose blank entries are kept from the environment, so that Config refuses them.
_KEEPS_BLANKS = (*_ALLOW_LISTS, *_FILTER_LISTS, "expect_deliveries_from")
_LIST_FIELDS = {"process_kinds", "handlers", "requester_pays_buckets", *_KEEPS_BLANKS}


def _convert(data: Mapping[str, Any]) -> Config:
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ConfigError(f"unknown configuration key {unknown[0]!r}")
    try:
        # strict=False lets "30" from the environment or a properties file become 30.
        return msgspec.convert(dict(data), Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


def _explain(exc: msgspec.ValidationError) -> str:
    # msgspec says "Expected `int` >= 1 - at `$.max_events_per_emit`"; lead with the key.
    text = str(exc)
    if " - at `$." in text:
        what, _, path = text.rpartition(" - at `$.")
        return f"{path.rstrip('`')}: {what}"
    return text


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in _FIELDS:
            continue  # other TRAILPROC_* variables (e.g. TRAILPROC_HANDLER for Lambda)
        if key in _KEEPS_BLANKS:
            # Every entry is kept, blanks included, so that Config refuses them: a set
            # but empty variable must not switch an allow-list or a filter off.
            out[key] = [v.strip() for v in value.split(",")]
        elif key in _LIST_FIELDS:
            out[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            out[key] = value
    return out


# TRAILPROC_* variables read elsewhere than Config: the file to read, the Lambda entry
# point's own settings, and those of the project's tests and benchmarks.
_OTHER_ENV = frozenset({"CONFIG", "HANDLER", "LAMBDA_SAFETY_MARGIN", "LAMBDA_ABORT_MARGIN",
                        "LAMBDA_FIFO_MODE", "SHARED_DIR", "BENCH_IDS", "TEST_BATCH_SLEEP",
                        "TF_PLUGIN_DIR"})  # fmt: skip


def unknown_env(env: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """`TRAILPROC_*` variables trailproc does not read (a typo is otherwise silently
    ignored: `TRAILPROC_ALLOWED_BUCKET` would leave the allow-list off), each with the
    closest known name, if one is close."""
    env = os.environ if env is None else env
    # Compared without the shared prefix, which would make every name look close.
    known = sorted({*(f.upper() for f in _FIELDS), *_OTHER_ENV})
    out: list[tuple[str, str | None]] = []
    for name in sorted(env):
        suffix = name[len(ENV_PREFIX) :]
        if name.startswith(ENV_PREFIX) and suffix not in known:
            import difflib  # only for a name to suggest

            close = difflib.get_close_matches(suffix, known, n=1, cutoff=0.75)
            out.append((name, ENV_PREFIX + close[0] if close else None))
    return out


def warn_unknown_env(env: Mapping[str, str] | None = None) -> None:
    """One warning per `TRAILPROC_*` variable trailproc does not read (at start)."""
    from ._observe import get_logger

    for name, close in unknown_env(env):
        hint = f"; did you mean {close}?" if close else ""
        get_logger("trailproc.config").warning(
            f"unknown environment variable {name} is ignored{hint}", variable=name,
            closest=close,
        )  # fmt: skip


def _read_properties(text: str) -> dict[str, Any]:
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        sep = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if sep < 0:
            continue
        out.append((line[:sep].strip(), line[sep + 1 :].strip()))
    return _settings(out)


def read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Settings from a TOML file (top level or a [trailproc] table) or a .properties file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    if p.suffix == ".properties":
        return _read_properties(text)
    # Imported here: most runs read no config file (~4 ms of start-up otherwise).
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    data = data.get("trailproc", data)
    # Java-style camelCase keys are accepted in TOML too.
    return _settings(data.items())


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Config:
    """Build the configuration: defaults < file < TRAILPROC_* env < overrides.

    `path` defaults to $TRAILPROC_CONFIG. Overrides whose value is None are ignored, so
    CLI flags that were not given do not mask the file or the environment.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    path = path or env.get(ENV_PREFIX + "CONFIG")
    if path:
        data.update(read_file(path))
    data.update(_from_env(env))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return _convert(data)
