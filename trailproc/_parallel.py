"""Multi-core: the same pipeline in N processes.

One Python process decodes at most one core's worth of records (msgspec holds the GIL
while it splits a log file), so scaling out means processes:

- `process_parallel` runs local files in `jobs` processes. The files are handed out one
  at a time, largest first, to whichever process asks next (a shared index), so a
  process that started late (a child's interpreter start-up) or runs slower simply
  takes fewer; each process runs `trailproc._app.process_paths_async` over the files it
  claims and the counts are summed.
- `run_workers` runs `n` SQS workers (`trailproc._app.run_async`): `n - 1` children and
  one in the calling process; they share the checkpoint store (SQLite in `state_dir`
  handles several processes; DynamoDB any number), and SQS visibility spreads the
  messages between them.

Children are forked where that is safe: on Linux, from a process with no other thread
and no running event loop at that moment (the CLI's case), after importing what every
process needs, so a child is ready at once instead of after an interpreter start-up and
the imports (~0.3 s of CPU each, the AWS stack included). Anywhere else they are
started with `spawn`; `start_method` overrides the choice. Either way user code is
loaded in each child from its spec string (`module:attr` or an entry point name), so
each child has its own instance: per-process state must be merged by the user.

With `output` set, every child opens the file in append mode and writes each batch with
a single `write()` + `flush()`: with `O_APPEND` the kernel places each write at the end of
the file as a whole, so lines of different children never interleave (regular local
files; not guaranteed on NFS). Writing to stdout (`-`) from several children is refused,
because pipes only keep writes of up to 4 KiB whole.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._allocator import reuse_freed_memory
from ._config import Config
from ._memory import per_process_mb

if TYPE_CHECKING:  # the runners import the AWS stack; a child imports it when it runs
    from ._app import RunResult

__all__ = ["ParallelResult", "process_parallel", "run_workers"]


@dataclass
class ParallelResult:
    """Summed outcome of several processes (same names as `trailproc._app.RunResult`)."""

    records: int = 0
    records_filtered: int = 0
    files_ok: int = 0
    files_failed: int = 0
    failed_files: list[dict[str, Any]] = field(default_factory=list)
    skipped_files: list[Any] = field(default_factory=list)  # `SkippedFile`s (`process`)
    jobs: list[dict[str, Any]] = field(default_factory=list)  # one summary per process
    exit_codes: list[int] = field(default_factory=list)
    abandoned_batches: int = 0  # at a shutdown deadline, in any worker (see app.EXIT_ABANDONED)
    handler_stuck: bool = False  # this process's own worker left a handler call running

    def add(self, part: dict[str, Any]) -> None:
        self.records += int(part.get("records", 0))
        self.records_filtered += int(part.get("records_filtered", 0))
        self.files_ok += int(part.get("files_ok", 0))
        self.files_failed += int(part.get("files_failed", 0))
        self.failed_files.extend(part.get("failed_files", []))
        self.abandoned_batches += int(part.get("abandoned_batches", 0))
        self.handler_stuck = self.handler_stuck or bool(part.get("handler_stuck"))
        self.jobs.append(part)

    @property
    def ok(self) -> bool:
        return self.files_failed == 0 and not any(self.exit_codes)


def _with_specs(config: Config, processor_specs: Sequence[str]) -> Config:
    if not processor_specs:
        return config
    return config.replace(handlers=[*config.handlers, *processor_specs])


def _summary(result: RunResult, **extra: Any) -> dict[str, Any]:
    failed = []
    for outcome in result.failed_files:
        error = outcome.error
        failed.append(
            {
                "bucket": outcome.ref.bucket,
                "key": outcome.ref.key,
                "status": outcome.status,
                "reason": error.reason if error else None,
                "message": error.message if error else None,
            }
        )
    return {
        "pid": os.getpid(),
        "records": result.records,
        "records_filtered": result.records_filtered,
        "files_ok": result.files_ok,
        "files_failed": result.files_failed,
        "abandoned_batches": result.abandoned_batches,
        "handler_stuck": result.handler_stuck,
        "failed_files": failed,
        **extra,
    }


def _process_child(paths: Iterable[str], config: Config, configure: bool = True) -> dict[str, Any]:
    """Runs files through the whole pipeline (in a child, or here): a list, or the
    files this process claims. The parent prepared the output file: it is appended to."""
    from ._app import process_paths_async
    from ._observe import configure_logging

    if configure:  # a spawned child starts with no logging set up (a forked one: redone)
        configure_logging(config.log_level, config.log_format)
    started = time.perf_counter()
    result = asyncio.run(process_paths_async(paths, config, append_output=True))
    files = result.files_ok + result.files_failed
    return _summary(result, files=files, seconds=time.perf_counter() - started)


# Below this much input (compressed), starting more processes costs more than it saves.
AUTO_MIN_BYTES = 16 << 20


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def auto_jobs(paths: Iterable[str | os.PathLike[str]], config: Config) -> int:
    """How many processes `process --jobs auto` uses: one per usable core when the
    records go to an output file and there is enough input to share, else one.

    One process keeps the files' order: on stdout (a pipe reads records in file order),
    and for handlers, which may count, deduplicate or hold state across files in one
    instance. Several processes append whole batches to a file, in no set order.
    """
    if not config.output or config.output == "-" or config.handlers:
        return 1
    cores = usable_cores()
    files, size = _count_input(paths, enough=(cores, AUTO_MIN_BYTES))
    if files < 2 or size < AUTO_MIN_BYTES:
        return 1
    return min(cores, files)


def _count_input(
    paths: Iterable[str | os.PathLike[str]], enough: tuple[int, int]
) -> tuple[int, int]:
    """(files, bytes) below `paths` as a folder is read (hidden entries left out), counted
    only until both reach `enough`: the run lists (and sniffs) them itself, and a folder
    of thousands of small deliveries should not be walked twice before it starts."""
    files = size = 0
    folders: list[str] = []
    for named in paths:
        path = os.fspath(named)
        if os.path.isdir(path):
            folders.append(path)
            continue
        files += 1
        size += _size(path)
    while folders and (files < enough[0] or size < enough[1]):
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):  # as os.walk descends
                        folders.append(entry.path)
                    elif entry.is_file():
                        files += 1
                        size += _size(entry.path)
                        if files >= enough[0] and size >= enough[1]:
                            break
        except OSError:  # read (and reported) by the run itself
            continue
    return files, size


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # read (and reported) by the run itself
        return 0


def _check_output(config: Config, processes: int) -> None:
    if processes > 1 and config.output == "-":
        raise ValueError(
            "--output - (stdout) cannot be shared by several processes: lines over 4 KiB "
            "could interleave; give a file path (each process appends whole batches)"
        )


class _FileClaims:
    """The files of a `process --jobs` run, each handed to whichever process asks first.

    Iterating claims the next unclaimed file (a shared index under its lock), so each
    file goes to exactly one process. Picklable to `spawn`/`forkserver` children when
    they are started (the index is shared memory).
    """

    def __init__(self, files: Sequence[str], context: Any) -> None:
        self.files = list(files)
        self._next = context.Value("q", 0)

    def __iter__(self) -> Iterator[str]:
        while True:
            with self._next.get_lock():
                index = self._next.value
                if index >= len(self.files):
                    return
                self._next.value = index + 1
            yield self.files[index]

    def close(self) -> None:
        """Hand out no more files (those already claimed are finished)."""
        with self._next.get_lock():
            self._next.value = len(self.files)


def _start_method(requested: str | None) -> str:
    """`requested`, else `fork` when it is safe here and now (see the module's notes)."""
    if requested:
        return requested
    try:
        asyncio.get_running_loop()
        loop_running = True
    except RuntimeError:
        loop_running = False
    if sys.platform == "linux" and threading.active_count() == 1 and not loop_running:
        return "fork"
    return "spawn"


def _largest_first(files: Sequence[str]) -> list[str]:
    """`files`, largest first: the small ones left for the end keep the processes'
    finishing times close together."""

    def size(name: str) -> int:
        try:
            return os.path.getsize(name)
        except OSError:  # reported as a failed file by the process that claims it
            return 0

    return sorted(files, key=size, reverse=True)


def _report(connection: Any, work: Callable[[], dict[str, Any]]) -> None:
    """In a child process: run `work`, then send its summary (or its error, before
    failing the child) to the parent."""
    try:
        summary = work()
    except BaseException as exc:
        connection.send({"pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"})
        connection.close()
        raise
    connection.send(summary)
    connection.close()


def _claiming_child(claims: _FileClaims, config: Config, connection: Any) -> None:
    """Runs in a child process: the files it claims, then its summary to the parent."""
    reuse_freed_memory()  # this process is ours (see `trailproc._allocator`)
    _report(connection, lambda: _process_child(claims, config))


def process_parallel(
    paths: Iterable[str | os.PathLike[str]],
    config: Config,
    jobs: int,
    processor_specs: Sequence[str] = (),
    *,
    start_method: str | None = None,
    append_output: bool = False,
) -> ParallelResult:
    """`trailproc process` over `jobs` processes; `processor_specs` adds handlers by spec.

    With `jobs <= 1` (or a single file) everything runs in this process, as
    `process_paths` would. The checkpoint store is the configured one ("memory" per
    process by default, which is right for a one-shot run over disjoint files). A
    process that fails (or dies) fails the run: `ChildProcessError` naming it, once every
    other process is done. The output file is replaced unless `append_output` (here,
    once, before any process writes; they all append), and removed if nothing was
    written to it.
    """
    from ._pipeline.processor import finish_output, prepare_output
    from ._roads.local import local_refs

    config = _with_specs(config, processor_specs)
    result = ParallelResult()
    files = [ref.key for ref in local_refs(paths, result.skipped_files)]
    jobs = max(1, min(jobs, len(files)))
    _check_output(config, jobs)
    existed = prepare_output(config.output, append=append_output)
    try:
        _process_files(files, config, jobs, start_method, result)
    finally:
        finish_output(config.output, existed=existed, append=append_output)
    return result


def _process_files(
    files: list[str], config: Config, jobs: int, start_method: str | None,
    result: ParallelResult,
) -> None:  # fmt: skip
    """The body of `process_parallel`: `files` over `jobs` processes into `result`."""
    if jobs <= 1:
        result.add(_process_child(files, config))
        return
    largest_first = _largest_first(files)
    # The memory budget is the container's: each process gets its share.
    config = config.replace(memory_budget_mb=per_process_mb(config.memory_budget_mb, jobs))
    method = _start_method(start_method)
    if method == "fork":
        from . import _app as app  # noqa: F401 - the whole pipeline, imported once for all
    context: Any = multiprocessing.get_context(method)
    claims = _FileClaims(largest_first, context)
    # N-1 children plus this process, which starts on the files at once while the
    # children start up (an interpreter start-up and import of the whole stack each);
    # they join in as soon as they are ready.
    children = []
    for index in range(1, jobs):
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=_claiming_child, args=(claims, config, sender),
                                  name=f"trailproc-process-{index}")  # fmt: skip
        process.start()
        sender.close()
        children.append((process, receiver))
    failures: list[str] = []
    try:
        result.add(_process_child(claims, config, configure=False))
    except BaseException:
        claims.close()  # the run fails: the children finish what they hold and stop
        raise
    finally:
        for process, receiver in children:
            part = _receive_summary(receiver)
            process.join()
            result.exit_codes.append(process.exitcode or 0)
            if part is not None and "error" not in part:
                result.add(part)
            else:
                failures.append((part or {}).get("error") or f"exit code {process.exitcode}")
    if failures:
        raise ChildProcessError(
            f"{len(failures)} of {jobs} processes failed, so some files may not have been "
            f"handed over: {'; '.join(failures)}"
        )


