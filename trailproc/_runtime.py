"""The one composition root: config → trust → checkpoint store → AWS clients → processor
→ pipeline, opened by `open_runtime` and closed in reverse, in one place.

Every road opens it: `run` (and each `--workers` child), `process`, `backfill`, `watch`,
`history`, `audit --fix` and the Lambda runtime. Nothing else wires the processor, the
store, the fetcher and the pipeline together.

The AWS SDK is imported only when a runtime that reads from AWS is opened (a Lambda
cold start pays for it once, on its first invocation).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ._config import Config
from ._errors import CheckpointError
from ._observe import Metrics, get_logger
from ._pipeline.budget import MemoryBudget
from ._pipeline.engine import FilePipeline, PipelineSettings
from ._pipeline.fetch import Fetcher, LocalFetcher, ObjectFetcher
from ._pipeline.filters import RecordFilter
from ._pipeline.gaps import GapFiller
from ._pipeline.observer import PipelineObserver
from ._pipeline.processor import (
    EventProcessor,
    JsonLinesOutput,
    combine,
    load_processor,
    maybe_await,
)
from ._pipeline.quarantine import RecordQuarantine, open_quarantine
from ._pipeline.trust import Trust, TrustPolicy
from ._ports.objects import S3Objects
from .checkpoint import CheckpointStore, FileId, open_store

if TYPE_CHECKING:
    from ._aws import AwsClients, S3Router

__all__ = [
    "Objects",
    "Runtime",
    "StoreOptions",
    "build_budget",
    "build_observer",
    "build_pipeline",
    "build_processor",
    "build_quarantine",
    "check_store",
    "default_owner",
    "open_config_store",
    "open_runtime",
    "pipeline_settings",
    "resolve_limits",
]

log = get_logger("trailproc")

# Where the pipeline's files come from:
# - "s3": S3 objects, each read in its bucket's region with the configured access rules;
# - "s3-default-client": S3 objects through the default-region S3 client only;
# - "s3-threaded": the same through botocore's synchronous client on worker threads
#   (a Lambda cold start without the aioboto3 stack: see `ThreadedS3Client`);
# - "local": local files (no AWS clients, no trust boundary);
# or a `Fetcher` of the road's own (with AWS clients).
Objects = Literal["s3", "s3-default-client", "s3-threaded", "local"]

# A file id no log file can have: reading it opens the store (running its schema check)
# and, for a local file, checks the file is still there.
STORE_PROBE = FileId("", "trailproc/store-probe", "")


@dataclass
class Runtime:
    """The assembled parts of one run; valid until its `open_runtime` block ends."""

    config: Config
    processor: EventProcessor
    store: CheckpointStore
    metrics: Metrics
    observer: PipelineObserver
    trust: Trust
    pipeline: FilePipeline
    fetcher: Fetcher
    # None for a runtime without aioboto3 clients (`objects="local"` or "s3-threaded").
    clients: AwsClients | None = None
    # The S3 client per bucket that the fetcher reads with (`objects="s3"`), to list
    # with the same clients and region cache.
    router: S3Router | None = None
    # The object port the fetcher reads S3 through (None for local files or a road's
    # own fetcher), for a road that asks S3 more (restores, heads).
    objects: S3Objects | None = None

    @property
    def owner(self) -> str:
        return self.pipeline.owner

    def aws(self) -> AwsClients:
        if self.clients is None:
            raise RuntimeError("this runtime was opened without AWS clients")
        return self.clients

    def s3(self) -> S3Router:
        if self.router is None:
            raise RuntimeError("this runtime was opened without an S3 router")
        return self.router


@dataclass(frozen=True)
class StoreOptions:
    """How a road opens its checkpoint store.

    `default`: the store when the config names none (`config.checkpoint`);
    `wrap`: a wrapper put around the opened store (a namespace, a capability check);
    `check`: read the store once before any work, so that one it cannot use (a newer
    schema) stops the run there (see `check_store`)."""

    default: str | None = None
    wrap: Callable[[CheckpointStore], CheckpointStore] | None = None
    check: bool = False


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def build_processor(
    config: Config, processor: EventProcessor | Sequence[EventProcessor] | None = None
) -> EventProcessor:
    """The user's processor(s), the configured handlers, and --output, as one processor."""
    parts: list[EventProcessor] = []
    if isinstance(processor, EventProcessor):
        parts.append(processor)
    elif processor is not None:
        parts.extend(processor)
    parts.extend(load_processor(spec) for spec in config.handlers)
    if config.output:
        parts.append(JsonLinesOutput(config.output))
    if not parts:
        raise ValueError(
            "nothing to hand events to: give a processor, --handler MODULE:ATTR, or --output PATH"
        )
    return combine(parts)


