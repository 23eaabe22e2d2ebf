"""The short path of the daemon's hot requests (`trailproc._direct`): after the SDK's first
GetObject of a bucket, or ReceiveMessage / DeleteMessageBatch of a queue, the calls are
one signed request on the SDK's own session, and they answer, fail and are counted
exactly as the SDK's calls are."""

from __future__ import annotations

import asyncio
import base64
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import aioboto3
import boto3
import pytest
from botocore.exceptions import ClientError, FlexibleChecksumError
from faultproxy import NO_FAULTS, FaultProxy
from helpers import iam_user

from trailproc._aws import AwsClients
from trailproc._config import Config
from trailproc._direct import DirectGetClient, DirectQueueClient
from trailproc._observe import Metrics
from trailproc._ports.objects import S3Objects
from trailproc._sandbox import MotoServer, TrailSandbox

KEYS = [
    "AWSLogs/123456789012/CloudTrail/us-east-1/2026/12/05/plain.json.gz",
    "spaces and+plus=equals~tilde.json.gz",
    "ünïcödé/€ key?#[].json.gz",
    "a//double//slash.json.gz",
]


def _body(key: str) -> bytes:
    return (key.encode() + b"\n") * 300


def _with_client(
    url: str, work: Callable[[Any, Metrics], Awaitable[Any]], service: str = "s3"
) -> Any:
    """`work(client, metrics)` with the `service` client trailproc makes for `url`."""
    wrapper = {"s3": DirectGetClient, "sqs": DirectQueueClient}[service]

    async def main() -> Any:
        metrics = Metrics()
        async with AwsClients(Config(endpoint_url=url), metrics=metrics) as clients:
            client = await clients.client(service)
            assert isinstance(client, wrapper)
            return await work(client, metrics)

    return asyncio.run(main())


async def _read_all(client: Any, bucket: str, key: str) -> tuple[bytes, dict[str, Any]]:
    response = await client.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        return await body.read(), response


async def _read_chunked(client: Any, bucket: str, key: str) -> bytes:
    response = await client.get_object(Bucket=bucket, Key=key)
    chunks = []
    while chunk := await response["Body"].read(1000):
        chunks.append(chunk)
    return b"".join(chunks)


def test_reads_after_the_first_are_direct_and_answer_as_the_sdk_does(
    sandbox: TrailSandbox, aws_env: MotoServer
) -> None:
    for key in KEYS:
        sandbox.put(key, _body(key))

    async def sdk_answers() -> dict[str, dict[str, Any]]:
        answers = {}
        async with aioboto3.Session().client("s3", endpoint_url=aws_env.url) as plain:
            for key in KEYS:
                response = await plain.get_object(Bucket=sandbox.bucket, Key=key)
                async with response["Body"] as body:
                    await body.read()
                answers[key] = response
        return answers

    expected = asyncio.run(sdk_answers())

    async def work(client: Any, metrics: Metrics) -> None:
        for key in KEYS + KEYS:
            data, response = await _read_all(client, sandbox.bucket, key)
            assert data == _body(key)
            sdk = expected[key]
            for field in ("ContentLength", "ETag", "ContentType", "ChecksumCRC32", "Metadata"):
                assert response.get(field) == sdk.get(field), (key, field)
            assert response["LastModified"] == sdk["LastModified"]
            assert await _read_chunked(client, sandbox.bucket, key) == _body(key)
        reads = 4 * len(KEYS)
        assert client.sdk_calls == 1  # the first read of the bucket only
        assert client.direct_calls == reads - 1
        counted = metrics.value("trailproc_aws_requests_total", service="s3", operation="GetObject")
        assert counted == reads

    _with_client(aws_env.url, work)


