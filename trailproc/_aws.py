"""AWS clients, created the way the AWS CLI would: standard credential chain, region,
profile and AWS_ENDPOINT_URL all honoured; nothing read from anywhere else.

aioboto3 is imported here, lazily, so `import trailproc` stays fast.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import gzip
import os
import re
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import msgspec

from ._config import Config
from ._direct import wrap_client
from ._observe import get_logger
from ._version import __version__

__all__ = [
    "AwsClients",
    "S3Router",
    "ThreadedS3Client",
    "aio_session",
    "assumed_role_session",
    "botocore_config",
    "count_requests",
    "fast_timestamp",
    "import_aws_stack",
    "queue_region",
]

log = get_logger("trailproc.aws")

# sqs.REGION.amazonaws.com[.cn] (current) and REGION.queue.amazonaws.com (legacy) URLs.
_QUEUE_HOST = re.compile(
    r"^(?:sqs\.(?P<a>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?|(?P<b>[a-z0-9-]+)\.queue\.amazonaws\.com)$"
)


def queue_region(queue_url: str | None) -> str | None:
    """The region in an SQS queue URL, or None (a local emulator's URL names none)."""
    if not queue_url:
        return None
    host = (urlsplit(queue_url).hostname or "").lower()
    match = _QUEUE_HOST.match(host)
    if not match:
        return None
    return match.group("a") or match.group("b")


def _fast_model_loader(search_path: str | None) -> Any:
    """botocore's data loader (same search path, AWS_DATA_PATH included), decoding its
    JSON models with msgspec.

    The first two clients load ~3.5 MB of JSON models (endpoints, S3's service model
    and endpoint rules, ...): ~120 ms with `json.loads(..., object_pairs_hook=
    OrderedDict)`, ~45 ms with msgspec, on every start-up and every Lambda cold start.
    The result is the same data in plain dicts, which keep insertion order as botocore
    needs. `Loader(file_loader=...)` is botocore's own hook for this.
    """
    from botocore.loaders import JSONFileLoader, Loader

    class MsgspecFileLoader(JSONFileLoader):
        def load_file(self, file_path: str) -> Any:
            for suffix, opener in ((".json", open), (".json.gz", gzip.open)):
                if os.path.isfile(file_path + suffix):
                    with opener(file_path + suffix, "rb") as handle:
                        data = msgspec.json.decode(handle.read())
                    if os.path.basename(file_path).startswith("endpoint-rule-set"):
                        return without_unused_parameters(data)
                    return data
            return None

    paths = [
        os.path.expanduser(os.path.expandvars(path))
        for path in (search_path.split(os.pathsep) if search_path else [])
    ]
    return Loader(extra_search_paths=paths, file_loader=MsgspecFileLoader())


def fast_timestamp(value: Any) -> Any:
    """botocore's timestamp parsing, faster for the two shapes AWS answers with.

    Every GetObject answer carries `Last-Modified` (RFC 1123, "Sat, 05 Dec 2026 10:00:00
    GMT"), which botocore's default parser reads with dateutil's general-purpose parser:
    ~4 % of the daemon's CPU on small files. Those are read with the standard library
    into the same value (same instant, same `tzutc` zone botocore gives "GMT");
    anything else goes to botocore's own parser.
    """
    from botocore.utils import parse_timestamp
    from dateutil.tz import tzutc  # type: ignore[import-untyped]

    if isinstance(value, str) and value.endswith(" GMT"):
        try:
            return email.utils.parsedate_to_datetime(value).replace(tzinfo=tzutc())
        except (TypeError, ValueError):
            pass
    return parse_timestamp(value)


def _tune(core: Any) -> None:
    """Model loading and response parsing of a botocore session, made cheaper (the
    same data and results: `_fast_model_loader`, `fast_timestamp`)."""
    core.register_component("data_loader", _fast_model_loader(
        core.get_config_variable("data_path")))  # fmt: skip
    factory = core.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=fast_timestamp)


def without_unused_parameters(ruleset: Any) -> Any:
    """An endpoint ruleset without the parameters none of its rules reads.

    botocore caches each resolved endpoint by all the ruleset's parameters. S3's
    declares `Key`, `Prefix` and `CopySource` (taken from each request) but no rule reads
    them, so every object key missed the cache and the whole ruleset (~200 conditions)
    was evaluated again for each GetObject: ~1-2 ms of CPU per request. Without them
    the endpoint is resolved once per bucket; a parameter no rule reads cannot change
    the result.
    """
    if not isinstance(ruleset, dict) or not isinstance(ruleset.get("parameters"), dict):
        return ruleset
    rules = msgspec.json.encode(ruleset.get("rules", [])).decode()
    used = {
        name: spec
        for name, spec in ruleset["parameters"].items()
        if f'"ref":"{name}"' in rules or "{" + name in rules
    }
    return {**ruleset, "parameters": used}


