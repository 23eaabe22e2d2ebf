"""`trailproc watch` on moto's server: a bucket followed with no notifications.

Every test checks the exact records handed over (by eventID), so a missed file or a
repeated one fails it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from faultproxy import daemon_env, event_ids

import trailproc
from trailproc._pipeline.processor import EventProcessor
from trailproc._roads.watch import WatchOptions
from trailproc._sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records
from trailproc._watch_cli import watching
from trailproc.checkpoint import open_store

A, B = "111111111111", "222222222222"
REGIONS = ("us-east-1", "eu-west-1")


class Collect(EventProcessor):
    def __init__(self) -> None:
        self.ids: list[str] = []

    def process(self, events: list[Any]) -> None:
        self.ids.extend(e.event_id for e in events)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _put(sandbox: TrailSandbox, account: str, region: str, when: dt.datetime, *,
         seed: int, records: int = 2) -> list[str]:  # fmt: skip
    rows = make_records(records, seed=seed, account=account, region=region)
    sandbox.put(log_key(account, region, when, unique=f"w{seed:015d}"), encode_log(rows))
    return [r["eventID"] for r in rows]


def _config(tmp_path: Path, **extra: Any) -> trailproc.Config:
    return trailproc.load_config(env={}, state_dir=str(tmp_path / "state"), stats_interval=0,
                                 **extra)  # fmt: skip


def _options(**extra: Any) -> WatchOptions:
    settings: dict[str, Any] = {"interval": 0.2, "start_time": _now() - dt.timedelta(hours=2)}
    return WatchOptions("trail-bucket", **{**settings, **extra})


def _rounds(config: trailproc.Config, options: WatchOptions, sandbox: TrailSandbox,
            steps: list[Any]) -> tuple[Collect, list[Any]]:  # fmt: skip
    """One watcher; before round i, steps[i](sandbox) uploads what that round should see."""
    seen = Collect()

    async def go() -> list[Any]:
        results = []
        async with watching(options, config, seen) as watcher:
            for step in steps:
                step(sandbox)
                results.append(await watcher.round(asyncio.Event()))
        return results

    return seen, asyncio.run(go())


def test_everything_once_then_only_new_files_including_one_behind_the_cursor(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    base = _now() - dt.timedelta(minutes=5)
    expected: list[list[str]] = []

    def first(sb: TrailSandbox) -> None:
        ids = []
        for i, (account, region) in enumerate([(a, r) for a in (A, B) for r in REGIONS]):
            ids += _put(sb, account, region, base - dt.timedelta(minutes=30 + i), seed=i)
            ids += _put(sb, account, region, base, seed=10 + i)
        expected.append(ids)

    def later(sb: TrailSandbox) -> None:
        # Delivered minutes BEHIND the newest key the first round saw (base), in one
        # stream, plus a newer file in another.
        ids = _put(sb, A, "us-east-1", base - dt.timedelta(minutes=4), seed=50)
        ids += _put(sb, B, "eu-west-1", _now(), seed=51)
        expected.append(ids)

    def nothing(sb: TrailSandbox) -> None:
        expected.append([])

    seen, results = _rounds(_config(tmp_path), _options(), sandbox, [first, later, nothing])
    assert Counter(seen.ids) == Counter(i for ids in expected for i in ids)
    assert [r.new for r in results] == [8, 2, 0]
    assert not any(r.failed for r in results)
    # After discovery, a round lists each stream's day folders only: one LIST per stream
    # and day folder of the overlap window (two folders just after midnight UTC).
    days = 2 if (_now() - dt.timedelta(minutes=25)).date() != _now().date() else 1
    assert results[2].list_calls <= 4 * days
    assert results[0].list_calls > results[2].list_calls  # discovery happened once


def test_restart_resumes_from_the_stored_cursor(sandbox: TrailSandbox, tmp_path: Path) -> None:
    config = _config(tmp_path)
    old = _put(sandbox, A, "us-east-1", _now() - dt.timedelta(minutes=50), seed=1)
    first, _ = _rounds(config, _options(), sandbox, [lambda sb: None])
    assert Counter(first.ids) == Counter(old)

    new: list[str] = []
    # A restarted watcher with a start time long ago: the cursor, not the start, counts.
    options = _options(start_time=_now() - dt.timedelta(days=3))
    second, results = _rounds(config, options, sandbox, [
        lambda sb: new.extend(_put(sb, A, "us-east-1", _now(), seed=2)),
    ])  # fmt: skip
    assert Counter(second.ids) == Counter(new)
    assert results[0].list_calls <= 6  # discovery (3 levels) + today's folder, not 3 days


def test_trust_settings_apply(sandbox: TrailSandbox, tmp_path: Path) -> None:
    mine = _put(sandbox, A, "us-east-1", _now() - dt.timedelta(minutes=3), seed=1)
    _put(sandbox, B, "us-east-1", _now() - dt.timedelta(minutes=3), seed=2)
    seen, _ = _rounds(_config(tmp_path, allowed_accounts=[A]), _options(), sandbox,
                      [lambda sb: None])  # fmt: skip
    assert Counter(seen.ids) == Counter(mine)
    with pytest.raises(ValueError, match="allowed_buckets"):
        _rounds(_config(tmp_path, allowed_buckets=["other"]), _options(), sandbox, [])


@pytest.mark.parametrize("spec", ["memory", "sqlite", "dynamodb"])
def test_one_lease_holder_at_a_time(aws_env: MotoServer, tmp_path: Path, spec: str) -> None:
    checkpoint = "dynamodb://leases?create=true" if spec == "dynamodb" else spec

    async def go() -> None:
        store: Any = open_store(checkpoint, str(tmp_path))
        try:
            assert await store.hold("lease", "one", 30)
            assert not await store.hold("lease", "two", 30)  # held by one
            assert await store.hold("lease", "one", 30)  # renewal
            assert await store.hold("lease", "one", 0)  # given up
            assert await store.hold("lease", "two", 0.5)  # taken at once
            assert not await store.hold("lease", "one", 30)
            await asyncio.sleep(0.7)
            assert await store.hold("lease", "one", 30)  # expired: taken over
        finally:
            await store.close()

    asyncio.run(go())


# --- the standby watcher, across real processes ----------------------------------------


def _watch_process(moto: MotoServer, state: Path, out: Path, log: Path, *extra: str) -> Any:
    command = [sys.executable, "-m", "trailproc._cli", "watch", "--bucket", "trail-bucket",
               "--interval", "0.3", "--lease-seconds", "3", "--output", str(out),
               "--start-time", (_now() - dt.timedelta(hours=1)).isoformat(), *extra]  # fmt: skip
    env = daemon_env(moto.url, str(state))
    with open(log, "wb") as sink:
        return subprocess.Popen(command, env=env, stderr=sink, stdout=subprocess.DEVNULL)


def _wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _logged(path: Path, event: str) -> bool:
    for line in path.read_text(errors="replace").splitlines():
        try:
            if json.loads(line).get("event") == event:
                return True
        except ValueError:
            continue
    return False


def test_standby_takes_over_when_the_active_watcher_is_killed(
    sandbox: TrailSandbox, aws_env: MotoServer, tmp_path: Path
) -> None:
    state = tmp_path / "shared-state"
    before = _put(sandbox, A, "us-east-1", _now() - dt.timedelta(minutes=3), seed=1)
    before += _put(sandbox, B, "eu-west-1", _now() - dt.timedelta(minutes=2), seed=2)
    out_a, out_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    active = _watch_process(aws_env, state, out_a, log_a)
    standby = None
    try:
        _wait_for(lambda: event_ids(str(out_a)) == Counter(before), "the first files")
        standby = _watch_process(aws_env, state, out_b, log_b, "--exit-when-idle")
        _wait_for(lambda: _logged(log_b, "standing by: another watcher holds the lease"),
                  "the second watcher to stand by")  # fmt: skip
        os.kill(active.pid, signal.SIGKILL)
        active.wait(timeout=30)
        after = _put(sandbox, A, "us-east-1", _now(), seed=3)
        assert standby.wait(timeout=90) == 0
    finally:
        for proc in (active, standby):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert event_ids(str(out_a)) == Counter(before)
    assert event_ids(str(out_b)) == Counter(after)  # took over: new files only, once
    assert _logged(log_b, "watching: this watcher is active")