def test_a_server_checking_signatures_accepts_direct_calls(enforcing: MotoServer) -> None:
    iam = boto3.client("iam", endpoint_url=enforcing.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    admin = iam_user(iam, "admin", ["*"])
    reader = iam_user(iam, "reader", ["s3:GetObject"])
    sandbox = TrailSandbox(enforcing.url, access_key=admin).create()
    for key in KEYS:
        sandbox.put(key, _body(key))

    async def read_as(secret: tuple[str, str]) -> tuple[list[bytes], DirectGetClient]:
        session = aioboto3.Session(aws_access_key_id=secret[0], aws_secret_access_key=secret[1],
                                   region_name="us-east-1")  # fmt: skip
        async with session.client("s3", endpoint_url=enforcing.url) as sdk_client:
            client = DirectGetClient(sdk_client)
            return [(await _read_all(client, sandbox.bucket, key))[0] for key in KEYS], client

    data, client = asyncio.run(read_as(reader))
    assert data == [_body(key) for key in KEYS]
    assert client.direct_calls == len(KEYS) - 1
    # The control: this server refuses a request signed with the wrong secret.
    with pytest.raises(ClientError) as refused:
        asyncio.run(read_as((reader[0], "not-the-secret")))
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_a_refused_direct_read_is_asked_again_through_the_sdk(
    sandbox: TrailSandbox, aws_env: MotoServer
) -> None:
    slow_down = {"left": 1}

    def throttle_once(method: str, path: str, headers: Any) -> Any:
        if method == "GET" and path.endswith("second.json.gz") and slow_down["left"]:
            slow_down["left"] -= 1
            body = b"<Error><Code>SlowDown</Code><Message>Slow down.</Message></Error>"
            return 503, {"Content-Type": "application/xml"}, body
        return None

    sandbox.put("first.json.gz", _body("first"))
    sandbox.put("second.json.gz", _body("second"))

    async def work(client: Any, metrics: Metrics) -> None:
        assert (await _read_all(client, sandbox.bucket, "first.json.gz"))[0] == _body("first")
        assert (await _read_all(client, sandbox.bucket, "second.json.gz"))[0] == _body("second")
        assert client.direct_calls == 0 and client.sdk_calls == 2
        # Each attempt is a billed request, the refused one too.
        counted = metrics.value("trailproc_aws_requests_total", service="s3", operation="GetObject")
        assert counted == 3
        # After a refusal the next reads go through the SDK (and its backoff), so a
        # lasting refusal is not met with an immediate second request every time.
        for _ in range(3):
            await _read_all(client, sandbox.bucket, "first.json.gz")
        assert client.direct_calls == 0 and client.sdk_calls == 5
        with pytest.raises(ClientError) as missing:
            await client.get_object(Bucket=sandbox.bucket, Key="never-written.json.gz")
        assert missing.value.response["Error"]["Code"] == "NoSuchKey"

    with FaultProxy(aws_env.url, faults=NO_FAULTS, intercept=throttle_once) as proxy:
        _with_client(proxy.url, work)
    assert slow_down["left"] == 0


def test_a_body_that_does_not_match_its_checksum_fails_the_streamed_read(
    sandbox: TrailSandbox, aws_env: MotoServer
) -> None:
    original = _body("tampered")
    checksum = base64.b64encode(zlib.crc32(original).to_bytes(4, "big")).decode()

    def tamper(method: str, path: str, headers: Any) -> Any:
        if method == "GET" and path.endswith("tampered.json.gz"):
            changed = original.replace(b"tampered", b"TAMPERED", 1)
            return 200, {"Content-Type": "binary/octet-stream",
                         "x-amz-checksum-crc32": checksum}, changed  # fmt: skip
        return None

    sandbox.put("learn.json.gz", _body("learn"))

    async def work(client: Any, metrics: Metrics) -> None:
        await _read_all(client, sandbox.bucket, "learn.json.gz")
        with pytest.raises(FlexibleChecksumError):
            await _read_chunked(client, sandbox.bucket, "tampered.json.gz")
        assert client.direct_calls == 1

    with FaultProxy(aws_env.url, faults=NO_FAULTS, intercept=tamper) as proxy:
        _with_client(proxy.url, work)


def test_reads_with_other_parameters_go_through_the_sdk(
    sandbox: TrailSandbox, aws_env: MotoServer
) -> None:
    sandbox.put("ranged.json.gz", _body("ranged"))

    async def work(client: Any, metrics: Metrics) -> None:
        await _read_all(client, sandbox.bucket, "ranged.json.gz")
        response = await client.get_object(
            Bucket=sandbox.bucket, Key="ranged.json.gz", Range="bytes=0-5"
        )
        async with response["Body"] as body:
            assert await body.read() == _body("ranged")[:6]
        assert client.sdk_calls == 2 and client.direct_calls == 0

    _with_client(aws_env.url, work)


def test_the_object_port_reads_through_the_short_path(
    sandbox: TrailSandbox, aws_env: MotoServer
) -> None:
    for key in KEYS:
        sandbox.put(key, _body(key))

    async def work(client: Any, metrics: Metrics) -> None:
        port = S3Objects(client, requester_pays=[sandbox.bucket])
        for key in KEYS:
            async with port.open(sandbox.bucket, key) as opened:
                assert await opened.read() == _body(key)
                assert opened.info.size == len(_body(key))
        assert client.direct_calls == len(KEYS) - 1

    _with_client(aws_env.url, work)


# --- SQS ---------------------------------------------------------------------------------


def _send(sandbox: TrailSandbox, count: int) -> dict[str, dict[str, Any]]:
    sent = {}
    sqs = sandbox.client("sqs")
    for i in range(count):
        attributes = {
            "origin": {"DataType": "String", "StringValue": f"n{i}"},
            "raw": {"DataType": "Binary", "BinaryValue": bytes([i, 0, 255])},
        }
        body = f'{{"n": {i}, "text": "caf\u00e9 \\u00e9"}}'
        sqs.send_message(QueueUrl=sandbox.queue_url, MessageBody=body,
                         MessageAttributes=attributes)  # fmt: skip
        sent[body] = attributes
    return sent


def test_queue_calls_after_the_first_are_direct_and_answer_as_the_sdk_does(
    sandbox: TrailSandbox, aws_env: MotoServer
) -> None:
    sent = _send(sandbox, 6)

    async def work(client: Any, metrics: Metrics) -> None:
        got: list[dict[str, Any]] = []
        receives = 0
        while len(got) < len(sent):
            receives += 1
            response = await client.receive_message(
                QueueUrl=sandbox.queue_url, MaxNumberOfMessages=2, WaitTimeSeconds=1,
                VisibilityTimeout=60, AttributeNames=["All"], MessageAttributeNames=["All"],
            )  # fmt: skip
            got.extend(response.get("Messages", []))
            assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
        for message in got:
            assert message["MessageAttributes"] == {
                name: {k: v for k, v in value.items()}
                for name, value in sent[message["Body"]].items()
            }
            assert int(message["Attributes"]["ApproximateReceiveCount"]) == 1
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)]
        first = await client.delete_message_batch(QueueUrl=sandbox.queue_url, Entries=entries[:3])
        rest = await client.delete_message_batch(QueueUrl=sandbox.queue_url, Entries=entries[3:])
        assert len(first["Successful"]) == 3 and len(rest["Successful"]) == 3
        # One SDK call per operation; the rest direct.
        assert client.sdk_calls == 2 and client.direct_calls == receives - 1 + 1
        counted = metrics.value("trailproc_aws_requests_total", service="sqs",
                                operation="ReceiveMessage")  # fmt: skip
        assert counted == receives

    _with_client(aws_env.url, work, "sqs")
    assert sandbox.queue_depth() == 0


