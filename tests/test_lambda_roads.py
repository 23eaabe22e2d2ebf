"""The Lambda entry point on the CloudWatch Logs roads: subscription trigger, Kinesis Data
Streams and Firehose data transformation, against moto's server (checkpoint store, S3
client at cold start) with payloads shaped as AWS sends them.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from trailproc._pipeline.processor import EventProcessor
from trailproc._roads.lambda_ import InvocationFailed, trigger_of

REAL = "DataDog__datadog-serverless-functions/cloudwatch_log_cloudtrail.json"
OWNER = "111122223333"
GROUP = "aws-cloudtrail-logs-111122223333-trail"
STREAM = f"{OWNER}_CloudTrail_eu-west-1"


class FakeContext:
    def __init__(self, seconds: float = 60.0, request_id: str = "req-1") -> None:
        self.deadline = time.monotonic() + seconds
        self.aws_request_id = request_id

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


class Keep(EventProcessor):
    def __init__(self, fail_on: str | None = None) -> None:
        self.events: list[Any] = []
        self.fail_on = fail_on

    def process(self, events: list[Any]) -> None:
        for event in events:
            if event.event_id == self.fail_on:
                raise RuntimeError(f"cannot take {event.event_id}")
            self.events.append(event)

    @property
    def ids(self) -> list[str]:
        return [e.event_id for e in self.events]


@pytest.fixture
def runtime_factory(aws_env: Any, runtime_factory: Any) -> Any:
    """conftest's Lambda runtimes, on a clean moto (these roads keep checkpoints there)."""
    return runtime_factory


_ids = iter(range(10**6))


def record(event_id: str | None = None, account: str = OWNER) -> str:
    """One CloudTrail record as CloudTrail writes it into the log group (one line)."""
    n = next(_ids)
    return json.dumps(
        {
            "eventVersion": "1.08",
            "eventID": event_id or f"00000000-0000-4000-8000-{n:012d}",
            "eventTime": "2024-05-01T10:00:00Z",
            "eventSource": "iam.amazonaws.com",
            "eventName": "CreateUser",
            "awsRegion": "us-east-1",
            "requestParameters": {"userName": f"ünïcode-{n}"},
            "recipientAccountId": account,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def payload(*records: str, group: str = GROUP, owner: str = OWNER, control: bool = False) -> bytes:
    start = next(_ids)
    document = {
        "messageType": "CONTROL_MESSAGE" if control else "DATA_MESSAGE",
        "owner": "CloudwatchLogs" if control else owner,
        "logGroup": "" if control else group,
        "logStream": "" if control else STREAM,
        "subscriptionFilters": [] if control else ["trail"],
        "logEvents": [
            {"id": f"{start + i:056d}", "timestamp": 1714557600000 + i, "message": r}
            for i, r in enumerate(records or ["CWL CONTROL MESSAGE: Checking health."])
        ],
    }
    return json.dumps(document).encode()


def b64gz(document: bytes) -> str:
    return base64.b64encode(gzip.compress(document, mtime=0)).decode()


def awslogs_event(document: bytes) -> dict[str, Any]:
    return {"awslogs": {"data": b64gz(document)}}


def kinesis_event(*items: tuple[str, str, str]) -> dict[str, Any]:
    """Items are (shard, sequence number, base64 data)."""
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "4d1ad2b9d0a2e2f7a8b3c1d0e9f8a7b6",
                    "sequenceNumber": seq,
                    "data": data,
                    "approximateArrivalTimestamp": 1714557600.5,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard}:{seq}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::111122223333:role/trailproc",
                "awsRegion": "eu-west-1",
                "eventSourceARN": "arn:aws:kinesis:eu-west-1:111122223333:stream/trail",
            }
            for shard, seq, data in items
        ]
    }