def import_aws_stack() -> None:
    """Import aioboto3 and what its clients use now (before forking workers)."""
    import aioboto3  # noqa: F401
    from aiobotocore.session import AioSession  # noqa: F401


def aio_session(profile: str | None = None, region: str | None = None) -> Any:
    """An `aioboto3.Session` (standard credential chain, profile, region and endpoint
    settings) whose clients load their service models and parse timestamps faster (see
    `_tune`)."""
    from aiobotocore.session import AioSession

    core = AioSession(profile=profile)
    _tune(core)
    return _client_session(botocore_session=core, profile_name=profile, region_name=region)


def _client_session(**kwargs: Any) -> Any:
    """An `aioboto3.Session` for clients only (trailproc makes no resources).

    aioboto3 registers its customisations of resources and S3's transfer helpers
    (`upload_file` and kin) on every session; the latter is loaded when the first S3
    client is made, importing s3transfer, multiprocessing's managers and aiofiles (~15 ms
    of start-up) for methods trailproc never calls. This session registers none of them.
    """
    return _client_session_class()(**kwargs)


@functools.cache
def _client_session_class() -> type:
    import aioboto3

    class ClientSession(aioboto3.Session):
        def _register_default_handlers(self) -> None:
            pass

    return ClientSession


def botocore_config(config: Config, *, pool: int = 10, sdk: str = "aiobotocore") -> Any:
    from botocore.config import Config as BotoConfig

    return BotoConfig(
        # botocore's own quick retries first; tenacity rides out longer storms on top.
        retries={"mode": "standard", "max_attempts": 4},
        max_pool_connections=max(pool, 10),
        connect_timeout=10,
        read_timeout=max(30, config.wait_time_seconds + 10),
        tcp_keepalive=True,
        # trailproc builds every request's parameters itself; checking them against the
        # service model again on every call finds nothing.
        parameter_validation=False,
        user_agent=user_agent(sdk),
    )


@functools.cache
def user_agent(sdk: str = "aiobotocore") -> str:
    """The User-Agent of every request: the SDK's own string, built once per process.

    botocore assembles its User-Agent string twice for every request (4-8 % of the
    daemon's CPU on small files, benchmarks/README.md); a fixed one costs nothing per
    request. It carries what botocore's does (SDK, OS, architecture, language) and
    trailproc's name as the app id, without botocore's per-request feature codes.
    """
    from botocore.useragent import UserAgentString

    standard = UserAgentString.from_environment()  # botocore's own: "Botocore/1.x ..."
    if sdk == "aiobotocore":
        import aiobotocore

        standard.set_session_config("aiobotocore", aiobotocore.__version__, "")
    return f"{standard.to_string()} app/trailproc#{__version__}"


def _plain_http(endpoint_url: str | None, service: str) -> bool:
    """Whether the endpoint a client will use is plain http:// (where botocore takes it:
    the config, then AWS_ENDPOINT_URL_<SERVICE>, then AWS_ENDPOINT_URL). When in doubt
    (the environment's endpoints are ignored, or none is set) the answer is no, so TLS
    verification stays on."""
    url = endpoint_url or ""
    ignored = os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true"
    if not url and not ignored:
        url = (
            os.environ.get("AWS_ENDPOINT_URL_" + service.upper().replace("-", "_"))
            or os.environ.get("AWS_ENDPOINT_URL")
            or ""
        )
    return url.lower().startswith("http://")


def count_requests(client: Any, requests: Any) -> None:
    """Count every HTTP request `client` sends (retries included: each is a billed
    request) in `requests`, a counter labelled (service, operation).

    botocore emits `before-send.<service>.<Operation>` just before each attempt goes on
    the wire; the handler finds the series by event name in a dict and increments it,
    and returns None, which lets the request go.
    """
    series: dict[str, Any] = {}

    def counted(event_name: str, **_: Any) -> None:
        found = series.get(event_name)
        if found is None:
            _stage, service, operation = [*event_name.split("."), "?", "?"][:3]
            found = series[event_name] = requests.labels(service, operation)
        found.inc()

    client.meta.events.register("before-send", counted)


