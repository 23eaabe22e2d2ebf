"""The parts behind bounded stops, without subprocesses: the handler thread that never
holds the process, the dispatcher's count of abandoned batches, the SQLite store's check
that its file is still there, and the start-up store check (see tests/test_stops.py for
the same through `trailproc run`)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from trailproc._app import check_store
from trailproc._pipeline.events import Delivery, Event
from trailproc._pipeline.keys import FileRef
from trailproc._pipeline.processor import Dispatcher, EventProcessor, HandlerThread
from trailproc.checkpoint import FileId, MemoryStore, SqliteStore, StateLost

FILE = FileId("bucket", "AWSLogs/1/CloudTrail/x.json.gz", "etag")


def _events(n: int = 3) -> list[Event]:
    delivery = Delivery(FileRef("bucket", "key.json.gz"), "message-1")
    return [Event(b'{"eventID":"%d"}' % i, delivery, i) for i in range(n)]


# --- the handler thread -----------------------------------------------------------------


def test_handler_thread_runs_calls_in_order_and_returns_their_results() -> None:
    seen: list[int] = []

    def record(events: list[Any]) -> str:
        seen.append(len(events))
        return "ok"

    async def main() -> None:
        thread = HandlerThread()
        assert await thread.call(record, _events(2)) == "ok"

        def boom(events: Any) -> None:
            raise ValueError("handler failed")

        with pytest.raises(ValueError, match="handler failed"):
            await thread.call(boom, [])
        thread.stop()

    asyncio.run(main())
    assert seen == [2]


def test_a_hung_call_is_abandoned_not_joined_and_queued_calls_are_skipped() -> None:
    release = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    def hang(events: Any) -> None:
        started.set()
        release.wait()
        ran.append("hung call finished")

    async def main() -> HandlerThread:
        thread = HandlerThread()
        hung = asyncio.ensure_future(thread.call(hang, []))
        queued = asyncio.ensure_future(thread.call(lambda events: ran.append("queued"), []))
        while not started.is_set():
            await asyncio.sleep(0.005)
        hung.cancel()
        queued.cancel()
        await asyncio.gather(hung, queued, return_exceptions=True)
        assert thread.stuck
        thread.stop()  # must not wait for the hung call
        return thread

    thread = asyncio.run(main())  # the loop closed with the call still running
    assert thread.stuck
    handler_threads = [t for t in threading.enumerate() if t.name == "trailproc-handler"]
    assert handler_threads and all(t.daemon for t in handler_threads)
    release.set()
    for t in handler_threads:
        t.join(5)
    # The call in progress ran on (its result dropped); the queued one never started.
    assert ran == ["hung call finished"]
    assert not thread.stuck


class _HangsSync(EventProcessor):
    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def process(self, events: list[Event]) -> None:
        self.started.set()
        self.release.wait()


def _release(processor: _HangsSync) -> None:
    """Let the hung call end, and wait for its thread (none may outlive the test)."""
    processor.release.set()
    for thread in threading.enumerate():
        if thread.name == "trailproc-handler":
            thread.join(5)


class _HangsAsync(EventProcessor):
    def __init__(self) -> None:
        self.started = threading.Event()

    async def process(self, events: list[Event]) -> None:
        self.started.set()
        await asyncio.Event().wait()


@pytest.mark.parametrize("processor_type", [_HangsSync, _HangsAsync])
def test_dispatcher_counts_a_batch_cancelled_in_user_code_as_abandoned(
    processor_type: type[Any],
) -> None:
    processor = processor_type()
    dispatch = Dispatcher(processor)

    async def main() -> None:
        call = asyncio.ensure_future(dispatch(_events()))
        while not processor.started.is_set():
            await asyncio.sleep(0.005)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        dispatch.shutdown()

    asyncio.run(main())
    assert dispatch.abandoned == 1
    assert dispatch.stuck is (processor_type is _HangsSync)
    if isinstance(processor, _HangsSync):
        _release(processor)


def test_dispatcher_counts_nothing_when_batches_return() -> None:
    class Quick(EventProcessor):
        def process(self, events: list[Event]) -> None:
            pass

    dispatch = Dispatcher(Quick())
    asyncio.run(dispatch(_events()))
    dispatch.shutdown()
    assert dispatch.abandoned == 0 and not dispatch.stuck


# --- the SQLite store's file ------------------------------------------------------------


def _commit_after(path: Path, damage: Any) -> None:
    async def main() -> None:
        store = SqliteStore(path)
        try:
            await store.claim(FILE, "w", 60)
            await store.commit(FILE, "w", 10)
            damage()
            with pytest.raises(StateLost, match=re.escape(str(path))):
                await store.commit(FILE, "w", 20)
            with pytest.raises(StateLost):
                await store.is_done(FILE)
        finally:
            await store.close()

    asyncio.run(main())


def test_sqlite_store_refuses_to_write_after_its_file_was_deleted(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cp.sqlite3"
    _commit_after(path, lambda: os.remove(path))
    assert not path.exists(), "nothing may recreate the file behind the user's back"


def test_sqlite_store_refuses_to_write_after_its_folder_was_removed(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cp.sqlite3"
    _commit_after(path, lambda: shutil.rmtree(path.parent))
    assert not path.parent.exists()


def test_sqlite_store_refuses_a_file_replaced_under_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "cp.sqlite3"
    other = tmp_path / "other.sqlite3"

    def replace() -> None:
        shutil.copy(path, other)
        os.replace(other, path)

    _commit_after(path, replace)


def test_sqlite_store_keeps_working_with_its_own_file(tmp_path: Path) -> None:
    """No false alarm: the same file, reopened after close, and in a fresh store."""
    path = tmp_path / "cp.sqlite3"

    async def main() -> None:
        store = SqliteStore(path)
        await store.claim(FILE, "w", 60)
        await store.close()
        await store.commit(FILE, "w", 5)  # reopens
        await store.complete(FILE, "w", 5)
        await store.close()
        again = SqliteStore(path)
        assert await again.is_done(FILE)
        await again.close()

    asyncio.run(main())


# --- the start-up check -----------------------------------------------------------------


def test_check_store_passes_a_usable_store_and_names_an_unusable_one(tmp_path: Path) -> None:
    from trailproc._errors import CheckpointError

    async def main() -> None:
        await check_store(MemoryStore())
        fine = SqliteStore(tmp_path / "cp.sqlite3")
        await check_store(fine)
        await fine.close()
        not_a_db = tmp_path / "not-a-db.sqlite3"
        not_a_db.write_bytes(b"this is not an SQLite database" * 100)
        broken = SqliteStore(not_a_db)
        with pytest.raises(CheckpointError, match=r"not-a-db\.sqlite3.*cannot be used"):
            await check_store(broken)
        await broken.close()

    asyncio.run(main())


# --- the SQS source's deadline, on the in-memory queue -----------------------------------

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/trail"
API_CALL = {
    "version": "0", "id": "6f1c0de2-0000-4000-8000-000000000001",
    "detail-type": "AWS API Call via CloudTrail", "source": "aws.iam",
    "account": "123456789012", "time": "2026-12-05T07:00:00Z", "region": "us-east-1",
    "resources": [],
    "detail": {"eventVersion": "1.08", "eventID": "e-1", "eventName": "CreateUser",
               "eventSource": "iam.amazonaws.com", "eventTime": "2026-12-05T07:00:00Z",
               "awsRegion": "us-east-1", "recipientAccountId": "123456789012"},
}  # fmt: skip


class _Swallows(EventProcessor):
    """Never returns, and swallows its cancellation."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.give_up = False

    async def process(self, events: list[Event]) -> None:
        self.started.set()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if self.give_up:
                    raise


