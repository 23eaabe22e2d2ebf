"""A local AWS sandbox: moto's server on loopback plus a trail bucket, topic and queue.

Used by `trailproc demo`, the test suite and the benchmarks, so all three exercise the
real pipeline over real HTTP exactly as CloudTrail would feed it.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

__all__ = ["MotoServer", "TrailSandbox", "log_key", "make_records", "moto_server"]

REGION = "us-east-1"
ACCOUNT = "123456789012"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoServer:
    """A moto server subprocess bound to 127.0.0.1 on a free port."""

    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self,
        timeout: float = 30.0,
        *,
        authorize_after: int | None = None,
        log: str | os.PathLike[str] | None = None,
    ) -> MotoServer:
        """Start the server; with `authorize_after=N`, moto enforces IAM policies after
        the first N requests (those set up the users and their keys). `log`: a file for
        the server's output, one line per HTTP request (default: discarded)."""
        self.port = self.port or _free_port()
        env = dict(os.environ)
        if authorize_after is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(authorize_after)
        self._log = open(log, "wb") if log is not None else None  # noqa: SIM115 - stop()
        # A subprocess, not a thread: its own GIL, and a crash in it cannot take us down.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    "moto server exited at start; is moto[server] installed? (the demo "
                    "extra: pip install '.[demo]' in a trailproc checkout)"
                )
            try:
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.url} within {timeout}s")

    def reset(self) -> None:
        """Forget every resource (between tests)."""
        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def env(self) -> dict[str, str]:
        """Environment that points boto3/aioboto3 (and trailproc) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
        }


@contextmanager
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


def log_key(
    account: str = ACCOUNT,
    region: str = REGION,
    when: dt.datetime | None = None,
    *,
    prefix: str = "",
    org_id: str | None = None,
    unique: str | None = None,
    folder: str = "CloudTrail",
) -> str:
    """A key laid out exactly as CloudTrail writes log (or Insights) files."""
    when = when or dt.datetime.now(dt.timezone.utc)
    unique = unique or uuid.uuid4().hex[:16]
    parts = [prefix.strip("/")] if prefix else []
    parts.append("AWSLogs")
    if org_id:
        parts.append(org_id)
    parts += [account, folder, region, when.strftime("%Y/%m/%d")]
    name = f"{account}_{folder}_{region}_{when.strftime('%Y%m%dT%H%MZ')}_{unique}.json.gz"
    return "/".join([*parts, name])


# (source, name, read-only, category, weight): mostly routine reads, a few rare writes.
_EVENTS: list[tuple[str, str, bool, str, float]] = [
    ("s3.amazonaws.com", "GetObject", True, "Data", 30),
    ("s3.amazonaws.com", "PutObject", False, "Data", 12),
    ("ec2.amazonaws.com", "DescribeInstances", True, "Management", 20),
    ("ec2.amazonaws.com", "RunInstances", False, "Management", 3),
    ("iam.amazonaws.com", "AttachRolePolicy", False, "Management", 1),
    ("sts.amazonaws.com", "AssumeRole", True, "Management", 15),
    ("kms.amazonaws.com", "Decrypt", True, "Management", 12),
    ("signin.amazonaws.com", "ConsoleLogin", False, "Management", 2),
    ("cloudtrail.amazonaws.com", "StopLogging", False, "Management", 0.3),
    ("lambda.amazonaws.com", "Invoke", False, "Data", 5),
]
_WEIGHTS = [e[4] for e in _EVENTS]


def make_records(
    count: int,
    *,
    seed: int = 0,
    account: str = ACCOUNT,
    region: str = REGION,
    start: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Realistic CloudTrail records (~1.4 KB each), deterministic for a seed."""
    start = start or dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    maker = _RecordMaker(random.Random(seed), account, region, start)
    return [maker.record(i) for i in range(count)]


