"""The DynamoDB checkpoint store: table set-up with ``?create=true`` (an existing table
needs no create permission, a missing one is created, TTL enabled meanwhile by another
worker), and `forget` handing its value over when its reply is lost.

The store is the real one, talking to moto over real HTTP. Where moto does not behave
as DynamoDB does (it enables TTL twice without complaint), the test proxy in front of it
answers that one call as DynamoDB does, in its JSON wire format.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from faultproxy import NO_FAULTS, FaultProxy
from helpers import iam_user

from trailproc._sandbox import REGION, MotoServer
from trailproc.checkpoint import Claim, ClaimState, DynamoDBStore, FileId

TABLE = "trailproc-checkpoints"
FILE = FileId("trail-bucket", "AWSLogs/123456789012/CloudTrail/us-east-1/f.json.gz", "etag-1")


def _create_table(client: Any) -> None:
    """The table as the templates create it: `pk` hash key, on demand, TTL on expires_at."""
    client.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    client.update_time_to_live(
        TableName=TABLE,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
    )


async def _claim_commit_complete(store: DynamoDBStore) -> None:
    try:
        assert await store.claim(FILE, "A", 30) == Claim(ClaimState.NEW, 0)
        await store.commit(FILE, "A", 3)
        await store.complete(FILE, "A", 3)
        assert await store.is_done(FILE)
    finally:
        await store.close()


# --- an existing table needs only the steady-state permissions --------------------------


def test_dynamodb_create_true_on_existing_table_needs_no_create_permission(
    enforcing: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/iam.md: with ?create=true, CreateTable and the TTL calls are "needed once".
    Every worker runs with the same spec, so once the table exists a worker granted only
    the steady-state actions (iam.md's policy) must work; it used to call CreateTable on
    every start and fail every store call with AccessDenied."""

    def client(service: str, key: tuple[str, str] | None = None) -> Any:
        access, secret = key or ("testing", "testing")
        return boto3.client(service, endpoint_url=enforcing.url, region_name=REGION,
                            aws_access_key_id=access, aws_secret_access_key=secret)  # fmt: skip

    iam = client("iam")
    admin = iam_user(iam, "admin", ["*"])
    worker = iam_user(iam, "worker", ["dynamodb:GetItem", "dynamodb:UpdateItem",
                                   "dynamodb:DescribeTable", "dynamodb:PutItem",
                                   "dynamodb:DeleteItem"])  # fmt: skip
    _create_table(client("dynamodb", admin))
    for name, value in enforcing.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", worker[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", worker[1])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    asyncio.run(_claim_commit_complete(DynamoDBStore(TABLE, create_table=True)))


