"""`trailproc check`: validate the configuration and try every permission the daemon needs.

Each probe is harmless to the data it touches:

* the queue: GetQueueAttributes (read only);
* receive: ReceiveMessage with ``VisibilityTimeout=0`` and ``WaitTimeSeconds=0``, so a
  message it happens to get stays visible to the daemon. A receive still adds one to that
  message's receive count (which a redrive policy counts), so when messages are waiting
  the probe is skipped unless ``--receive-probe`` asks for it;
* change visibility and delete: called with a receipt handle that cannot belong to any
  message. SQS checks permissions first: ``ReceiptHandleIsInvalid`` proves the call is
  allowed, ``AccessDenied`` that it is not. No message can be hidden or deleted;
* the bucket: HeadObject and a one-byte ranged GetObject of one log file (found by
  listing one page of the bucket, or given with ``--key``). For SSE-KMS objects the
  ranged GET decrypts, which proves kms:Decrypt;
* the checkpoint store: claim and release a lease on a probe file id that no real S3
  object can have (its bucket name is not a valid bucket name).

A local store (SQLite, memory) is checked without AWS: with no queue, bucket or DynamoDB
store to check, no credentials are asked for and nothing goes over the network.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._config import Config
from .._errors import error_code
from .._observe import get_logger

__all__ = ["Row", "format_table", "run_checks"]

log = get_logger("trailproc.check")

Status = Literal["pass", "fail", "warn", "skip"]

# A receipt handle no message can have: SQS answers ReceiptHandleIsInvalid when the call
# itself is allowed.
PROBE_HANDLE = "trailproc-check-probe-not-a-receipt-handle"
# Bucket names cannot start with '-': this file id can never clash with a real log file.
PROBE_BUCKET = "-trailproc-check-"
_INVALID_HANDLE_CODES = {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight",
                         "AWS.SimpleQueueService.MessageNotInflight"}  # fmt: skip
_MISSING_QUEUE_CODES = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist",
                        "NonExistentQueue"}  # fmt: skip
_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "403", "Forbidden",
                 "AuthorizationError", "UnauthorizedOperation"}  # fmt: skip
_CREDENTIAL_CODES = {"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
                     "ExpiredTokenException", "UnrecognizedClientException",
                     "InvalidAccessKeyId", "InvalidToken"}  # fmt: skip
_KMS_HINTS = ("kms", "KMS")


@dataclass(frozen=True)
class _ObjectProbe:
    """One object read to test s3:GetObject (and kms:Decrypt) on its bucket."""

    bucket: str
    key: str

    @property
    def label(self) -> str:
        return f"s3:GetObject s3://{self.bucket}"

    @property
    def kms_label(self) -> str:
        return f"kms:Decrypt s3://{self.bucket}"

    @property
    def resource(self) -> str:
        return f"arn:aws:s3:::{self.bucket}/AWSLogs/*"


def _encryption(head: dict[str, Any]) -> tuple[str, str]:
    """(server-side encryption, KMS key id) of a HeadObject response; "" when absent."""
    return str(head.get("ServerSideEncryption") or ""), str(head.get("SSEKMSKeyId") or "")


@dataclass
class Row:
    """One line of the report."""

    check: str
    status: Status
    detail: str
    fix: str = ""


def _describe(exc: BaseException) -> str:
    code = error_code(exc)
    if code:
        message = str(getattr(exc, "response", {}).get("Error", {}).get("Message", "")).strip()
        return f"{code}: {message}" if message else code
    return f"{type(exc).__name__}: {exc}"


def _arn_from_url(queue_url: str) -> str:
    """arn:aws:sqs:REGION:ACCOUNT:NAME from a queue URL, best effort (for fix texts)."""
    m = re.match(r"https?://sqs[.-]([a-z0-9-]+)\.[^/]+/(\d{12})/([^/?]+)", queue_url)
    if m:
        return f"arn:aws:sqs:{m.group(1)}:{m.group(2)}:{m.group(3)}"
    m = re.match(r"https?://[^/]+/(\d{12})/([^/?]+)", queue_url)
    return f"arn:aws:sqs:*:{m.group(1)}:{m.group(2)}" if m else "<queue ARN>"


class Checker:
    """Runs the probes in order; later probes are skipped when what they need failed."""

    def __init__(
        self,
        config: Config,
        *,
        buckets: Sequence[str] = (),
        key: str | None = None,
        receive_probe: bool = False,
        client_factory: Callable[[str], Any] | None = None,
        history: bool = False,
    ) -> None:
        self.config = config
        self.history = history
        self.buckets = list(buckets) or list(config.allowed_buckets)
        self.key = key
        self.receive_probe = receive_probe
        self.rows: list[Row] = []
        self._client_factory = client_factory
        self._clients: dict[str, Any] = {}

    # --- plumbing -------------------------------------------------------------------------
    def client(self, service: str) -> Any:
        if service not in self._clients:
            if self._client_factory is not None:
                self._clients[service] = self._client_factory(service)
            else:
                import boto3
                from botocore.config import Config as BotoConfig

                session: Any = boto3.Session(
                    profile_name=self.config.profile, region_name=self.config.region
                )
                kwargs: dict[str, Any] = {
                    "config": BotoConfig(
                        retries={"mode": "standard", "max_attempts": 2},
                        connect_timeout=5,
                        read_timeout=15,
                    )
                }
                if self.config.endpoint_url:
                    kwargs["endpoint_url"] = self.config.endpoint_url
                if service == "s3" and self.config.s3_region:
                    kwargs["region_name"] = self.config.s3_region
                self._clients[service] = session.client(service, **kwargs)
        return self._clients[service]

    def add(self, check: str, status: Status, detail: str, fix: str = "") -> Row:
        row = Row(check, status, detail, fix)
        self.rows.append(row)
        log.debug("check", check=check, status=status, detail=detail)
        return row

    # --- the probes -----------------------------------------------------------------------
    def run(self) -> list[Row]:
        cfg = self.config
        self.add("configuration", "pass", self._config_summary())
        self._check_handlers()
        if not self._uses_aws():
            # Only a local checkpoint store to check: no credentials needed, no network.
            self.add("credentials", "skip", "not needed: no queue, bucket or DynamoDB store")
            self.add("sqs queue", "skip", "no queue_url configured",
                     "give --queue-url (or TRAILPROC_QUEUE_URL) to check the queue the "
                     "daemon reads")  # fmt: skip
            self._check_checkpoint()
            return self.rows
        if not self._check_credentials():
            for name in ("sqs queue", "s3:GetObject"):
                self.add(name, "skip", "no usable AWS credentials")
            if self._local_store():
                self._check_checkpoint()
            else:
                self.add("checkpoint store", "skip", "no usable AWS credentials")
            return self.rows
        if not cfg.queue_url and self.history:
            self.add("sqs queue", "skip", "no queue_url configured (history needs none)")
        elif not cfg.queue_url:
            self.add("sqs queue", "fail", "no queue_url configured",
                     "give --queue-url, set queue_url in the config file, or "
                     "TRAILPROC_QUEUE_URL")  # fmt: skip
        else:
            attributes = self._check_queue(cfg.queue_url)
            if attributes is None:
                for name in ("sqs:ReceiveMessage", "sqs:ChangeMessageVisibility",
                             "sqs:DeleteMessage", "dead-letter queue"):  # fmt: skip
                    self.add(name, "skip", "queue not reachable (see above)")
            else:
                self._check_receive(cfg.queue_url, attributes)
                self._check_handle_call(cfg.queue_url, "ChangeMessageVisibility")
                self._check_handle_call(cfg.queue_url, "DeleteMessage")
                self._check_dlq(attributes)
        self._check_buckets()
        self._check_checkpoint()
        if self.history:
            self._check_lookup_events()
        return self.rows

    def _local_store(self) -> bool:
        """SQLite or memory: checked without AWS."""
        return not (self.config.checkpoint or "").lower().startswith("dynamodb")

    def _uses_aws(self) -> bool:
        return bool(self.config.queue_url or self.buckets or self.history
                    or not self._local_store())  # fmt: skip

    def _config_summary(self) -> str:
        cfg = self.config
        env = os.environ
        region = cfg.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        parts = [f"region {region or '(default chain)'}"]
        parts.append(f"checkpoint {cfg.checkpoint or 'sqlite'}")
        parts.append(f"visibility {cfg.visibility_timeout}s")
        return "valid; " + ", ".join(parts)

    def _check_handlers(self) -> None:
        from .._pipeline.processor import load_processor

        cfg = self.config
        if not cfg.handlers and not cfg.output:
            self.add("handlers", "warn", "no handlers and no output configured",
                     "`trailproc run` needs --handler MODULE:ATTR, --output PATH, or "
                     "handlers = [...] in the config file")  # fmt: skip
            return
        for spec in cfg.handlers:
            try:
                load_processor(spec)
            except Exception as exc:
                self.add(f"handler {spec}", "fail", str(exc),
                         "install the package that provides it in the daemon's environment, "
                         "or fix the 'module:attr' spelling")  # fmt: skip
            else:
                self.add(f"handler {spec}", "pass", "loads")
        if cfg.output:
            self.add("output", "pass", f"records also written to {cfg.output}")

    def _check_credentials(self) -> bool:
        try:
            identity = self.client("sts").get_caller_identity()
        except Exception as exc:
            code = error_code(exc)
            fix = ("configure AWS credentials the standard way: environment variables, "
                   "a profile (profile = ... / AWS_PROFILE), or an instance/task role")  # fmt: skip
            if not code or code in _CREDENTIAL_CODES:
                self.add("credentials", "fail", _describe(exc), fix)
                return False
            # Anything else (e.g. STS blocked by an SCP): credentials exist; go on.
            self.add("credentials", "warn", f"sts:GetCallerIdentity failed: {_describe(exc)}")
            return True
        self.add("credentials", "pass", f"acting as {identity.get('Arn', '?')}")
        return True

    def _check_queue(self, queue_url: str) -> dict[str, str] | None:
        sqs = self.client("sqs")
        try:
            attributes: dict[str, str] = sqs.get_queue_attributes(
                QueueUrl=queue_url, AttributeNames=["All"]
            )["Attributes"]
        except Exception as exc:
            code = error_code(exc)
            if code in _MISSING_QUEUE_CODES:
                fix = (f"the queue {queue_url} does not exist (in this account and region): "
                       "check queue_url and region, or create it (samples/infra)")  # fmt: skip
            elif code in _DENIED_CODES:
                fix = (f"allow sqs:GetQueueAttributes on {_arn_from_url(queue_url)} for the "
                       "worker's role (docs: IAM policies)")  # fmt: skip
            elif not code:
                fix = (
                    "the SQS endpoint is unreachable: check network access, region and endpoint_url"
                )
            else:
                fix = "see the AWS error above"
            self.add("sqs queue", "fail", _describe(exc), fix)
            return None
        visible = attributes.get("ApproximateNumberOfMessages", "?")
        in_flight = attributes.get("ApproximateNumberOfMessagesNotVisible", "?")
        self.add("sqs queue", "pass",
                 f"reachable; {visible} waiting, {in_flight} in flight, "
                 f"queue visibility {attributes.get('VisibilityTimeout', '?')}s")  # fmt: skip
        return attributes

    def _check_receive(self, queue_url: str, attributes: dict[str, str]) -> None:
        waiting = int(attributes.get("ApproximateNumberOfMessages", "0") or 0)
        name = "sqs:ReceiveMessage"
        if waiting and not self.receive_probe:
            self.add(name, "skip",
                     f"{waiting} message(s) waiting: a probe receive would add one to a "
                     "message's receive count; rerun with --receive-probe to test anyway",
                     )  # fmt: skip
            return
        try:
            response = self.client("sqs").receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=0, VisibilityTimeout=0
            )
        except Exception as exc:
            fix = (f"allow sqs:ReceiveMessage on {_arn_from_url(queue_url)}"
                   if error_code(exc) in _DENIED_CODES else "see the AWS error")  # fmt: skip
            if error_code(exc) in _DENIED_CODES and attributes.get("KmsMasterKeyId"):
                fix += f" and kms:Decrypt on the queue's key {attributes['KmsMasterKeyId']}"
            self.add(name, "fail", _describe(exc), fix)
            return
        got = len(response.get("Messages", []))
        seen = " (one message seen and left visible: VisibilityTimeout=0)" if got else ""
        self.add(name, "pass", "allowed" + seen)

    def _check_handle_call(self, queue_url: str, operation: str) -> None:
        sqs = self.client("sqs")
        name = f"sqs:{operation}"
        try:
            if operation == "DeleteMessage":
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=PROBE_HANDLE)
            else:
                sqs.change_message_visibility(
                    QueueUrl=queue_url, ReceiptHandle=PROBE_HANDLE, VisibilityTimeout=0
                )
        except Exception as exc:
            code = error_code(exc)
            if code in _INVALID_HANDLE_CODES:
                self.add(name, "pass", "allowed (probed with a handle no message has)")
            elif code in _DENIED_CODES:
                self.add(name, "fail", _describe(exc),
                         f"allow sqs:{operation} on {_arn_from_url(queue_url)}")  # fmt: skip
            else:
                self.add(name, "warn", f"inconclusive: {_describe(exc)}")
            return
        # Accepted a made-up handle: nothing was affected, but nothing was proven either.
        self.add(name, "pass", "allowed")

    def _check_dlq(self, attributes: dict[str, str]) -> None:
        cfg = self.config
        redrive = attributes.get("RedrivePolicy")
        if redrive:
            import json

            try:
                policy = json.loads(redrive)
            except ValueError:
                policy = {}
            self.add("dead-letter queue", "pass",
                     f"redrive to {policy.get('deadLetterTargetArn', '?')} after "
                     f"{policy.get('maxReceiveCount', '?')} receives")  # fmt: skip
            return
        if cfg.dlq_url and cfg.max_receive_count:
            try:
                self.client("sqs").get_queue_attributes(
                    QueueUrl=cfg.dlq_url, AttributeNames=["QueueArn"]
                )
            except Exception as exc:
                self.add("dead-letter queue", "fail", f"dlq_url: {_describe(exc)}",
                         f"create {cfg.dlq_url} or fix dlq_url; the worker also needs "
                         "sqs:SendMessage on it")  # fmt: skip
                return
            self.add("dead-letter queue", "pass",
                     f"trailproc moves messages to dlq_url after {cfg.max_receive_count} "
                     "receives (sqs:SendMessage on it is not probed: that would send)")  # fmt: skip
            return
        self.add("dead-letter queue", "warn",
                 "no redrive policy and no dlq_url: a message that always fails comes back "
                 "forever", "add a RedrivePolicy to the queue (samples/infra does), or set "
                 "dlq_url and max_receive_count")  # fmt: skip

    def _find_key(self, bucket: str) -> tuple[str | None, Row | None]:
        """One log file key in `bucket`, or a row saying why there is none."""
        from .._pipeline.keys import ObjectKind, classify_key

        wanted = {ObjectKind.LOG, ObjectKind.INSIGHT}
        s3 = self.client("s3")
        label = f"s3:GetObject s3://{bucket}"
        prefixes = [""]
        tried: set[str] = set()
        while prefixes:
            prefix = prefixes.pop(0)
            tried.add(prefix)
            try:
                page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1000)
            except Exception as exc:
                code = error_code(exc)
                if code == "NoSuchBucket":
                    fix = "check the bucket name: it must be the trail's S3 bucket"
                    return None, Row(label, "fail", _describe(exc), fix)
                return None, Row(label, "skip",
                                 f"cannot list the bucket to find a log file ({_describe(exc)}); "
                                 "the daemon does not need s3:ListBucket",
                                 "pass --key with one log file's key to test GetObject",
                                 )  # fmt: skip
            for item in page.get("Contents", []):
                key = str(item["Key"])
                if classify_key(key).kind in wanted:
                    return key, None
                # Digests sort before logs: look straight into the account's log folder.
                m = re.match(r"^(.*?AWSLogs/(?:o-[a-z0-9]+/)?\d{12}/)CloudTrail-", key)
                if m and m.group(1) + "CloudTrail/" not in tried:
                    prefixes.append(m.group(1) + "CloudTrail/")
                    tried.add(m.group(1) + "CloudTrail/")
        return None, Row(label, "skip", "no CloudTrail log file found in the first listing page",
                         "pass --key with one log file's key")  # fmt: skip

    def _check_buckets(self) -> None:
        if not self.buckets:
            self.add("s3:GetObject", "skip", "no bucket known",
                     "give --bucket (or set allowed_buckets) to test s3:GetObject and "
                     "kms:Decrypt")  # fmt: skip
            return
        for bucket in self.buckets:
            self._check_bucket(bucket)

    def _check_bucket(self, bucket: str) -> None:
        s3 = self.client("s3")
        key = self.key
        if key is None:
            key, row = self._find_key(bucket)
            if row is not None:
                self.rows.append(row)
                self.add(f"kms:Decrypt s3://{bucket}", "skip", "no object to test")
                return
        assert key is not None
        probe = _ObjectProbe(bucket, key)
        head = self._head(s3, probe)
        if head is None:
            return
        try:
            response = s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")
            response["Body"].read()
        except Exception as exc:
            self._read_failed(probe, head, exc)
            return
        self.add(probe.label, "pass", f"read {key}")
        sse, kms_key = _encryption(head)
        if sse.startswith("aws:kms"):
            self.add(probe.kms_label, "pass", f"decrypted with {kms_key or 'the bucket key'}")
        else:
            self.add(probe.kms_label, "skip", f"objects are not SSE-KMS ({sse or 'no SSE header'})")

    def _head(self, s3: Any, probe: _ObjectProbe) -> dict[str, Any] | None:
        """HeadObject of the probe's object; None once a failure is reported."""
        bucket, key = probe.bucket, probe.key
        try:
            head: dict[str, Any] = s3.head_object(Bucket=bucket, Key=key)
        except Exception as exc:
            code = error_code(exc)
            fix = (f"allow s3:GetObject on {probe.resource}" if code in _DENIED_CODES
                   else f"check that s3://{bucket}/{key} exists" if code in ("404", "NoSuchKey")
                   else "see the AWS error")  # fmt: skip
            self.add(probe.label, "fail", f"HeadObject {key}: {_describe(exc)}", fix)
            self.add(probe.kms_label, "skip", "object metadata unavailable")
            return None
        return head

    def _read_failed(self, probe: _ObjectProbe, head: dict[str, Any], exc: Exception) -> None:
        """GetObject failed after HeadObject passed: on an SSE-KMS object a KMS error or a
        denial is kms:Decrypt's failure, anything else s3:GetObject's."""
        code, text = error_code(exc), _describe(exc)
        sse, kms_key = _encryption(head)
        if sse.startswith("aws:kms") and (code.startswith("KMS") or "kms" in text.lower()
                                          or code in _DENIED_CODES):  # fmt: skip
            self.add(probe.label, "pass", f"HeadObject {probe.key} allowed")
            self.add(probe.kms_label, "fail", text,
                     f"allow kms:Decrypt on {kms_key or 'the trail key'} for the worker's "
                     "role (and let the key policy allow it)")  # fmt: skip
            return
        self.add(probe.label, "fail", f"GetObject {probe.key}: {text}",
                 f"allow s3:GetObject on {probe.resource}")  # fmt: skip
        self.add(probe.kms_label, "skip", "GetObject failed")

    def _check_checkpoint(self) -> None:
        from .._runtime import open_config_store
        from ..checkpoint import FileId

        cfg = self.config
        label = f"checkpoint store {cfg.checkpoint or 'sqlite'}"
        owner = f"trailproc-check:{socket.gethostname()}:{os.getpid()}"
        probe = FileId(PROBE_BUCKET, "probe", "probe")

        async def attempt() -> str:
            store = open_config_store(cfg)
            try:
                claim = await store.claim(probe, owner, 5.0)
                await store.release(probe, owner)
                return claim.state.value
            finally:
                await store.close()

        try:
            state = asyncio.run(attempt())
        except Exception as exc:
            code = error_code(exc)
            if code in _DENIED_CODES:
                fix = ("allow dynamodb:GetItem, UpdateItem, DescribeTable, PutItem and "
                       "DeleteItem on the table for the worker's role")  # fmt: skip
            elif code == "ResourceNotFoundException":
                fix = "create the table, or use dynamodb://TABLE?create=true once"
            elif isinstance(exc, (OSError, ValueError)):
                fix = ("make state_dir writable by the daemon's user, or fix the checkpoint "
                       "spec")  # fmt: skip
            else:
                fix = "see the error"
            self.add(label, "fail", _describe(exc), fix)
            return
        self.add(label, "pass", f"lease taken and released on a probe file ({state})")

    def _check_lookup_events(self) -> None:
        """`trailproc history` reads LookupEvents: one read of at most one event."""
        import datetime as dt

        now = dt.datetime.now(dt.timezone.utc)
        try:
            self.client("cloudtrail").lookup_events(
                StartTime=now - dt.timedelta(minutes=5), EndTime=now, MaxResults=1
            )
        except Exception as exc:
            self.add("cloudtrail:LookupEvents", "fail", _describe(exc),
                     "grant cloudtrail:LookupEvents (resource \"*\") to the role running "
                     "trailproc history")  # fmt: skip
            return
        self.add("cloudtrail:LookupEvents", "pass", "allowed (read at most one event)")


def run_checks(
    config: Config,
    *,
    buckets: Sequence[str] = (),
    key: str | None = None,
    receive_probe: bool = False,
    history: bool = False,
) -> list[Row]:
    """Run every probe; the rows, in order."""
    return Checker(config, buckets=buckets, key=key, receive_probe=receive_probe,
                   history=history).run()  # fmt: skip


def format_table(rows: Sequence[Row]) -> str:
    """The pass/fail table, each failure or warning followed by its fix."""
    width = max([len("CHECK"), *(len(r.check) for r in rows)])
    lines = [f"  {'CHECK':<{width}}  RESULT  DETAIL"]
    for row in rows:
        result = row.status.upper() if row.status in ("fail", "warn") else row.status
        lines.append(f"  {row.check:<{width}}  {result:<6}  {row.detail}")
        if row.fix and row.status in ("fail", "warn", "skip"):
            lines.append(f"  {'':<{width}}  {'':<6}  fix: {row.fix}")
    failed = sum(r.status == "fail" for r in rows)
    warned = sum(r.status == "warn" for r in rows)
    lines.append("")
    lines.append(
        f"{failed} check(s) failed, {warned} warning(s)."
        if failed or warned
        else "All checks passed."
    )
    return "\n".join(lines)
