"""The FIFO rule, written once for the SQS daemon, the Lambda road and Kinesis: after a
message that is not finished with, nothing after it in its group (or, for the whole
batch mode, nothing after it at all) is started."""

from __future__ import annotations

from trailproc._roads.acking import InOrder


def run(order: InOrder, units: list[tuple[str, str]], failing: set[str]) -> list[str]:
    """Which units start, given which fail; units are (id, group), in order."""
    started = []
    for ident, group in units:
        if not order.may_start(group):
            continue
        started.append(ident)
        order.finished(group, ident not in failing)
    return started


UNITS = [("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b"), ("a3", "a")]


def test_by_group_a_failure_holds_back_only_its_own_group() -> None:
    assert run(InOrder(by_group=True), UNITS, failing={"a1"}) == ["a1", "b1", "b2"]


def test_whole_batch_a_failure_stops_everything_after_it() -> None:
    assert run(InOrder(by_group=False), UNITS, failing={"b1"}) == ["a1", "b1"]


def test_without_failures_everything_runs_in_order() -> None:
    for by_group in (True, False):
        assert run(InOrder(by_group=by_group), UNITS, failing=set()) == [u for u, _ in UNITS]


def test_stop_holds_back_every_group() -> None:
    order = InOrder(by_group=True)
    order.stop()  # a deadline: nothing more starts, whatever its group
    assert run(order, UNITS, failing=set()) == []
