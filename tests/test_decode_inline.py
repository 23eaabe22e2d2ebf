"""Small documents are inflated and split on the event loop, large ones on a worker
thread; both give the same records."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading

from trailproc._pipeline.budget import MemoryBudget
from trailproc._pipeline.budgeted import INLINE_BYTES, _run, decode_within


def test_small_work_runs_here_and_large_work_on_a_worker_thread() -> None:
    async def where(size: int) -> int:
        return await _run(size, threading.get_ident)

    here = threading.get_ident()
    assert asyncio.run(where(INLINE_BYTES)) == here
    assert asyncio.run(where(INLINE_BYTES + 1)) != here


def test_small_and_large_documents_decode_to_the_same_records() -> None:
    def log(n: int) -> bytes:
        records = [{"eventID": f"id-{i}", "pad": "x" * 200} for i in range(n)]
        return gzip.compress(json.dumps({"Records": records}).encode())

    async def decode(data: bytes) -> list[bytes]:
        budget = MemoryBudget(1 << 30)
        held = budget.reservation()
        try:
            decoded = await decode_within(held, data, max_bytes=1 << 30, name="x.json.gz")
        finally:
            held.release()
        return [bytes(r) for r in decoded.records]

    small, large = log(10), log(5000)
    assert len(gzip.decompress(small)) <= INLINE_BYTES < len(gzip.decompress(large))
    got_small, got_large = asyncio.run(decode(small)), asyncio.run(decode(large))
    assert [json.loads(r)["eventID"] for r in got_small] == [f"id-{i}" for i in range(10)]
    assert [json.loads(r)["eventID"] for r in got_large] == [f"id-{i}" for i in range(5000)]
