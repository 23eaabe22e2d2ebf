"""The SQS daemon and the Lambda road acknowledge by the same rules: every verdict is
finished with (deleted) on both or kept on both, with and without `delete_on_failure`.
In-memory queue and a hand-moved clock for the daemon's side; no AWS."""

from __future__ import annotations

import asyncio

import pytest

from tests.test_ack_policy import settle_one
from trailproc._roads.acking import Ack, decide
from trailproc._roads.lambda_ import LambdaAcks, _Unit
from trailproc._roads.messages import Verdict

pytestmark = pytest.mark.timeout(20)

VERDICTS = [
    Verdict("ack", "processed"),
    Verdict("ack", "filtered"),
    Verdict("ack", "s3_test_event"),
    Verdict("release", "interrupted"),
    Verdict("retry", "failed"),
    Verdict("retry", "busy"),
    Verdict("retry", "bad_message"),
    Verdict("retry", "refused"),
]


@pytest.mark.parametrize("delete_on_failure", [False, True])
@pytest.mark.parametrize("verdict", VERDICTS, ids=lambda v: f"{v.action}-{v.reason}")
def test_sqs_and_lambda_finish_with_the_same_messages(
    verdict: Verdict, delete_on_failure: bool
) -> None:
    daemon_done, queue, _, _ = settle_one(verdict, delete_on_failure=delete_on_failure)
    unit = _Unit(ident="m1")
    lambda_done = asyncio.run(LambdaAcks(delete_on_failure=delete_on_failure).settle(unit, verdict))
    assert daemon_done == lambda_done
    # On SQS, finished with means deleted; on Lambda, not named in batchItemFailures.
    assert bool(queue.made("delete_batch")) == daemon_done
    answer = LambdaAcks.answer([] if lambda_done else [unit])
    assert answer["batchItemFailures"] == ([] if lambda_done else [{"itemIdentifier": "m1"}])


def test_delete_on_failure_deletes_processing_failures_only() -> None:
    assert decide(Verdict("retry", "failed"), delete_on_failure=True) == Ack(
        "delete", "failed_deleted"
    )
    # An unreadable or refused body stays whatever the setting: it is evidence.
    for reason in ("bad_message", "refused", "busy"):
        assert decide(Verdict("retry", reason), delete_on_failure=True) == Ack("keep", reason)
    assert decide(Verdict("release", "interrupted"), delete_on_failure=True).action == "release"
