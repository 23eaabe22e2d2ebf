"""The Lambda entry point against moto over real HTTP, with real-shaped trigger events.

SQS events are built from messages really received from moto's queue (SNS-wrapped, as
the subscription delivers them, and raw); SNS, S3 and EventBridge events follow the
corpus shapes (LAMBDA-SQS, LAMBDA-SNS, EVENTBRIDGE-S3, EVENTBRIDGE-CT) with our bucket
and keys. The context object is a plain stand-in with the two members Lambda provides.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from trailproc import aws_lambda
from trailproc._pipeline.notifications import BadNotification
from trailproc._pipeline.processor import EventProcessor
from trailproc._roads.lambda_ import InvocationFailed, trigger_of
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records

BUCKET = "trail-bucket"


class FakeContext:
    """What Lambda passes as `context`, as far as trailproc reads it."""

    def __init__(self, seconds: float = 60.0, request_id: str = "req-1") -> None:
        self.deadline = time.monotonic() + seconds
        self.aws_request_id = request_id
        self.function_name = "trailproc-test"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class Collect(EventProcessor):
    def __init__(self, delay: float = 0.0) -> None:
        self.ids: list[str] = []
        self.delay = delay

    def process(self, events: list[Any]) -> None:
        if self.delay:
            time.sleep(self.delay)
        self.ids.extend(e.event_id for e in events)


_seed = iter(range(1000, 100000))


def upload(sandbox: TrailSandbox, count: int = 3, **key: Any) -> tuple[str, list[str]]:
    """One log file in the bucket; returns its key and the eventIDs in it."""
    seed = next(_seed)
    records = make_records(count, seed=seed)
    when = dt.datetime(2024, 5, 1, 10, seed % 60, tzinfo=dt.timezone.utc)
    name = log_key(when=when, unique=f"k{seed:015d}", **key)
    sandbox.put(name, encode_log(records))
    return name, [r["eventID"] for r in records]


def missing_key() -> str:
    return log_key(
        when=dt.datetime(2024, 5, 1, 11, 0, tzinfo=dt.timezone.utc), unique="missing000000000"
    )


def notification(*keys: str) -> str:
    return json.dumps({"s3Bucket": BUCKET, "s3ObjectKey": list(keys)})


def received_as_lambda_event(sandbox: TrailSandbox) -> dict[str, Any]:
    """Drain moto's queue into the event Lambda's SQS poller would pass."""
    sqs = sandbox.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=sandbox.queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    records: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(
            QueueUrl=sandbox.queue_url,
            MaxNumberOfMessages=10,
            AttributeNames=["All"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not got:
            break
        for m in got:
            records.append(
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": "us-east-1",
                }
            )
    return {"Records": records}


def sqs_record(
    message_id: str, body: str, *, fifo: bool = False, group: str | None = None
) -> dict[str, Any]:
    attributes = {
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "1714557600000",
        "SenderId": "AIDAEXAMPLE",
        "ApproximateFirstReceiveTimestamp": "1714557600100",
    }
    if group:
        attributes.update(
            MessageGroupId=group, MessageDeduplicationId=message_id, SequenceNumber="1"
        )
    queue = "trail.fifo" if fifo else "trail"
    return {
        "messageId": message_id,
        "receiptHandle": "AQEB" + message_id,
        "body": body,
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": "0" * 32,
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{queue}",
        "awsRegion": "us-east-1",
    }


# --- SQS ---------------------------------------------------------------------------------


def test_sqs_batch_reports_exactly_the_failed_message(
    sandbox: TrailSandbox, corpus: Path, runtime_factory: Any
) -> None:
    expected: Counter[str] = Counter()
    # CloudTrail's own notification through SNS → SQS (wrapped), one and two keys.
    key1, ids1 = upload(sandbox)
    key2, ids2 = upload(sandbox)
    key3, ids3 = upload(sandbox)
    sandbox.notify([key1])
    sandbox.notify([key2, key3])
    # Raw message delivery: the body is the notification itself.
    key4, ids4 = upload(sandbox)
    sandbox.send_raw(notification(key4))
    # An S3 event notification body (LAMBDA-SQS corpus shape), with a URL-encoded key.
    key5, ids5 = upload(sandbox, prefix="my trail")
    s3_body = json.loads(
        json.loads(
            (corpus / "aws-powertools__powertools-lambda-python" / "s3SqsEvent.json").read_text()
        )["Records"][0]["body"]
    )
    s3_body["Records"][0]["s3"]["bucket"]["name"] = BUCKET
    s3_body["Records"][0]["s3"]["object"]["key"] = quote_plus(key5, safe="/")
    s3_body["Records"][0]["s3"]["object"].pop("versionId")
    sandbox.send_raw(json.dumps(s3_body))
    # Setup noise that must be acknowledged, not failed.
    sandbox.send_raw("CloudTrail validation message.")
    for ids in (ids1, ids2, ids3, ids4, ids5):
        expected.update(ids)
    # The bad one: a notification naming an object that does not exist.
    sandbox.notify([missing_key()])

    event = received_as_lambda_event(sandbox)
    assert len(event["Records"]) == 6
    assert trigger_of(event) == "sqs"
    bad_id = next(r["messageId"] for r in event["Records"] if "missing0000" in r["body"])

    seen = Collect()
    handler = runtime_factory(seen)
    answer = handler(event, FakeContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": bad_id}]}
    assert Counter(seen.ids) == expected

    # Lambda redelivers the failed message (here: the whole batch again, as after a
    # crash): nothing is handed over twice, and the same single failure is reported.
    again = handler(event, FakeContext(request_id="req-2"))
    assert again == answer
    assert Counter(seen.ids) == expected


def test_sqs_bad_body_fails_only_that_message(sandbox: TrailSandbox, runtime_factory: Any) -> None:
    key, ids = upload(sandbox)
    event = {
        "Records": [
            sqs_record("good", notification(key)),
            sqs_record("garbage", '{"hello": "world"}'),
            sqs_record("not-json", "{{{"),
        ]
    }
    seen = Collect()
    answer = runtime_factory(seen)(event, FakeContext())
    assert answer == {
        "batchItemFailures": [{"itemIdentifier": "garbage"}, {"itemIdentifier": "not-json"}]
    }
    assert seen.ids == ids


def test_corpus_sqs_sns_shape(sandbox: TrailSandbox, corpus: Path, runtime_factory: Any) -> None:
    """LAMBDA-SQS → SNS Notification → S3 event, rewritten to point at our object."""
    key, ids = upload(sandbox)
    event = json.loads((corpus / "boogy__cloudtrail-rs" / "sqs-sns-event.json").read_text())
    envelope = json.loads(event["Records"][0]["body"])
    inner = json.loads(envelope["Message"])
    inner["Records"][0]["s3"]["bucket"]["name"] = BUCKET
    inner["Records"][0]["s3"]["object"]["key"] = key
    inner["Records"][0]["s3"]["object"]["eTag"] = "not-the-real-etag"
    envelope["Message"] = json.dumps(inner)
    event["Records"][0]["body"] = json.dumps(envelope)
    seen = Collect()
    assert runtime_factory(seen)(event, FakeContext()) == {"batchItemFailures": []}
    assert seen.ids == ids


# --- FIFO --------------------------------------------------------------------------------


def _fifo_event(sandbox: TrailSandbox) -> tuple[dict[str, Any], dict[str, list[str]]]:
    plan = [
        ("m1", "g1", True),
        ("m2", "g1", False),
        ("m3", "g2", True),
        ("m4", "g1", True),
        ("m5", "g2", True),
    ]
    ids: dict[str, list[str]] = {}
    records = []
    for message_id, group, good in plan:
        if good:
            key, ids[message_id] = upload(sandbox)
        else:
            key = missing_key()
        records.append(sqs_record(message_id, notification(key), fifo=True, group=group))
    return {"Records": records}, ids


def test_fifo_stops_at_first_failure(sandbox: TrailSandbox, runtime_factory: Any) -> None:
    event, ids = _fifo_event(sandbox)
    seen = Collect()
    answer = runtime_factory(seen)(event, FakeContext())
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == ["m2", "m3", "m4", "m5"]
    assert seen.ids == ids["m1"]


def test_fifo_group_mode_holds_back_only_the_failed_group(
    sandbox: TrailSandbox, runtime_factory: Any
) -> None:
    event, ids = _fifo_event(sandbox)
    seen = Collect()
    answer = runtime_factory(seen, fifo_mode="group")(event, FakeContext())
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == ["m2", "m4"]
    assert seen.ids == ids["m1"] + ids["m3"] + ids["m5"]


# --- deadline ----------------------------------------------------------------------------


def test_deadline_reports_unstarted_messages(sandbox: TrailSandbox, runtime_factory: Any) -> None:
    records, ids = [], {}
    for i in range(6):
        key, ids[f"m{i}"] = upload(sandbox, count=2)
        records.append(sqs_record(f"m{i}", notification(key)))
    seen = Collect(delay=0.35)
    handler = runtime_factory(seen, concurrency=1, safety_margin=1.0)
    answer = handler({"Records": records}, FakeContext(seconds=2.0))
    failed = [f["itemIdentifier"] for f in answer["batchItemFailures"]]
    done = [m for m in ids if m not in failed]
    # Work stopped at the margin: a prefix processed, the rest reported, none half-done.
    assert 1 <= len(done) < 6
    assert failed == [f"m{i}" for i in range(len(done), 6)]
    assert Counter(seen.ids) == Counter(i for m in done for i in ids[m])


class Stuck(EventProcessor):
    async def process(self, events: list[Any]) -> None:
        await asyncio.sleep(30)


def test_deadline_cancels_work_in_flight(sandbox: TrailSandbox, runtime_factory: Any) -> None:
    key1, _ = upload(sandbox)
    key2, _ = upload(sandbox)
    event = {
        "Records": [sqs_record("slow", notification(key1)), sqs_record("later", notification(key2))]
    }
    # Work is cut off 1 s before the (fake) timeout: a full second of slack for a loaded
    # machine, and still an answer well before the timeout would have struck.
    handler = runtime_factory(Stuck(), concurrency=1, safety_margin=1.5, abort_margin=1.0)
    started = time.monotonic()
    answer = handler(event, FakeContext(seconds=2.0))
    assert time.monotonic() - started < 1.9  # answered before the (fake) timeout
    assert answer == {
        "batchItemFailures": [{"itemIdentifier": "slow"}, {"itemIdentifier": "later"}]
    }


class SwallowsCancellation(EventProcessor):
    """Swallows its cancellation and goes on until close() (past the fake timeout)."""

    def __init__(self) -> None:
        self.let_go = False
        self.finished: asyncio.Event | None = None

    async def process(self, events: list[Any]) -> None:
        self.finished = asyncio.Event()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            while not self.let_go:
                await asyncio.sleep(0.05)
        finally:
            self.finished.set()

    async def close(self) -> None:  # lets the left-behind work end before the loop closes
        self.let_go = True
        if self.finished is not None:
            await self.finished.wait()


@pytest.mark.timeout(30)
def test_deadline_answers_even_when_work_swallows_its_cancellation(
    sandbox: TrailSandbox, runtime_factory: Any
) -> None:
    key, _ = upload(sandbox)
    event = {"Records": [sqs_record("stubborn", notification(key))]}
    handler = runtime_factory(SwallowsCancellation(), concurrency=1, safety_margin=1.5,
                              abort_margin=1.0)  # fmt: skip
    started = time.monotonic()
    answer = handler(event, FakeContext(seconds=2.0))
    # Answered, not held until close() lets the work go (a generous bound: the work
    # never ends before close, so without the fix there is no answer at all).
    assert time.monotonic() - started < 5.0
    assert answer == {"batchItemFailures": [{"itemIdentifier": "stubborn"}]}


# --- SNS, S3, EventBridge triggers -------------------------------------------------------


def test_sns_trigger_processes_all_and_raises_on_failure(
    sandbox: TrailSandbox, corpus: Path, runtime_factory: Any
) -> None:
    template = json.loads((corpus / "boogy__cloudtrail-rs" / "sns-s3-event.json").read_text())
    key, ids = upload(sandbox)
    good = copy.deepcopy(template["Records"][0])
    good["Sns"]["Message"] = notification(key)  # CloudTrail's own SNS message
    bad = copy.deepcopy(template["Records"][0])
    bad["Sns"]["MessageId"] = "bad-one"
    s3 = json.loads(bad["Sns"]["Message"])
    s3["Records"][0]["s3"]["bucket"]["name"] = BUCKET
    s3["Records"][0]["s3"]["object"]["key"] = missing_key()
    bad["Sns"]["Message"] = json.dumps(s3)
    event = {"Records": [good, bad]}
    assert trigger_of(event) == "sns"
    seen = Collect()
    handler = runtime_factory(seen)
    with pytest.raises(InvocationFailed, match="bad-one") as raised:
        handler(event, FakeContext())
    assert raised.value.failed == ["bad-one"]
    assert seen.ids == ids
    # Lambda's retry of the same event: the good file is not handed over again.
    with pytest.raises(InvocationFailed):
        handler(event, FakeContext())
    assert seen.ids == ids

    ok = runtime_factory(Collect())({"Records": [good]}, FakeContext())
    assert ok == {"messages": 1, "records": len(ids)}


def test_s3_trigger_decodes_keys(sandbox: TrailSandbox, corpus: Path, runtime_factory: Any) -> None:
    body = json.loads(
        json.loads(
            (corpus / "aws-powertools__powertools-lambda-python" / "s3SqsEvent.json").read_text()
        )["Records"][0]["body"]
    )
    key, ids = upload(sandbox, prefix="team trails+x")
    record = body["Records"][0]
    record["s3"]["bucket"]["name"] = BUCKET
    record["s3"]["object"]["key"] = quote_plus(key, safe="/")
    record["s3"]["object"].pop("versionId")
    noise = copy.deepcopy(record)
    noise["s3"]["object"]["key"] = "AWSLogs/123456789012/Config/ConfigWritabilityCheckFile"
    event = {"Records": [record, noise]}
    assert trigger_of(event) == "s3"
    seen = Collect()
    assert runtime_factory(seen)(event, FakeContext())["records"] == len(ids)
    assert seen.ids == ids


def test_eventbridge_object_created(
    sandbox: TrailSandbox, corpus: Path, runtime_factory: Any
) -> None:
    event = json.loads((corpus / "grafana__loki" / "eventbridge-s3-event.json").read_text())
    key, ids = upload(sandbox)
    event["detail"]["bucket"]["name"] = BUCKET
    event["detail"]["object"]["key"] = key
    seen = Collect()
    handler = runtime_factory(seen)
    assert handler(event, FakeContext()) == {"messages": 1, "records": len(ids)}
    event["detail"]["object"]["key"] = missing_key()
    with pytest.raises(InvocationFailed):
        handler(event, FakeContext())
    assert seen.ids == ids


def test_eventbridge_cloudtrail_record_inline(
    aws_env: Any, corpus: Path, runtime_factory: Any
) -> None:
    path = corpus / "cloud-custodian__cloud-custodian" / "event-cloud-trail-create-bucket.json"
    event = json.loads(path.read_text())
    seen: list[Any] = []

    class Keep(EventProcessor):
        def process(self, events: list[Any]) -> None:
            seen.extend(events)

    refusing = runtime_factory(Keep())
    with pytest.raises(InvocationFailed, match="accept_records_in_messages"):
        refusing(event, FakeContext())  # records in the event itself are opt-in
    assert seen == []
    handler = runtime_factory(Keep(), accept_records_in_messages=True)
    assert handler(event, FakeContext()) == {"messages": 1, "records": 1}
    assert handler(event, FakeContext()) == {"messages": 1, "records": 0}  # retry: once only
    (only,) = seen
    assert only.event_id == event["detail"]["eventID"]
    assert only.event_name == "CreateBucket"
    assert only.delivery.account_id == event["account"]  # the record has no recipientAccountId
    assert only.delivery.region == "us-west-2"


# --- the ready handler, logs, and DynamoDB idempotency -----------------------------------

HANDLER_MODULE = """
from trailproc import Handlers

