"""Handlers for the stop tests' daemon subprocesses (load with `--handler stop_handlers:X`
and the tests folder on PYTHONPATH, as `faultproxy.daemon_env` sets it).

They leave marks in the folder named by STOP_TEST_MARKS, so a test can tell from outside
what the handler is doing: `started-N` when batch N (from 1) is handed over, `returned-N`
when it returns, `ids` (one eventID a line, appended as each batch returns), and `closed`
when `close()` ran.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

from trailproc import EventProcessor


class _Marking(EventProcessor):
    def __init__(self) -> None:
        self.marks = Path(os.environ["STOP_TEST_MARKS"])
        self.marks.mkdir(parents=True, exist_ok=True)
        self.batches = 0

    def mark(self, name: str) -> None:
        (self.marks / name).touch()

    def started(self) -> int:
        self.batches += 1
        self.mark(f"started-{self.batches}")
        return self.batches

    def returned(self, batch: int, events: list[Any]) -> None:
        with open(self.marks / "ids", "a") as f:
            f.writelines(f"{e.event_id}\n" for e in events)
        self.mark(f"returned-{batch}")

    def close(self) -> None:
        self.mark("closed")


class HangSync(_Marking):
    """A synchronous process() that never returns."""

    def process(self, events: list[Any]) -> None:
        self.started()
        threading.Event().wait()


class HangAsync(_Marking):
    """An async process() that never returns."""

    async def process(self, events: list[Any]) -> None:
        self.started()
        await asyncio.Event().wait()


class WaitForRelease(_Marking):
    """A synchronous process() that returns at once, except batch STOP_TEST_HOLD (a
    number), which waits until the test creates the mark `release`."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = int(os.environ.get("STOP_TEST_HOLD", "0"))

    def process(self, events: list[Any]) -> None:
        batch = self.started()
        while batch == self.hold and not (self.marks / "release").exists():
            time.sleep(0.02)
        self.returned(batch, events)


class Steady(_Marking):
    """A synchronous process() taking STOP_TEST_BATCH_SECONDS a batch."""

    def process(self, events: list[Any]) -> None:
        batch = self.started()
        time.sleep(float(os.environ.get("STOP_TEST_BATCH_SECONDS", "0.2")))
        self.returned(batch, events)


class HangStubborn(_Marking):
    """An async process() that never returns and swallows its cancellation."""

    async def process(self, events: list[Any]) -> None:
        self.started()
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                pass