def _stop_at_deadline(processor: Any) -> tuple[Any, Any]:
    import json

    from trailproc._config import Config
    from trailproc._observe import Metrics
    from trailproc._pipeline.engine import FilePipeline, PipelineSettings
    from trailproc._pipeline.fetch import LocalFetcher
    from trailproc._pipeline.observer import PipelineObserver
    from trailproc._ports import MemoryQueue
    from trailproc._roads.sqs import SqsSource

    queue = MemoryQueue()
    queue.put(json.dumps(API_CALL))
    config = Config(queue_url=QUEUE, accept_records_in_messages=True, shutdown_timeout=0.4,
                    wait_time_seconds=1)  # fmt: skip
    pipeline = FilePipeline(
        processor=processor,
        store=MemoryStore(),
        fetcher=LocalFetcher(),
        observer=PipelineObserver(processor, Metrics()),
        settings=PipelineSettings(owner="test"),
    )
    source = SqsSource(config, pipeline, None, queue=queue)

    async def main() -> None:
        stopping = asyncio.Event()
        run = asyncio.ensure_future(source.run(stopping))
        while not processor.started.is_set():
            await asyncio.sleep(0.01)
        stopping.set()
        await asyncio.wait_for(run, 10)  # bounded: a stop that hangs fails here
        await pipeline.close()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main())
        if isinstance(processor, _Swallows):  # what was left behind may end now
            processor.give_up = True
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    finally:
        loop.close()
    return queue, source