class AwsClients:
    """An async context manager handing out aioboto3 clients that share one session.

    Each client is made once per (service, region, role). The SQS client uses the
    queue's region (`sqs_region`, else the one in `queue_url`), the S3 client
    `s3_region`; without either, the session's region (`region`, AWS_REGION, profile).
    With `metrics`, every request the clients send is counted in
    `trailproc_aws_requests_total{service,operation}`.
    """

    def __init__(self, config: Config, metrics: Any = None) -> None:
        self.config = config
        self.metrics = metrics
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[str, str | None, str | None], Any] = {}
        self._session: Any = None
        self._role_sessions: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = aio_session(self.config.profile, self.config.region)
        return self._session

    def default_region(self, service: str) -> str | None:
        """The region a client of `service` uses when none is asked for."""
        if service == "sqs":
            return self.config.sqs_region or queue_region(self.config.queue_url)
        if service == "s3":
            return self.config.s3_region
        return None

    async def client(
        self, service: str, *, region: str | None = None, role_arn: str | None = None
    ) -> Any:
        """The client of `service` in `region` (default: `default_region`), acting as
        `role_arn` when given (assumed through STS and refreshed before it expires)."""
        region = region or self.default_region(service)
        slot = (service, region, role_arn)
        if slot in self._clients:
            return self._clients[slot]
        async with self._lock:  # callers racing for a new client get the same one
            return await self._make(slot)

    async def _make(self, slot: tuple[str, str | None, str | None]) -> Any:
        service, region, role_arn = slot
        if slot not in self._clients:
            pool = self.config.limits().download_concurrency + 4
            kwargs: dict[str, Any] = {"config": botocore_config(self.config, pool=pool)}
            if region:
                kwargs["region_name"] = region
            if self.config.endpoint_url:
                kwargs["endpoint_url"] = self.config.endpoint_url
            if _plain_http(self.config.endpoint_url, service):
                # No TLS on this endpoint (a local emulator): skip building an SSL context
                # and loading the CA bundle (~50 ms per client), which would go unused.
                kwargs["verify"] = False
            session = self._role_session(role_arn) if role_arn else self.session
            client = await self._stack.enter_async_context(session.client(service, **kwargs))
            if self.metrics is not None:
                count_requests(client, self.metrics.aws_requests)
            if self.config.direct_requests:
                client = wrap_client(service, client)
            self._clients[slot] = client
        return self._clients[slot]

    def _role_session(self, role_arn: str) -> Any:
        if role_arn not in self._role_sessions:
            self._role_sessions[role_arn] = assumed_role_session(self, role_arn)
        return self._role_sessions[role_arn]

    async def __aenter__(self) -> AwsClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        self._clients.clear()


class _ThreadedBody:
    """A botocore streaming body read on a worker thread, with aiobotocore's face."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aenter__(self) -> _ThreadedBody:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stream.close()

    async def read(self, size: int | None = None) -> bytes:
        return bytes(await asyncio.to_thread(self._stream.read, size))


class ThreadedS3Client:
    """The S3 object port served by botocore's synchronous client on worker threads.

    For a Lambda cold start, which needs one GetObject or a few: the aioboto3 stack
    (aiohttp, aiobotocore, aioboto3, s3transfer) costs about as much CPU to import as
    everything else the invocation does; botocore alone does not bring it in. It offers
    what `S3Objects` uses, `get_object(**kwargs)` answering aiobotocore's way (an async
    body), `head_object` and `list_objects_v2`, with the same credential chain, region,
    endpoint and retry settings as `AwsClients` (`create`), or over a botocore S3
    client a caller made. See benchmarks/README.md for the measurement.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def create(cls, config: Config, metrics: Any = None) -> ThreadedS3Client:
        from botocore.session import Session

        core = Session(profile=config.profile)
        _tune(core)
        pool = config.limits().download_concurrency + 4
        kwargs: dict[str, Any] = {"config": botocore_config(config, pool=pool, sdk="Botocore")}
        region = config.s3_region or config.region
        if region:
            kwargs["region_name"] = region
        if config.endpoint_url:
            kwargs["endpoint_url"] = config.endpoint_url
        if _plain_http(config.endpoint_url, "s3"):
            kwargs["verify"] = False
        client = core.create_client("s3", **kwargs)
        if metrics is not None:
            count_requests(client, metrics.aws_requests)
        return cls(client)

    async def get_object(self, **kwargs: Any) -> dict[str, Any]:
        response = dict(await asyncio.to_thread(lambda: self._client.get_object(**kwargs)))
        response["Body"] = _ThreadedBody(response["Body"])
        return response

    async def head_object(self, **kwargs: Any) -> dict[str, Any]:
        return dict(await asyncio.to_thread(lambda: self._client.head_object(**kwargs)))

    async def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]:
        return dict(await asyncio.to_thread(lambda: self._client.list_objects_v2(**kwargs)))

    async def __aenter__(self) -> ThreadedS3Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._client.close()


