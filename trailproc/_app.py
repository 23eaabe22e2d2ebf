"""Composition: config + user code + store + clients → a running source.

The CLI and the Lambda shell only call these functions, so a program can do everything
the CLI does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from ._config import Config, load_config
from ._errors import InternalError, Refused, setup_error
from ._observe import Metrics, ensure_logging, get_logger
from ._pipeline.engine import FileOutcome, FilePipeline
from ._pipeline.keys import FileRef
from ._pipeline.processor import (
    EventProcessor,
    JsonLinesOutput,
    finish_output,
    parts,
    prepare_output,
)
from ._pipeline.trust import Trust
from ._progress import Progress, files_with
from ._roads.local import SkippedFile, local_refs
from ._runtime import (
    STORE_PROBE,
    Runtime,
    StoreOptions,
    build_pipeline,
    build_processor,
    build_quarantine,
    check_store,
    default_owner,
    open_runtime,
    quarantine_s3_client,
)
from .checkpoint import CheckpointStore, StateLost

__all__ = ["EXIT_ABANDONED", "RunResult", "build_processor", "process_paths", "run"]

log = get_logger("trailproc")
T = TypeVar("T")

# Exit status of a stop that abandoned work: a handler still busy at the shutdown deadline
# (its batch not committed: it may be handed over again). 75 is EX_TEMPFAIL of
# sysexits.h: "try again later"; supervisors restart on it like on any other failure.
EXIT_ABANDONED = 75
# Seconds after `shutdown_timeout` at which a stop that is still not over (user code that
# ignores cancellation, a close() that hangs) ends the process anyway.
HARD_EXIT_MARGIN = 2.5
# Built by `trailproc._runtime`; named here too for the programs that import them from here.
_REEXPORTED = (build_pipeline, build_processor, build_quarantine, check_store, default_owner,
               quarantine_s3_client)  # fmt: skip


@dataclass
class RunResult:
    """What a run did, from its metrics."""

    metrics: Metrics
    failed_files: list[FileOutcome] = field(default_factory=list)
    skipped_files: list[SkippedFile] = field(default_factory=list)  # not read (`process`)
    # Batches abandoned in user code at the shutdown deadline (see EXIT_ABANDONED),
    # including work that ignored its cancellation.
    abandoned_batches: int = 0
    # User code is still running: a synchronous process() call on the handler thread, or
    # work that ignored cancellation (neither can be stopped: the process should exit).
    handler_stuck: bool = False

    @property
    def records(self) -> int:
        return int(self.metrics.value("trailproc_records_total"))

    @property
    def files_ok(self) -> int:
        return files_with(self.metrics, "done", "already_done")

    @property
    def files_done(self) -> int:
        """Files completed by this run."""
        return files_with(self.metrics, "done")

    @property
    def files_skipped(self) -> int:
        """Files completed before this run (found in the checkpoint store)."""
        return files_with(self.metrics, "already_done")

    @property
    def files_failed(self) -> int:
        return files_with(self.metrics, "failed")

    @property
    def records_filtered(self) -> int:
        """Records left out by the configured filters or `filter_event`."""
        return int(self.metrics.value("trailproc_records_filtered_total"))

    @property
    def bytes(self) -> int:
        return int(self.metrics.value("trailproc_bytes_compressed_total"))


def _setup_errors_named(
    func: Callable[..., Awaitable[RunResult]],
) -> Callable[..., Awaitable[RunResult]]:
    """A run that cannot start or poll (no credentials, no such queue, access denied)
    raises one `SetupError` naming the fix instead of the SDK's exception and traceback
    (kept as `.cause`)."""

    @functools.wraps(func)
    async def wrapper(config: Config, *args: Any, **kwargs: Any) -> RunResult:
        try:
            return await func(config, *args, **kwargs)
        except Exception as exc:
            error = setup_error(exc, queue_url=config.queue_url)
            if error is None or error is exc:
                raise
        raise error from None

    return wrapper


@_setup_errors_named
async def run_async(
    config: Config,
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    stopping: asyncio.Event | None = None,
    metrics: Metrics | None = None,
) -> RunResult:
    """Poll `config.queue_url` until `stopping` is set (or idle with exit_when_idle).

    The checkpoint store is opened and checked before anything else (a store of a newer
    schema is refused here, with `SchemaTooNew`); a local store whose file disappears
    mid-run stops the run with `StateLost`.
    """
    from ._observe import stats_loop

    ensure_logging(config.log_level, config.log_format)
    metrics = metrics or Metrics()
    stopping = stopping or asyncio.Event()
    result = RunResult(metrics)
    lost: list[StateLost] = []
    async with (
        serve_ops_for(config, metrics),
        open_runtime(config, processor, metrics=metrics, store=StoreOptions(check=True)) as runtime,
    ):
        _stop_when_output_closes(runtime.processor, stopping)
        background = [
            asyncio.create_task(_watch_store(runtime.store, stopping, lost))
            if runtime.store.never_suspends else None,
            asyncio.create_task(stats_loop(metrics, config.stats_interval, log))
            if config.stats_interval else None,
        ]  # fmt: skip
        try:
            await _poll(runtime, stopping, result)
        finally:
            for task in background:
                if task is not None:
                    task.cancel()
                    await asyncio.wait([task])  # the store watch's last look runs first
    _log_stopped(result)
    if lost:
        raise lost[0]
    return result


def startup_over() -> None:
    """Collect garbage again if start-up ran without it (`trailproc run` does): what
    start-up built stays out of later collections (frozen), so they stay cheap."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


