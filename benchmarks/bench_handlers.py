"""Processors the benchmarks load by spec (`bench_handlers:ToDict`)."""

from __future__ import annotations

from trailproc import EventProcessor
from trailproc.pipeline.events import Event


class ToDict(EventProcessor):
    """Full materialisation: every event decoded into a dict."""

    def process(self, events: list[Event]) -> None:
        for event in events:
            event.to_dict()


class Nothing(EventProcessor):
    """Accepts every batch and does nothing (pipeline overhead and memory only)."""

    def process(self, events: list[Event]) -> None:
        return None
