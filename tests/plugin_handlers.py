"""Handler plugins loaded by `--handler tests.plugin_handlers:...` in the end-to-end tests."""

from __future__ import annotations

import json
import os
from collections import Counter

import trailproc

counts: Counter[str] = Counter()
handlers = trailproc.Handlers()


@handlers.on(event_source="sts.amazonaws.com")
def on_sts(event: trailproc.Event) -> None:
    counts["sts"] += 1


@handlers.on_batch(event_name=["Put*", "Run*", "Attach*"])
async def on_writes(events: list[trailproc.Event]) -> None:
    counts["writes"] += len(events)


class CountingProcessor(trailproc.EventProcessor):
    def process(self, events: list[trailproc.Event]) -> None:
        counts["counted"] += len(events)

    def close(self) -> None:
        with open(os.environ["PLUGIN_REPORT"], "w") as f:
            json.dump(counts, f)


class BrokenFilterSource(trailproc.EventProcessor):
    """A processor whose `filter_source` hook raises: an unexpected exception."""

    def filter_source(self, source: trailproc.Source) -> bool:
        raise RuntimeError("filter_source exploded")


class CollectorState(trailproc.EventProcessor):
    """Reports whether the garbage collector runs while records are handed over."""

    def process(self, events: list[trailproc.Event]) -> None:
        import gc

        counts["gc_enabled"] = int(gc.isenabled())
        counts["gc_frozen"] = gc.get_freeze_count()

    def close(self) -> None:
        with open(os.environ["PLUGIN_REPORT"], "w") as f:
            json.dump(counts, f)
