"""One memory budget for everything a process holds of its files at once.

Every file reserves what it will hold before it holds it, and gives it back when it is
done: first its download (the object's Content-Length), then its decompressed bytes (the
gzip trailer's size hint, at most the decompression cap) and then its records (each one a
`msgspec.Raw` and two list slots, `RECORD_COST` bytes, counted from an upper bound
before a single record exists). The budget admits files first come, first served, so the
files of one message, or of many, are never all in memory at once, and decompressions
run only as many at once as their output fits.

Deadlocks: a file that already holds memory and asks for more (it was admitted for its
download and now decompresses) goes ahead of files not yet admitted. If every byte in
use belongs to files waiting for more, none can ever finish: the newest of them gives
its share back and fails with `MemoryContended` (its message is retried later). A file
that asks for more than the whole budget fails at once with `OverMemoryBudget`, naming
the setting to raise.

Pure asyncio: no clock, no I/O. `RECORD_COST` is measured (see docs/memory.md).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from .._errors import MemoryContended, OverMemoryBudget

__all__ = ["RECORD_COST", "BudgetProbe", "MemoryBudget", "Reservation"]

# Bytes one decoded record costs beyond the document's own bytes: a msgspec.Raw (48 on
# 64-bit CPython) plus a slot in the decoded list and in the pipeline's copy of it,
# measured at 64.4 with tracemalloc; rounded up for the lists' spare slots.
RECORD_COST = 72

_MB = 1 << 20


class BudgetProbe(Protocol):
    """Where the budget reports itself (the process's metrics)."""

    def budget_changed(self, in_use: int, total: int) -> None: ...

    def budget_waited(self, kind: str) -> None: ...


@dataclass(eq=False, slots=True)
class _Waiter:
    reservation: Reservation
    target: int
    future: asyncio.Future[None]

    @property
    def need(self) -> int:
        return self.target - self.reservation.held


class Reservation:
    """What one file holds of the budget; `resize` it as the file grows or shrinks."""

    __slots__ = ("_budget", "held", "what")

    def __init__(self, budget: MemoryBudget, what: str) -> None:
        self._budget = budget
        self.held = 0
        self.what = what

    @property
    def budget_total(self) -> int:
        return self._budget.total

    async def resize(self, target: int, *, why: str = "") -> None:
        """Hold `target` bytes: at once when shrinking, else once they are free.

        Raises OverMemoryBudget if `target` exceeds the whole budget, MemoryContended if
        this reservation was chosen to break a deadlock (it then holds nothing)."""
        await self._budget._resize(self, max(0, target), why)

    def try_resize(self, target: int) -> bool:
        """Hold `target` bytes if that needs no wait (they are free and nobody waits
        ahead); else change nothing and say so."""
        return self._budget._try_resize(self, max(0, target))

    def release(self) -> None:
        """Give everything back (idempotent)."""
        self._budget._shrink(self, 0)

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.release()


class MemoryBudget:
    """`total` bytes shared by every file of one process, first come, first served."""

    def __init__(
        self, total: int, *, setting: str = "memory_budget_mb", probe: BudgetProbe | None = None
    ) -> None:
        if total <= 0:
            raise ValueError(f"a memory budget must be positive, not {total}")
        self.total = total
        self.setting = setting
        self.in_use = 0
        self.peak = 0  # the most ever reserved at once
        self.waits = 0  # resizes that had to wait
        self._probe = probe
        self._admissions: deque[_Waiter] = deque()  # reservations holding nothing yet
        self._growths: deque[_Waiter] = deque()  # holding some, asking for more
        self._report()

    @property
    def free(self) -> int:
        return self.total - self.in_use

    @property
    def waiting(self) -> int:
        return len(self._admissions) + len(self._growths)

    def reservation(self, what: str = "") -> Reservation:
        """A reservation holding nothing yet; `what` names it in errors."""
        return Reservation(self, what)

    # --- the queue -----------------------------------------------------------------------
    async def _resize(self, reservation: Reservation, target: int, why: str) -> None:
        if target <= reservation.held:
            self._shrink(reservation, target)
            return
        if target > self.total:
            raise OverMemoryBudget(
                f"{reservation.what or 'a file'} needs {_mb(target)} MB in memory"
                f"{f' ({why})' if why else ''}, more than the whole memory budget of "
                f"{_mb(self.total)} MB; raise {self.setting} to process it"
            )
        queue = self._growths if reservation.held else self._admissions
        ahead = self._growths or (queue is self._admissions and self._admissions)
        if not ahead and target - reservation.held <= self.free:
            self._grant(reservation, target)
            return
        waiter = _Waiter(reservation, target, asyncio.get_running_loop().create_future())
        queue.append(waiter)
        self.waits += 1
        if self._probe is not None:
            self._probe.budget_waited("growth" if queue is self._growths else "admission")
        self._break_deadlock()
        try:
            await waiter.future
        except BaseException:
            if not waiter.future.done() or waiter.future.cancelled():
                _discard(queue, waiter)
                self._wake()
            raise

    def _try_resize(self, reservation: Reservation, target: int) -> bool:
        if target <= reservation.held:
            self._shrink(reservation, target)
            return True
        if self._growths or (not reservation.held and self._admissions):
            return False  # others wait ahead: never overtake them
        if target - reservation.held > self.free:
            return False
        self._grant(reservation, target)
        return True

    def _grant(self, reservation: Reservation, target: int) -> None:
        self.in_use += target - reservation.held
        reservation.held = target
        self.peak = max(self.peak, self.in_use)
        self._report()

    def _shrink(self, reservation: Reservation, target: int) -> None:
        if target >= reservation.held:
            return
        self.in_use -= reservation.held - target
        reservation.held = target
        self._report()
        self._wake()

    def _wake(self) -> None:
        """Grant waiters in order: growths first, then admissions; never skip a head."""
        for queue in (self._growths, self._admissions):
            while queue and queue[0].need <= self.free:
                waiter = queue.popleft()
                if not waiter.future.done():
                    self._grant(waiter.reservation, waiter.target)
                    waiter.future.set_result(None)
            if queue:
                break
        self._break_deadlock()

    def _break_deadlock(self) -> None:
        """If every byte in use belongs to a reservation waiting for more, nothing will
        ever be given back: the newest such waiter gives its share back and fails."""
        while len(self._growths) > 1 and self._growths[0].need > self.free:
            if sum(w.reservation.held for w in self._growths) < self.in_use:
                return  # someone else holds memory and will give it back
            victim = self._growths.pop()
            freed = victim.reservation.held
            self.in_use -= freed
            victim.reservation.held = 0
            self._report()
            victim.future.set_exception(
                MemoryContended(
                    f"{victim.reservation.what or 'a file'} gave back its {_mb(freed)} MB: "
                    f"every file in memory was waiting for more of the {_mb(self.total)} MB "
                    f"budget at once; it is retried later (raise {self.setting} to hold "
                    "more files at once)"
                )
            )
        if self._growths and self._growths[0].need <= self.free:
            self._wake()

    def _report(self) -> None:
        if self._probe is not None:
            self._probe.budget_changed(self.in_use, self.total)


def _discard(queue: deque[_Waiter], waiter: _Waiter) -> None:
    try:
        queue.remove(waiter)
    except ValueError:
        pass


def _mb(nbytes: int) -> str:
    return f"{nbytes / _MB:,.0f}" if nbytes >= 10 * _MB else f"{nbytes / _MB:,.1f}"