async def _poll(runtime: Runtime, stopping: asyncio.Event, result: RunResult) -> None:
    """The SQS source on the runtime's clients until `stopping`; what the stop abandoned
    goes into `result`."""
    from ._roads.sqs import SqsSource

    config, pipeline, clients = runtime.config, runtime.pipeline, runtime.aws()
    sqs = await clients.client("sqs")
    # Building the S3 client loads S3's large service model (~60 ms of CPU). Done just
    # after the first ReceiveMessage went out, it overlaps that round trip instead of
    # delaying it; downloads wait for it.
    s3 = asyncio.ensure_future(_soon(lambda: clients.client("s3")))
    s3.add_done_callback(lambda _: startup_over())
    source = SqsSource(config, pipeline, sqs)
    log.info("polling", queue_url=config.queue_url, owner=pipeline.owner)
    try:
        await source.run(stopping)
    finally:
        # Never waits for a handler still busy (see HandlerThread).
        await pipeline.close()
        result.abandoned_batches = pipeline.dispatch.abandoned + source.left_running
        result.handler_stuck = pipeline.dispatch.stuck or source.left_running > 0
        # Settle the S3 client before the clients close (a stop right at start).
        s3.cancel()
        with contextlib.suppress(BaseException):
            await s3


def serve_ops_for(config: Config, metrics: Metrics) -> contextlib.AbstractAsyncContextManager[Any]:
    """The metrics and health ports of `config` (imported only when a daemon runs)."""
    from ._ops.servers import serve_ops

    return serve_ops(config, metrics)


def _log_stopped(result: RunResult) -> None:
    """The one line that says the run is over, and whether the stop abandoned work."""
    if result.abandoned_batches:
        log.warning("stopped", abandoned_batches=result.abandoned_batches,
                    handler_stuck=result.handler_stuck, **result.metrics.brief())  # fmt: skip
    else:
        log.info("stopped", **result.metrics.brief())


async def _watch_store(
    store: CheckpointStore, stopping: asyncio.Event, lost: list[StateLost], every: float = 1.0
) -> None:
    """Stop the run, with one error, once a local store's file has gone (see `StateLost`).

    Every call to such a store checks its file too, so no progress is written to a lost
    file meanwhile; this also notices while nothing is being processed, and once more
    when the run ends (an idle exit can come first)."""
    try:
        while not stopping.is_set() and not await _store_lost(store, lost):
            await _first_of_event(stopping, every)
    finally:
        if not lost:  # cancelled at the end of the run: one last look
            await _store_lost(store, lost)
        if lost:
            stopping.set()


async def _store_lost(store: CheckpointStore, lost: list[StateLost]) -> bool:
    try:
        await store.is_done(STORE_PROBE)
    except StateLost as exc:
        log.error(exc.message, reason=exc.reason)
        lost.append(exc)
        return True
    except Exception:  # not a lost file: the files' own calls report it
        pass
    return False


async def _first_of_event(event: asyncio.Event, timeout: float) -> None:
    """Wait until `event` is set, at most `timeout` seconds."""
    with contextlib.suppress(asyncio.TimeoutError):  # not the builtin before 3.11
        await asyncio.wait_for(event.wait(), timeout)


def _stop_when_output_closes(user: EventProcessor, stopping: asyncio.Event) -> None:
    """`--output -` whose reader went away stops the daemon (its in-flight files fail and
    their messages stay on the queue), instead of failing every file it receives."""
    for part in parts(user):
        if isinstance(part, JsonLinesOutput):
            part.on_closed = stopping.set


