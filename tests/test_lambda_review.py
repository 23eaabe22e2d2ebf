"""Review findings for the Lambda entry point: each test names a behaviour a Lambda user
relies on, against moto over real HTTP, through the real handler with real-shaped events.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from test_lambda import Collect, FakeContext, missing_key, notification, sqs_record, upload

from trailproc.aws_lambda import make_handler
from trailproc.pipeline.notifications import BadNotification
from trailproc.processor import EventProcessor
from trailproc.sandbox import TrailSandbox
from trailproc.sources.lambda_ import InvocationFailed


@pytest.fixture
def runtime_factory() -> Iterator[Any]:
    made: list[Any] = []

    def make(processor: Any, **options: Any) -> Any:
        options.setdefault("checkpoint", "memory")
        runtime = make_handler(processor, **options)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()


# The Lambda console's default test event, and a Kinesis event (a trigger wired to the
# wrong function): neither is something trailproc can process.
CONSOLE_TEST_EVENT = {"key1": "value1", "key2": "value2", "key3": "value3"}
KINESIS_EVENT = {
    "Records": [
        {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "1",
                "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                "data": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
                "approximateArrivalTimestamp": 1545084650.987,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": "shardId-000000000006:"
            "49590338271490256608559692538361571095921575989136588898",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
            "awsRegion": "us-east-2",
            "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream",
        }
    ]
}


def test_unexpected_event_shape_raises_one_clear_error(aws_env: Any, runtime_factory: Any) -> None:
    """The exception Lambda records for the invocation says what is wrong with the event,
    not only that "direct-event" failed (the reason used to be in a separate log line)."""
    seen = Collect()
    handler = runtime_factory(seen)
    with pytest.raises(InvocationFailed, match=r"unknown shape \(keys: key1, key2, key3\)"):
        handler(CONSOLE_TEST_EVENT, FakeContext())
    # Another service's trigger is named as such (it used to be reported as "looks like a
    # CloudTrail log file").
    with pytest.raises(BadNotification) as raised:
        handler(KINESIS_EVENT, FakeContext())
    assert str(raised.value).startswith("Lambda event from aws:kinesis is not supported")
    assert seen.ids == []


def test_sns_failure_names_the_cause(sandbox: TrailSandbox, runtime_factory: Any) -> None:
    """For SNS/S3/EventBridge triggers the raised error is all Lambda keeps (async
    retries, then the on-failure destination): it names what failed and why."""
    gone = missing_key()
    record = {
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": sandbox.topic_arn + ":2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
        "Sns": {
            "Type": "Notification",
            "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
            "TopicArn": sandbox.topic_arn,
            "Subject": None,
            "Message": notification(gone),
            "Timestamp": "2024-05-01T11:05:00.000Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService.pem",
            "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
            "MessageAttributes": {},
        },
    }
    with pytest.raises(InvocationFailed) as raised:
        runtime_factory(Collect())({"Records": [record]}, FakeContext())
    text = str(raised.value)
    assert "95df01b4-ee98-5cb9-9903-4c221d41eb5e" in text
    assert gone in text


def test_sqs_delete_on_failure_is_honoured(sandbox: TrailSandbox, runtime_factory: Any) -> None:
    """TRAILPROC_DELETE_ON_FAILURE (Java's deleteMessageUponFailure) applies on Lambda as
    in the daemon: a message whose files failed is not reported (Lambda deletes it); a
    body that cannot be parsed is still kept, as the daemon keeps it."""
    key, ids = upload(sandbox)
    event = {
        "Records": [
            sqs_record("good", notification(key)),
            sqs_record("missing", notification(missing_key())),
            sqs_record("not-json", "{{{"),
        ]
    }
    seen = Collect()
    answer = runtime_factory(seen, delete_on_failure=True)(event, FakeContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "not-json"}]}
    assert seen.ids == ids
    # Without the setting the failed message is reported, as before.
    default = runtime_factory(Collect())(event, FakeContext())
    assert default == {
        "batchItemFailures": [{"itemIdentifier": "missing"}, {"itemIdentifier": "not-json"}]
    }


def test_make_handler_reads_the_lambda_environment_settings(
    sandbox: TrailSandbox, runtime_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sample deploys ``app.handler = make_handler(handlers)`` and sets
    TRAILPROC_LAMBDA_SAFETY_MARGIN in its template; its README documents
    TRAILPROC_LAMBDA_FIFO_MODE. Both must reach a `make_handler` function, not only the
    ready `trailproc.aws_lambda.handler`; explicit arguments still win."""
    keys = {name: upload(sandbox) for name in ("a", "b")}
    standard = {"Records": [sqs_record(name, notification(k)) for name, (k, _) in keys.items()]}
    monkeypatch.setenv("TRAILPROC_LAMBDA_SAFETY_MARGIN", "30")
    # 20 s left, under the 30 s margin: nothing may start (the default margin is 2 s).
    seen = Collect()
    answer = runtime_factory(seen)(standard, FakeContext(seconds=20.0))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]}
    assert seen.ids == []
    explicit = Collect()
    answer = runtime_factory(explicit, safety_margin=1.0)(standard, FakeContext(seconds=20.0))
    assert answer == {"batchItemFailures": []}
    assert sorted(explicit.ids) == sorted(keys["a"][1] + keys["b"][1])

    monkeypatch.delenv("TRAILPROC_LAMBDA_SAFETY_MARGIN")
    monkeypatch.setenv("TRAILPROC_LAMBDA_FIFO_MODE", "group")
    fifo = {
        "Records": [
            sqs_record("m1", notification(missing_key()), fifo=True, group="g1"),
            sqs_record("m2", notification(upload(sandbox)[0]), fifo=True, group="g2"),
            sqs_record("m3", notification(upload(sandbox)[0]), fifo=True, group="g1"),
        ]
    }
    answer = runtime_factory(Collect())(fifo, FakeContext())
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == ["m1", "m3"]
    answer = runtime_factory(Collect(), fifo_mode="batch")(fifo, FakeContext())
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == ["m1", "m2", "m3"]