def firehose_event(*items: tuple[str, str]) -> dict[str, Any]:
    """Items are (recordId, base64 data)."""
    return {
        "invocationId": "11111111-2222-3333-4444-555555555555",
        "deliveryStreamArn": "arn:aws:firehose:eu-west-1:111122223333:deliverystream/trail",
        "region": "eu-west-1",
        "records": [
            {"recordId": rid, "approximateArrivalTimestamp": 1714557600500, "data": data}
            for rid, data in items
        ],
    }


def test_trigger_shapes_are_detected() -> None:
    assert trigger_of(awslogs_event(payload(record()))) == "cloudwatch_logs"
    assert trigger_of(kinesis_event(("shardId-0", "1", "x"))) == "kinesis"
    assert trigger_of(firehose_event(("r", "x"))) == "firehose"


# --- CloudWatch Logs subscription ----------------------------------------------------------


def test_real_subscription_payload_is_opt_in_then_handed_over_unchanged_once(
    corpus: Path, runtime_factory: Any
) -> None:
    raw = (corpus / REAL).read_bytes()
    wire = json.loads(raw)
    event = {"awslogs": {"data": b64gz(raw)}}
    refusing = runtime_factory(seen := Keep())
    with pytest.raises(InvocationFailed, match="accept_records_in_messages"):
        refusing(event, FakeContext())
    assert seen.events == []
    assert refusing.metrics.value("trailproc_road_units_total", road="lambda",
                                  outcome="refused") == 1  # fmt: skip

    handler = runtime_factory(kept := Keep(), accept_records_in_messages=True)
    count = len(wire["logEvents"])
    assert handler(event, FakeContext()) == {"messages": 1, "records": count}
    assert handler(event, FakeContext()) == {"messages": 1, "records": 0}  # a retry: once
    assert [e.raw for e in kept.events] == [e["message"].encode() for e in wire["logEvents"]]
    first = kept.events[0]
    assert first.log_event_id == wire["logEvents"][0]["id"]
    assert [e.log_event_id for e in kept.events] == [e["id"] for e in wire["logEvents"]]
    delivery = first.delivery
    assert delivery.log_group == wire["logGroup"]
    assert delivery.log_stream == wire["logStream"]
    assert delivery.account_id == wire["owner"]
    assert delivery.region == "us-east-1"  # from the trail's stream name
    assert delivery.origin is not None and delivery.origin.via == "lambda"
    assert handler.metrics.value("trailproc_road_units_total", road="lambda", outcome="ok") == 2


def test_control_message_is_acknowledged_and_logged(
    runtime_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = runtime_factory(kept := Keep(), accept_records_in_messages=True)
    answer = handler(awslogs_event(payload(control=True)), FakeContext())
    assert answer == {"messages": 1, "records": 0} and kept.events == []
    assert "CloudWatch Logs control message acknowledged" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ("!!! not base64 !!!", "not valid base64"),
        (base64.b64encode(b'{"messageType":"DATA_MESSAGE"}').decode(), "not gzip"),
        (b64gz(b'{"Records":[]}'), "not a CloudWatch Logs subscription payload"),
        (b64gz(b"\x00\x01 garbage"), "not valid JSON"),
        (None, "not a base64 string"),
    ],
    ids=["garbage-base64", "not-gzip", "wrong-shape", "not-json", "no-data"],
)
def test_bad_subscription_payloads_fail_the_invocation_with_one_clear_error(
    runtime_factory: Any, data: Any, words: str
) -> None:
    handler = runtime_factory(kept := Keep(), accept_records_in_messages=True)
    with pytest.raises(InvocationFailed, match=words) as raised:
        handler({"awslogs": {"data": data}}, FakeContext(request_id="req-bad"))
    assert "req-bad" in str(raised.value) and kept.events == []
    assert handler.metrics.value("trailproc_road_units_total", road="lambda",
                                 outcome="bad_payload") == 1  # fmt: skip


def test_huge_subscription_payload_is_bounded_by_max_decompressed_bytes(
    runtime_factory: Any,
) -> None:
    big = payload(*(record() for _ in range(2000)))  # ~0.5 MB of JSON
    assert len(big) > 300_000
    handler = runtime_factory(kept := Keep(), accept_records_in_messages=True,
                              max_decompressed_bytes=100_000)  # fmt: skip
    with pytest.raises(InvocationFailed, match="max_decompressed_bytes"):
        handler(awslogs_event(big), FakeContext())
    assert kept.events == []
    assert handler.metrics.value("trailproc_errors_total", reason="too_large") == 1


