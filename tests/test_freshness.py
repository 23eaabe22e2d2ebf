"""Freshness per account and region: the last-delivery gauge, the eventTime lag histogram,
the label cap, and the readiness check that fails on silence."""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import run_in_process

import trailproc
from trailproc._observe import OTHER, Freshness, Metrics
from trailproc._ops.freshness import SilenceCheck, parse_origin
from trailproc._ops.servers import serve_ops
from trailproc._pipeline.keys import classify_key
from trailproc._sandbox import TrailSandbox, log_key, make_records

A, B = "111111111111", "222222222222"
REPO = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _info(account: str, region: str, when: dt.datetime) -> object:
    return classify_key(log_key(account, region, when))


def test_daemon_records_last_delivery_per_account_and_region_and_event_lag(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    delivered = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    older = delivered - dt.timedelta(hours=2)
    for account, region, when in ((A, "us-east-1", older), (A, "us-east-1", delivered),
                                  (B, "eu-west-1", older)):  # fmt: skip
        records = make_records(5, seed=len(account), start=when - dt.timedelta(minutes=10))
        sandbox.deliver(records, key=log_key(account, region, when))
    result = run_in_process(sandbox, tmp_path, output=str(tmp_path / "out.jsonl"),
                            max_events_per_emit=2)  # fmt: skip
    metrics = result.metrics
    gauge = "trailproc_last_delivery_timestamp"
    assert metrics.value(gauge, account_id=A, region="us-east-1") == delivered.timestamp()
    assert metrics.value(gauge, account_id=B, region="eu-west-1") == older.timestamp()
    assert metrics.freshness.last_seen == {
        (A, "us-east-1"): delivered.timestamp(),
        (B, "eu-west-1"): older.timestamp(),
    }
    # Three files of five records in batches of two: three batches a file, one sample each.
    assert metrics.value("trailproc_event_lag_seconds_count") == 9
    # Every first record happened at least ten minutes before its hand-over.
    assert metrics.value("trailproc_event_lag_seconds_bucket", le="300.0") == 0


def test_label_cap_sends_later_pairs_to_other_but_keeps_expected_ones() -> None:
    metrics = Metrics()
    clock = Clock(2_000_000_000.0)
    freshness = Freshness(metrics.last_delivery, metrics.event_lag, cap=2, clock=clock)
    freshness.expect([(B, "ap-south-1")])
    when = dt.datetime.fromtimestamp(1_900_000_000, dt.timezone.utc)
    for account, region in ((A, "us-east-1"), (A, "eu-west-1"), (A, "eu-north-1")):
        freshness.handed_over(_info(account, region, when), [])
    freshness.handed_over(_info(B, "ap-south-1", when), [])
    labels = {values for values in metrics.last_delivery.series}
    assert labels == {(B, "ap-south-1"), (A, "us-east-1"), (OTHER, OTHER)}
    assert len(freshness.last_seen) == 4  # silence is tracked for every pair


def test_a_delivery_time_in_the_future_counts_as_now() -> None:
    metrics = Metrics()
    clock = Clock(1_800_000_000.0)
    freshness = Freshness(metrics.last_delivery, metrics.event_lag, clock=clock)
    future = dt.datetime.fromtimestamp(1_900_000_000, dt.timezone.utc)
    freshness.handed_over(_info(A, "us-east-1", future), [])
    assert freshness.last_seen[(A, "us-east-1")] == clock.now


def test_silence_from_an_expected_pair_flips_readiness_and_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metrics = Metrics()
    clock = Clock(1_800_000_000.0)
    metrics.freshness.clock = clock
    check = SilenceCheck(metrics, [f"{A}/us-east-1", f"{B}/eu-west-1"], 30, clock=clock)
    assert check() == (True, "")  # a fresh process gets the whole threshold

    def deliver(account: str, region: str) -> None:
        when = dt.datetime.fromtimestamp(clock.now, dt.timezone.utc)
        metrics.handed_over(_info(account, region, when), [])

    clock.now += 20 * 60
    deliver(A, "us-east-1")
    clock.now += 11 * 60  # B: 31 minutes of silence, A: 11
    assert check() == (False, f"no delivery from {B}/eu-west-1 for 31 min")
    assert set(check.silent()) == {(B, "eu-west-1")}
    assert not check()[0]  # still silent: logged once, not on every probe
    deliver(B, "eu-west-1")
    assert check()[0]
    clock.now += 31 * 60
    assert not check()[0] and set(check.silent()) == {(A, "us-east-1"), (B, "eu-west-1")}
    logged = capsys.readouterr().out + capsys.readouterr().err
    assert logged.count("no log file delivered from an expected account and region") == 3
    assert logged.count("deliveries resumed") == 1


@pytest.mark.parametrize("entry", ["", " ", "111111111111", "1111/us-east-1", f"{A}/", f"{A}/EU"])
def test_bad_expected_pairs_are_configuration_errors(entry: str) -> None:
    with pytest.raises(trailproc.ConfigError):
        trailproc.load_config(env={}, expect_deliveries_from=[f"{B}/us-east-1", entry])
    if entry.strip():
        with pytest.raises(ValueError):
            parse_origin(entry)


def test_readyz_fails_while_an_expected_pair_is_silent(aws_env: object) -> None:
    config = trailproc.load_config(env={}, health_port=0, expect_deliveries_from=[f"{A}/us-east-1"],
                                   silence_threshold_minutes=0.001)  # fmt: skip
    metrics = Metrics()
    metrics.last_poll.set(1.0)  # the queue answered: ready but for the silence

    async def probe() -> tuple[tuple[int, str], tuple[int, str]]:
        async with serve_ops(config, metrics) as ops:
            url = f"http://127.0.0.1:{ops.health_port}/readyz"
            await asyncio.sleep(0.2)  # past the 0.06 s threshold, nothing delivered
            silent = await asyncio.to_thread(_status, url)
            # Key times have minutes only: a delivery stamped a minute ahead counts as now.
            soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=1)
            metrics.handed_over(_info(A, "us-east-1", soon), [])
            return silent, await asyncio.to_thread(_status, url)

    silent, delivered = asyncio.run(probe())
    assert silent[0] == 503 and f"no delivery from {A}/us-east-1" in silent[1]
    assert delivered == (200, "ok\n")


def _status(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


def test_sample_alert_rules_use_metrics_that_exist() -> None:
    import yaml  # type: ignore[import-untyped]

    rules = yaml.safe_load((REPO / "samples" / "alerts" / "freshness.yaml").read_text())
    names = {metric.name for metric in Metrics()._metrics}
    exposed = {f"{n}{suffix}" for n in names for suffix in ("", "_total", "_bucket", "_count")}
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert expressions
    import re

    for expr in expressions:
        used = set(re.findall(r"trailproc_[a-z_]+", expr))
        assert used and used <= exposed, (expr, used - exposed)
