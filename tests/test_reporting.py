"""Failures and progress are surfaced in one place: the observer counts each failure,
hands it to `on_error` once, and a user hook that raises never breaks the work."""

from __future__ import annotations

from typing import Any

from trailproc._errors import BadMessage, TrailprocError
from trailproc._observe import Metrics
from trailproc._pipeline.observer import PipelineObserver
from trailproc._pipeline.processor import EventProcessor, ProgressInfo, ProgressState


class Hooks(EventProcessor):
    def __init__(self, raising: bool = False) -> None:
        self.raising = raising
        self.errors: list[TrailprocError] = []
        self.calls: list[tuple[str, Any]] = []

    def on_error(self, error: TrailprocError) -> None:
        self.errors.append(error)
        if self.raising:
            raise RuntimeError("on_error broke")

    def report_start(self, state: ProgressState, info: ProgressInfo) -> Any:
        if self.raising:
            raise RuntimeError("report_start broke")
        self.calls.append(("start", state))
        return "token"

    def report_end(self, state: ProgressState, info: ProgressInfo, token: Any) -> None:
        if self.raising:
            raise RuntimeError("report_end broke")
        self.calls.append(("end", token))


def test_a_failure_is_counted_and_handed_to_on_error_once() -> None:
    hooks, metrics = Hooks(), Metrics()
    error = BadMessage("unreadable body", message_id="m1", bucket="b", key="k")
    PipelineObserver(hooks, metrics).fail(error)
    assert hooks.errors == [error]
    assert metrics.brief()["errors"] == {error.reason: 1}


def test_progress_hooks_get_their_token_back() -> None:
    hooks = Hooks()
    reporter = PipelineObserver(hooks, Metrics())
    token = reporter.report_start(ProgressState.POLL, ProgressInfo(True))
    reporter.report_end(ProgressState.POLL, ProgressInfo(True), token)
    assert hooks.calls == [("start", ProgressState.POLL), ("end", "token")]


def test_hooks_that_raise_do_not_break_the_work() -> None:
    hooks = Hooks(raising=True)
    reporter = PipelineObserver(hooks, Metrics())
    token = reporter.report_start(ProgressState.POLL, ProgressInfo(True))
    reporter.report_end(ProgressState.POLL, ProgressInfo(True), token)
    reporter.fail(BadMessage("unreadable body", message_id="m1"))
    assert token is None
    assert len(hooks.errors) == 1