def _utc_stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _RecordMaker:
    """Draws one record after another from `rng`; the order of the draws is what makes
    a seed give the same records every time."""

    rng: random.Random
    account: str
    region: str
    start: dt.datetime
    users: list[str] = field(default_factory=lambda: [f"user-{i:02d}" for i in range(12)])

    def record(self, i: int) -> dict[str, Any]:
        event = self.rng.choices(_EVENTS, _WEIGHTS)[0]
        user = self.rng.choice(self.users)
        when = self.start + dt.timedelta(seconds=i * 3 + self.rng.randint(0, 2))
        record = self._api_call(i, event, user=user, when=when)
        name = event[1]
        if name == "ConsoleLogin":
            self._make_console_sign_in(record)
        elif self.rng.random() < 0.04:
            record["errorCode"] = "AccessDenied"
            record["errorMessage"] = f"User is not authorized to perform: {name}"
            record["responseElements"] = None
        return record

    def _api_call(
        self, i: int, event: tuple[str, str, bool, str, float], *, user: str, when: dt.datetime
    ) -> dict[str, Any]:
        """A successful API call by `user`; the values are drawn in key order."""
        source, name, read_only, category, _weight = event
        rng, account = self.rng, self.account
        return {
            "eventVersion": "1.09",
            "userIdentity": self._identity(user, when),
            "eventTime": _utc_stamp(when),
            "eventSource": source,
            "eventName": name,
            "awsRegion": self.region,
            "sourceIPAddress": f"203.0.113.{rng.randint(1, 254)}",
            "userAgent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64 prompt/off",
            "requestParameters": self._request_parameters(),
            "responseElements": (
                None if read_only else {"requestId": uuid.UUID(int=rng.getrandbits(128)).hex}
            ),
            "additionalEventData": self._transfer_details(),
            "requestID": uuid.UUID(int=rng.getrandbits(128)).hex[:16].upper(),
            "eventID": str(uuid.UUID(int=rng.getrandbits(128))),
            "readOnly": read_only,
            "resources": [
                {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::data-1/reports/{i}.csv"},
                {"accountId": account, "type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::data-1"},
            ],
            "eventType": "AwsApiCall",
            "managementEvent": category == "Management",
            "recipientAccountId": account,
            "eventCategory": category,
            "tlsDetails": {
                "tlsVersion": "TLSv1.3",
                "cipherSuite": "TLS_AES_128_GCM_SHA256",
                "clientProvidedHostHeader": f"{source.split('.')[0]}.{self.region}.amazonaws.com",
            },
        }

    def _identity(self, user: str, when: dt.datetime) -> dict[str, Any]:
        if self.rng.random() < 0.5:
            return self._assumed_role(user, when)
        return self._iam_user(user)

    def _assumed_role(self, user: str, when: dt.datetime) -> dict[str, Any]:
        rng, account = self.rng, self.account
        return {
            "type": "AssumedRole",
            "principalId": f"AROAEXAMPLE{rng.randint(1000, 9999)}:{user}",
            "arn": f"arn:aws:sts::{account}:assumed-role/Deploy/{user}",
            "accountId": account,
            "accessKeyId": f"ASIA{rng.randint(10**11, 10**12 - 1)}",
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": "AROAEXAMPLE",
                    "arn": f"arn:aws:iam::{account}:role/Deploy",
                    "accountId": account,
                    "userName": "Deploy",
                },
                "attributes": {
                    "creationDate": _utc_stamp(when - dt.timedelta(minutes=5)),
                    "mfaAuthenticated": rng.choice(["true", "false"]),
                },
            },
        }

    def _iam_user(self, user: str) -> dict[str, Any]:
        return {
            "type": "IAMUser",
            "principalId": f"AIDAEXAMPLE{self.rng.randint(1000, 9999)}",
            "arn": f"arn:aws:iam::{self.account}:user/{user}",
            "accountId": self.account,
            "accessKeyId": f"AKIA{self.rng.randint(10**11, 10**12 - 1)}",
            "userName": user,
        }

    def _request_parameters(self) -> dict[str, Any]:
        rng = self.rng
        return {
            "bucketName": f"data-{rng.randint(1, 5)}",
            "key": f"reports/{rng.randint(1, 10**6)}.csv",
            "Host": "s3.amazonaws.com",
            "maxResults": rng.randint(1, 1000),
            "ratio": round(rng.random(), 4),
        }

    def _transfer_details(self) -> dict[str, Any]:
        return {
            "SignatureVersion": "SigV4",
            "CipherSuite": "TLS_AES_128_GCM_SHA256",
            "bytesTransferredIn": self.rng.randint(0, 4096),
            "bytesTransferredOut": float(self.rng.randint(0, 65536)),
            "AuthenticationMethod": "AuthHeader",
        }

    def _make_console_sign_in(self, record: dict[str, Any]) -> None:
        """Turns `record` into a console sign-in, now and then by the root user."""
        record["eventType"] = "AwsConsoleSignIn"
        record["responseElements"] = {"ConsoleLogin": "Success"}
        record["additionalEventData"] = {"MFAUsed": self.rng.choice(["Yes", "No"])}
        if self.rng.random() < 0.3:
            record["userIdentity"] = {
                "type": "Root",
                "principalId": self.account,
                "arn": f"arn:aws:iam::{self.account}:root",
                "accountId": self.account,
            }