def test_dynamodb_create_true_still_creates_a_missing_table(
    enforcing: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an existing table excuses a refused call: a role without CreateTable still gets
    its AccessDenied when the table is missing, and a role with the documented extra
    actions (iam.md) creates it, with TTL on expires_at."""

    def client(service: str, key: tuple[str, str]) -> Any:
        return boto3.client(service, endpoint_url=enforcing.url, region_name=REGION,
                            aws_access_key_id=key[0], aws_secret_access_key=key[1])  # fmt: skip

    iam = client("iam", ("testing", "testing"))
    creator = iam_user(iam, "creator", ["dynamodb:GetItem", "dynamodb:UpdateItem",
                                     "dynamodb:DescribeTable", "dynamodb:CreateTable",
                                     "dynamodb:DescribeTimeToLive",
                                     "dynamodb:UpdateTimeToLive"])  # fmt: skip
    worker = iam_user(iam, "worker", ["dynamodb:GetItem", "dynamodb:UpdateItem",
                                   "dynamodb:DescribeTable"])  # fmt: skip
    for name, value in enforcing.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", worker[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", worker[1])
    with pytest.raises(ClientError) as info:
        asyncio.run(_claim_commit_complete(DynamoDBStore(TABLE, create_table=True)))
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert info.value.operation_name == "CreateTable"

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creator[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creator[1])
    asyncio.run(_claim_commit_complete(DynamoDBStore(TABLE, create_table=True)))
    ttl = client("dynamodb", creator).describe_time_to_live(TableName=TABLE)
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires_at",
    }


# --- workers starting together ----------------------------------------------------------


def test_dynamodb_create_true_ttl_enabled_by_another_worker_meanwhile(
    aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers started together with ?create=true (deploy.md: "let the first worker do
    it") all find TTL off and all enable it. UpdateTimeToLive is not idempotent: DynamoDB
    answers the later ones ValidationException "TimeToLive is already enabled". That is
    success for us, not a failed store call (which failed the worker's first files)."""
    ddb = boto3.client("dynamodb")
    answered: list[dict[str, Any]] = []

    def update_time_to_live(body: bytes) -> tuple[int, dict[str, str], bytes]:
        # Another worker's call lands first; ours then gets DynamoDB's refusal.
        request = json.loads(body)
        answered.append(request)
        ddb.update_time_to_live(
            TableName=request["TableName"],
            TimeToLiveSpecification=request["TimeToLiveSpecification"],
        )
        payload = {
            "__type": "com.amazon.coral.validate#ValidationException",
            "message": "TimeToLive is already enabled",
        }
        return 400, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(payload).encode()

    answers = {"UpdateTimeToLive": update_time_to_live}
    with FaultProxy(aws_env.url, faults=NO_FAULTS, answers=answers) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        asyncio.run(_claim_commit_complete(DynamoDBStore(TABLE, create_table=True)))
    assert len(answered) == 1
    ttl = ddb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


# --- a value taken once, whatever the network does -------------------------------------
class LostReply(FaultProxy):
    """Forwards everything; the first reply to DynamoDB's `action` is lost: the server
    acted on the request, the client's connection is dropped and botocore sends it again."""

    def __init__(self, upstream: str, action: str) -> None:
        super().__init__(upstream, faults=NO_FAULTS)
        self.action = action
        self.lost = 0

    def forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        answer = super().forward(method, path, headers, body)
        if str(headers.get("X-Amz-Target") or "").endswith("." + self.action) and not self.lost:
            self.lost += 1
            raise OSError("reply lost")  # the proxy drops the client's connection
        return answer


@pytest.mark.parametrize("action", ["UpdateItem", "DeleteItem"])
def test_dynamodb_forget_hands_the_value_over_when_its_reply_is_lost(
    aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """A pending digest check is taken with `forget`: a lost reply and botocore's retry
    must neither lose the value (a plain DeleteItem's retry finds nothing) nor hand it
    out twice."""

    async def body() -> None:
        direct = DynamoDBStore(TABLE, create_table=True)
        assert await direct.remember("digest-check:x", '{"sha256":"ab"}', 3600, only_new=True)
        with LostReply(aws_env.url, action) as proxy:
            monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
            taker = DynamoDBStore(TABLE)
            try:
                first = await taker.forget("digest-check:x")
                second = await taker.forget("digest-check:x")
            finally:
                await taker.close()
        assert proxy.lost == 1
        assert (first, second) == ('{"sha256":"ab"}', None)
        assert await direct.recall("digest-check:x") is None
        # The key is free again for the next pair.
        assert await direct.remember("digest-check:x", "next", 3600, only_new=True)
        await direct.close()

    asyncio.run(body())


# --- the store reaches AWS as the run's other clients do ----------------------------------


def test_the_store_uses_the_configs_endpoint_and_region(
    aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`endpoint_url` and `region` set in the configuration (not the environment) apply
    to the DynamoDB store as to the SQS and S3 clients: before, its client read the
    environment alone and went elsewhere."""
    from trailproc._config import Config
    from trailproc._runtime import open_config_store

    # The environment points at a closed loopback port, and at another region.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-2")
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    config = Config(checkpoint=f"dynamodb://{TABLE}?create=true", endpoint_url=aws_env.url,
                    region="eu-west-1")  # fmt: skip
    store = open_config_store(config)
    assert isinstance(store, DynamoDBStore)
    asyncio.run(_claim_commit_complete(store))
    tables = boto3.client("dynamodb", endpoint_url=aws_env.url, region_name="eu-west-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    assert TABLE in tables.list_tables()["TableNames"]
