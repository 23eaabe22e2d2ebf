"""User code: the `EventProcessor` base class, handler plugins, and how they are loaded.

A processor overrides only what it needs (Powertools-style): `process` is required;
`filter_source`, `filter_event`, `on_error` and the progress hooks have sensible
defaults. Handler plugins are plain functions registered with filters on a `Handlers`
registry, loaded from `module:attr` or the `trailproc.handlers` entry-point group.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import errno
import fnmatch
import importlib
import inspect
import os
import queue
import sys
import threading
import warnings
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from .._errors import TrailprocError
from .._observe import get_logger
from .events import Event, json_lines
from .keys import FileRef

__all__ = [
    "EventProcessor",
    "Handlers",
    "OutputClosed",
    "ProgressInfo",
    "ProgressState",
    "Source",
    "combine",
    "load_processor",
]

log = get_logger("trailproc.processor")


class ProgressState(str, enum.Enum):
    """The operations reported to `report_start`/`report_end` (Java ProgressReporter parity:
    its six operations, plus its `deleteFilteredMessage` and `uncaughtException`)."""

    POLL = "poll"  # one ReceiveMessage call
    PARSE_MESSAGE = "parse_message"  # turning a message body into file references
    PROCESS_SOURCE = "process_source"  # all files of one message
    DOWNLOAD = "download"  # GetObject of one file
    PROCESS_LOG = "process_log"  # decoding and handing over one file
    DELETE = "delete"  # deleting one message
    # Java's deleteFilteredMessage: deleting a message that filter_source declined.
    DELETE_FILTERED = "delete_filtered"
    # Java's uncaughtException: an unexpected error while working on a message (a bug,
    # not a failed download or parse); reported once, with success False, then handled
    # like any failure (the message is kept).
    UNCAUGHT_EXCEPTION = "uncaught_exception"


@dataclass(frozen=True, slots=True)
class ProgressInfo:
    """What `report_end` learns: success, and where."""

    success: bool
    message_id: str | None = None
    bucket: str | None = None
    key: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Source:
    """One notification about to be processed (what the Java library calls a source)."""

    message_id: str | None
    refs: tuple[FileRef, ...]
    receive_count: int = 1
    sent_at: float | None = None  # epoch seconds (SQS SentTimestamp)
    topic_arn: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def account_ids(self) -> set[str]:
        return {r.info.account_id for r in self.refs if r.info.account_id}


class EventProcessor:
    """Subclass and override `process` (sync or `async def`); everything else is optional.

    `process` receives up to `max_events_per_emit` events of one log file, in file order.
    When it returns, that batch counts as handed over and its progress is checkpointed;
    when it raises, the file fails, and the message stays for retry.

    How `process` is called (see `Dispatcher`) follows two declared attributes:
    `runs_on_loop` (awaited on the event loop; by default, when `process` is
    `async def`) and `never_blocks` (set True when a synchronous `process` is quick and
    never blocks: it is then called directly on the event loop instead of the handler
    thread). `inline` is the deprecated name of `never_blocks`.
    """

    never_blocks: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "inline" in cls.__dict__ and not isinstance(cls.__dict__["inline"], property):
            warnings.warn(f"{cls.__name__}.inline is deprecated: declare never_blocks",
                          DeprecationWarning, stacklevel=2)  # fmt: skip
            cls.never_blocks = bool(cls.__dict__["inline"])

    @property
    def inline(self) -> bool:
        """Deprecated name of `never_blocks`."""
        warnings.warn("EventProcessor.inline is deprecated: use never_blocks",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        return self.never_blocks

    @inline.setter
    def inline(self, value: bool) -> None:
        warnings.warn("EventProcessor.inline is deprecated: use never_blocks",
                      DeprecationWarning, stacklevel=2)  # fmt: skip
        self.never_blocks = value

    @property
    def runs_on_loop(self) -> bool:
        """True when `process` is awaited on the event loop."""
        return inspect.iscoroutinefunction(self.process)

    def process(self, events: list[Event]) -> Awaitable[None] | None:
        raise NotImplementedError("EventProcessor subclasses must implement process()")

    def filter_source(self, source: Source) -> bool:
        """Return False to skip (and delete) a whole notification before any download."""
        return True

    def filter_event(self, event: Event) -> bool:
        """Return False to leave one event out of the batches."""
        return True

    def on_error(self, error: TrailprocError) -> None:
        """Called once per failure; the default logs nothing extra (trailproc logs it)."""

    def report_start(self, state: ProgressState, info: ProgressInfo) -> Any:
        """Called before each operation; what it returns is passed to `report_end`."""
        return None

    def report_end(self, state: ProgressState, info: ProgressInfo, token: Any) -> None:
        """Called after each operation with its outcome."""

    def start(self) -> Awaitable[None] | None:
        """Called once before the first event (open connections, files...)."""
        return None

    def close(self) -> Awaitable[None] | None:
        """Called once at the end, also after failures."""
        return None


async def maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


# --- handler plugins ------------------------------------------------------------------


def _matcher(value: str | Iterable[str] | None) -> Callable[[str | None], bool]:
    if value is None:
        return lambda _v: True
    patterns = [value] if isinstance(value, str) else list(value)
    exact = {p for p in patterns if not any(ch in p for ch in "*?[")}
    globs = [p for p in patterns if p not in exact]

    def match(candidate: str | None) -> bool:
        if candidate is None:
            return False
        return candidate in exact or any(fnmatch.fnmatchcase(candidate, g) for g in globs)

    return match


@dataclass
class _Registration:
    func: Callable[..., Any]
    batch: bool
    predicate: Callable[[Event], bool]
    name: str


class Handlers(EventProcessor):
    """A registry of handler functions, each with its own filter; itself a processor.

    >>> handlers = Handlers()
    >>> @handlers.on(event_source="iam.amazonaws.com", event_name="Create*")
    ... def new_iam_thing(event): ...
    """

    def __init__(self) -> None:
        self._registered: list[_Registration] = []

    def _register(
        self,
        func: Callable[..., Any],
        *,
        batch: bool,
        event_source: str | Iterable[str] | None,
        event_name: str | Iterable[str] | None,
        where: Callable[[Event], bool] | None,
    ) -> Callable[..., Any]:
        by_source, by_name = _matcher(event_source), _matcher(event_name)

        def predicate(event: Event) -> bool:
            return (
                by_source(event.event_source)
                and by_name(event.event_name)
                and (where is None or bool(where(event)))
            )

        name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', func)}"
        self._registered.append(_Registration(func, batch, predicate, name))
        return func

    def on(
        self,
        *,
        event_source: str | Iterable[str] | None = None,
        event_name: str | Iterable[str] | None = None,
        where: Callable[[Event], bool] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register `func(event)` for matching events (names accept `*` globs)."""
        return lambda func: self._register(
            func, batch=False, event_source=event_source, event_name=event_name, where=where
        )

    def on_batch(
        self,
        *,
        event_source: str | Iterable[str] | None = None,
        event_name: str | Iterable[str] | None = None,
        where: Callable[[Event], bool] | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register `func(events)` receiving the matching events of each batch as a list."""
        return lambda func: self._register(
            func, batch=True, event_source=event_source, event_name=event_name, where=where
        )

    @property
    def names(self) -> list[str]:
        return [r.name for r in self._registered]

    @property
    def runs_on_loop(self) -> bool:
        """True if any registered function is `async def` (then all run on the loop)."""
        return any(inspect.iscoroutinefunction(r.func) for r in self._registered)

    def process(self, events: list[Event]) -> Awaitable[None] | None:
        # All-sync registries run as a plain function, so the Dispatcher can put them on
        # its handler thread and heartbeats keep going during a slow handler.
        if self.runs_on_loop:
            return self._process_async(events)
        for reg in self._registered:
            matching = [e for e in events if reg.predicate(e)]
            if matching:
                if reg.batch:
                    reg.func(matching)
                else:
                    for event in matching:
                        reg.func(event)
        return None

    async def _process_async(self, events: list[Event]) -> None:
        for reg in self._registered:
            matching = [e for e in events if reg.predicate(e)]
            if not matching:
                continue
            if reg.batch:
                await maybe_await(reg.func(matching))
            else:
                for event in matching:
                    await maybe_await(reg.func(event))


class _Combined(EventProcessor):
    """Several processors as one: each batch goes to each, in order."""

    def __init__(self, processors: Sequence[EventProcessor]) -> None:
        self.processors = list(processors)

    async def process(self, events: list[Event]) -> None:
        for p in self.processors:
            await maybe_await(p.process(events))

    def filter_source(self, source: Source) -> bool:
        return all(p.filter_source(source) for p in self.processors)

    def filter_event(self, event: Event) -> bool:
        return any(p.filter_event(event) for p in self.processors)

    def on_error(self, error: TrailprocError) -> None:
        for p in self.processors:
            p.on_error(error)

    def report_start(self, state: ProgressState, info: ProgressInfo) -> Any:
        return [p.report_start(state, info) for p in self.processors]

    def report_end(self, state: ProgressState, info: ProgressInfo, token: Any) -> None:
        for p, t in zip(self.processors, token or [None] * len(self.processors), strict=True):
            p.report_end(state, info, t)

    async def start(self) -> None:
        for p in self.processors:
            await maybe_await(p.start())

    async def close(self) -> None:
        for p in self.processors:
            await maybe_await(p.close())


def combine(processors: Sequence[EventProcessor]) -> EventProcessor:
    """One processor for many (the identity for one)."""
    if len(processors) == 1:
        return processors[0]
    return _Combined(processors)


def parts(processor: EventProcessor) -> list[EventProcessor]:
    """The processors `combine` made `processor` of (itself, if it is a single one)."""
    return list(processor.processors) if isinstance(processor, _Combined) else [processor]


class OutputClosed(BaseException):
    """The reader of standard output went away (`trailproc process --output - | head`).

    A BaseException, like KeyboardInterrupt: it is not a handler failure to log and
    retry, it ends the run. The batch being written is not committed. By then standard
    output (and standard error, when it is the same pipe) points at /dev/null, so the
    interpreter's last flush stays quiet; the CLI exits 0, as `cat` ends in a pipe.
    """


def silence_closed_stdout() -> None:
    """Point standard output at /dev/null (and standard error, when it is the same pipe),
    after its reader went away: later writes and the final flush then succeed quietly."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        out, err = sys.__stdout__, sys.__stderr__
        same_pipe = False
        if out is not None and err is not None:
            try:
                a, b = os.fstat(out.fileno()), os.fstat(err.fileno())
                same_pipe = (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
            except (OSError, ValueError):
                same_pipe = False
            if same_pipe:
                os.dup2(devnull, err.fileno())
        if out is not None:
            os.dup2(devnull, out.fileno())
    finally:
        os.close(devnull)


class JsonLinesOutput(EventProcessor):
    """Writes each record as one line of its original JSON, one whole batch at a time.

    A path is opened for appending on the first batch, so a run that writes nothing
    leaves no file behind (`prepare_output`/`finish_output` give `process` its
    replace-unless-append semantics). Each batch is one `write()` of whole lines: if it
    fails part way (disk full, file size limit), the file is cut back to where the batch
    began, so it never holds half a line, and the retry of that batch adds no duplicate.
    (With several processes appending to one file, the cut is made only while the
    partial batch is still the file's end.) Standard output ("-") whose reader went
    away raises `OutputClosed`, then and on every later batch (nothing is ever written
    to the /dev/null that replaced it, so no batch counts as done); `on_closed` is
    called once then (the daemon uses it to stop).
    """

    # One write per batch is quick and thread-safe: calling it on the event loop saves
    # a thread hop per batch (see benchmarks/README.md).
    never_blocks = True

    def __init__(self, target: str | IO[bytes]) -> None:
        self._target = target
        self._file: IO[bytes] | None = None
        self._fd: int | None = None  # our own file at a path: written with os.write
        self._lock = threading.Lock()
        self._reader_gone = False
        self.on_closed: Callable[[], None] | None = None

    def start(self) -> None:
        if self._file is None and self._fd is None and not isinstance(self._target, str):
            self._file = self._target

    def _open(self) -> None:
        if self._target == "-":
            self._file = sys.stdout.buffer
        elif isinstance(self._target, str):
            self._fd = os.open(self._target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        else:
            self._file = self._target

    def process(self, events: list[Event]) -> None:
        data = json_lines(events)
        if not data:
            return
        with self._lock:
            if self._reader_gone:
                raise OutputClosed("the reader of standard output went away")
            if self._file is None and self._fd is None:
                self._open()
            if self._fd is not None:
                _append_whole(self._fd, data)
                return
            assert self._file is not None
            try:
                self._file.write(data)
                # The batch counts as done only once its lines left our buffers.
                self._file.flush()
            except BrokenPipeError:
                if self._target != "-":
                    raise
                silence_closed_stdout()
                self._reader_gone = True
                if self.on_closed is not None:
                    self.on_closed()
                raise OutputClosed("the reader of standard output went away") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._file = None


def _append_whole(fd: int, data: bytes) -> None:
    """Append `data` to `fd` (opened O_APPEND) whole, or cut back what got written."""
    view = memoryview(data)
    done = 0
    try:
        while done < len(view):
            written = os.write(fd, view[done:])
            if written <= 0:  # pragma: no cover - POSIX raises instead
                raise OSError(errno.EIO, "write wrote nothing")
            done += written
    except OSError:
        if done:
            _cut_back(fd, done)
        raise


def _cut_back(fd: int, written: int) -> None:
    """Remove the last `written` bytes we appended, if they are still the file's end."""
    try:
        end = os.lseek(fd, 0, os.SEEK_CUR)  # just past our last byte (O_APPEND)
        if os.fstat(fd).st_size == end:
            os.ftruncate(fd, end - written)
            return
    except OSError:
        pass
    log.error("a failed write left a partial batch in the output file: others wrote after it",
              bytes=written)  # fmt: skip


def prepare_output(target: str | None, *, append: bool) -> bool:
    """Before a `process` run: empty the output file unless `append`. Returns whether a
    file was there (`finish_output` then keeps it even if nothing is written).
    Only regular files are emptied; '-', FIFOs and devices are written as they are."""
    if not target or target == "-" or not os.path.isfile(target):
        return False
    if not append:
        os.truncate(target, 0)
    return True


def finish_output(target: str | None, *, existed: bool, append: bool) -> None:
    """After a `process` run: no empty output file is left behind when nothing was
    written (a file that was there before is kept in append mode)."""
    if not target or target == "-" or (existed and append):
        return
    try:
        if os.path.isfile(target) and os.path.getsize(target) == 0:
            os.remove(target)
    except OSError:
        pass


class FunctionProcessor(EventProcessor):
    """Wraps a plain `func(event)` handler."""

    def __init__(self, func: Callable[[Event], Any]) -> None:
        self.func = func

    @property
    def runs_on_loop(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    def process(self, events: list[Event]) -> Awaitable[None] | None:
        if self.runs_on_loop:
            return self._process_async(events)
        for event in events:
            self.func(event)
        return None

    async def _process_async(self, events: list[Event]) -> None:
        for event in events:
            await self.func(event)


def _to_processor(obj: Any, spec: str) -> EventProcessor:
    if isinstance(obj, EventProcessor):
        return obj
    if isinstance(obj, type) and issubclass(obj, EventProcessor):
        return obj()
    if callable(obj):
        return FunctionProcessor(obj)
    raise TypeError(
        f"handler {spec!r} is a {type(obj).__name__}; expected an EventProcessor subclass or "
        "instance, a Handlers registry, or a function taking an event"
    )


def _importable_from_cwd() -> None:
    """Let `--handler mymodule:attr` find a module in the current folder, as `python -m`
    and application servers do, even though the `trailproc` script's own folder is what
    Python put on sys.path. Appended, so installed packages of the same name still win."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def load_processor(spec: str) -> EventProcessor:
    """Load `module:attr`, or a name from the `trailproc.handlers` entry-point group."""
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
        _importable_from_cwd()
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"cannot import handler module {module_name!r}: {exc}") from exc
        obj: Any = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise ValueError(f"handler {spec!r}: {module_name} has no {attr!r}") from None
        return _to_processor(obj, spec)
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group="trailproc.handlers") if ep.name == spec]
    if not found:
        raise ValueError(
            f"no handler {spec!r}: give 'module:attr' or the name of an entry point in the "
            "'trailproc.handlers' group"
        )
    return _to_processor(found[0].load(), spec)


def installed_handler_names() -> list[str]:
    """Names of the handlers installed in the `trailproc.handlers` entry-point group."""
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group="trailproc.handlers"))


class HandlerThread:
    """One daemon thread running synchronous `process()` calls, one at a time, in order.

    Not a `ThreadPoolExecutor`: a pool's shutdown (and the interpreter's exit) joins its
    threads, so one `process()` that never returns would keep the process alive forever.
    A daemon thread does not hold the interpreter; a call abandoned at a shutdown deadline
    is left running and its result dropped.
    """

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._unused: weakref.finalize[Any, Any] | None = None  # ends the thread if dropped
        # Threads inside user code right now (more than one only after `stop` left a
        # busy one behind and a new call came).
        self._busy: set[int] = set()

    @property
    def stuck(self) -> bool:
        """A call is still running in user code (after `stop`: the thread will not end)."""
        return bool(self._busy)

    async def call(self, process: Callable[[list[Event]], Any], events: list[Event]) -> Any:
        """`process(events)` on the thread; cancelling the await abandons the call (a call
        not started yet is skipped, one in progress runs on, its result dropped)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, args=(self._calls,),
                                            name="trailproc-handler", daemon=True)  # fmt: skip
            self._thread.start()
            self._unused = weakref.finalize(self, self._calls.put, None)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        abandoned = threading.Event()
        # Carry contextvars (structlog's bound request id, ...) into the handler thread.
        context = contextvars.copy_context()

        def settle(ok: bool, value: Any) -> None:
            if answer.done():  # abandoned: nobody waits for it any more
                return
            if ok:
                answer.set_result(value)
            else:
                answer.set_exception(value)

        def work() -> None:
            if abandoned.is_set():
                return
            me = threading.get_ident()
            self._busy.add(me)
            try:
                ok, value = True, context.run(process, events)
            except BaseException as exc:
                ok, value = False, exc
            finally:
                self._busy.discard(me)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, ok, value)

        self._calls.put(work)
        try:
            return await answer
        except asyncio.CancelledError:
            abandoned.set()
            raise

    @staticmethod
    def _serve(calls: queue.SimpleQueue[Callable[[], None] | None]) -> None:
        # Holds nothing of the HandlerThread between calls, so that one dropped without
        # `stop` is collected, and its finalizer ends this thread.
        while True:
            work = calls.get()
            if work is None:
                return
            work()
            del work

    def stop(self) -> None:
        """Let the thread end after its current call, without waiting for it. Calls made
        after this go to a new thread with a queue of its own (never to one still busy)."""
        if self._thread is not None:
            thread, self._thread = self._thread, None
            if self._unused is not None:
                self._unused.detach()
            self._calls.put(None)
            self._calls = queue.SimpleQueue()
            if not self._busy:
                # Idle: it ends at once. Joined, so that no thread of ours outlives the
                # run (`--jobs` forks only from a process running no other thread).
                thread.join(timeout=1.0)


class Dispatcher:
    """Calls user code, each processor the way it needs.

    - `async def process` (or `runs_on_loop`): awaited on the event loop;
    - processors declaring `never_blocks` (quick, e.g. --output): called directly;
    - any other synchronous `process`: on one dedicated daemon thread (`HandlerThread`).

    One dedicated thread (not a pool) means a synchronous processor is never called
    concurrently with itself, so user code needs no locks, while the event loop keeps
    receiving and sending visibility heartbeats during a slow batch. Combined processors
    are dispatched part by part, so one async part does not pull the others onto the loop.

    A call cancelled while in user code (a shutdown deadline reached with the handler
    still busy) counts in `abandoned`: its batch was not committed and may be handed over
    again after a restart.
    """

    def __init__(self, processor: EventProcessor, *, in_thread: bool = True) -> None:
        self.processor = processor
        parts = processor.processors if isinstance(processor, _Combined) else [processor]
        self._calls = [(part.process, self._mode(part, in_thread)) for part in parts]
        self._thread = HandlerThread()
        self.abandoned = 0  # batches abandoned in user code at a shutdown deadline

    @staticmethod
    def _mode(processor: EventProcessor, in_thread: bool) -> str:
        if processor.runs_on_loop:
            return "loop"
        if not in_thread or processor.never_blocks:
            return "direct"
        return "thread"

    @property
    def stuck(self) -> bool:
        """A synchronous `process()` call is still running on the handler thread."""
        return self._thread.stuck

    async def __call__(self, events: list[Event]) -> None:
        try:
            for process, mode in self._calls:
                if mode == "thread":
                    result = await self._thread.call(process, events)
                else:
                    result = process(events)
                await maybe_await(result)
        except asyncio.CancelledError:
            self._abandon(events)
            raise

    def _abandon(self, events: list[Event]) -> None:
        self.abandoned += 1
        delivery = events[0].delivery if events else None
        where = {"message_id": delivery.message_id, "bucket": delivery.bucket,
                 "key": delivery.ref.key} if delivery is not None else {}  # fmt: skip
        log.warning(
            "shutdown deadline reached with the handler still busy: batch abandoned, "
            "not committed (it may be handed over again)",
            **{k: v for k, v in where.items() if v},
            records=len(events),
            first_index=events[0].index if events else None,
        )

    def shutdown(self) -> None:
        self._thread.stop()
