"""When `exit_when_idle` lets the run end, and how the receive loop polls meanwhile.

A long poll on an empty queue would hold the exit up to `wait_time_seconds` after the
last message is done, and a short poll per finished message costs a billed request each.
The policy moves between named states and says, before every receive, what to wait for
and how long the receive may wait:

- `POLLING`: the last receive was full (or none yet). Long poll, or a short poll while
  our own messages are in flight.
- `DRAINED`: the last receive brought fewer messages than asked for. Wait for one of
  ours to finish (bounded), then short poll.
- `EMPTY_IN_FLIGHT`: a receive came back empty while ours are in flight. Wait for all of
  them or a pause that starts at 0.1 s and doubles while the queue stays empty.
- `UNSETTLED`: empty, nothing in flight here, but the queue's counts show messages held
  elsewhere (another worker finishing). Ask again after a pause that grows from 0.1 s to
  a long poll of `wait_time_seconds`, so the run ends soon after the others without
  polling hard if they take long.
- `IDLE`: an empty receive, nothing in flight, and the queue settled: exit.

Without `exit_when_idle` the policy stays `POLLING` and every receive is a long poll.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from ..._errors import retry_transient
from ..._observe import get_logger
from ..._ports.clock import Clock
from ..._ports.queue import QueuePort

__all__ = ["IdleExit", "IdleState", "QueueSettled", "ReceivePlan", "grown"]

log = get_logger("trailproc.sqs")


class IdleState(enum.Enum):
    POLLING = "polling"
    DRAINED = "drained"
    EMPTY_IN_FLIGHT = "empty_in_flight"
    UNSETTLED = "unsettled"
    IDLE = "idle"


@dataclass(frozen=True, slots=True)
class ReceivePlan:
    """What to do before the next receive.

    `wait_for`: nothing, one of our messages to finish, or all of them, each bounded by
    `timeout`; `pause`: seconds to sleep first; `receive_wait`: the receive's
    WaitTimeSeconds (None: the configured long poll).
    """

    wait_for: Literal["nothing", "one", "all"] = "nothing"
    timeout: float = 0.0
    pause: float = 0.0
    receive_wait: int | None = None


LONG_POLL = ReceivePlan()


def grown(pause: float, wait_time_seconds: int) -> float:
    """The next of a series of pauses: 0.1 s first, then doubling up to a long poll's
    wait."""
    return min(2 * pause, max(1, wait_time_seconds)) if pause else 0.1


class IdleExit:
    """The idle-exit state machine of one receive loop."""

    def __init__(self, enabled: bool, wait_time_seconds: int) -> None:
        self.enabled = enabled
        self.wait_time_seconds = wait_time_seconds
        self.state = IdleState.POLLING
        self.empty_pause = 0.0  # EMPTY_IN_FLIGHT: bound of the wait for all of ours
        self.settle_pause = 0.0  # UNSETTLED: pause before asking the queue again

    def plan(self, in_flight: bool) -> ReceivePlan:
        """What to wait for before the next receive, given whether ours are in flight."""
        state = self.state
        if not self.enabled:
            return LONG_POLL
        if state is IdleState.UNSETTLED:
            if in_flight:
                return LONG_POLL
            if self.settle_pause >= 1:
                # A long poll of that many seconds answers at once if a message comes.
                return ReceivePlan(receive_wait=int(self.settle_pause))
            return ReceivePlan(pause=self.settle_pause, receive_wait=0)
        if not in_flight:
            return LONG_POLL if state is IdleState.POLLING else ReceivePlan(receive_wait=0)
        if state is IdleState.DRAINED:
            return ReceivePlan("one", timeout=max(1, self.wait_time_seconds), receive_wait=0)
        if state is IdleState.EMPTY_IN_FLIGHT:
            return ReceivePlan("all", timeout=self.empty_pause, receive_wait=0)
        return ReceivePlan(receive_wait=0)

    def received(self, got: int, asked: int) -> None:
        """A receive brought `got` messages (at least one) of `asked`."""
        if not self.enabled:
            return
        self.empty_pause = self.settle_pause = 0.0
        self.state = IdleState.DRAINED if got < asked else IdleState.POLLING

    async def empty(self, in_flight: bool, settled: Callable[[], Awaitable[bool]]) -> bool:
        """A receive came back empty. True when the run should end (`IDLE`).

        `settled` asks the queue whether every message left on it is accounted for; it
        is only asked when nothing is in flight here.
        """
        if not self.enabled:
            return False
        if in_flight:
            self.empty_pause = grown(self.empty_pause, self.wait_time_seconds)
            if self.state is not IdleState.UNSETTLED:
                self.state = IdleState.EMPTY_IN_FLIGHT
            return False
        if await settled():
            self.state = IdleState.IDLE
            return True
        self.settle_pause = grown(self.settle_pause, self.wait_time_seconds)
        self.state = IdleState.UNSETTLED
        return False


class QueueSettled:
    """Is every message left on the queue one this process parked?

    An empty receive alone is not enough: a message whose receive response was lost,
    whose delete failed, or that a crashed or busy worker held, is invisible for a while
    and then returns. Wait for those (up to `grace` seconds of idling), but not for
    messages this process deliberately kept after a failure (`parked`: message id → the
    time it is due back); they wait out their backoff or go to the DLQ.
    """

    def __init__(
        self, queue: QueuePort, clock: Clock, parked: dict[str, float], grace: float
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.parked = parked
        self.grace = grace
        self.idle_since: float | None = None

    def busy(self) -> None:
        """Messages came: the idle time starts again at the next check."""
        self.idle_since = None

    async def __call__(self) -> bool:
        now = self.clock.monotonic()
        if self.idle_since is None:
            self.idle_since = now
        if now - self.idle_since > self.grace:
            log.warning("messages still invisible on the queue; exiting anyway",
                        waited=round(now - self.idle_since, 1))  # fmt: skip
            return True
        try:
            counts = await retry_transient(self.queue.counts, attempts=3)
        except Exception as exc:
            log.info("queue attributes unavailable; polling again", error=repr(exc))
            return False
        # A parked message past its due time is visible again and no longer accounted
        # for: it is received again (and parked anew if it fails again), or it left the
        # queue without us (the queue's redrive policy moved it to its DLQ on that
        # receive, or someone deleted it). Counting it for ever would let it stand in
        # for a message that is invisible for another reason.
        now = self.clock.monotonic()
        for message_id in [m for m, due in self.parked.items() if due <= now]:
            del self.parked[message_id]
        if counts.total <= len(self.parked):
            return True
        log.debug("queue not settled", left=counts.total, parked=len(self.parked))
        return False
