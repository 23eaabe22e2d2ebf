"""A checkpoint store in a DynamoDB table, shared by workers on any number of machines.

One item per log file, keyed by `pk = "s3://bucket/key#etag"`. Leases are taken with
conditional writes, so two workers can never both believe they hold a file. Lease expiry
compares wall clocks of different machines: keep leases much longer than clock skew.

Item attributes: pk (S), bucket/key/etag (S, for people reading the table), position (N),
records (N), done (BOOL), lease_owner (S), lease_expires (N, epoch seconds), updated_at
(N) and expires_at (N, epoch seconds, the table's TTL attribute, set on completion).

Small expiring values (`KeyValueStore`) share the table: one item per value, keyed by
`pk = "kv:" + key` (file items start with "s3://", so the two never collide), with
`value` (S), `value_expires` (N, exact expiry, checked on every read because DynamoDB's
TTL deletion can lag by days) and `expires_at` (the TTL attribute, so the table forgets
them by itself when TTL is enabled).

The kind of an item is the prefix of its `pk`, and every kind has its own: "s3://"
(files), "kv:" (values), "meta:" (the store's own records). Future kinds (leases,
listing cursors, audit state) take new prefixes; code that does not know a prefix never
reads such items. The item `pk = "meta:schema"` records the table's schema versions
(`schema_version`, `compatible_from`, `written_by`; see `schema`). It is read when the
client is first created, before any other item, and written then when missing (a table
from trailproc 0.1 has schema 1's layout and no such item) or older than this code's.

No retries here: transient errors propagate and the caller's retry policy decides.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from botocore.exceptions import ClientError

from .._errors import CheckpointError, error_code
from .._observe import get_logger
from ._base import Claim, ClaimState, FileId, LeaseLost
from ._schema import SchemaTooNew, StoredSchema, merged_schema

__all__ = ["DynamoDBStore"]

TTL_ATTRIBUTE = "expires_at"

# Every attribute goes through a placeholder: several of them are DynamoDB reserved words.
_NAMES = {
    "#pk": "pk",
    "#bucket": "bucket",
    "#key": "key",
    "#etag": "etag",
    "#pos": "position",
    "#records": "records",
    "#done": "done",
    "#owner": "lease_owner",
    "#expires": "lease_expires",
    "#updated": "updated_at",
    "#ttl": TTL_ATTRIBUTE,
    "#value": "value",
    "#vexp": "value_expires",
    "#taker": "taker",
    "#sv": "schema_version",
    "#cf": "compatible_from",
    "#by": "written_by",
}

KV_PREFIX = "kv:"
SCHEMA_PK = "meta:schema"
# A table without the schema item was written by trailproc 0.1 (or is new): schema 1.
_UNRECORDED = StoredSchema(1, 1)

log = get_logger("trailproc.checkpoint")


def _names(expression: str) -> dict[str, str]:
    """The placeholders `expression` uses (DynamoDB rejects unused ones)."""
    return {k: v for k, v in _NAMES.items() if k in expression}


def _n(value: float) -> dict[str, str]:
    return {"N": f"{value:.3f}".rstrip("0").rstrip(".")}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _conditional_failed(error: ClientError) -> bool:
    return error_code(error) == "ConditionalCheckFailedException"


def _stored_schema(item: dict[str, Any]) -> StoredSchema:
    version = int(item["schema_version"]["N"])
    compatible_from = int(item.get("compatible_from", {}).get("N", version))
    return StoredSchema(version, compatible_from, item.get("written_by", {}).get("S", ""))


def _denied(error: ClientError) -> bool:
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(error) in ("AccessDeniedException", "AccessDenied") or status == 403


class DynamoDBStore:
    """`CheckpointStore` in DynamoDB through aioboto3.

    The client is created on first use, inside the running event loop, from `session`
    (default: `trailproc._aws.aio_session(profile, region)`, an aioboto3 session that
    reads AWS_PROFILE, the region and AWS_ENDPOINT_URL from the environment as the AWS
    CLI does, unless `profile`, `region` or `endpoint_url` say otherwise). With
    `create_table=True` a missing table is created (on-demand billing, `pk` string hash
    key) and TTL is enabled on `expires_at`; completed files then vanish `ttl_days`
    after completion. With `aws_requests` (a counter labelled service and operation, as
    `Metrics.aws_requests`), every request the client sends is counted in it, so a run's
    `trailproc_aws_requests_total{service="dynamodb"}` shows what its checkpoints cost.
    """

    never_suspends = False  # every call is a network round trip

    def __init__(
        self,
        table: str,
        *,
        ttl_days: float = 30,
        session: Any = None,
        create_table: bool = False,
        aws_requests: Any = None,
        profile: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        if ttl_days <= 0:
            raise ValueError(f"ttl_days must be positive, got {ttl_days!r}")
        self.table = table
        self.ttl_days = ttl_days
        self.create_table = create_table
        self._session = session
        self._aws_requests = aws_requests
        self._place = (profile, region, endpoint_url)
        self._client: Any = None
        self._client_cm: Any = None
        self._lock: asyncio.Lock | None = None
        self._refused: SchemaTooNew | None = None

    def __repr__(self) -> str:
        return f"DynamoDBStore({self.table!r})"

    @staticmethod
    def pk(file: FileId) -> str:
        return str(file)

    async def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        if self._refused is not None:  # refused once: no more calls to the table
            raise SchemaTooNew(self._refused.store, self._refused.stored)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                profile, region, endpoint_url = self._place
                if self._session is None:
                    from .._aws import aio_session

                    self._session = aio_session(profile, region)
                cm = self._session.client(
                    "dynamodb", **({"endpoint_url": endpoint_url} if endpoint_url else {})
                )
                client = await cm.__aenter__()
                if self._aws_requests is not None:
                    from .._aws import count_requests

                    count_requests(client, self._aws_requests)
                try:
                    if self.create_table:
                        await self._ensure_table(client)
                    await self._check_schema(client)
                except BaseException:
                    await cm.__aexit__(None, None, None)
                    raise
                self._client_cm, self._client = cm, client
        return self._client

    async def _ensure_table(self, client: Any, timeout: float = 300.0) -> None:
        """Create the table if it is missing, wait until it is ACTIVE, turn TTL on.

        Every worker may run with ``?create=true``, but CreateTable and the TTL calls are
        needed once (docs/iam.md): a table that exists already needs only DescribeTable,
        and a role refused the TTL calls on it is left alone.
        """
        try:
            desc = await client.describe_table(TableName=self.table)
            existed = True
        except ClientError as e:
            if error_code(e) != "ResourceNotFoundException":
                raise
            existed = False
            try:
                await client.create_table(
                    TableName=self.table,
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    BillingMode="PAY_PER_REQUEST",
                )
            except ClientError as e:
                # Being created by another worker right now.
                if error_code(e) != "ResourceInUseException":
                    raise
            desc = await client.describe_table(TableName=self.table)
        deadline = time.monotonic() + timeout
        while desc["Table"]["TableStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise TimeoutError(f"DynamoDB table {self.table} not ACTIVE after {timeout}s")
            await asyncio.sleep(1.0)
            desc = await client.describe_table(TableName=self.table)
        try:
            await self._ensure_ttl(client)
        except ClientError as e:
            if not (existed and _denied(e)):
                raise

    async def _ensure_ttl(self, client: Any) -> None:
        def enabled(ttl: dict[str, Any]) -> bool:
            status = ttl.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
            return status in ("ENABLED", "ENABLING")

        if enabled(await client.describe_time_to_live(TableName=self.table)):
            return
        try:
            await client.update_time_to_live(
                TableName=self.table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
            )
        except ClientError as e:
            # Not idempotent: when another worker turned TTL on since we looked, DynamoDB
            # answers ValidationException ("TimeToLive is already enabled").
            if error_code(e) != "ValidationException" or not enabled(
                await client.describe_time_to_live(TableName=self.table)
            ):
                raise

    async def _check_schema(self, client: Any) -> None:
        """Refuse a table of a newer, incompatible schema (`SchemaTooNew`); record this
        code's versions when the table records none or older ones. Workers racing here
        write with conditions, so the recorded versions only ever grow."""
        for _ in range(5):
            resp = await client.get_item(
                TableName=self.table, Key={"pk": _s(SCHEMA_PK)}, ConsistentRead=True
            )
            item = resp.get("Item")
            stored = _stored_schema(item) if item else _UNRECORDED
            try:
                target = merged_schema(f"dynamodb://{self.table}", stored)
            except SchemaTooNew as refusal:
                self._refused = refusal
                raise
            if item and target is None:
                return
            if await self._write_schema(client, target or stored.recorded_here(), item):
                return
        raise CheckpointError(f"dynamodb://{self.table}: its schema record kept changing")

    async def _write_schema(
        self, client: Any, schema: StoredSchema, seen: dict[str, Any] | None
    ) -> bool:
        """Record `schema` if the schema item is still as `seen` (None: absent)."""
        if seen is None:
            condition = "attribute_not_exists(#pk)"
            values: dict[str, Any] = {}
        else:
            condition = "#sv = :seen_sv AND #cf = :seen_cf"
            values = {":seen_sv": seen["schema_version"], ":seen_cf": seen["compatible_from"]}
        update = "SET #sv = :sv, #cf = :cf, #by = :by, #updated = :now"
        try:
            await client.update_item(
                TableName=self.table,
                Key={"pk": _s(SCHEMA_PK)},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(update + condition),
                ExpressionAttributeValues={
                    ":sv": {"N": str(schema.version)},
                    ":cf": {"N": str(schema.compatible_from)},
                    ":by": _s(schema.written_by or "unknown"),
                    ":now": _n(time.time()),
                    **values,
                },
            )
        except ClientError as e:
            if _conditional_failed(e):
                return False  # another worker wrote it meanwhile: read it again
            raise
        log.info("checkpoint schema recorded", table=self.table, schema_version=schema.version,
                 compatible_from=schema.compatible_from)  # fmt: skip
        return True

    async def _get_item(self, client: Any, file: FileId) -> dict[str, Any] | None:
        resp = await client.get_item(
            TableName=self.table, Key={"pk": _s(self.pk(file))}, ConsistentRead=True
        )
        item: dict[str, Any] | None = resp.get("Item")
        return item

    @staticmethod
    def _position(item: dict[str, Any] | None) -> int:
        if not item or "position" not in item:
            return 0
        return int(item["position"]["N"])

    async def _update(
        self,
        file: FileId,
        update: str,
        values: dict[str, Any],
        *,
        condition: str | None = None,
        **extra: Any,
    ) -> dict[str, Any] | None:
        """One UpdateItem on `file`'s item; None when `condition` did not hold."""
        client = await self._get_client()
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"pk": _s(self.pk(file))},
            "UpdateExpression": update,
            "ExpressionAttributeNames": _names(update + (condition or "")),
            "ExpressionAttributeValues": values,
            **extra,
        }
        if condition:
            request["ConditionExpression"] = condition
        try:
            response: dict[str, Any] = await client.update_item(**request)
        except ClientError as e:
            if condition and _conditional_failed(e):
                return None
            raise
        return response

    async def claim(self, file: FileId, owner: str, lease_seconds: float) -> Claim:
        now = time.time()
        update = (
            "SET #owner = :me, #expires = :exp, #updated = :now,"
            " #bucket = :bucket, #key = :key, #etag = :etag,"
            " #pos = if_not_exists(#pos, :zero), #done = if_not_exists(#done, :false)"
        )
        condition = (
            "(attribute_not_exists(#pk) OR attribute_not_exists(#owner)"
            " OR #owner = :me OR #expires < :now)"
            " AND (attribute_not_exists(#done) OR #done <> :true)"
        )
        values = {
            ":me": _s(owner),
            ":exp": _n(now + lease_seconds),
            ":now": _n(now),
            ":bucket": _s(file.bucket),
            ":key": _s(file.key),
            ":etag": _s(file.etag),
            ":zero": {"N": "0"},
            ":false": {"BOOL": False},
            ":true": {"BOOL": True},
        }
        resp = await self._update(file, update, values, condition=condition, ReturnValues="ALL_NEW")
        if resp is None:
            item = await self._get_item(await self._get_client(), file)
            if item and item.get("done", {}).get("BOOL"):
                return Claim(ClaimState.DONE)
            # Held by someone else (or changed under us a moment ago): try again later.
            return Claim(ClaimState.BUSY, self._position(item))
        position = self._position(resp.get("Attributes"))
        if position > 0:
            return Claim(ClaimState.RESUME, position)
        return Claim(ClaimState.NEW, 0)

    async def commit(self, file: FileId, owner: str, position: int) -> None:
        values = {":p": {"N": str(int(position))}, ":me": _s(owner), ":now": _n(time.time())}
        done = await self._update(
            file, "SET #pos = :p, #updated = :now", values,
            condition="#owner = :me AND #pos <= :p",
        )  # fmt: skip
        if done is None:
            item = await self._get_item(await self._get_client(), file)
            if item is None or item.get("lease_owner", {}).get("S") != owner:
                raise LeaseLost(f"{owner} does not hold the lease on {file}") from None
            # Still ours: the stored position is ahead, and progress never moves back.

    async def complete(self, file: FileId, owner: str, records: int) -> None:
        now = time.time()
        update = (
            "SET #done = :true, #records = :n, #pos = :n, #ttl = :ttl, #updated = :now,"
            " #bucket = :bucket, #key = :key, #etag = :etag"
            " REMOVE #owner, #expires"
        )
        await self._update(
            file,
            update,
            {
                ":true": {"BOOL": True},
                ":n": {"N": str(int(records))},
                ":ttl": {"N": str(int(now + self.ttl_days * 86400))},
                ":now": _n(now),
                ":bucket": _s(file.bucket),
                ":key": _s(file.key),
                ":etag": _s(file.etag),
            },
        )

    async def release(self, file: FileId, owner: str) -> None:
        # A failed condition means it is not ours any more (expired and taken, or
        # completed): nothing to give up.
        await self._update(
            file, "SET #updated = :now REMOVE #owner, #expires",
            {":me": _s(owner), ":now": _n(time.time())}, condition="#owner = :me",
        )  # fmt: skip

    async def is_done(self, file: FileId) -> bool:
        client = await self._get_client()
        resp = await client.get_item(
            TableName=self.table,
            Key={"pk": _s(self.pk(file))},
            ConsistentRead=True,
            ProjectionExpression="#done",
            ExpressionAttributeNames={"#done": "done"},
        )
        return bool(resp.get("Item", {}).get("done", {}).get("BOOL"))

    # --- KeyValueStore ----------------------------------------------------------------
    @staticmethod
    def _live_value(item: dict[str, Any] | None, now: float) -> str | None:
        if not item or "value" not in item:
            return None
        if float(item.get("value_expires", {}).get("N", "0")) <= now:
            return None
        return str(item["value"]["S"])

    async def remember(
        self, key: str, value: str, ttl_seconds: float, *, only_new: bool = False
    ) -> bool:
        client = await self._get_client()
        now = time.time()
        expires = now + ttl_seconds
        extra: dict[str, Any] = {}
        if only_new:
            condition = "attribute_not_exists(#pk) OR #vexp <= :now"
            extra = {
                "ConditionExpression": condition,
                "ExpressionAttributeNames": _names(condition),
                "ExpressionAttributeValues": {":now": _n(now)},
            }
        try:
            await client.put_item(
                TableName=self.table,
                Item={
                    "pk": _s(KV_PREFIX + key),
                    "value": _s(value),
                    "value_expires": _n(expires),
                    TTL_ATTRIBUTE: {"N": str(int(expires) + 1)},
                    "updated_at": _n(now),
                },
                **extra,
            )
        except ClientError as e:
            if not _conditional_failed(e):
                raise
            return False
        return True

    async def hold(self, key: str, owner: str, ttl_seconds: float) -> bool:
        """Take or renew the lease `key` for `owner` (see `LeaseStore`). A retried
        request whose first reply was lost succeeds again: the owner matches."""
        client = await self._get_client()
        now = time.time()
        expires = now + ttl_seconds
        condition = "attribute_not_exists(#pk) OR #vexp <= :now OR #value = :owner"
        try:
            await client.put_item(
                TableName=self.table,
                Item={
                    "pk": _s(KV_PREFIX + key),
                    "value": _s(owner),
                    "value_expires": _n(expires),
                    TTL_ATTRIBUTE: {"N": str(int(expires) + 1)},
                    "updated_at": _n(now),
                },
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(condition),
                ExpressionAttributeValues={":now": _n(now), ":owner": _s(owner)},
            )
        except ClientError as e:
            if not _conditional_failed(e):
                raise
            return False
        return True

    async def recall(self, key: str) -> str | None:
        client = await self._get_client()
        resp = await client.get_item(
            TableName=self.table, Key={"pk": _s(KV_PREFIX + key)}, ConsistentRead=True
        )
        return self._live_value(resp.get("Item"), time.time())

    async def forget(self, key: str) -> str | None:
        """Take the value: handed to exactly one caller, even when a reply is lost.

        A single DeleteItem is not enough: when its reply is lost, botocore sends it
        again, the second call finds nothing, and the value is lost to everyone (a
        pending digest check never met). So the item is first marked with a token of
        this call (conditional on no other taker and a live value); a repeated mark
        fails its condition and a consistent read then shows whether the token is ours.
        The delete that follows is cleanup: if it fails, the TTL removes the item.
        """
        client = await self._get_client()
        pk = {"pk": _s(KV_PREFIX + key)}
        token = uuid.uuid4().hex
        condition = "attribute_exists(#value) AND attribute_not_exists(#taker) AND #vexp > :now"
        try:
            resp = await client.update_item(
                TableName=self.table,
                Key=pk,
                UpdateExpression="SET #taker = :token",
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(condition),
                ExpressionAttributeValues={":token": _s(token), ":now": _n(time.time())},
                ReturnValues="ALL_NEW",
            )
            item = resp.get("Attributes")
        except ClientError as e:
            if not _conditional_failed(e):
                raise
            # No live value, another taker, or our own mark whose reply was lost.
            resp = await client.get_item(TableName=self.table, Key=pk, ConsistentRead=True)
            item = resp.get("Item")
            if not item or item.get("taker", {}).get("S") != token:
                return None
        try:
            condition = "#taker = :token"
            await client.delete_item(
                TableName=self.table,
                Key=pk,
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(condition),
                ExpressionAttributeValues={":token": _s(token)},
            )
        except Exception as e:  # the value is ours now: never lose it over cleanup
            # A failed condition: already deleted (our own delete, its reply lost).
            if not (isinstance(e, ClientError) and _conditional_failed(e)):
                log.warning("taken value not deleted; its TTL removes it", key=key,
                            error=error_code(e) or repr(e))  # fmt: skip
        return str(item["value"]["S"])

    async def close(self) -> None:
        cm, self._client_cm, self._client = self._client_cm, None, None
        if cm is not None:
            await cm.__aexit__(None, None, None)
