"""Stage 4 within the memory budget: a downloaded file's decompressed bytes and records
are reserved before they exist, and settled once they do.

The steps, for a file whose download (`len(data)` bytes) is already held:

1. its decompressed size: the gzip trailer's ISIZE, exact for CloudTrail's files, is
   reserved and inflated; a file that inflates beyond its trailer (several members, a
   forged trailer) or whose trailer is over the budget is inflated within half the
   budget (or `max_decompressed_bytes`, if smaller). So a bomb costs that much, once,
   and fails;
2. its records, `RECORD_COST` each, reserved before one exists (so a record bomb fails
   with the limit to raise instead of building 100 million objects), from the first
   bound that the budget can hold:
   - half the document's size: any JSON value in a list or a line takes a byte and a
     separator. Taken only if it is free at once: nothing is counted;
   - its commas and line breaks, plus one (the separators of any list or lines);
   - its count of "{", once a first pass that holds a few bytes per record has checked
     that every record of a `{"Records": [...]}` document is a JSON object (a list of
     `1,1,1,...` has no "{" but costs as much per record as a list of objects);
3. the real cost (records counted, text of records that are not slices of the
   document) is settled, and held until the file is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from .._errors import DecompressedTooLarge, OverMemoryBudget
from .budget import RECORD_COST, Reservation
from .decode import OtherShape, delivery_record_count, records_of
from .gunzip import decompress, gzip_size_hint, inflated_bound

__all__ = ["INLINE_BYTES", "ITEM_COST", "LINE_COST", "Decoded", "decode_within"]

# What reading a file of another shape than CloudTrail's delivery may build, at most, per
# line and per comma-separated item (measured with tracemalloc on NDJSON of `{}` lines
# and arrays of `{}` and numbers: ~500 and ~180 bytes).
LINE_COST = 640
ITEM_COST = 256

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Decoded:
    records: list[Any]
    size: int  # decompressed bytes
    one_line: bool
    sha256: str | None


# Documents up to this size are inflated and split on the event loop: ~0.2-0.5 ms of
# work, less than a worker-thread round trip costs in CPU (a future, a queue hand-off, a
# thread woken, the GIL handed over twice, the loop woken through its self-pipe).
# Larger ones go to a worker thread, so the loop never stalls for long.
INLINE_BYTES = 256 * 1024


async def _run(size: int, func: Callable[..., _T], *args: Any) -> _T:
    """`func(*args)` here for a small document (`size` bytes), else on a worker thread."""
    if size <= INLINE_BYTES:
        return func(*args)
    return await asyncio.to_thread(func, *args)


async def decode_within(
    held: Reservation, data: bytes, *, max_bytes: int, name: str | None, hashed: bool = False
) -> Decoded:
    """Decompress and split `data`, reserving each step in `held` first (CPU-bound steps
    of a document over INLINE_BYTES run in a worker thread)."""
    document = await _inflated(held, data, max_bytes)
    inflated = len(document) if document is not data else 0
    base = len(data) + inflated
    counted = await _reserve_records(held, base, document)
    try:
        records, one_line, sha256 = await _run(len(document), _split, document, name, hashed,
                                               max_bytes, False)  # fmt: skip
    except OtherShape:
        # Other shapes build more per record (lines, probes of each item): reserved anew.
        await _reserve_other_shape(held, base, document, counted)
        records, one_line, sha256 = await _run(len(document), _split, document, name, hashed,
                                               max_bytes, True)  # fmt: skip
    # Records that are not slices of the document (text decoded from another shape)
    # hold their own bytes.
    own = sum(map(len, records)) if records and isinstance(records[0], (bytes, str)) else 0
    await held.resize(base + len(records) * RECORD_COST + own, why=f"{len(records):,} records")
    return Decoded(list(records), len(document), one_line, sha256)


async def _reserve_records(
    held: Reservation, base: int, document: bytes | bytearray
) -> tuple[int, int] | None:
    """Hold `base` bytes and what splitting `document` may build (see the module's
    notes); the document's (lines, items) if they had to be counted."""
    size = len(document)
    if held.try_resize(base + (size // 2 + 1) * RECORD_COST):
        return None
    lines, items = await _run(size, _lines_and_items, document)
    separators = lines + items - 1  # every line break and comma, plus one
    if base + separators * RECORD_COST <= held.budget_total:
        await held.resize(base + separators * RECORD_COST, why=f"up to {separators:,} records")
        return lines, items
    braces = await _run(size, document.count, b"{")
    await held.resize(base + braces * RECORD_COST, why=f"up to {braces:,} records")
    records = await _run(size, delivery_record_count, document)
    if records is None:  # another shape: only the separators bound it
        await held.resize(base + separators * RECORD_COST, why=f"up to {separators:,} records")
    else:
        await held.resize(base + records * RECORD_COST, why=f"{records:,} records")
    return lines, items


async def _reserve_other_shape(
    held: Reservation, base: int, document: bytes | bytearray, counted: tuple[int, int] | None
) -> None:
    if counted is None:
        counted = await _run(len(document), _lines_and_items, document)
    lines, items = counted
    need = lines * LINE_COST + items * ITEM_COST
    await held.resize(base + need, why=f"up to {lines:,} lines and {items:,} items")


def _lines_and_items(document: bytes | bytearray) -> tuple[int, int]:
    """Line breaks and commas, each plus one: what separates a document's lines and
    the items of its lists."""
    return document.count(b"\n") + 1, document.count(b",") + 1


async def _inflated(held: Reservation, data: bytes, max_bytes: int) -> bytes | bytearray:
    """The decompressed document; reserved before inflating."""
    hint = gzip_size_hint(data)
    if hint is None:  # not gzip: the document is the download itself
        return await _run(len(data), _inflate, data, max_bytes)
    compressed = len(data)
    total = held.budget_total
    if hint <= min(max_bytes, total - compressed):
        await held.resize(compressed + hint, why=f"{hint:,} bytes decompressed")
        try:
            return await _run(hint, _inflate, data, hint)
        except DecompressedTooLarge:
            pass  # more than its trailer says: several members, or a forged trailer
    # Beyond its trailer, a file may hold half the budget: two such files never wait
    # for each other's share, and a bomb costs at most that (or the cap), once.
    ceiling = min(max_bytes, total // 2, inflated_bound(data))
    await held.resize(compressed + ceiling, why="inflating beyond its gzip trailer")
    try:
        return await asyncio.to_thread(_inflate, data, ceiling)
    except DecompressedTooLarge:
        if ceiling == max_bytes:
            raise
        raise OverMemoryBudget(
            f"decompresses to more than {ceiling:,} bytes (its gzip trailer says {hint:,}): "
            "a file that does not inflate to its trailer's size, or whose trailer is over "
            f"the memory budget of {total:,} bytes, may hold half of it (gzip bomb or "
            f"oversized file); raise memory_budget_mb to process it "
            f"(max_decompressed_bytes={max_bytes} applies beyond)"
        ) from None


def _inflate(data: bytes, limit: int) -> bytes | bytearray:
    return decompress(data, max_bytes=limit)


def _split(
    document: bytes | bytearray, name: str | None, hashed: bool, max_bytes: int,
    other_shapes: bool,
) -> tuple[list[Any], bool, str | None]:  # fmt: skip
    records, one_line = records_of(document, name, max_bytes=max_bytes,
                                   other_shapes=other_shapes)  # fmt: skip
    if not hashed:
        return records, one_line, None
    import hashlib  # only with digest checks on

    return records, one_line, hashlib.sha256(document).hexdigest()
