"""Progress of long runs (`process`, `backfill`): a tqdm bar on a terminal, log lines else.

The numbers come from the run's `Metrics`, so the bar shows exactly what the counters
(and the Prometheus endpoint) say.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from ._observe import Metrics, _LogStream, get_logger

__all__ = ["Progress"]

log = get_logger("trailproc.progress")

_KINDS = ("log", "insight", "digest", "other")


def files_with(metrics: Metrics, *outcomes: str) -> int:
    """Files counted under any of `outcomes`, over every object kind."""
    return int(
        sum(
            metrics.value("trailproc_files_total", kind=k, outcome=o)
            for k in _KINDS
            for o in outcomes
        )
    )


class Progress:
    """Counts finished files against a (possibly growing) total."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        desc: str,
        bar: bool | None = None,
        interval: float = 10.0,
    ) -> None:
        self.metrics = metrics
        self.desc = desc
        self.interval = interval
        self.started = time.monotonic()
        self.last_log = self.started
        self.total = 0
        self.bar: Any = None
        if sys.stderr.isatty() if bar is None else bar:
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit="file", desc=desc, file=sys.stderr,
                            dynamic_ncols=True)  # fmt: skip
            _LogStream.bars += 1

    def numbers(self) -> dict[str, Any]:
        m = self.metrics
        elapsed = max(1e-6, time.monotonic() - self.started)
        return {
            "total": self.total,
            "done": files_with(m, "done"),
            "skipped": files_with(m, "already_done"),
            "failed": files_with(m, "failed", "busy", "interrupted"),
            "records": int(m.value("trailproc_records_total")),
            "records_per_second": int(m.value("trailproc_records_total") / elapsed),
            "bytes_per_second": int(m.value("trailproc_bytes_compressed_total") / elapsed),
        }

    def add_total(self, count: int = 1) -> None:
        self.total += count
        if self.bar is not None:
            self.bar.total = self.total
            self.bar.refresh()

    def advance(self) -> None:
        """One more file finished (whatever its outcome)."""
        now = time.monotonic()
        if self.bar is not None:
            n = self.numbers()
            self.bar.update(1)
            # Strings: tqdm would print large numbers as 1e+05.
            self.bar.set_postfix(
                records=f"{n['records']:,}",
                rec_s=f"{n['records_per_second']:,}",
                MB_s=f"{n['bytes_per_second'] / 1e6:.1f}",
                failed=str(n["failed"]),
                refresh=False,
            )
        elif now - self.last_log >= self.interval:
            self.last_log = now
            log.info(f"{self.desc} progress", **self.numbers())

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            _LogStream.bars -= 1
