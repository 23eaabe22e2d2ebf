"""Readiness check: fail while a configured account and region has been silent too long.

A trail that stopped, a subscription someone deleted or a region that lost its
notifications all look the same from the queue: nothing arrives. With
``expect_deliveries_from = ["111122223333/eu-west-1", ...]`` and
``silence_threshold_minutes``, `/readyz` answers 503 while any of those pairs has had no
log file delivery handed over for longer than the threshold. The clock starts at the
newest delivery seen (the delivery time in the log file's key), or at start-up for a pair
not seen yet, so a fresh process gets the full threshold before it reports silence.

Each pair falling silent, and coming back, is logged once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .._config import parse_origin
from .._observe import Metrics, get_logger

__all__ = ["SilenceCheck", "parse_origin"]

log = get_logger("trailproc.ops")


class SilenceCheck:
    """Readiness check: (True, "") while every expected pair delivered recently, else
    (False, why)."""

    def __init__(
        self,
        metrics: Metrics,
        expected: Iterable[str],
        threshold_minutes: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.freshness = metrics.freshness
        self.expected = [parse_origin(entry) for entry in expected]
        self.threshold = threshold_minutes * 60.0
        self.clock = clock
        self.since = clock()
        self._silent: set[tuple[str, str]] = set()
        self.freshness.expect(self.expected)

    def silent(self) -> dict[tuple[str, str], float]:
        """Each pair silent beyond the threshold, with its seconds of silence."""
        now = self.clock()
        out = {}
        for pair in self.expected:
            quiet = now - max(self.since, self.freshness.last_seen.get(pair, 0.0))
            if quiet > self.threshold:
                out[pair] = quiet
        return out

    def __call__(self) -> tuple[bool, str]:
        """(ok, reason) for the readiness probe; each change of state is logged once."""
        silent = self.silent()
        for pair in sorted(set(silent) - self._silent):
            log.warning("no log file delivered from an expected account and region",
                        account_id=pair[0], region=pair[1],
                        silent_minutes=round(silent[pair] / 60, 1),
                        threshold_minutes=round(self.threshold / 60, 1))  # fmt: skip
        for pair in sorted(self._silent - set(silent)):
            log.info("deliveries resumed", account_id=pair[0], region=pair[1])
        self._silent = set(silent)
        if not silent:
            return True, ""
        return False, "; ".join(
            f"no delivery from {account}/{region} for {quiet / 60:.0f} min"
            for (account, region), quiet in sorted(silent.items())
        )
