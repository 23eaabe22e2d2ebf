"""User-code surface: Handlers filters, plugin loading, batching via process_paths."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

import trailproc
from trailproc._pipeline.events import Delivery, Event
from trailproc._pipeline.keys import FileRef
from trailproc._pipeline.processor import load_processor
from trailproc._sandbox import encode_log, make_records


def _events(records: list[dict[str, object]]) -> list[Event]:
    delivery = Delivery(FileRef.of("b", "k"), "m")
    return [Event(json.dumps(r).encode(), delivery, i) for i, r in enumerate(records)]


def test_handlers_match_by_source_name_globs_and_predicate() -> None:
    handlers = trailproc.Handlers()
    seen: dict[str, list[str | None]] = {"iam": [], "deletes": [], "errors": []}

    @handlers.on(event_source="iam.amazonaws.com")
    def iam(event: Event) -> None:
        seen["iam"].append(event.event_name)

    @handlers.on_batch(event_name="Delete*")
    def deletes(events: list[Event]) -> None:
        seen["deletes"] += [e.event_name for e in events]

    @handlers.on(where=lambda e: e.error_code is not None)
    async def errors(event: Event) -> None:
        seen["errors"].append(event.error_code)

    events = _events(
        [
            {"eventSource": "iam.amazonaws.com", "eventName": "CreateUser"},
            {"eventSource": "iam.amazonaws.com", "eventName": "DeleteUser"},
            {"eventSource": "s3.amazonaws.com", "eventName": "DeleteBucket",
             "errorCode": "AccessDenied"},
            {"eventSource": "s3.amazonaws.com", "eventName": "GetObject"},
        ]
    )  # fmt: skip
    asyncio.run(handlers.process(events))
    assert seen == {
        "iam": ["CreateUser", "DeleteUser"],
        "deletes": ["DeleteUser", "DeleteBucket"],
        "errors": ["AccessDenied"],
    }
    assert len(handlers.names) == 3


def test_load_processor_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="cannot import handler module 'no_such_mod'"):
        load_processor("no_such_mod:x")
    with pytest.raises(ValueError, match="has no 'nothing'"):
        load_processor("tests.plugin_handlers:nothing")
    with pytest.raises(ValueError, match=r"trailproc\.handlers"):
        load_processor("not-an-entry-point")
    with pytest.raises(TypeError, match="expected an EventProcessor"):
        load_processor("tests.plugin_handlers:counts")


def test_load_processor_accepts_class_instance_registry_and_function() -> None:
    assert isinstance(load_processor("tests.plugin_handlers:CountingProcessor"),
                      trailproc.EventProcessor)  # fmt: skip
    assert load_processor("tests.plugin_handlers:handlers") is not None
    func = load_processor("tests.plugin_handlers:on_sts")
    assert isinstance(func, trailproc.EventProcessor)


def test_process_paths_batches_in_file_order(tmp_path: Path) -> None:
    records = make_records(23, seed=1)
    (tmp_path / "a.json.gz").write_bytes(encode_log(records))
    sizes: list[int] = []
    order: list[int] = []

    class P(trailproc.EventProcessor):
        def process(self, events: list[Event]) -> None:
            sizes.append(len(events))
            order.extend(e.index for e in events)

    result = trailproc.process_paths([tmp_path], P(), max_events_per_emit=5)
    assert sizes == [5, 5, 5, 5, 3]
    assert order == list(range(23))
    assert result.records == 23 and result.files_ok == 1


def test_handler_exception_fails_the_file_with_location(tmp_path: Path) -> None:
    path = tmp_path / "x.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"Records": make_records(3)}).encode()))
    errors: list[trailproc.TrailprocError] = []

    class Boom(trailproc.EventProcessor):
        def process(self, events: list[Event]) -> None:
            raise RuntimeError("kaput")

        def on_error(self, error: trailproc.TrailprocError) -> None:
            errors.append(error)

    result = trailproc.process_paths([path], Boom())
    assert result.files_failed == 1
    assert isinstance(errors[0], trailproc.HandlerError)
    assert "handler raised RuntimeError: kaput" in str(errors[0])
    assert errors[0].key == str(path)


def test_processor_without_process_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(encode_log(make_records(1), compress=False))
    result = trailproc.process_paths([tmp_path], trailproc.EventProcessor())
    assert result.files_failed == 1


def test_process_paths_shows_a_progress_bar_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(3):
        (tmp_path / f"{i}.json.gz").write_bytes(encode_log(make_records(10, seed=i)))

    class Quiet(trailproc.EventProcessor):
        def process(self, events: list[Event]) -> None:
            pass

    config = trailproc.load_config(env={})
    from trailproc._app import process_paths_async

    result = asyncio.run(process_paths_async([tmp_path], config, Quiet(), progress=True))
    assert result.records == 30
    err = capsys.readouterr().err
    assert "process" in err and "3/3" in err and "records=30" in err


def test_sync_user_code_runs_off_the_event_loop_even_when_combined(tmp_path: Path) -> None:
    """Slow sync handlers must not block the loop (heartbeats), alone or beside async ones."""
    import threading

    (tmp_path / "a.json.gz").write_bytes(encode_log(make_records(4)))
    threads: dict[str, set[str]] = {"sync": set(), "async": set(), "handlers": set(),
                                    "async_handlers": set()}  # fmt: skip

    class SyncP(trailproc.EventProcessor):
        def process(self, events: list[Event]) -> None:
            threads["sync"].add(threading.current_thread().name)

    class AsyncP(trailproc.EventProcessor):
        async def process(self, events: list[Event]) -> None:
            threads["async"].add(threading.current_thread().name)

    sync_handlers = trailproc.Handlers()
    sync_handlers.on()(lambda e: threads["handlers"].add(threading.current_thread().name))
    async_handlers = trailproc.Handlers()

    @async_handlers.on()
    async def on_any(event: Event) -> None:
        threads["async_handlers"].add(threading.current_thread().name)

    result = trailproc.process_paths([tmp_path], [SyncP(), AsyncP(), sync_handlers, async_handlers])
    assert result.records == 4
    loop_thread = threading.main_thread().name
    assert threads["sync"] == {n for n in threads["sync"] if n.startswith("trailproc-handler")}
    assert threads["handlers"] and all(
        n.startswith("trailproc-handler") for n in threads["handlers"]
    )
    assert threads["async"] == {loop_thread} and threads["async_handlers"] == {loop_thread}
    assert threads["sync"]