def test_allow_lists_apply_to_log_group_stream_owner_and_record_account(
    runtime_factory: Any,
) -> None:
    handler = runtime_factory(
        kept := Keep(),
        accept_records_in_messages=True,
        allowed_log_groups=[GROUP],
        allowed_log_streams=[STREAM],
        allowed_accounts=[OWNER],
    )
    with pytest.raises(InvocationFailed, match="not in allowed_log_groups"):
        handler(awslogs_event(payload(record(), group="other-group")), FakeContext())
    with pytest.raises(InvocationFailed, match="owner '444455556666' not in allowed_accounts"):
        handler(awslogs_event(payload(record(), owner="444455556666")), FakeContext())
    forged = record(account="444455556666")
    with pytest.raises(InvocationFailed, match="account '444455556666' of log event"):
        handler(awslogs_event(payload(record(), forged)), FakeContext())
    assert kept.events == []
    good = record()
    assert handler(awslogs_event(payload(good)), FakeContext())["records"] == 1
    stream_only = runtime_factory(Keep(), accept_records_in_messages=True,
                                  allowed_log_streams=["elsewhere"])  # fmt: skip
    with pytest.raises(InvocationFailed, match="not in allowed_log_streams"):
        stream_only(awslogs_event(payload(record())), FakeContext())


# --- Kinesis Data Streams ------------------------------------------------------------------