def build_observer(
    config: Config,
    processor: EventProcessor,
    store: CheckpointStore,
    metrics: Metrics,
    *,
    digests: bool = True,
) -> PipelineObserver:
    """The run's observer: failures, progress hooks and metrics, and, with
    `verify_digests` (and `digests`: the road reads S3 objects), the digest checks whose
    pending hashes wait in `store`."""
    if not (digests and config.verify_digests):
        return PipelineObserver(processor, metrics)
    return PipelineObserver(processor, metrics, digest_store=store,
                            digest_wait_seconds=config.digest_wait_hours * 3600)  # fmt: skip


def pipeline_settings(config: Config) -> PipelineSettings:
    """How the pipeline of `config` runs each file (its record filter logged once)."""
    record_filter = RecordFilter.from_config(config)
    if record_filter.active:
        log.info("records filtered", **record_filter.describe())
    return PipelineSettings(
        owner=config.worker_id or default_owner(),
        max_events_per_emit=config.max_events_per_emit,
        max_decompressed_bytes=config.max_decompressed_bytes,
        lease_seconds=max(30.0, float(config.visibility_timeout)),
        handlers_in_thread=config.handlers_in_thread,
        record_filter=record_filter,
    )


def build_pipeline(
    config: Config,
    processor: EventProcessor,
    store: CheckpointStore,
    fetcher: Fetcher,
    observer: PipelineObserver,
    *,
    budget: MemoryBudget | None = None,
) -> FilePipeline:
    """The file pipeline of `config` (used by `open_runtime`; kept for programs that
    assemble their own parts). `budget`: the process's memory budget (default: one built
    from `config`)."""
    metrics = observer.metrics
    if not isinstance(fetcher, LocalFetcher):  # local files pass no trust boundary
        log.info("trust settings", **TrustPolicy.of(config).summary())
    return FilePipeline(
        processor=processor,
        store=store,
        fetcher=fetcher,
        observer=observer,
        settings=pipeline_settings(config),
        budget=budget if budget is not None else build_budget(config, metrics),
        quarantine=build_quarantine(config, metrics) if config.quarantine else None,
        fill_gaps=_gap_filler(config, observer),
    )


def _gap_filler(config: Config, observer: PipelineObserver) -> Callable[[Any], GapFiller] | None:
    """With digest checks and `fill_gaps_from_digests`: what hands over the log files a
    digest lists that no notification named (run through the pipeline being built)."""
    if observer.digests is None or not config.fill_gaps_from_digests:
        return None
    return lambda run: GapFiller(run, observer, allowed_buckets=config.allowed_buckets,
                                 allowed_accounts=config.allowed_accounts)  # fmt: skip


def build_budget(config: Config, metrics: Metrics) -> MemoryBudget:
    """The memory budget of `config` (`memory_budget_mb`, else from the container's
    limit; see docs/memory.md)."""
    from ._memory import budget_bytes

    return MemoryBudget(budget_bytes(config.memory_budget_mb), probe=metrics)


def resolve_limits(config: Config, budget: int, *, announce: bool = True) -> Config:
    """`config` with `max_in_flight_messages` and `download_concurrency` filled in: each
    unset one from `budget` (the process's memory budget, bytes; see docs/memory.md).
    `announce`: log the limits chosen and why (a run that reads from AWS)."""
    resolved = config.with_limits(budget)
    if announce:
        from ._memory import InFlightLimits, budget_source

        auto = [name for name in InFlightLimits._fields if getattr(config, name) is None]
        chosen = {0: "set", len(InFlightLimits._fields): "auto from budget"}.get(
            len(auto), f"{', '.join(auto)} auto from budget, the other set"
        )
        log.info("in-flight limits", **resolved.limits()._asdict(), chosen=chosen,
                 memory_budget_mb=budget >> 20,
                 budget_from=budget_source(config.memory_budget_mb))  # fmt: skip
    return resolved


def build_quarantine(config: Config, metrics: Metrics) -> RecordQuarantine:
    """The configured quarantine (see trailproc._pipeline.quarantine)."""
    assert config.quarantine
    store = open_quarantine(config.quarantine, lambda: quarantine_s3_client(config))
    log.info("quarantine on", location=store.location,
             max_records_per_file=config.quarantine_max_records_per_file)  # fmt: skip
    return RecordQuarantine(store, metrics, max_per_file=config.quarantine_max_records_per_file)


def quarantine_s3_client(config: Config) -> Any:
    """A blocking boto3 S3 client for the quarantine (its calls run in a thread)."""
    import boto3

    session: Any = boto3.Session(profile_name=config.profile, region_name=config.region)
    kwargs: dict[str, Any] = {}
    if config.endpoint_url:
        kwargs["endpoint_url"] = config.endpoint_url
    if config.s3_region:
        kwargs["region_name"] = config.s3_region
    return session.client("s3", **kwargs)