def _worker_child(config: Config, connection: Any) -> None:
    """Runs in a child process: one SQS worker until idle (or SIGTERM/SIGINT)."""
    # As `trailproc._cli.main` does: registered before anything else, so it runs after
    # every other exit handler, and the objects still alive then are left to the OS
    # instead of being walked by the final garbage collections (~0.2 s once botocore's
    # service models are loaded; `run` would wait that long for the last worker).
    atexit.register(gc.freeze)
    from ._app import run
    from ._observe import configure_logging

    configure_logging(config.log_level, config.log_format)
    _report(connection, lambda: _summary(run(config=config)))


def run_workers(
    config: Config,
    n: int,
    processor_specs: Sequence[str] = (),
    *,
    start_method: str | None = None,
) -> ParallelResult:
    """`trailproc run` as `n` processes sharing the checkpoint store; blocks until all exit.

    `n - 1` workers run in child processes (forked where safe, else spawned; see the
    module's notes) and one in this process, started after the children.
    SIGTERM/SIGINT received by this process are passed on to every worker, which then
    finishes its in-flight batches and stops (a second signal makes them exit at once).
    A worker that fails is reported in `exit_codes` and `jobs`; the others carry on.
    """
    config = _with_specs(config, processor_specs)
    _check_shared_store(config, n)
    result = ParallelResult()
    if n <= 1:
        from ._app import run

        result.add(_summary(run(config=config)))
        return result
    # The memory budget is the container's: each worker gets its share.
    config = config.replace(memory_budget_mb=per_process_mb(config.memory_budget_mb, n))
    fleet = _WorkerFleet(config, _worker_context(start_method))
    # N-1 children plus this process, as in `process_parallel`: the children are started
    # first (a spawned one's interpreter start-up and imports then overlap this
    # process's own worker starting); one start-up of the AWS stack less in all. They
    # are started before this process's signal handlers change, so none inherits them.
    fleet.start_children(n - 1)
    with fleet.signals_forwarded():
        fleet.run_own_worker(result)
        fleet.collect_children(result)
    return result


