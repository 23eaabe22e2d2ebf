"""Handlers loaded by name (`--handler quarantine_handlers:...`) in tests/test_quarantine.py."""

from __future__ import annotations

import trailproc


class AlwaysFails(trailproc.EventProcessor):
    """A handler that is still broken: every record raises."""

    def process(self, events: list[trailproc.Event]) -> None:
        raise ValueError("still cannot take this record")
