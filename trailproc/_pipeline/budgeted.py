"""Stage 4 within the memory budget: a downloaded file's decompressed bytes and records
are reserved before they exist, and settled once they do.

The steps, for a file whose download (`len(data)` bytes) is already held:

1. its decompressed size: the gzip trailer's ISIZE, exact for CloudTrail's files, is
   reserved and inflated; a file that inflates beyond its trailer (several members, a
   forged trailer) or whose trailer is over the budget is inflated within half the
   budget (or `max_decompressed_bytes`, if smaller). So a bomb costs that much, once,
   and fails;
2. its records: `document.count(b"{")` bounds their number (every record is a JSON
   object) before one exists; `RECORD_COST` each is reserved, so a record bomb fails
   with the limit to raise instead of building 100 million objects;
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
from .decode import records_of
from .gunzip import decompress, gzip_size_hint, inflated_bound

__all__ = ["INLINE_BYTES", "Decoded", "decode_within"]

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
    document, braces = await _inflated(held, data, max_bytes)
    inflated = len(document) if document is not data else 0
    base = len(data) + inflated
    await held.resize(base + braces * RECORD_COST, why=f"up to {braces:,} records")
    records, one_line, sha256 = await _run(len(document), _split, document, name, hashed,
                                           max_bytes)  # fmt: skip
    # Records that are not slices of the document (text decoded from another shape)
    # hold their own bytes.
    own = sum(map(len, records)) if records and isinstance(records[0], (bytes, str)) else 0
    await held.resize(base + len(records) * RECORD_COST + own, why=f"{len(records):,} records")
    return Decoded(list(records), len(document), one_line, sha256)


async def _inflated(
    held: Reservation, data: bytes, max_bytes: int
) -> tuple[bytes | bytearray, int]:
    """The decompressed document and its count of "{"; reserved before inflating."""
    hint = gzip_size_hint(data)
    if hint is None:  # not gzip: the document is the download itself
        return await _run(len(data), _inflate_and_count, data, max_bytes)
    compressed = len(data)
    total = held.budget_total
    if hint <= min(max_bytes, total - compressed):
        await held.resize(compressed + hint, why=f"{hint:,} bytes decompressed")
        try:
            return await _run(hint, _inflate_and_count, data, hint)
        except DecompressedTooLarge:
            pass  # more than its trailer says: several members, or a forged trailer
    # Beyond its trailer, a file may hold half the budget: two such files never wait
    # for each other's share, and a bomb costs at most that (or the cap), once.
    ceiling = min(max_bytes, total // 2, inflated_bound(data))
    await held.resize(compressed + ceiling, why="inflating beyond its gzip trailer")
    try:
        return await asyncio.to_thread(_inflate_and_count, data, ceiling)
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


def _inflate_and_count(data: bytes, limit: int) -> tuple[bytes | bytearray, int]:
    document = decompress(data, max_bytes=limit)
    return document, document.count(b"{")


def _split(
    document: bytes | bytearray, name: str | None, hashed: bool, max_bytes: int
) -> tuple[list[Any], bool, str | None]:
    records, one_line = records_of(document, name, max_bytes=max_bytes)
    if not hashed:
        return records, one_line, None
    import hashlib  # only with digest checks on

    return records, one_line, hashlib.sha256(document).hexdigest()