def test_kinesis_partial_batch_names_the_failure_and_everything_after_it_in_its_shard(
    runtime_factory: Any,
) -> None:
    a = [payload(record(), record()) for _ in range(4)]
    b = [payload(record()) for _ in range(2)]
    event = kinesis_event(
        ("shardId-000000000000", "100", b64gz(a[0])),
        ("shardId-000000000001", "200", b64gz(b[0])),
        ("shardId-000000000000", "101", "not/base64!!"),
        ("shardId-000000000000", "102", b64gz(a[2])),
        ("shardId-000000000001", "201", b64gz(b[1])),
        ("shardId-000000000000", "103", b64gz(a[3])),
    )
    handler = runtime_factory(kept := Keep(), accept_records_in_messages=True)
    answer = handler(event, FakeContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": s} for s in ("101", "102", "103")]}
    expected = [json.loads(m)["eventID"] for doc in (a[0], b[0], b[1])
                for m in (e["message"] for e in json.loads(doc)["logEvents"])]  # fmt: skip
    assert kept.ids == expected  # 102 and 103 were not handed over out of order
    assert kept.events[0].delivery.origin.via == "kinesis"

    # Lambda retries from the failed record on; the record now reads well.
    retry = kinesis_event(
        ("shardId-000000000000", "101", b64gz(a[1])),
        ("shardId-000000000000", "102", b64gz(a[2])),
        ("shardId-000000000000", "103", b64gz(a[3])),
    )
    assert handler(retry, FakeContext()) == {"batchItemFailures": []}
    later = [json.loads(m["message"])["eventID"] for doc in a[1:]
             for m in json.loads(doc)["logEvents"]]  # fmt: skip
    assert kept.ids == expected + later


def test_kinesis_handler_failure_resumes_after_the_last_committed_batch(
    runtime_factory: Any,
) -> None:
    records = [record() for _ in range(5)]
    failing_id = json.loads(records[3])["eventID"]
    event = kinesis_event(
        ("shardId-000000000000", "1", b64gz(payload(*records))),
        ("shardId-000000000000", "2", b64gz(payload(record()))),
    )
    keep = Keep(fail_on=failing_id)
    handler = runtime_factory(keep, accept_records_in_messages=True, max_events_per_emit=1)
    assert handler(event, FakeContext()) == {
        "batchItemFailures": [{"itemIdentifier": "1"}, {"itemIdentifier": "2"}]
    }
    ids = [json.loads(r)["eventID"] for r in records]
    assert keep.ids == ids[:3]
    keep.fail_on = None
    assert handler(event, FakeContext()) == {"batchItemFailures": []}
    assert keep.ids[:5] == ids and len(keep.ids) == 6  # nothing handed over twice


def test_kinesis_checkpoints_in_dynamodb_hold_across_sandboxes(runtime_factory: Any) -> None:
    event = kinesis_event(("shardId-000000000000", "7", b64gz(payload(record(), record()))))
    spec = "dynamodb://trailproc-roads-test?create=true"
    first = runtime_factory(one := Keep(), accept_records_in_messages=True, checkpoint=spec)
    assert first(event, FakeContext()) == {"batchItemFailures": []}
    second = runtime_factory(two := Keep(), accept_records_in_messages=True, checkpoint=spec)
    assert second(event, FakeContext()) == {"batchItemFailures": []}
    assert len(one.ids) == 2 and two.ids == []


def test_kinesis_control_message_and_refusal(runtime_factory: Any) -> None:
    event = kinesis_event(
        ("shardId-000000000000", "1", b64gz(payload(control=True))),
        ("shardId-000000000000", "2", b64gz(payload(record()))),
    )
    refusing = runtime_factory(kept := Keep())
    # The control message needs no opt-in; the records do, and are kept for retry.
    assert refusing(event, FakeContext()) == {"batchItemFailures": [{"itemIdentifier": "2"}]}
    assert kept.events == []


# --- Firehose data transformation ----------------------------------------------------------


def test_firehose_results_are_exact_and_data_comes_back_unchanged(runtime_factory: Any) -> None:
    good, plain = record(), record()
    items = [
        ("r-ok", b64gz(payload(good))),
        ("r-control", b64gz(payload(control=True))),
        ("r-bad", base64.b64encode(b"\x1f\x8b\x08\x00broken").decode()),
        ("r-plain", base64.b64encode(payload(plain)).decode()),  # decompressed by Firehose
        ("r-shape", b64gz(b'{"messageType":"DATA_MESSAGE"}')),
    ]
    handler = runtime_factory(kept := Keep(), accept_records_in_messages=True)
    answer = handler(firehose_event(*items), FakeContext())
    results = {"r-ok": "Ok", "r-control": "Dropped", "r-bad": "ProcessingFailed",
               "r-plain": "Ok", "r-shape": "ProcessingFailed"}  # fmt: skip
    assert answer == {
        "records": [{"recordId": rid, "result": results[rid], "data": data} for rid, data in items]
    }
    assert [e.raw for e in kept.events] == [good.encode(), plain.encode()]
    assert handler.metrics.value("trailproc_road_units_total", road="firehose",
                                 outcome="bad_payload") == 2  # fmt: skip


def test_firehose_refused_records_are_processing_failed(runtime_factory: Any) -> None:
    items = [("r1", b64gz(payload(record())))]
    handler = runtime_factory(kept := Keep())  # no accept_records_in_messages
    answer = handler(firehose_event(*items), FakeContext())
    assert answer["records"] == [{"recordId": "r1", "result": "ProcessingFailed",
                                  "data": items[0][1]}]  # fmt: skip
    assert kept.events == []


def test_firehose_handler_failure_raises_so_firehose_retries_without_repeats(
    runtime_factory: Any,
) -> None:
    first, second = record(), record()
    items = [("r1", b64gz(payload(first))), ("r2", b64gz(payload(second)))]
    keep = Keep(fail_on=json.loads(second)["eventID"])
    handler = runtime_factory(keep, accept_records_in_messages=True, concurrency=1)
    with pytest.raises(InvocationFailed, match=r"1 of 2 record\(s\) not processed: r2"):
        handler(firehose_event(*items), FakeContext())
    keep.fail_on = None
    answer = handler(firehose_event(*items), FakeContext())
    assert [r["result"] for r in answer["records"]] == ["Ok", "Ok"]
    assert [e.raw for e in keep.events] == [first.encode(), second.encode()]


# --- the sample ----------------------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "cloudwatch-logs" / "template.yaml"


def test_cloudwatch_logs_sample_passes_cfn_lint_and_wires_the_road() -> None:
    import yaml
    from cfnlint import api

    matches = api.lint_file(SAMPLE)
    assert not matches, "\n".join(str(m) for m in matches)

    class CfnLoader(yaml.SafeLoader):
        pass

    def tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node)
        else:
            value = loader.construct_mapping(node)  # type: ignore[arg-type]
        return {f"!{suffix}": value}

    CfnLoader.add_multi_constructor("!", tag)
    resources = yaml.load(SAMPLE.read_text(), Loader=CfnLoader)["Resources"]
    trail = resources["Trail"]["Properties"]
    assert trail["CloudWatchLogsLogGroupArn"] == {"!GetAtt": "TrailLogGroup.Arn"}
    function = resources["Function"]["Properties"]
    (event,) = function["Events"].values()
    assert event["Type"] == "CloudWatchLogs"
    assert event["Properties"]["LogGroupName"] == {"!Ref": "TrailLogGroup"}
    env = function["Environment"]["Variables"]
    assert env["TRAILPROC_ACCEPT_RECORDS_IN_MESSAGES"] == "true"
    assert env["TRAILPROC_ALLOWED_LOG_GROUPS"] == {"!Ref": "TrailLogGroup"}
    assert env["TRAILPROC_CHECKPOINT"] == {"!Sub": "dynamodb://${CheckpointTable}"}
    on_failure = function["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure["Destination"] == {"!GetAtt": "FailedPayloads.Arn"}
    assert (SAMPLE.parent / function["CodeUri"] / "app.py").is_file()


def _bomb() -> str:
    """A valid-looking payload that inflates to ~5 MB (compresses to a few KB)."""
    head = b'{"messageType":"DATA_MESSAGE","owner":"1","logGroup":"g","logStream":"s","x":"'
    return b64gz(head + b"A" * 5_000_000 + b'"}')


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ("!!! not base64 !!!", "not valid base64"),
        (base64.b64encode(b"plain text, not gzip").decode(), "not gzip|not valid JSON"),
        (b64gz(b'{"Records":[]}'), "not a CloudWatch Logs subscription payload"),
        (None, "not a base64 string"),
        ("huge", "max_decompressed_bytes"),
    ],
    ids=["garbage-base64", "not-gzip", "wrong-shape", "no-data", "huge"],
)
def test_kinesis_and_firehose_bad_payloads_are_kept_with_one_clear_error(
    runtime_factory: Any, capsys: pytest.CaptureFixture[str], data: Any, words: str
) -> None:
    data = _bomb() if data == "huge" else data
    good = b64gz(payload(record()))
    handler = runtime_factory(kept := Keep(), accept_records_in_messages=True,
                              max_decompressed_bytes=1_000_000)  # fmt: skip
    stream = kinesis_event(("shardId-0", "1", good), ("shardId-0", "2", data),
                           ("shardId-0", "3", good))  # fmt: skip
    if data is None:
        del stream["Records"][1]["kinesis"]["data"]
    answer = handler(stream, FakeContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "2"}, {"itemIdentifier": "3"}]}
    firehose = handler(firehose_event(("a", good), ("b", data)), FakeContext())
    assert [r["result"] for r in firehose["records"]] == ["Ok", "ProcessingFailed"]
    assert firehose["records"][1]["data"] == (data or "")
    assert len(kept.events) == 1  # the good payload, once (the same in both events)
    errors = [json.loads(line) for line in capsys.readouterr().err.splitlines()
              if line.startswith("{") and '"level": "error"' in line]  # fmt: skip
    assert len(errors) == 2  # one line per bad payload
    assert all(re.search(words, e["event"]) for e in errors), errors
    assert {e["message_id"] for e in errors} == {"2", "b"}