def open_config_store(
    config: Config, default: str | None = None, *, aws_requests: Any = None
) -> CheckpointStore:
    """The checkpoint store `config` names (else `default`), a store in an AWS service
    reaching AWS with the config's profile, region and endpoint, as the run's other
    clients do."""
    return open_store(config.checkpoint or default, config.state_dir,
                      aws_requests=aws_requests, profile=config.profile,
                      region=config.region, endpoint_url=config.endpoint_url)  # fmt: skip


async def check_store(store: CheckpointStore) -> None:
    """Open `store` and read from it once, so that a store that cannot be used (a newer
    schema: `SchemaTooNew`; a file that cannot be opened) stops a run before it takes
    any work, with one error, instead of failing every file."""
    try:
        await store.is_done(STORE_PROBE)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint store {store!r} cannot be used: {type(exc).__name__}: {exc}"
        ) from exc


async def _fetcher(
    objects: Objects | Fetcher, clients: AwsClients | None, config: Config
) -> tuple[Fetcher, S3Router | None, S3Objects | None]:
    """The fetcher `objects` asks for, the S3 router and the object port it reads with."""
    if not isinstance(objects, str):
        return objects, None, None
    if objects == "local":
        return LocalFetcher(), None, None
    assert clients is not None
    if objects == "s3-default-client":
        port = S3Objects(await clients.client("s3"))
        return ObjectFetcher(port, concurrency=config.limits().download_concurrency,
                             max_bytes=config.max_decompressed_bytes), None, port  # fmt: skip
    from ._aws import S3Router

    router = S3Router(clients)
    port = S3Objects(router=router, requester_pays=config.requester_pays_buckets,
                     bucket_owners=config.bucket_owners)  # fmt: skip
    return ObjectFetcher.for_config(port, config), router, port


async def _open_objects(
    stack: contextlib.AsyncExitStack, objects: Objects | Fetcher, config: Config, metrics: Metrics
) -> tuple[Fetcher, AwsClients | None, S3Router | None, S3Objects | None]:
    """The fetcher `objects` asks for, with the AWS clients, S3 router and object port
    behind it (closed with `stack`)."""
    if objects == "s3-threaded":
        from ._aws import ThreadedS3Client

        threaded = S3Objects(
            await stack.enter_async_context(ThreadedS3Client.create(config, metrics))
        )
        reader = ObjectFetcher(threaded, concurrency=config.limits().download_concurrency,
                               max_bytes=config.max_decompressed_bytes)  # fmt: skip
        return reader, None, None, threaded
    clients = None
    if objects != "local":
        from ._aws import AwsClients

        clients = await stack.enter_async_context(AwsClients(config, metrics))
    fetcher, router, port = await _fetcher(objects, clients, config)
    return fetcher, clients, router, port


@contextlib.asynccontextmanager
async def open_runtime(
    config: Config,
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    metrics: Metrics | None = None,
    objects: Objects | Fetcher = "s3",
    store: StoreOptions = StoreOptions(),
    built: bool = False,
    before_start: Callable[[], Awaitable[None] | None] | None = None,
) -> AsyncIterator[Runtime]:
    """Assemble the parts of a run from `config`, and close them in reverse on exit.

    Order: the processor is built (handlers, `--output`; not when `built` says
    `processor` came from `build_processor` already) → the trust policy → the memory
    budget → the checkpoint store (`config.checkpoint`, else `store.default`), wrapped
    by `store.wrap` if given, and checked when `store.check` (a newer schema stops here) →
    the AWS clients (none for local files) → `before_start()` → the processor's
    `start()` → the file pipeline. On exit: pipeline, processor, clients, store.
    """
    if built and isinstance(processor, EventProcessor):
        user = processor
    else:
        user = build_processor(config, processor)
    trust = Trust(config)
    metrics = metrics if metrics is not None else Metrics()
    budget = build_budget(config, metrics)
    config = resolve_limits(config, budget.total, announce=objects != "local")
    opened = open_config_store(config, store.default, aws_requests=metrics.aws_requests)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(opened.close)
        chosen = store.wrap(opened) if store.wrap is not None else opened
        if store.check:
            await check_store(chosen)
        fetcher, clients, router, port = await _open_objects(stack, objects, config, metrics)
        if before_start is not None:
            await maybe_await(before_start())
        await maybe_await(user.start())
        stack.push_async_callback(_close_processor, user)
        observer = build_observer(config, user, chosen, metrics, digests=objects != "local")
        pipeline = build_pipeline(config, user, chosen, fetcher, observer, budget=budget)
        stack.push_async_callback(pipeline.close)
        yield Runtime(config, user, chosen, metrics, observer, trust, pipeline, fetcher, clients,
                      router, port)  # fmt: skip


async def _close_processor(processor: EventProcessor) -> None:
    await maybe_await(processor.close())
