"""Visibility heartbeats: every half timeout, within SQS's 12 hours from the receive,
failures handled per kind. In-memory queue and a hand-moved clock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError

from trailproc._observe import Metrics
from trailproc._ports import ManualClock, MemoryQueue
from trailproc._ports.clock import settle
from trailproc._roads.sqs.visibility import MAX_VISIBILITY, VISIBILITY_MARGIN, VisibilityKeeper

# A hang is a failure here, not a wait.
pytestmark = pytest.mark.timeout(20)


def error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "ChangeMessageVisibility")


def beats(
    steps: list[float], *, received_ago: float = 0, faults: list[BaseException] | None = None
) -> tuple[list[Any], bool]:
    """Run a heartbeat (timeout 30 s) while the clock moves by `steps`; the extensions
    made, and whether the heartbeat ended by itself."""

    async def scenario() -> tuple[list[Any], bool]:
        clock = ManualClock()
        queue = MemoryQueue(faults={"change_visibility": list(faults or [])})
        keeper = VisibilityKeeper(queue, clock, 30, Metrics())
        message = queue.put()
        task = keeper.start_heartbeat(message, clock.now - received_ago)
        for step in steps:
            await settle()
            await clock.advance(step)
        ended = task.done()
        task.cancel()
        return queue.made("change_visibility"), ended

    return asyncio.run(scenario())


def test_heartbeat_extends_by_the_timeout_every_half_timeout() -> None:
    made, ended = beats([14, 1, 15, 15])
    assert made == [("rh1", 30)] * 3
    assert not ended


def test_heartbeat_never_asks_beyond_twelve_hours_from_the_receive() -> None:
    left = MAX_VISIBILITY - VISIBILITY_MARGIN
    made, _ = beats([15], received_ago=left - 15 - 20)
    assert made == [("rh1", 20)]
    made, ended = beats([15], received_ago=left)
    assert (made, ended) == ([], True)


def test_heartbeat_stops_once_the_receipt_handle_is_gone() -> None:
    made, ended = beats([15, 15], faults=[error("ReceiptHandleIsInvalid")])
    assert ended
    assert made == [("rh1", 30)]  # the one attempt that failed


def test_heartbeat_retries_a_throttled_extension_within_a_second() -> None:
    made, _ = beats([15, 1], faults=[error("ThrottlingException")])
    assert made == [("rh1", 30), ("rh1", 30)]


def test_heartbeat_refused_for_good_is_tried_again_only_at_the_usual_interval() -> None:
    made, _ = beats([15, 1, 13], faults=[error("AccessDenied")])
    assert made == [("rh1", 30)]
    made, _ = beats([15, 15], faults=[error("AccessDenied")])
    assert made == [("rh1", 30), ("rh1", 30)]