def encode_log(records: Sequence[dict[str, Any]], *, compress: bool = True) -> bytes:
    """Bytes of a log file as CloudTrail writes it: gzip of `{"Records": [...]}`."""
    body = json.dumps({"Records": list(records)}, separators=(",", ":")).encode()
    return gzip.compress(body, compresslevel=6) if compress else body


@dataclass
class TrailSandbox:
    """A trail bucket whose deliveries are announced on SNS → SQS, as CloudTrail does."""

    endpoint_url: str
    bucket: str = "trail-bucket"
    topic_name: str = "cloudtrail-topic"
    queue_name: str = "cloudtrail-queue"
    region: str = REGION
    raw_delivery: bool = False
    dlq: bool = True
    max_receive_count: int = 5
    queue_url: str = ""
    dlq_url: str = ""
    topic_arn: str = ""
    access_key: tuple[str, str] = ("testing", "testing")  # (id, secret) used for set-up
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3

            self._clients[service] = boto3.client(
                service,  # type: ignore[call-overload]
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                aws_access_key_id=self.access_key[0],
                aws_secret_access_key=self.access_key[1],
            )
        return self._clients[service]

    def create(self, visibility_timeout: int = 30) -> TrailSandbox:
        s3, sns, sqs = self.client("s3"), self.client("sns"), self.client("sqs")
        s3.create_bucket(Bucket=self.bucket)
        self.topic_arn = sns.create_topic(Name=self.topic_name)["TopicArn"]
        attributes = {"VisibilityTimeout": str(visibility_timeout)}
        if self.dlq:
            self.dlq_url = sqs.create_queue(QueueName=self.queue_name + "-dlq")["QueueUrl"]
            dlq_arn = sqs.get_queue_attributes(QueueUrl=self.dlq_url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(self.max_receive_count)}
            )
        self.queue_url = sqs.create_queue(QueueName=self.queue_name, Attributes=attributes)[
            "QueueUrl"
        ]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sub = sns.subscribe(TopicArn=self.topic_arn, Protocol="sqs", Endpoint=queue_arn)
        if self.raw_delivery:
            sns.set_subscription_attributes(
                SubscriptionArn=sub["SubscriptionArn"],
                AttributeName="RawMessageDelivery",
                AttributeValue="true",
            )
        return self

    def put(self, key: str, body: bytes, **extra: Any) -> None:
        self.client("s3").put_object(Bucket=self.bucket, Key=key, Body=body, **extra)

    def notify(self, keys: Iterable[str], bucket: str | None = None) -> None:
        """Publish CloudTrail's own SNS notification naming `keys`."""
        message = {"s3Bucket": bucket or self.bucket, "s3ObjectKey": list(keys)}
        self.client("sns").publish(TopicArn=self.topic_arn, Message=json.dumps(message))

    def deliver(self, records: Sequence[dict[str, Any]], *, key: str | None = None) -> str:
        """Write one log file and announce it; returns its key."""
        key = key or log_key(region=self.region)
        self.put(key, encode_log(records))
        self.notify([key])
        return key

    def send_raw(self, body: str) -> None:
        """Put an arbitrary body on the queue (for non-CloudTrail shapes and bad input)."""
        self.client("sqs").send_message(QueueUrl=self.queue_url, MessageBody=body)

    def queue_depth(self, queue_url: str | None = None) -> int:
        """Visible + in-flight messages on the queue."""
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url or self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    def env(self) -> dict[str, str]:
        return {**os.environ, "AWS_ENDPOINT_URL": self.endpoint_url}
