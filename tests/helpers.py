"""Small helpers several test modules share (import as `from helpers import ...`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import trailproc
from trailproc.app import RunResult, run_async
from trailproc.observe import Metrics
from trailproc.sandbox import TrailSandbox


def run_in_process(
    sandbox: TrailSandbox, tmp_path: Path, processor: Any = None, **overrides: Any
) -> RunResult:
    """Drain the sandbox queue with the daemon's code path in this process, fresh metrics."""
    config = trailproc.load_config(
        env={},
        queue_url=sandbox.queue_url,
        exit_when_idle=True,
        wait_time_seconds=1,
        state_dir=str(tmp_path / "state"),
        stats_interval=0,
        **overrides,
    )
    return asyncio.run(run_async(config, processor, metrics=Metrics()))