ROLE_SESSION_SECONDS = 3600


def assumed_role_session(clients: AwsClients, role_arn: str) -> Any:
    """An aioboto3 session acting as `role_arn`: STS AssumeRole through `clients`' own
    credentials, called again by botocore's refreshable credentials before the
    temporary ones expire (15 minutes ahead), so long runs never use stale keys."""
    from aiobotocore.credentials import AioDeferredRefreshableCredentials
    from aiobotocore.session import AioSession

    async def assume() -> dict[str, str]:
        sts = await clients.client("sts")
        response = await sts.assume_role(
            RoleArn=role_arn, RoleSessionName="trailproc", DurationSeconds=ROLE_SESSION_SECONDS
        )
        issued = response["Credentials"]
        return {
            "access_key": issued["AccessKeyId"],
            "secret_key": issued["SecretAccessKey"],
            "token": issued["SessionToken"],
            "expiry_time": issued["Expiration"].isoformat(),
        }

    core = AioSession(profile=clients.config.profile)
    _tune(core)
    # botocore's documented way to give a session its own credential source.
    core._credentials = AioDeferredRefreshableCredentials(assume, "assume-role")
    return _client_session(botocore_session=core, region_name=clients.config.region)


class S3Router:
    """The S3 client for each object: in its bucket's region (detected once per bucket
    and cached), acting as the role configured for its bucket or account."""

    def __init__(self, clients: AwsClients) -> None:
        self.clients = clients
        self._regions: dict[str, str | None] = {}
        self._detecting: dict[str, Any] = {}

    def role_for(self, bucket: str, account_id: str | None) -> str | None:
        config = self.clients.config
        role = config.assume_role_by_bucket.get(bucket)
        if role is None and account_id:
            role = config.assume_role_by_account.get(account_id)
        return role

    async def for_object(
        self, bucket: str, account_id: str | None = None, *, detect: bool = True
    ) -> Any:
        """The client for `bucket` (and the account whose logs it holds).

        `detect=False` (reading objects): no HeadBucket ahead of the first read. The
        default-region client reads a bucket whose region is not known yet; if the
        bucket is elsewhere, S3 answers with its region (a redirect naming it in
        `x-amz-bucket-region`, or a signing-region error naming it), and botocore sends
        the request again there and remembers the bucket, as any SDK client does: a
        round trip once per foreign bucket instead of a HeadBucket per bucket on every
        start. Listing (`detect=True`) detects the region first.
        """
        role = self.role_for(bucket, account_id)
        if detect:
            region = await self.region_of(bucket, role)
        else:
            region = self.clients.config.s3_region or self._regions.get(bucket)
        default = await self.clients.client("s3", role_arn=role)
        if region is None or region == default.meta.region_name:
            return default
        return await self.clients.client("s3", region=region, role_arn=role)

    async def region_of(self, bucket: str, role_arn: str | None = None) -> str | None:
        """The bucket's region (HeadBucket's x-amz-bucket-region, on success or error);
        None when S3 does not say, which leaves the default client's region."""
        if self.clients.config.s3_region:
            return self.clients.config.s3_region
        if bucket not in self._regions:
            if bucket not in self._detecting:
                self._detecting[bucket] = asyncio.ensure_future(self._detect(bucket, role_arn))
            region = await self._detecting[bucket]
            self._regions[bucket] = region
            self._detecting.pop(bucket, None)
        return self._regions[bucket]

    async def _detect(self, bucket: str, role_arn: str | None) -> str | None:
        s3 = await self.clients.client("s3", role_arn=role_arn)
        try:
            response = await s3.head_bucket(Bucket=bucket)
        except Exception as exc:
            response = getattr(exc, "response", None) or {}
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        region = headers.get("x-amz-bucket-region") or None
        log.debug("bucket region", bucket=bucket, region=region)
        return region
