"""The memory budget on its own: admission order, growth first, whole-budget refusals,
deadlock breaking, cancellation; and its size from cgroup files. No sleeps, no network:
`settle` only lets ready tasks run."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import tracemalloc
import zlib
from pathlib import Path

import pytest

from trailproc._errors import BadLogFile, DecompressedTooLarge, MemoryContended, OverMemoryBudget
from trailproc._memory import ASSUMED_CONTAINER, BUDGET_SHARE, budget_bytes, container_memory_limit
from trailproc._pipeline.budget import RECORD_COST, MemoryBudget, Reservation
from trailproc._pipeline.budgeted import decode_within
from trailproc._ports.clock import settle

pytestmark = pytest.mark.timeout(20)

MB = 1 << 20


class Probe:
    def __init__(self) -> None:
        self.in_use: list[int] = []
        self.waits: list[str] = []

    def budget_changed(self, in_use: int, total: int) -> None:
        assert 0 <= in_use <= total
        self.in_use.append(in_use)

    def budget_waited(self, kind: str) -> None:
        self.waits.append(kind)


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_admits_in_order_and_never_beyond_the_total() -> None:
    async def main() -> None:
        probe = Probe()
        budget = MemoryBudget(100, probe=probe)
        order: list[str] = []
        holders: dict[str, Reservation] = {}

        async def take(name: str, size: int) -> None:
            holders[name] = reservation = budget.reservation(name)
            await reservation.resize(size)
            order.append(name)

        tasks = [asyncio.create_task(take(n, 40)) for n in "abcd"]
        await settle()
        assert order == ["a", "b"] and budget.in_use == 80
        holders["a"].release()
        await settle()
        assert order == ["a", "b", "c"]
        holders["b"].release()
        holders["c"].release()
        await settle()
        assert order == ["a", "b", "c", "d"]
        await asyncio.gather(*tasks)
        holders["d"].release()
        holders["d"].release()  # idempotent
        assert budget.in_use == 0 and budget.peak == 80
        assert max(probe.in_use) == 80 and probe.waits == ["admission", "admission"]

    run(main())


def test_a_large_request_at_the_head_is_not_overtaken_by_small_ones() -> None:
    async def main() -> None:
        budget = MemoryBudget(100)
        first = budget.reservation("first")
        await first.resize(60)
        big = asyncio.create_task(budget.reservation("big").resize(95))
        small = asyncio.create_task(budget.reservation("small").resize(10))
        await settle()
        # 40 are free: small would fit, but waits behind big.
        assert not big.done() and not small.done()
        first.release()
        await settle()
        assert big.done() and not small.done()

    run(main())


def test_growth_goes_ahead_of_admissions() -> None:
    async def main() -> None:
        budget = MemoryBudget(100)
        holder = budget.reservation("holder")
        grower = budget.reservation("grower")
        await holder.resize(40)
        await grower.resize(40)
        newcomer = asyncio.create_task(budget.reservation("new").resize(30))
        await settle()
        growth = asyncio.create_task(grower.resize(90))
        await settle()
        assert not newcomer.done() and not growth.done()
        holder.release()  # 60 free: the growth (50 more) goes first, though it came later
        await settle()
        assert growth.done() and grower.held == 90
        assert not newcomer.done()  # 10 left, 30 asked
        grower.release()
        await settle()
        assert newcomer.done()

    run(main())


def test_more_than_the_whole_budget_fails_at_once_naming_the_setting() -> None:
    async def main() -> None:
        budget = MemoryBudget(100 * MB)
        reservation = budget.reservation("s3://bucket/key")
        await reservation.resize(10 * MB)
        with pytest.raises(OverMemoryBudget) as caught:
            await reservation.resize(200 * MB, why="up to 3,000,000 records")
        text = str(caught.value)
        assert "memory_budget_mb" in text and "s3://bucket/key" in text
        assert "200 MB" in text and "100 MB" in text and "3,000,000 records" in text
        assert reservation.held == 10 * MB  # what it held stays until released
        assert budget.waits == 0

    run(main())


def test_when_every_holder_waits_to_grow_the_newest_gives_way() -> None:
    async def main() -> None:
        probe = Probe()
        budget = MemoryBudget(100, probe=probe)
        older, newer = budget.reservation("older"), budget.reservation("newer")
        await older.resize(50)
        await newer.resize(50)
        older_growth = asyncio.create_task(older.resize(80))
        await settle()
        assert not older_growth.done()  # newer still holds 50 and may give it back
        with pytest.raises(MemoryContended, match="newer gave back its"):
            await newer.resize(70)
        assert newer.held == 0
        await settle()
        assert older_growth.done() and older.held == 80
        assert budget.in_use == 80 and probe.waits == ["growth", "growth"]

    run(main())


def test_a_lone_grower_is_never_chosen_and_waits_for_holders_that_do_not_grow() -> None:
    async def main() -> None:
        budget = MemoryBudget(100)
        grower, other = budget.reservation("grower"), budget.reservation("other")
        await grower.resize(40)
        await other.resize(60)
        growth = asyncio.create_task(grower.resize(90))
        await settle()
        assert not growth.done()
        other.release()
        await settle()
        assert growth.done() and grower.held == 90

    run(main())


def test_a_cancelled_waiter_leaves_the_queue_and_the_next_goes() -> None:
    async def main() -> None:
        budget = MemoryBudget(100)
        holder = budget.reservation("holder")
        await holder.resize(50)
        big = asyncio.create_task(budget.reservation("big").resize(80))
        small_reservation = budget.reservation("small")
        small = asyncio.create_task(small_reservation.resize(40))
        await settle()
        assert not small.done()  # behind big
        big.cancel()
        await settle()
        assert big.cancelled() and small.done() and small_reservation.held == 40
        assert budget.in_use == 90 and budget.waiting == 0

    run(main())


def test_shrinking_gives_back_at_once_and_wakes_waiters() -> None:
    async def main() -> None:
        budget = MemoryBudget(100)
        holder = budget.reservation("holder")
        await holder.resize(90)
        waiter = asyncio.create_task(budget.reservation("next").resize(50))
        await settle()
        assert not waiter.done()
        await holder.resize(50)  # settles to its real size: never waits
        await settle()
        assert waiter.done() and budget.in_use == 100

    run(main())


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryBudget(0)


# --- its size ----------------------------------------------------------------------------


def _cgroup(tmp_path: Path, files: dict[str, str], own: str = "0::/\n") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(own)
    return root, proc


def test_cgroup_v2_limit_is_read_and_max_means_none(tmp_path: Path) -> None:
    root, proc = _cgroup(tmp_path, {"memory.max": "2147483648\n"})
    assert container_memory_limit(root, proc) == 2 << 30
    root, proc = _cgroup(tmp_path / "b", {"memory.max": "max\n"})
    assert container_memory_limit(root, proc) is None


def test_cgroup_v1_limit_is_read_and_its_huge_default_means_none(tmp_path: Path) -> None:
    root, proc = _cgroup(tmp_path, {"memory/memory.limit_in_bytes": "1073741824"})
    assert container_memory_limit(root, proc) == 1 << 30
    root, proc = _cgroup(tmp_path / "b", {"memory/memory.limit_in_bytes": "9223372036854771712"})
    assert container_memory_limit(root, proc) is None


def test_the_process_own_nested_cgroup_counts_and_the_tightest_wins(tmp_path: Path) -> None:
    root, proc = _cgroup(
        tmp_path,
        {"memory.max": "max", "app/worker/memory.max": "805306368",
         "memory/box/memory.limit_in_bytes": "1073741824"},
        own="4:memory:/box\n0::/app/worker\n",
    )  # fmt: skip
    assert container_memory_limit(root, proc) == 768 << 20


def test_no_cgroup_at_all_means_none(tmp_path: Path) -> None:
    assert container_memory_limit(tmp_path / "nothing", tmp_path / "no-proc") is None


def test_budget_is_the_container_share_split_between_processes() -> None:
    two_gib = 2 << 30
    assert budget_bytes(None, container_limit=two_gib) == int(two_gib * BUDGET_SHARE)
    assert budget_bytes(None, 4, container_limit=two_gib) == int(two_gib * BUDGET_SHARE) // 4
    # No limit found: the defaults are made for a 2 GiB container.
    assert budget_bytes(None, container_limit=None) in (
        int(ASSUMED_CONTAINER * BUDGET_SHARE),
        budget_bytes(None, container_limit=container_memory_limit()),
    )
    # The setting overrides the container's share, and is split the same way.
    assert budget_bytes(3000, 3, container_limit=two_gib) == 1000 << 20
    assert budget_bytes(1, 8, container_limit=two_gib) == 64 << 20  # never below 64 MiB


# --- decoding within it ------------------------------------------------------------------


def _zeros_gzip(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return compressor.compress(b"\0" * size) + compressor.flush()


def test_a_decoded_file_holds_its_download_document_and_records() -> None:
    records = [{"eventID": str(i), "eventName": "GetObject"} for i in range(1000)]
    document = json.dumps({"Records": records}).encode()
    data = gzip.compress(document)

    async def main() -> None:
        budget = MemoryBudget(64 * MB)
        async with budget.reservation("file") as held:
            decoded = await decode_within(held, data, max_bytes=1 << 30, name="file")
            assert len(decoded.records) == 1000 and decoded.size == len(document)
            assert held.held == len(data) + len(document) + 1000 * RECORD_COST
            # Before splitting, with the budget free: a record per two bytes, uncounted.
            worst = (len(document) // 2 + 1) * RECORD_COST
            assert budget.peak == len(data) + len(document) + worst
        assert budget.in_use == 0

    run(main())


def test_a_tighter_budget_counts_separators_then_objects() -> None:
    records = [{"eventID": str(i), "eventName": "GetObject"} for i in range(1000)]
    document = json.dumps({"Records": records}).encode()
    data = gzip.compress(document)
    base = len(data) + len(document)
    separators = document.count(b",") + document.count(b"\n") + 1

    async def decode(total: int) -> tuple[MemoryBudget, int]:
        budget = MemoryBudget(total)
        async with budget.reservation("file") as held:
            decoded = await decode_within(held, data, max_bytes=1 << 30, name="file")
            return budget, len(decoded.records)

    # The half-size bound does not fit; the separators' does.
    budget, got = asyncio.run(decode(base + separators * RECORD_COST + 1000))
    assert got == 1000 and budget.peak == base + separators * RECORD_COST
    # Neither fits: each "{" is counted, once every record is checked to be an object.
    budget, got = asyncio.run(decode(base + 1001 * RECORD_COST + 1000))
    assert got == 1000 and budget.peak == base + 1001 * RECORD_COST


HOSTILE_LISTS = {
    "numbers": b'{"Records":[' + b"1," * 199_999 + b"1]}",
    "strings": b'{"Records":[' + b'"",' * 199_999 + b'""]}',
    "objects": b'{"Records":[' + b"{}," * 199_999 + b"{}]}",
    "object lines": b"{}\n" * 200_000,
    "array of objects": b"[" + b"{}," * 199_999 + b"{}]",
    "array of numbers": b"[" + b"1," * 199_999 + b"1]",
    "lines of arrays": b"[1,1,1,1]\n" * 50_000,
    "lookup events": b'{"Events":[' + b'{"CloudTrailEvent":"{}"},' * 199_999 + b"{}]}",
}


@pytest.mark.parametrize("shape", list(HOSTILE_LISTS))
def test_what_splitting_builds_was_reserved_first(shape: str) -> None:
    """Whatever the file's shape, the memory its split builds (traced) is within what
    the budget granted before it was built."""
    document = HOSTILE_LISTS[shape]
    data = gzip.compress(document, 1)

    async def main() -> MemoryBudget:
        budget = MemoryBudget(4096 * MB)
        async with budget.reservation("file") as held:
            with contextlib.suppress(BadLogFile):
                await decode_within(held, data, max_bytes=1 << 30, name="file")
        return budget

    tracemalloc.start()
    try:
        budget = asyncio.run(main())
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert traced_peak <= budget.peak


def test_a_list_of_numbers_fails_before_its_records_are_built() -> None:
    """`1,1,1,...` holds no "{": counting braces alone would reserve nothing for records
    that cost as much as objects. Under a budget too small for its bounds, the check
    that every record is an object fails it before any record is built."""
    count = 2_000_000
    data = gzip.compress(b'{"Records":[' + b"1," * (count - 1) + b"1]}", 1)

    async def main() -> MemoryBudget:
        budget = MemoryBudget(64 * MB)
        async with budget.reservation("file") as held:
            with pytest.raises(BadLogFile, match="not a JSON object"):
                await decode_within(held, data, max_bytes=1 << 30, name="file")
        return budget

    tracemalloc.start()
    try:
        asyncio.run(main())
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The document (4 MB) and the inflating slice; the records would be ~140 MB.
    assert traced_peak < 20 * MB


def test_several_members_inflate_beyond_the_trailer_within_the_ceiling() -> None:
    first = json.dumps({"Records": [{"eventID": "a" * 5000}]}).encode()[:-2]
    data = gzip.compress(first + b",") + gzip.compress(b'{"eventID": "b"}]}')

    async def main() -> None:
        budget = MemoryBudget(64 * MB)
        async with budget.reservation("file") as held:
            decoded = await decode_within(held, data, max_bytes=1 << 30, name="file")
            assert len(decoded.records) == 2

    run(main())


def test_bombs_inflate_within_the_cap_or_half_the_budget_and_fail_naming_it() -> None:
    bomb = _zeros_gzip(64 * MB)

    async def main() -> None:
        budget = MemoryBudget(48 * MB)

        async def one(max_bytes: int) -> BaseException | None:
            async with budget.reservation("bomb") as held:
                try:
                    await decode_within(held, bomb, max_bytes=max_bytes, name="bomb")
                except (DecompressedTooLarge, OverMemoryBudget) as exc:
                    return exc
            return None

        capped = await asyncio.gather(*(one(20 * MB) for _ in range(3)))
        # 20 MB each (and its 64 KB download): two fit the 48 MB budget at once.
        assert budget.peak <= 48 * MB and budget.waits >= 1
        assert all(type(e) is DecompressedTooLarge for e in capped)
        assert all(f"max_decompressed_bytes={20 * MB}" in str(e) for e in capped)
        # A 1 GiB cap: half the budget (24 MB) stops them, one at a time.
        over = await asyncio.gather(*(one(1 << 30) for _ in range(2)))
        assert all(type(e) is OverMemoryBudget for e in over)
        assert all("memory_budget_mb" in str(e) and "25,165,824" in str(e) for e in over)
        assert budget.peak <= 48 * MB and budget.in_use == 0

    run(main())


def test_a_trailer_over_the_cap_inflates_only_to_the_cap() -> None:
    bomb = gzip.compress(b'{"Records": [' + b" " * (8 * MB) + b"]}")

    async def main() -> None:
        budget = MemoryBudget(64 * MB)
        async with budget.reservation("bomb") as held:
            with pytest.raises(DecompressedTooLarge, match=f"max_decompressed_bytes={MB}"):
                await decode_within(held, bomb, max_bytes=MB, name="bomb")
        assert budget.peak <= len(bomb) + MB

    run(main())