LOADS = [0]
LOADS[0] += 1
SEEN = []

handlers = Handlers()

@handlers.on(event_source="*")
def everything(event):
    SEEN.append(event.event_id)
"""


def test_ready_handler_loads_trailproc_handler_once(
    sandbox: TrailSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "lambda_test_handlers.py").write_text(HANDLER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lambda_test_handlers", raising=False)
    monkeypatch.delenv("TRAILPROC_HANDLER", raising=False)
    aws_lambda.reset_handler()
    with pytest.raises(RuntimeError, match="TRAILPROC_HANDLER"):
        aws_lambda.handler({"Records": []}, FakeContext())

    monkeypatch.setenv("TRAILPROC_HANDLER", "lambda_test_handlers:handlers")
    monkeypatch.setenv("TRAILPROC_CHECKPOINT", "memory")
    try:
        key1, ids1 = upload(sandbox)
        key2, ids2 = upload(sandbox)
        first = aws_lambda.handler(
            {"Records": [sqs_record("a", notification(key1))]}, FakeContext(request_id="cold-req")
        )
        second = aws_lambda.handler(
            {"Records": [sqs_record("b", notification(key2))]}, FakeContext(request_id="warm-req")
        )
        module = sys.modules["lambda_test_handlers"]
        assert first == second == {"batchItemFailures": []}
        assert module.LOADS == [1]  # loaded once per sandbox
        assert ids1 + ids2 == module.SEEN
    finally:
        aws_lambda.reset_handler()

    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    finished = [line for line in lines if line.get("event") == "invocation finished"]
    assert [line["aws_request_id"] for line in finished] == ["cold-req", "warm-req"]
    assert finished[0]["records"] == len(ids1) and finished[0]["trigger"] == "sqs"
    assert sum(line.get("event") == "cold start" for line in lines) == 1


def test_dynamodb_store_makes_retries_idempotent_across_sandboxes(
    sandbox: TrailSandbox, runtime_factory: Any
) -> None:
    key, ids = upload(sandbox, count=5)
    event = {
        "Records": [
            sqs_record("one", notification(key)),
            sqs_record("two", notification(missing_key())),
        ]
    }
    spec = "dynamodb://trailproc-lambda-test?create=true"
    first_seen, second_seen = Collect(), Collect()
    first = runtime_factory(first_seen, checkpoint=spec)
    assert first(event, FakeContext()) == {"batchItemFailures": [{"itemIdentifier": "two"}]}
    assert first(event, FakeContext()) == {"batchItemFailures": [{"itemIdentifier": "two"}]}
    # A second sandbox (cold start, its own memory) gets the same event: DynamoDB knows.
    second = runtime_factory(second_seen, checkpoint=spec)
    assert second(event, FakeContext()) == {"batchItemFailures": [{"itemIdentifier": "two"}]}
    assert first_seen.ids == ids and second_seen.ids == []


def test_handler_inside_a_running_loop_and_function_handlers(
    sandbox: TrailSandbox, runtime_factory: Any
) -> None:
    """A plain function is a handler; calling from async code works (helper thread)."""
    key, ids = upload(sandbox)
    seen: list[str] = []
    handler = runtime_factory(lambda event: seen.append(event.event_id))
    event = {"Records": [sqs_record("x", notification(key))]}

    async def from_async_code() -> Any:
        return handler(event, FakeContext())

    assert asyncio.run(from_async_code()) == {"batchItemFailures": []}
    assert seen == ids


# --- the deployable sample ---------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "lambda"


def test_sample_function_alerts(sandbox: TrailSandbox, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("trailproc_lambda_sample", SAMPLE / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    records = make_records(4, seed=7)
    records[2].update(eventSource="cloudtrail.amazonaws.com", eventName="StopLogging")
    key = log_key(when=dt.datetime(2024, 5, 2, 8, 0, tzinfo=dt.timezone.utc))
    sandbox.put(key, encode_log(records))
    try:
        answer = module.handler({"Records": [sqs_record("s1", notification(key))]}, FakeContext())
    finally:
        module.handler.close()
    assert answer == {"batchItemFailures": []}
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    alerts = [x for x in lines if x.get("event") == "alert"]
    assert [(a["rule"], a["event_id"]) for a in alerts] == [
        ("cloudtrail-tampering", records[2]["eventID"])
    ]
    assert alerts[0]["aws_request_id"] == "req-1"


def test_sample_template_and_policy_wiring() -> None:
    import yaml  # type: ignore[import-untyped]

    class CfnLoader(yaml.SafeLoader):
        pass

    def any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return {suffix: loader.construct_scalar(node)}
        if isinstance(node, yaml.SequenceNode):
            return {suffix: loader.construct_sequence(node, deep=True)}
        return {suffix: loader.construct_mapping(node, deep=True)}

    CfnLoader.add_multi_constructor("!", any_tag)
    template = yaml.load((SAMPLE / "template.yaml").read_text(), Loader=CfnLoader)
    res = template["Resources"]
    assert res["Trail"]["Properties"]["SnsTopicName"] == {"GetAtt": "TrailTopic.TopicName"}
    assert res["QueueSubscription"]["Properties"]["Endpoint"] == {"GetAtt": "Queue.Arn"}
    redrive = res["Queue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"GetAtt": "DeadLetterQueue.Arn"}
    function = res["Function"]["Properties"]
    assert function["Handler"] == "app.handler"
    sqs_event = function["Events"]["TrailQueue"]["Properties"]
    assert sqs_event["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert function["Environment"]["Variables"]["TRAILPROC_CHECKPOINT"] == {
        "Sub": "dynamodb://${CheckpointTable}"
    }

    policy = json.loads((SAMPLE / "policy.json").read_text())
    actions = {
        a
        for s in policy["Statement"]
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    assert actions == {
        "s3:GetObject",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    s3_read = next(s for s in policy["Statement"] if s["Sid"] == "ReadTrailLogFiles")
    assert s3_read["Resource"] == "arn:aws:s3:::TRAIL_BUCKET/AWSLogs/*"


# --- review findings: unreadable events, failure causes, delete_on_failure, settings
# from the environment, SnapStart lease owners ------------------------------------------


# The Lambda console's default test event, and a Kinesis event (a trigger wired to the
# wrong function): neither is something trailproc can process.
CONSOLE_TEST_EVENT = {"key1": "value1", "key2": "value2", "key3": "value3"}
DYNAMODB_STREAM_EVENT = {
    "Records": [
        {
            "eventID": "c4ca4238a0b923820dcc509a6f75849b",
            "eventName": "INSERT",
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "Keys": {"Id": {"N": "101"}},
                "NewImage": {"Message": {"S": "New item!"}, "Id": {"N": "101"}},
                "SequenceNumber": "4421584500000000017450439091",
                "SizeBytes": 26,
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/T/stream/2015-06-27",
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
        handler(DYNAMODB_STREAM_EVENT, FakeContext())
    assert str(raised.value).startswith("Lambda event from aws:dynamodb is not supported")
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