def _check_shared_store(config: Config, n: int) -> None:
    """Refuses what several workers cannot share: stdout, and a per-process store."""
    _check_output(config, n)
    if n > 1 and (config.checkpoint or "sqlite").startswith("memory"):
        raise ValueError(
            "the 'memory' checkpoint store is per process; several workers need a shared "
            "one (sqlite, the default, or dynamodb://TABLE)"
        )


def _worker_context(start_method: str | None) -> Any:
    """The multiprocessing context for workers; with `fork`, what every worker needs is
    imported here first, once for all (this process needs it too)."""
    method = _start_method(start_method)
    if method == "fork":
        from . import _app as app  # noqa: F401
        from ._aws import import_aws_stack

        import_aws_stack()
    return multiprocessing.get_context(method)


def _receive_summary(receiver: Any) -> dict[str, Any] | None:
    """A child's summary (or error) from its pipe; None if it died without reporting
    (killed, `os._exit`)."""
    try:
        part: dict[str, Any] | None = receiver.recv()
    except EOFError:
        return None
    return part


class _WorkerFleet:
    """The SQS workers of one `run_workers` call: the children, this process's own
    worker, and the signals passed on from this process to the children."""

    def __init__(self, config: Config, context: Any) -> None:
        self.config = config
        self.context = context
        self.children: list[tuple[Any, Any]] = []  # (process, receiving end of its pipe)
        self.forwarded: set[int] = set()  # signals passed on to the children
        self._forwarding: list[int] = []  # signals this process handles by passing them on
        self._disarm: list[Callable[[], None]] = []  # the hard deadline, once the loop closes

    def config_for(self, index: int) -> Config:
        if self.config.worker_id:  # the default (host:pid) is already unique per process
            return self.config.replace(worker_id=f"{self.config.worker_id}-{index}")
        return self.config

    def start_children(self, count: int) -> None:
        for index in range(1, count + 1):
            receiver, sender = self.context.Pipe(duplex=False)
            process = self.context.Process(
                target=_worker_child,
                args=(self.config_for(index), sender),
                name=f"trailproc-worker-{index}",
            )
            process.start()
            sender.close()
            self.children.append((process, receiver))

    def forward(self, signum: int, _frame: Any = None) -> None:
        self.forwarded.add(signum)
        for process, _ in self.children:
            if process.pid is not None and process.is_alive():
                try:
                    os.kill(process.pid, signum)
                except ProcessLookupError:
                    pass

    @contextmanager
    def signals_forwarded(self) -> Iterator[None]:
        """Outside the own worker's event loop (before it starts, and after it ends while
        the children finish), SIGTERM/SIGINT are only passed on; restored on exit."""
        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[signum] = signal.signal(signum, self.forward)
            except ValueError:  # not the main thread: the caller handles signals
                pass
        self._forwarding = list(previous)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    async def _own_worker(self) -> Any:
        """This process's worker, stopped by signals as `trailproc run` is (and passing
        them on); one that came while the children were being started stops it at once."""
        from ._app import HARD_EXIT_MARGIN, install_signal_handlers, run_async

        stopping = asyncio.Event()
        if self.forwarded:
            stopping.set()
        deadline = self.config.shutdown_timeout + HARD_EXIT_MARGIN
        self._disarm.append(
            install_signal_handlers(stopping, also=self.forward, hard_deadline=deadline)
        )
        return await run_async(self.config_for(0), stopping=stopping)

    def run_own_worker(self, result: ParallelResult) -> None:
        """Runs this process's worker to its end; a failure is reported like a failed
        child's, and the others carry on."""
        result.exit_codes.append(0)
        try:
            result.add(_summary(asyncio.run(self._own_worker())))
        except Exception as exc:
            from ._observe import get_logger

            get_logger("trailproc.parallel").exception("worker failed", pid=os.getpid())
            result.exit_codes[0] = 1
            result.jobs.append({"pid": os.getpid(), "error": f"{type(exc).__name__}: {exc}"})
        for off in self._disarm:
            off()
        for signum in self._forwarding:  # the loop's handlers are gone with it
            signal.signal(signum, self.forward)

    def collect_children(self, result: ParallelResult) -> None:
        """Waits for every child and adds its summary, or its failure, to `result`."""
        for process, receiver in self.children:
            part = _receive_summary(receiver)
            process.join()
            code = process.exitcode if process.exitcode is not None else -1
            if part is None and -code in self.forwarded:
                # Killed by the signal we passed on while it was still starting (its
                # own handlers not installed yet): it had received no message, so this
                # is a clean stop, not a failure.
                code = 0
                part = {"pid": process.pid, "stopped": "before it started polling"}
            result.exit_codes.append(code)
            if part is not None and "error" not in part:
                result.add(part)
            else:
                result.jobs.append(part or {"pid": process.pid, "error": f"exit code {code}"})
