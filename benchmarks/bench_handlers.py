"""Processors the benchmarks load by spec (`bench_handlers:ToDict`)."""

from __future__ import annotations

import json

from trailproc import EventProcessor
from trailproc._pipeline.events import Event


class ToDict(EventProcessor):
    """Full materialisation: every event decoded into a dict."""

    def process(self, events: list[Event]) -> None:
        for event in events:
            event.to_dict()


class Nothing(EventProcessor):
    """Accepts every batch and does nothing (pipeline overhead and memory only)."""

    def process(self, events: list[Event]) -> None:
        return None


class ToJson(EventProcessor):
    """Every event decoded into a dict and encoded again with the stdlib: forwarding each
    record as JSON to another system, as many real handlers do.

    The `run --workers` scaling benchmark uses it to be CPU-bound in the handler: ~50 us
    per ~1.4 KB record, about 4x `ToDict` and ~2/3 of the CPU of a whole `run`, so the
    handler, not moto (which takes CPU on the same cores) or start-up, dominates.
    """

    def __init__(self) -> None:
        self.encoded = 0

    def process(self, events: list[Event]) -> None:
        for event in events:
            self.encoded += len(json.dumps(event.to_dict()))


class SlowWriter(EventProcessor):
    """Writes each record's id to --output's neighbour file, 20 ms per batch: a handler
    slower than the downloads, so decoded files queue in memory unless something bounds
    them (the hostile many-files case)."""

    def __init__(self) -> None:
        import os

        self.path = os.environ["TRAILPROC_BENCH_IDS"]

    def process(self, events: list[Event]) -> None:
        import time

        time.sleep(0.02)
        with open(self.path, "a", encoding="utf-8") as out:
            out.writelines(f'{{"eventID": "{e.event_id}"}}\n' for e in events)