class Holds(EventProcessor):
    """Signals when its first batch arrives, then holds it until released."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    async def process(self, events: list[Any]) -> None:
        self.entered.set()
        for _ in range(200):
            if self.release.is_set():
                break
            await asyncio.sleep(0.05)
        self.ids.extend(e.event_id for e in events)


def test_snapstart_environments_do_not_share_a_lease_owner(
    sandbox: TrailSandbox, runtime_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SnapStart, AWS_LAMBDA_LOG_STREAM_NAME is not set and every environment is
    restored from one snapshot of the init phase (where ``make_handler`` runs): same host
    name, same pid. The lease owner must still differ per environment, or two of them
    hold the same DynamoDB lease at once and hand the same file over twice. Two runtimes
    built in one process stand for two environments restored from one snapshot."""
    monkeypatch.delenv("AWS_LAMBDA_LOG_STREAM_NAME", raising=False)
    monkeypatch.delenv("TRAILPROC_WORKER_ID", raising=False)
    key, ids = upload(sandbox)
    spec = "dynamodb://trailproc-snapstart-test?create=true"
    first, second = Holds(), Collect()
    env_a = runtime_factory(first, checkpoint=spec)
    env_b = runtime_factory(second, checkpoint=spec)
    answers: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: answers.update(
            a=env_a({"Records": [sqs_record("a", notification(key))]}, FakeContext())
        )
    )
    worker.start()
    try:
        assert first.entered.wait(30), "the first environment never reached its handler"
        # The same object, named by another message, reaching another environment while
        # the first one is still working on it: it is busy, not handed over again.
        answers["b"] = env_b({"Records": [sqs_record("b", notification(key))]}, FakeContext())
    finally:
        first.release.set()
        worker.join(30)
    assert answers == {
        "a": {"batchItemFailures": []},
        "b": {"batchItemFailures": [{"itemIdentifier": "b"}]},
    }
    assert first.ids == ids
    assert second.ids == []
