"""Stage 6: raw records → filtered batches of `Event`, each with its resume position."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .events import Delivery, Event

__all__ = ["iter_batches"]


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
    batch: list[Event] = []
    dropped = 0
    for index in range(start, len(records)):
        event = Event(records[index], delivery, index)
        if keep is not None and not keep(event):
            dropped += 1
            continue
        batch.append(event)
        if len(batch) >= size:
            yield batch, index + 1, dropped
            batch, dropped = [], 0
    if batch or dropped:
        yield batch, len(records), dropped