def test_a_refused_queue_call_is_the_sdks_error(sandbox: TrailSandbox, aws_env: MotoServer) -> None:
    _send(sandbox, 1)

    async def work(client: Any, metrics: Metrics) -> None:
        await client.receive_message(QueueUrl=sandbox.queue_url, WaitTimeSeconds=1)
        sandbox.client("sqs").delete_queue(QueueUrl=sandbox.queue_url)
        with pytest.raises(ClientError) as gone:
            await client.receive_message(QueueUrl=sandbox.queue_url, WaitTimeSeconds=0)
        assert gone.value.response["Error"]["Code"] in (
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
        )
        assert client.direct_calls == 0 and client.sdk_calls == 1

    _with_client(aws_env.url, work, "sqs")


def test_a_server_checking_signatures_accepts_direct_queue_calls(enforcing: MotoServer) -> None:
    iam = boto3.client("iam", endpoint_url=enforcing.url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    admin = iam_user(iam, "admin", ["*"])
    # AWS authorises a batch delete as sqs:DeleteMessage; moto asks for the batch's name.
    worker = iam_user(iam, "worker", ["sqs:ReceiveMessage", "sqs:DeleteMessage",
                                      "sqs:DeleteMessageBatch"])  # fmt: skip
    sandbox = TrailSandbox(enforcing.url, access_key=admin).create()
    _send(sandbox, 4)

    async def drain() -> DirectQueueClient:
        session = aioboto3.Session(aws_access_key_id=worker[0], aws_secret_access_key=worker[1],
                                   region_name="us-east-1")  # fmt: skip
        async with session.client("sqs", endpoint_url=enforcing.url) as sdk_client:
            client = DirectQueueClient(sdk_client)
            for _ in range(4):
                response = await client.receive_message(
                    QueueUrl=sandbox.queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1
                )
                (message,) = response["Messages"]
                await client.delete_message_batch(QueueUrl=sandbox.queue_url, Entries=[
                    {"Id": "0", "ReceiptHandle": message["ReceiptHandle"]}])  # fmt: skip
            return client

    client = asyncio.run(drain())
    assert client.direct_calls == 6 and client.sdk_calls == 2
    assert sandbox.queue_depth() == 0


def test_routes_kept_are_bounded(
    sandbox: TrailSandbox, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trailproc._direct

    monkeypatch.setattr(trailproc._direct, "_MAX_ROUTES", 2)
    buckets = [f"{sandbox.bucket}-{i}" for i in range(3)]
    s3 = sandbox.client("s3")
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="k.json.gz", Body=b"x")

    async def work(client: Any, metrics: Metrics) -> None:
        for bucket in buckets:  # each learned; the first forgotten for the third
            await _read_all(client, bucket, "k.json.gz")
        assert client.sdk_calls == 3
        await _read_all(client, buckets[2], "k.json.gz")
        assert client.direct_calls == 1
        await _read_all(client, buckets[0], "k.json.gz")
        assert client.sdk_calls == 4 and client.direct_calls == 1

    _with_client(aws_env.url, work)


def test_direct_requests_can_be_turned_off(sandbox: TrailSandbox, aws_env: MotoServer) -> None:
    async def main() -> Any:
        config = Config(endpoint_url=aws_env.url, direct_requests=False)
        async with AwsClients(config) as clients:
            s3, sqs = await clients.client("s3"), await clients.client("sqs")
            return s3, sqs

    s3, sqs = asyncio.run(main())
    assert not isinstance(s3, DirectGetClient) and not isinstance(sqs, DirectQueueClient)


def test_making_clients_loads_no_transfer_helpers(aws_env: MotoServer) -> None:
    """aioboto3's S3 transfer helpers (s3transfer, multiprocessing's managers, aiofiles)
    are start-up cost for methods trailproc never calls: making its clients loads none."""
    import subprocess
    import sys

    code = (
        "import asyncio, sys\n"
        "from trailproc._aws import AwsClients\n"
        "from trailproc._config import Config\n"
        "async def main():\n"
        "    async with AwsClients(Config()) as clients:\n"
        "        await clients.client('s3'); await clients.client('sqs')\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in ('s3transfer', 'aiofiles', 'multiprocessing.managers',"
        " 'aioboto3') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    assert done.stdout.strip() == "['aioboto3']"


def test_direct_reads_carry_the_bucket_owner_and_payer_headers(
    sandbox: TrailSandbox, aws_env: MotoServer
) -> None:
    """The owner check (S3 refuses a look-alike bucket) and requester-pays travel on
    every read, the short ones too: they are part of what a route is learned for."""
    for key in KEYS[:3]:
        sandbox.put(key, _body(key))

    async def work(client: Any, metrics: Metrics) -> None:
        port = S3Objects(client, requester_pays=[sandbox.bucket],
                         bucket_owners={sandbox.bucket: "123456789012"})  # fmt: skip
        for key in KEYS[:3]:
            async with port.open(sandbox.bucket, key) as opened:
                assert await opened.read() == _body(key)
        assert client.direct_calls == 2

    with FaultProxy(aws_env.url, faults=NO_FAULTS) as proxy:
        _with_client(proxy.url, work)
    gets = [headers for method, _path, headers in proxy.headers_seen if method == "GET"]
    assert len(gets) == 3
    for headers in gets:
        lowered = {name.lower(): value for name, value in headers.items()}
        assert lowered["x-amz-expected-bucket-owner"] == "123456789012"
        assert lowered["x-amz-request-payer"] == "requester"
        assert "x-amz-expected-bucket-owner" in lowered["authorization"]  # signed


@pytest.mark.parametrize("direct", [True, False])
def test_the_daemon_hands_every_record_over_either_way(
    sandbox: TrailSandbox, aws_env: MotoServer, tmp_path: Any, direct: bool
) -> None:
    """A whole run, with the short path and with `direct_requests = false`: the same
    records, each once, every message deleted."""
    from collections import Counter

    from helpers import run_in_process

    import trailproc
    from trailproc._sandbox import make_records

    expected: list[str] = []
    for seed in range(6):
        records = make_records(20, seed=seed)
        sandbox.deliver(records)
        expected += [r["eventID"] for r in records]

    class Collect(trailproc.EventProcessor):
        def __init__(self) -> None:
            self.ids: list[str] = []

        def process(self, events: list[trailproc.Event]) -> None:
            self.ids.extend(e.event_id for e in events)

    seen = Collect()
    result = run_in_process(sandbox, tmp_path, seen, direct_requests=direct)
    assert Counter(seen.ids) == Counter(expected)
    assert result.files_done == 6 and sandbox.queue_depth() == 0
    gets = result.metrics.value("trailproc_aws_requests_total", service="s3",
                                operation="GetObject")  # fmt: skip
    assert gets == 6
