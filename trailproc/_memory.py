"""How large each process's memory budget is (see docs/memory.md for the arithmetic).

The budget is per container: the cgroup memory limit when there is one (cgroup v2
`memory.max`, v1 `memory.limit_in_bytes`) or a Lambda function's memory size, else
`ASSUMED_CONTAINER` (a 2 GiB container, the smallest the defaults are made for).
`BUDGET_SHARE` of it goes to the files in memory; the rest is the interpreter, the SDK,
the handlers and what the budget does not count. `run --workers N` and `process --jobs N`
split it evenly between their processes. `memory_budget_mb` overrides the container's
share (and is split the same way).

The work a process takes on at once follows from its budget too (`limits_for_budget`),
unless `max_in_flight_messages` or `download_concurrency` is set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "ASSUMED_CONTAINER", "BUDGET_SHARE", "DOWNLOAD_SHARE", "MESSAGE_SHARE", "InFlightLimits",
    "budget_bytes", "budget_source", "container_memory_limit", "limits_for_budget",
    "per_process_mb",
]  # fmt: skip

_MIB = 1 << 20
ASSUMED_CONTAINER = 2048 * _MIB
BUDGET_SHARE = 0.5
MIN_BUDGET = 64 * _MIB
# cgroup v1 writes "no limit" as a huge page-rounded number.
_UNLIMITED = 1 << 60

# The share of the budget each message in work, and each GetObject in flight, stands
# for when the limits are not set. The default 1 GiB budget gives 16 messages and 8
# downloads, which keep the pipe full at 20-50 ms round trips (docs/memory.md). A share
# is room for a large delivery (~55 MB of JSON with its gzip and records); larger files
# still run, the budget admitting fewer of them at once.
MESSAGE_SHARE = 64 * _MIB
DOWNLOAD_SHARE = 128 * _MIB
# Floors: the smallest budget (64 MiB, a 128 MB Lambda function) still keeps 4 messages
# and 2 GetObject calls in flight, 80-160 small files/s at 20 ms. Caps: beyond them more
# in flight only waits at the far end (6 receives at once on a busy queue, a pool of 20
# connections per client), and memory is better spent on holding larger files.
MESSAGES_RANGE = (4, 32)
DOWNLOADS_RANGE = (2, 16)


class InFlightLimits(NamedTuple):
    """How much work one process takes on at once."""

    max_in_flight_messages: int
    download_concurrency: int


def _read_limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():  # "max": no limit at this level
        return None
    value = int(text)
    return value if 0 < value < _UNLIMITED else None


def _own_cgroups(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """This process's cgroup v2 path and v1 memory-controller path, when known."""
    unified = memory = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        _id, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers == "":
            unified = path
        elif "memory" in controllers.split(","):
            memory = path
    return unified, memory


def container_memory_limit(
    root: Path = Path("/sys/fs/cgroup"),
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    environ: Mapping[str, str] = os.environ,
) -> int | None:
    """The tightest memory limit over this process, in bytes (its cgroups', or a Lambda
    function's memory size); None without one."""
    unified, memory = _own_cgroups(proc_cgroup)
    candidates = [root / "memory.max", root / "memory" / "memory.limit_in_bytes"]
    if unified and unified != "/":
        candidates.append(root / unified.lstrip("/") / "memory.max")
    if memory and memory != "/":
        candidates.append(root / "memory" / memory.lstrip("/") / "memory.limit_in_bytes")
    limits = [limit for path in candidates if (limit := _read_limit(path)) is not None]
    lambda_mb = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    if lambda_mb.isdigit() and int(lambda_mb) > 0:
        limits.append(int(lambda_mb) * _MIB)
    return min(limits) if limits else None


def budget_bytes(
    memory_budget_mb: int | None, processes: int = 1, *, container_limit: int | None = None
) -> int:
    """One process's budget: `memory_budget_mb` (or the container's share), split
    evenly between `processes`, never below 64 MiB."""
    processes = max(1, processes)
    if memory_budget_mb is not None:
        total = memory_budget_mb * _MIB
    else:
        limit = container_limit if container_limit is not None else container_memory_limit()
        total = int((limit or ASSUMED_CONTAINER) * BUDGET_SHARE)
    return max(MIN_BUDGET, total // processes)


def per_process_mb(memory_budget_mb: int | None, processes: int) -> int:
    """The `memory_budget_mb` each of `processes` processes gets (whole MiB)."""
    return budget_bytes(memory_budget_mb, processes) // _MIB


def budget_source(memory_budget_mb: int | None) -> str:
    """Where the budget of `memory_budget_mb` comes from, for the start-up log line."""
    if memory_budget_mb is not None:
        return "memory_budget_mb"
    limit = container_memory_limit()
    if limit is None:
        return f"assumed {ASSUMED_CONTAINER // _MIB} MiB container"
    return f"memory limit {limit // _MIB} MiB (cgroup or Lambda function)"


def limits_for_budget(budget: int) -> InFlightLimits:
    """The in-flight limits a process with `budget` bytes of memory budget uses when they
    are not set: one message per `MESSAGE_SHARE` and one download per `DOWNLOAD_SHARE`,
    within `MESSAGES_RANGE` and `DOWNLOADS_RANGE` (docs/memory.md)."""

    def within(count: int, bounds: tuple[int, int]) -> int:
        return min(max(count, bounds[0]), bounds[1])

    return InFlightLimits(
        max_in_flight_messages=within(budget // MESSAGE_SHARE, MESSAGES_RANGE),
        download_concurrency=within(budget // DOWNLOAD_SHARE, DOWNLOADS_RANGE),
    )