async def _soon(work: Callable[[], Awaitable[T]], delay: float = 0.005) -> T:
    """`work()`, started a moment from now: after the caller's next request is sent (and
    not at all when cancelled before, so no coroutine is left unawaited)."""
    await asyncio.sleep(delay)
    return await work()


def install_signal_handlers(
    stopping: asyncio.Event,
    *,
    also: Callable[[int], None] | None = None,
    hard_deadline: float | None = None,
) -> Callable[[], None]:
    """SIGTERM/SIGINT on the running loop: the first sets `stopping` (finish in-flight
    work), a second exits at once. `also(signum)` is called first for every signal (to
    pass it on to child processes).

    `hard_deadline`: seconds after the first signal at which the process exits with
    `EXIT_ABANDONED` whatever is still running (the promise of a bounded stop, kept even
    when user code ignores cancellation). Returns a function that disarms it, to call
    once the run is over.
    """
    loop = asyncio.get_running_loop()
    received: list[int] = []
    watchdog: list[threading.Timer] = []

    def on_signal(signum: int) -> None:
        if also is not None:
            also(signum)
        if received:
            # Second signal: leave now. Committed checkpoints cover everything handed
            # over; undeleted messages reappear after their visibility timeout.
            log.warning("second signal: exiting immediately", signal=signum)
            _flush_and_exit(128 + signum)
        received.append(signum)
        log.info("signal received: finishing in-flight work", signal=signal.Signals(signum).name)
        stopping.set()
        if hard_deadline is not None:
            watchdog.append(threading.Timer(hard_deadline, _deadline_passed, (hard_deadline,)))
            watchdog[0].daemon = True
            watchdog[0].start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError):  # not the main thread / Windows
            pass

    def disarm() -> None:
        for timer in watchdog:
            timer.cancel()

    return disarm


def _deadline_passed(seconds: float) -> None:
    log.error("stop still not over at the hard deadline: exiting now; work in progress "
              "was abandoned (unfinished messages come back after their visibility timeout)",
              seconds=seconds, exit_code=EXIT_ABANDONED)  # fmt: skip
    _flush_and_exit(EXIT_ABANDONED)


