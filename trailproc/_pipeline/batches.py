"""Stage 6: raw records → filtered batches of `Event`, each with its resume position."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import repeat
from types import MethodType
from typing import Any

from .events import Delivery, Event
from .processor import EventProcessor

__all__ = ["iter_batches"]

_DEFAULT_FILTER = EventProcessor.filter_event


def _keeps_everything(keep: Callable[[Event], bool] | None) -> bool:
    # The base class's filter_event keeps every event: skip 1 call per record for it.
    return keep is None or (isinstance(keep, MethodType) and keep.__func__ is _DEFAULT_FILTER)


def iter_batches(
    records: Sequence[Any],
    delivery: Delivery,
    *,
    start: int,
    size: int,
    keep: Callable[[Event], bool] | None = None,
) -> Iterator[tuple[list[Event], int, int]]:
    """Yield `(events, next_position, dropped)` from record `start` on.

    `next_position` is the index of the first record not covered by this batch, which is
    what gets checkpointed once the batch returns; records the filter drops still count
    as covered, so they are not looked at again after a restart. A final empty batch is
    yielded when the tail of the file was all filtered out, so that progress is recorded.
    """
    total = len(records)
    if _keeps_everything(keep):
        # Fast path: no filter, so each batch is exactly `size` records (the last one
        # shorter).
        # map() over the Struct type keeps the whole loop in C.
        same = repeat(delivery)
        for low in range(start, total, size):
            high = min(low + size, total)
            yield list(map(Event, records[low:high], same, range(low, high))), high, 0
        return
    assert keep is not None
    batch: list[Event] = []
    dropped = 0
    for index in range(start, total):
        event = Event(records[index], delivery, index)
        if not keep(event):
            dropped += 1
            continue
        batch.append(event)
        if len(batch) >= size:
            yield batch, index + 1, dropped
            batch, dropped = [], 0
    if batch or dropped:
        yield batch, total, dropped
