"""Composition: config + user code + store + clients → a running source.

The CLI and the Lambda shell only call these functions, so a program can do everything
the CLI does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .checkpoint import open_store
from .checkpoint.base import CheckpointStore
from .config import Config, load_config
from .observe import Metrics, get_logger
from .pipeline.engine import FileOutcome, FilePipeline
from .pipeline.fetch import Fetcher, LocalFetcher, S3Fetcher
from .processor import EventProcessor, JsonLinesOutput, combine, load_processor, maybe_await
from .sources.local import local_refs

__all__ = ["RunResult", "build_processor", "process_paths", "run"]

log = get_logger("trailproc")


@dataclass
class RunResult:
    """What a run did, from its metrics."""

    metrics: Metrics
    failed_files: list[FileOutcome] = field(default_factory=list)

    @property
    def records(self) -> int:
        return int(self.metrics.value("trailproc_records_total"))

    @property
    def files_ok(self) -> int:
        m = self.metrics
        return int(
            sum(
                m.value("trailproc_files_total", kind=k, outcome=o)
                for k in ("log", "insight", "digest", "other")
                for o in ("done", "already_done")
            )
        )

    @property
    def files_failed(self) -> int:
        m = self.metrics
        return int(
            sum(
                m.value("trailproc_files_total", kind=k, outcome="failed")
                for k in ("log", "insight", "digest", "other")
            )
        )


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


def build_pipeline(
    config: Config,
    processor: EventProcessor,
    store: CheckpointStore,
    fetcher: Fetcher,
    metrics: Metrics,
) -> FilePipeline:
    return FilePipeline(
        processor=processor,
        store=store,
        fetcher=fetcher,
        metrics=metrics,
        owner=config.worker_id or default_owner(),
        max_events_per_emit=config.max_events_per_emit,
        max_decompressed_bytes=config.max_decompressed_bytes,
        lease_seconds=max(30.0, float(config.visibility_timeout)),
        handlers_in_thread=config.handlers_in_thread,
    )


async def run_async(
    config: Config,
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    stopping: asyncio.Event | None = None,
    metrics: Metrics | None = None,
) -> RunResult:
    """Poll `config.queue_url` until `stopping` is set (or idle with exit_when_idle)."""
    from .aws import AwsClients
    from .observe import stats_loop
    from .ops.servers import serve_ops
    from .sources.sqs import SqsSource

    user = build_processor(config, processor)
    metrics = metrics or Metrics()
    stopping = stopping or asyncio.Event()
    store = open_store(config.checkpoint, config.state_dir)
    await maybe_await(user.start())
    stats = (
        asyncio.create_task(stats_loop(metrics, config.stats_interval, log))
        if config.stats_interval
        else None
    )
    try:
        async with serve_ops(config, metrics), AwsClients(config) as clients:
            s3 = await clients.client("s3")
            sqs = await clients.client("sqs")
            pipeline = build_pipeline(
                config, user, store, S3Fetcher(s3, concurrency=config.download_concurrency),
                metrics,
            )  # fmt: skip
            source = SqsSource(config, pipeline, sqs, metrics)
            log.info("polling", queue_url=config.queue_url, owner=pipeline.owner)
            try:
                await source.run(stopping)
            finally:
                await pipeline.close()
    finally:
        if stats:
            stats.cancel()
        await maybe_await(user.close())
        await store.close()
    log.info("stopped", **{k: v for k, v in metrics.summary().items() if "{" not in k})
    return RunResult(metrics)


def install_signal_handlers(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if received:
            # Second signal: leave now. Committed checkpoints cover everything handed
            # over; undeleted messages reappear after their visibility timeout.
            log.warning("second signal: exiting immediately", signal=signum)
            os._exit(128 + signum)
        received.append(signum)
        log.info("signal received: finishing in-flight work", signal=signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError):  # not the main thread / Windows
            pass


def run(
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    config: Config | None = None,
    **overrides: Any,
) -> RunResult:
    """Run the SQS daemon in this thread until SIGTERM/SIGINT (blocking).

    >>> trailproc.run(MyProcessor(), queue_url="https://sqs...")  # doctest: +SKIP
    """
    config = config.replace(**overrides) if config else load_config(**overrides)

    async def main() -> RunResult:
        stopping = asyncio.Event()
        install_signal_handlers(stopping)
        return await run_async(config, processor, stopping=stopping)

    return asyncio.run(main())


async def process_paths_async(
    paths: Iterable[str | os.PathLike[str]],
    config: Config,
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    metrics: Metrics | None = None,
) -> RunResult:
    """Run local log files (or folders of them) through the same pipeline."""
    user = build_processor(config, processor)
    metrics = metrics or Metrics()
    store = open_store(config.checkpoint or "memory", config.state_dir)
    pipeline = build_pipeline(config, user, store, LocalFetcher(), metrics)
    result = RunResult(metrics)
    limit = asyncio.Semaphore(config.download_concurrency)

    async def one(ref: Any) -> None:
        async with limit:
            outcome = await pipeline.run(ref)
        if not outcome.ok:
            result.failed_files.append(outcome)

    await maybe_await(user.start())
    try:
        await asyncio.gather(*(one(ref) for ref in local_refs(paths)))
    finally:
        await pipeline.close()
        await maybe_await(user.close())
        await store.close()
    return result


def process_paths(
    paths: Iterable[str | os.PathLike[str]],
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    config: Config | None = None,
    **overrides: Any,
) -> RunResult:
    """Blocking `process_paths_async`."""
    config = config.replace(**overrides) if config else load_config(**overrides)
    return asyncio.run(process_paths_async(paths, config, processor))