def _flush_and_exit(code: int) -> NoReturn:
    """Exit now, without waiting for any thread (a handler that never returns cannot be
    stopped, and interpreter shutdown could wait on it), after flushing what was logged."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(code)


def exit_if_stuck(result: RunResult) -> None:
    """After a run whose stop left a handler call running: exit the process now, with
    `EXIT_ABANDONED` (a daemon thread in user code could hold a lock the interpreter's
    shutdown needs)."""
    if result.handler_stuck:
        _flush_and_exit(EXIT_ABANDONED)


def run(
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    config: Config | None = None,
    **overrides: Any,
) -> RunResult:
    """Run the SQS daemon in this thread until SIGTERM/SIGINT (blocking).

    A stop is bounded: `shutdown_timeout` for in-flight work, then the process exits
    with `EXIT_ABANDONED` if the stop is still not over `HARD_EXIT_MARGIN` seconds later.
    A returned result with `abandoned_batches` says batches were abandoned in the
    handler at the deadline (they may be handed over again).

    >>> trailproc.run(MyProcessor(), queue_url="https://sqs...")  # doctest: +SKIP
    """
    config = config.replace(**overrides) if config else load_config(**overrides)

    disarm: list[Callable[[], None]] = []

    async def main() -> RunResult:
        stopping = asyncio.Event()
        disarm.append(install_signal_handlers(
            stopping, hard_deadline=config.shutdown_timeout + HARD_EXIT_MARGIN
        ))  # fmt: skip
        return await run_async(config, processor, stopping=stopping)

    try:
        return asyncio.run(main())
    finally:  # only now: the loop's own teardown (cancelling what is left) may hang too
        startup_over()
        for off in disarm:
            off()


async def run_refs(
    pipeline: FilePipeline,
    refs: Iterable[FileRef] | AsyncIterable[FileRef],
    *,
    concurrency: int,
    failed: list[FileOutcome],
    progress: Progress | None = None,
    stopping: asyncio.Event | None = None,
    lookahead: int | None = None,
    trust: Trust | None = None,
) -> None:
    """Run file references through `pipeline`, `concurrency` at a time (no queue to ack).

    The sources without acknowledgement (local files, S3 listings) share this loop.
    With `trust` (S3 listings), a file outside the allow-lists fails, unread.
    Setting `stopping` stops starting new files; files in flight finish. Failed outcomes
    are appended to `failed`. `lookahead`: references taken from `refs` ahead of the
    files in flight (default `4 * concurrency`, which hides a listing's page requests).
    """
    size = concurrency * 4 if lookahead is None else lookahead
    queue: asyncio.Queue[FileRef | None] = asyncio.Queue(maxsize=max(1, size))

    async def produce() -> None:
        try:
            if isinstance(refs, AsyncIterable):
                async for ref in refs:
                    if stopping is not None and stopping.is_set():
                        break
                    await queue.put(ref)
            else:
                for ref in refs:
                    if stopping is not None and stopping.is_set():
                        break
                    await queue.put(ref)
        finally:
            for _ in range(concurrency):
                await queue.put(None)

    async def work() -> None:
        while (ref := await queue.get()) is not None:
            if progress is not None:
                progress.add_total()
            if stopping is not None and stopping.is_set():
                continue  # drain without starting new files
            outcome = await _run_one(pipeline, ref, trust)
            if not outcome.ok:
                failed.append(outcome)
            if progress is not None:
                progress.advance()

    producer = asyncio.create_task(produce())
    try:
        await asyncio.gather(producer, *(work() for _ in range(concurrency)))
    finally:
        producer.cancel()


async def _run_one(pipeline: FilePipeline, ref: FileRef, trust: Trust | None) -> FileOutcome:
    try:
        if trust is not None:
            trust.vet_file(ref)
        return await pipeline.run(ref)
    except Refused as exc:
        pipeline.observer.fail(exc)
        return FileOutcome(ref, "failed", error=exc)
    except Exception as exc:  # e.g. the checkpoint store is unreachable
        error = InternalError.of(exc, bucket=ref.bucket, key=ref.key)
        pipeline.observer.fail(error)
        return FileOutcome(ref, "failed", error=error)


async def _run_in_order(
    pipeline: FilePipeline, refs: Iterable[FileRef], failed: list[FileOutcome], meter: Progress
) -> None:
    """Local files one at a time, in the order of `refs`.

    So one process hands the files over in order, and with `process --jobs` the next
    file is claimed (taken from `refs`) only once this process is free for it. Decoding
    is CPU-bound: files run at once in one process only took turns on its core and its
    GIL, with as many documents in memory (benchmarks/README.md, round 10).
    """
    for ref in refs:
        meter.add_total()
        outcome = await _run_one(pipeline, ref, None)
        if not outcome.ok:
            failed.append(outcome)
        meter.advance()


async def process_paths_async(
    paths: Iterable[str | os.PathLike[str]],
    config: Config,
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    metrics: Metrics | None = None,
    progress: bool | None = None,
    append_output: bool = False,
) -> RunResult:
    """Run local log files (or folders of them) through the same pipeline.

    Files are read by content (see `trailproc._roads.local`), one at a time in the
    order given (a folder's files sorted by path), so handlers and the output see them
    in that order; what a folder holds but is not read is listed in
    `RunResult.skipped_files`. `config.output` is replaced
    unless `append_output`, and no empty output file is left when nothing was written.
    `progress`: a tqdm bar (True), periodic log lines (False), or a bar on a terminal (None).
    """
    ensure_logging(config.log_level, config.log_format)
    metrics = metrics or Metrics()
    result = RunResult(metrics)
    existed: list[bool] = []

    def prepare() -> None:  # after the store check: a refused store leaves it as it was
        existed.append(prepare_output(config.output, append=append_output))

    try:
        async with open_runtime(config, processor, metrics=metrics, objects="local",
                                store=StoreOptions(default="memory", check=True),
                                before_start=prepare) as runtime:  # fmt: skip
            meter = Progress(metrics, desc="process", bar=progress)
            try:
                await _run_in_order(runtime.pipeline, local_refs(paths, result.skipped_files),
                                    result.failed_files, meter)  # fmt: skip
            finally:
                meter.close()
    finally:
        if existed:
            finish_output(config.output, existed=existed[0], append=append_output)
    return result


def process_paths(
    paths: Iterable[str | os.PathLike[str]],
    processor: EventProcessor | Sequence[EventProcessor] | None = None,
    *,
    config: Config | None = None,
    append_output: bool = False,
    **overrides: Any,
) -> RunResult:
    """Blocking `process_paths_async`."""
    config = config.replace(**overrides) if config else load_config(**overrides)
    return asyncio.run(process_paths_async(paths, config, processor, append_output=append_output))