@pytest.mark.timeout(30)
@pytest.mark.parametrize("processor_type", [_HangsSync, _HangsAsync])
def test_deadline_abandons_the_batch_and_makes_its_message_visible(
    processor_type: type[Any],
) -> None:
    processor = processor_type()
    queue, source = _stop_at_deadline(processor)
    assert source.pipeline.dispatch.abandoned == 1
    assert ("rh1", 0) in queue.made("change_visibility")
    assert not any("rh1" in batch for batch in queue.made("delete_batch"))
    assert source.left_running == 0
    if isinstance(processor, _HangsSync):
        assert source.pipeline.dispatch.stuck
        _release(processor)


@pytest.mark.timeout(30)
def test_work_swallowing_its_cancellation_is_left_behind_with_its_message_visible() -> None:
    queue, source = _stop_at_deadline(_Swallows())
    assert source.left_running == 1
    assert ("rh1", 0) in queue.made("change_visibility")
    assert not any("rh1" in batch for batch in queue.made("delete_batch"))


def test_calls_after_stop_go_to_a_new_thread_not_the_busy_one() -> None:
    release = threading.Event()
    started = threading.Event()
    threads: list[str] = []

    hung_in: list[int] = []

    def hang(events: Any) -> None:
        hung_in.append(threading.get_ident())
        started.set()
        release.wait()

    def where(events: Any) -> int:
        threads.append(threading.current_thread().name)
        return threading.get_ident()

    async def main() -> int:
        thread = HandlerThread()
        hung = asyncio.ensure_future(thread.call(hang, []))
        while not started.is_set():
            await asyncio.sleep(0.005)
        hung.cancel()
        await asyncio.gather(hung, return_exceptions=True)
        thread.stop()
        served = await asyncio.wait_for(thread.call(where, []), 5)  # not behind the hung call
        assert thread.stuck  # the old thread is still in user code
        thread.stop()
        return served

    served = asyncio.run(main())
    release.set()
    for t in threading.enumerate():
        if t.name == "trailproc-handler":
            t.join(5)
    assert hung_in and served != hung_in[0] and threads == ["trailproc-handler"]


def test_a_handler_thread_dropped_without_stop_ends_its_thread() -> None:
    """A pipeline never closed must not leave its thread behind (`--jobs` forks only from
    a process running no other thread)."""
    import gc

    async def main() -> threading.Thread:
        thread = HandlerThread()
        worker: threading.Thread = await thread.call(lambda events: threading.current_thread(), [])
        del thread
        gc.collect()
        return worker

    worker = asyncio.run(main())
    worker.join(5)
    assert not worker.is_alive()
