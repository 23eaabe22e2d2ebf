"""Table-driven tests of the notification parser (trailproc._pipeline.notifications)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from trailproc._pipeline.keys import ObjectKind
from trailproc._pipeline.notifications import (
    DEFAULT_KINDS,
    BadNotification,
    Notification,
    NotificationKind,
    parse_notification,
    parse_payload,
)

K = NotificationKind
BUCKET = "my-trail-bucket"
TOPIC = "arn:aws:sns:us-east-2:123456789012:CloudTrailTopic"
MSG_ID = "63a3f6b6-d533-4a47-aef9-fcf5cf758c76"
ACCT = "123456789012"

LOG1 = (
    f"AWSLogs/{ACCT}/CloudTrail/us-east-2/2016/08/11/"
    f"{ACCT}_CloudTrail_us-east-2_20160811T2215Z_kpaMYavMQA9Ahp7L.json.gz"
)
LOG2 = (
    f"AWSLogs/{ACCT}/CloudTrail/us-east-2/2016/08/11/"
    f"{ACCT}_CloudTrail_us-east-2_20160811T2210Z_zqDkyQv3TK8ZdLr0.json.gz"
)
ORG_LOG = (
    f"AWSLogs/o-aa111bb222/{ACCT}/CloudTrail/eu-west-1/2024/01/01/"
    f"{ACCT}_CloudTrail_eu-west-1_20240101T0005Z_abcdEFGH12345678.json.gz"
)
PREFIX_LOG = "org/prod/" + LOG1
INSIGHT = (
    f"AWSLogs/{ACCT}/CloudTrail-Insight/us-east-1/2024/01/01/"
    f"{ACCT}_CloudTrail-Insight_us-east-1_20240101T0105Z_AbCdEf0123456789.json.gz"
)
DIGEST = (
    f"AWSLogs/{ACCT}/CloudTrail-Digest/us-east-2/2016/08/11/"
    f"{ACCT}_CloudTrail-Digest_us-east-2_my_trail_us-east-1_20160811T220000Z.json.gz"
)
CONFIG = f"AWSLogs/{ACCT}/Config/ConfigWritabilityCheckFile"
FOLDER = f"AWSLogs/{ACCT}/CloudTrail/us-east-2/"
# A prefix with a space, "=", a literal "+" and "é", as S3 event notifications encode it.
ODD_PREFIX = "team logs/a=b+c/é"
ODD_PREFIX_ENCODED = "team+logs/a%3Db%2Bc/%C3%A9"
LOG_NAME = LOG1.rsplit("/", 1)[1]
VALIDATION = "CloudTrail validation message."


# -- body builders ----------------------------------------------------------------


def dumps(obj: Any) -> str:
    return json.dumps(obj)


def sns(message: Any, *, type_: str = "Notification", **extra: Any) -> str:
    """An SNS envelope as SQS receives it without raw message delivery."""
    env: dict[str, Any] = {
        "Type": type_,
        "MessageId": MSG_ID,
        "TopicArn": TOPIC,
        "Message": message if isinstance(message, str) else dumps(message),
        "Timestamp": "2016-08-11T22:16:01.123Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE==",
        "SigningCertURL": "https://sns.us-east-2.amazonaws.com/SimpleNotificationService-x.pem",
        "UnsubscribeURL": "https://sns.us-east-2.amazonaws.com/?Action=Unsubscribe&x=y",
    }
    env.update(extra)
    return dumps(env)


def ct(*keys: str, bucket: str = BUCKET) -> dict[str, Any]:
    return {"s3Bucket": bucket, "s3ObjectKey": list(keys)}


def s3_record(
    key: str,
    *,
    event: str = "ObjectCreated:Put",
    bucket: str = BUCKET,
    etag: str | None = "0123456789abcdef0123456789abcdef",
    size: int | None = 1234,
    version_id: str | None = None,
) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "sequencer": "0055AED6DCD90281E5"}
    if etag is not None:
        obj["eTag"] = etag
    if size is not None:
        obj["size"] = size
    if version_id is not None:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-2",
        "eventTime": "2024-01-01T00:05:12.345Z",
        "eventName": event,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "trail-objects",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
    }


def s3_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


S3_TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2024-01-01T00:00:00.000Z",
    "Bucket": BUCKET,
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmw1TItRi",
}


def eb_s3(key: str, *, detail_type: str = "Object Created") -> dict[str, Any]:
    return {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": ACCT,
        "time": "2024-01-01T00:05:12Z",
        "region": "us-east-2",
        "resources": [f"arn:aws:s3:::{BUCKET}"],
        "detail": {
            "version": "0",
            "bucket": {"name": BUCKET},
            "object": {
                "key": key,
                "size": 5678,
                "etag": "b1946ac92492d2347c6235b4d2611184",
                "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
                "sequencer": "00617F08299329D189",
            },
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": ACCT,
            "reason": "PutObject",
        },
    }


# The record is written by hand so that its exact bytes (spacing, a long decimal, an
# escaped non-ASCII character) can be compared with what the parser hands on.
CT_DETAIL = (
    '{"eventVersion": "1.08",  "eventSource":"s3.amazonaws.com", "eventName": "CreateBucket",'
    ' "awsRegion": "us-east-2", "eventID": "c4fa3db1-2303-40e4-bde0-3b7246bdbf0b",'
    ' "additionalEventData": {"ratio": 0.0000882145, "big": 1.5E+3, "note": "caf\\u00e9"}}'
)


def eb_ct(detail_type: str = "AWS API Call via CloudTrail", detail: str = CT_DETAIL) -> str:
    return (
        '{"version": "0", "id": "075efcc5-cc27-4041-accc-5fe2f65ef80d", "detail-type": '
        f'{dumps(detail_type)}, "source": "aws.s3", "account": "{ACCT}", '
        '"time": "2016-06-04T12:19:03Z", "region": "us-east-2", "resources": [], '
        f'"detail": {detail}}}'
    )


# -- expectations -----------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    kind: NotificationKind
    refs: tuple[tuple[str, str], ...] = ()  # (bucket, key)
    skipped: tuple[tuple[str, str], ...] = ()  # (key, fragment of the reason)
    raw_delivery: bool = True
    inline: tuple[bytes, ...] = ()
    ack_only: bool = False
    ref_kinds: tuple[ObjectKind, ...] | None = None
    ref_attrs: dict[str, Any] = field(default_factory=dict)  # FileRef fields of refs[0]


def ok(body: str | bytes, expect: Expect, *, id: str, kinds: Any = DEFAULT_KINDS) -> Any:
    return pytest.param(body, kinds, expect, id=id)


def refs(*keys: str, bucket: str = BUCKET) -> tuple[tuple[str, str], ...]:
    return tuple((bucket, k) for k in keys)


GOOD = [
    ok(sns(ct(LOG1)), Expect(K.CLOUDTRAIL, refs(LOG1), raw_delivery=False), id="ct-sns-one-key"),
    ok(
        sns(ct(LOG1, LOG2)),
        Expect(K.CLOUDTRAIL, refs(LOG1, LOG2), raw_delivery=False),
        id="ct-sns-several-keys",
    ),
    ok(
        sns(ct(ORG_LOG)),
        Expect(K.CLOUDTRAIL, refs(ORG_LOG), raw_delivery=False, ref_kinds=(ObjectKind.LOG,)),
        id="ct-sns-org-trail",
    ),
    ok(
        sns(ct(PREFIX_LOG)),
        Expect(K.CLOUDTRAIL, refs(PREFIX_LOG), raw_delivery=False),
        id="ct-sns-prefix",
    ),
    ok(dumps(ct(LOG1, LOG2)), Expect(K.CLOUDTRAIL, refs(LOG1, LOG2)), id="ct-raw-delivery"),
    ok(
        dumps(ct(LOG1)).encode(),
        Expect(K.CLOUDTRAIL, refs(LOG1)),
        id="ct-raw-delivery-bytes",
    ),
    ok(
        # CloudTrail's own keys are never URL-decoded, even if they look encoded.
        dumps(ct("a+b%3D/" + LOG1)),
        Expect(K.CLOUDTRAIL, refs("a+b%3D/" + LOG1)),
        id="ct-key-not-decoded",
    ),
    ok(
        sns(ct(INSIGHT)),
        Expect(K.CLOUDTRAIL, refs(INSIGHT), raw_delivery=False, ref_kinds=(ObjectKind.INSIGHT,)),
        id="insights-key-processed",
    ),
    ok(
        sns(ct(LOG1, DIGEST)),
        Expect(
            K.CLOUDTRAIL,
            refs(LOG1),
            skipped=((DIGEST, "digest file (not processed: process_kinds=log,insight)"),),
            raw_delivery=False,
        ),
        id="digest-skipped-by-default",
    ),
    ok(
        sns(ct(LOG1, DIGEST)),
        Expect(
            K.CLOUDTRAIL,
            refs(LOG1, DIGEST),
            raw_delivery=False,
            ref_kinds=(ObjectKind.LOG, ObjectKind.DIGEST),
        ),
        kinds=frozenset(ObjectKind),
        id="digest-processed-when-asked",
    ),
    ok(
        dumps(ct(DIGEST, LOG1)),
        Expect(
            K.CLOUDTRAIL,
            refs(DIGEST),
            skipped=((LOG1, "log file (not processed: process_kinds=digest)"),),
        ),
        kinds=frozenset({ObjectKind.DIGEST}),
        id="digest-only-policy",
    ),
    ok(
        dumps(ct(CONFIG, FOLDER)),
        Expect(
            K.CLOUDTRAIL,
            skipped=((CONFIG, "not a CloudTrail log"), (FOLDER, "folder marker")),
            ack_only=True,
        ),
        kinds=frozenset(ObjectKind),  # OTHER is skipped even when "everything" is asked
        id="other-keys-skipped",
    ),
    ok(
        sns(ct(DIGEST)),
        Expect(K.CLOUDTRAIL, skipped=((DIGEST, "digest file"),), raw_delivery=False, ack_only=True),
        id="all-skipped-is-ack-only",
    ),
    ok(
        dumps(s3_event(s3_record(LOG1, etag='"abc"', version_id="v-1", size=77))),
        Expect(K.S3_EVENT, refs(LOG1), ref_attrs={"etag": "abc", "version_id": "v-1", "size": 77}),
        id="s3-event-direct",
    ),
    ok(
        sns(
            s3_event(
                s3_record(LOG1), s3_record(INSIGHT, event="ObjectCreated:CompleteMultipartUpload")
            )
        ),
        Expect(K.S3_EVENT, refs(LOG1, INSIGHT), raw_delivery=False),
        id="s3-event-sns-wrapped",
    ),
    ok(
        dumps(s3_event(s3_record(f"{ODD_PREFIX_ENCODED}/{LOG1}"))),
        Expect(
            K.S3_EVENT,
            refs(f"{ODD_PREFIX}/{LOG1}"),
            ref_kinds=(ObjectKind.LOG,),
            ref_attrs={"size": 1234},
        ),
        id="s3-event-url-encoded-key",
    ),
    ok(
        dumps(s3_event(s3_record(LOG1, event="ObjectRemoved:Delete", etag=None, size=None))),
        Expect(
            K.S3_EVENT,
            skipped=((LOG1, "S3 event ObjectRemoved:Delete is not ObjectCreated"),),
            ack_only=True,
        ),
        id="s3-event-object-removed-skipped",
    ),
    ok(
        dumps(
            s3_event(
                s3_record(LOG1),
                s3_record("test.pdf"),
                s3_record(LOG2, event="ObjectRemoved:Delete"),
            )
        ),
        Expect(
            K.S3_EVENT,
            refs(LOG1),
            skipped=((LOG2, "ObjectRemoved:Delete"), ("test.pdf", "not a CloudTrail log")),
        ),
        id="s3-event-mixed-records",
    ),
    ok(dumps(S3_TEST_EVENT), Expect(K.S3_TEST_EVENT, ack_only=True), id="s3-test-event-raw"),
    ok(
        sns(S3_TEST_EVENT),
        Expect(K.S3_TEST_EVENT, raw_delivery=False, ack_only=True),
        id="s3-test-event-sns",
    ),
    ok(VALIDATION, Expect(K.VALIDATION, ack_only=True), id="validation-raw"),
    ok(f"  {VALIDATION}\n".encode(), Expect(K.VALIDATION, ack_only=True), id="validation-raw-ws"),
    ok(
        sns(VALIDATION + "\n"),
        Expect(K.VALIDATION, raw_delivery=False, ack_only=True),
        id="validation-sns",
    ),
    ok(
        dumps(eb_s3("a+b/" + LOG1)),
        Expect(
            K.EVENTBRIDGE_S3,
            refs("a+b/" + LOG1),  # EventBridge keys are not URL-encoded
            ref_kinds=(ObjectKind.LOG,),
            ref_attrs={
                "etag": "b1946ac92492d2347c6235b4d2611184",
                "version_id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e",
                "size": 5678,
            },
        ),
        id="eventbridge-object-created",
    ),
    ok(
        dumps(eb_s3(LOG1, detail_type="Object Deleted")),
        Expect(
            K.EVENTBRIDGE_S3,
            skipped=((LOG1, "'Object Deleted' is not Object Created"),),
            ack_only=True,
        ),
        id="eventbridge-object-deleted-skipped",
    ),
    ok(
        eb_ct(),
        Expect(K.EVENTBRIDGE_CLOUDTRAIL, inline=(CT_DETAIL.encode(),)),
        id="eventbridge-cloudtrail-api-call",
    ),
    ok(
        eb_ct("AWS Insight via CloudTrail").encode(),
        Expect(K.EVENTBRIDGE_CLOUDTRAIL, inline=(CT_DETAIL.encode(),)),
        id="eventbridge-cloudtrail-insight",
    ),
    ok(
        sns(eb_ct("AWS Console Sign In via CloudTrail")),
        Expect(K.EVENTBRIDGE_CLOUDTRAIL, inline=(CT_DETAIL.encode(),), raw_delivery=False),
        id="eventbridge-cloudtrail-sns-wrapped",
    ),
]


@pytest.mark.parametrize(("body", "kinds", "expect"), GOOD)
def test_parse_notification(body: str | bytes, kinds: Any, expect: Expect) -> None:
    n = parse_notification(body, process_kinds=kinds)
    assert n.kind is expect.kind
    assert [(r.bucket, r.key) for r in n.refs] == list(expect.refs)
    assert len(n.skipped) == len(expect.skipped)
    for (ref, reason), (key, fragment) in zip(n.skipped, expect.skipped, strict=True):
        assert ref.key == key
        assert fragment in reason
    assert n.carried_records == expect.inline
    assert n.is_ack_only is expect.ack_only
    assert n.raw_delivery is expect.raw_delivery
    if expect.raw_delivery:
        assert (n.topic_arn, n.sns_message_id) == (None, None)
    else:
        assert (n.topic_arn, n.sns_message_id) == (TOPIC, MSG_ID)
    if expect.ref_kinds is not None:
        assert tuple(r.kind for r in n.refs) == expect.ref_kinds
    for name, value in expect.ref_attrs.items():
        assert getattr(n.refs[0], name) == value, name
    for ref in n.refs:
        assert ref.kind in kinds


def test_inline_record_decodes_to_the_original_detail() -> None:
    n = parse_notification(eb_ct())
    (record,) = n.carried_records
    assert record == CT_DETAIL.encode()
    decoded = msgspec.json.decode(record)
    assert decoded == json.loads(CT_DETAIL)
    assert decoded["additionalEventData"]["note"] == "café"


def test_url_encoded_key_keeps_prefix_and_layout() -> None:
    n = parse_notification(dumps(s3_event(s3_record(f"{ODD_PREFIX_ENCODED}/{LOG1}"))))
    (ref,) = n.refs
    assert ref.info.prefix == ODD_PREFIX
    assert ref.info.account_id == ACCT
    assert ref.uri == f"s3://{BUCKET}/{ODD_PREFIX}/{LOG1}"


# -- bad inputs ---------------------------------------------------------------------


def bad(body: str | bytes, fragment: str, *, id: str) -> Any:
    return pytest.param(body, fragment, id=id)


LOG_FILE_BODY = {
    "Records": [
        {
            "eventVersion": "1.05",
            "userIdentity": {"type": "IAMUser", "accountId": ACCT},
            "eventTime": "2017-06-01T00:00:00Z",
            "eventSource": "ec2.amazonaws.com",
            "eventName": "DescribeInstances",
            "awsRegion": "us-east-1",
        }
    ]
}
LAMBDA_SQS = {"Records": [{"messageId": "1", "body": dumps(ct(LOG1)), "eventSource": "aws:sqs"}]}
LAMBDA_SNS = {"Records": [{"EventSource": "aws:sns", "Sns": {"Message": dumps(ct(LOG1))}}]}
NO_KEY = s3_event(s3_record(LOG1))
del NO_KEY["Records"][0]["s3"]["object"]["key"]
NO_BUCKET_NAME = s3_event(s3_record(LOG1))
del NO_BUCKET_NAME["Records"][0]["s3"]["bucket"]["name"]
EB_NO_KEY = eb_s3(LOG1)
del EB_NO_KEY["detail"]["object"]["key"]

BAD = [
    bad("this is not json", "SQS body is not JSON", id="non-json"),
    bad(b"\xff\xfe{", "SQS body is not JSON", id="non-utf8-bytes"),
    bad("", "SQS body is empty", id="empty"),
    bad("  \n", "SQS body is empty", id="blank"),
    bad('{"s3Bucket": "b", ', "SQS body is not JSON", id="truncated-json"),
    bad("[1, 2]", "JSON array, not an object", id="json-array"),
    bad("42", "JSON number, not an object", id="json-number"),
    bad('"CloudTrail validation message."', "JSON string, not an object", id="quoted-validation"),
    bad('{"a": 1, "b": 2}', "unknown shape (keys: a, b)", id="unknown-object"),
    bad("{}", "unknown shape (keys: none)", id="empty-object"),
    bad(sns("definitely not json"), "SNS Message is not JSON", id="sns-message-not-json"),
    bad(sns("[1]"), "SNS Message is a JSON array", id="sns-message-array"),
    bad(sns(""), "SNS Message is empty", id="sns-message-empty"),
    bad(
        dumps({"Type": "Notification", "TopicArn": TOPIC, "Message": {"s3Bucket": "b"}}),
        "has no Message string (got object)",
        id="sns-message-not-string",
    ),
    bad(
        sns("x", type_="SubscriptionConfirmation"),
        "Type 'SubscriptionConfirmation'",
        id="sns-subscription-confirmation",
    ),
    bad(dumps(LOG_FILE_BODY), "looks like a CloudTrail log file", id="log-file-shaped"),
    bad(sns(sns(ct(LOG1))), "SNS envelope nested inside", id="sns-inside-sns"),
    bad(sns(LOG_FILE_BODY), "looks like a CloudTrail log file", id="log-file-shaped-in-sns"),
    bad(dumps(LAMBDA_SQS), "whole Lambda SQS event", id="whole-lambda-sqs-event"),
    bad(dumps(LAMBDA_SNS), "whole Lambda SNS event", id="whole-lambda-sns-event"),
    bad(dumps({"Records": []}), "non-empty list", id="s3-records-empty"),
    bad(dumps({"Records": "x"}), "got string", id="s3-records-not-list"),
    bad(dumps({"Records": [1]}), "Records[0] is a number", id="s3-records-not-objects"),
    bad(dumps(NO_KEY), "Records[0].s3.object.key is missing", id="s3-event-no-key"),
    bad(dumps(NO_BUCKET_NAME), "Records[0].s3.bucket.name is missing", id="s3-event-no-bucket"),
    bad(
        dumps({"Records": [s3_record(LOG1), LOG_FILE_BODY["Records"][0]]}),
        "Records[1] is not an S3 event record",
        id="s3-event-mixed-with-log-record",
    ),
    bad(
        dumps({"s3Bucket": BUCKET}), "s3ObjectKey must be a list of keys, got null", id="ct-no-keys"
    ),
    bad(dumps({"s3Bucket": BUCKET, "s3ObjectKey": LOG1}), "got string", id="ct-key-string"),
    bad(dumps(ct()), "s3ObjectKey is an empty list", id="ct-empty-key-list"),
    bad(dumps({"s3ObjectKey": [LOG1]}), "missing or empty s3Bucket", id="ct-no-bucket"),
    bad(dumps(ct(LOG1, bucket="")), "missing or empty s3Bucket", id="ct-empty-bucket"),
    bad(
        dumps({"s3Bucket": BUCKET, "s3ObjectKey": [LOG1, 7]}),
        "s3ObjectKey[1] is not a non-empty string",
        id="ct-key-not-string",
    ),
    bad(dumps(EB_NO_KEY), "detail.object.key is missing", id="eventbridge-s3-no-key"),
    bad(eb_ct(detail='"oops"'), "not a CloudTrail record object", id="eventbridge-ct-detail-str"),
]


@pytest.mark.parametrize(("body", "fragment"), BAD)
def test_bad_notification(body: str | bytes, fragment: str) -> None:
    with pytest.raises(BadNotification) as info:
        parse_notification(body)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message  # one sentence, fit for a log line
    assert isinstance(info.value, ValueError)


# -- parse_payload (already-decoded events, e.g. Lambda triggers) -------------------


def test_parse_payload_eventbridge_s3() -> None:
    n = parse_payload(eb_s3(LOG1))
    assert n.kind is K.EVENTBRIDGE_S3
    assert [r.key for r in n.refs] == [LOG1]
    assert n.raw_delivery is True


def test_parse_payload_reencodes_eventbridge_detail() -> None:
    payload = json.loads(eb_ct())
    n = parse_payload(payload)
    (record,) = n.carried_records
    # Without the original bytes the record is re-encoded; its content is the same.
    assert msgspec.json.decode(record) == payload["detail"]


def test_parse_payload_with_sns_context() -> None:
    n = parse_payload(ct(LOG1), topic_arn=TOPIC, sns_message_id=MSG_ID)
    assert (n.topic_arn, n.sns_message_id, n.raw_delivery) == (TOPIC, MSG_ID, False)
    assert [r.key for r in n.refs] == [LOG1]


def test_parse_payload_unwraps_sns_envelope() -> None:
    n = parse_payload(json.loads(sns(s3_event(s3_record(LOG1)))))
    assert n.kind is K.S3_EVENT
    assert (n.topic_arn, n.sns_message_id, n.raw_delivery) == (TOPIC, MSG_ID, False)


def test_parse_payload_rejects_non_mapping() -> None:
    with pytest.raises(BadNotification, match="not a JSON object"):
        parse_payload([ct(LOG1)])  # type: ignore[arg-type]


def test_notification_is_immutable() -> None:
    n = Notification(K.VALIDATION)
    assert n.is_ack_only
    with pytest.raises(AttributeError):
        n.kind = K.CLOUDTRAIL  # type: ignore[misc]


# -- shared corpus ------------------------------------------------------------------

NOTIFICATION_SHAPES = {
    "LAMBDA-SQS",
    "LAMBDA-SNS",
    "S3-NOTIFICATION",
    "S3-TESTEVENT",
    "EVENTBRIDGE-S3",
    "EVENTBRIDGE-CT",
}


@dataclass(frozen=True)
class CorpusCase:
    shape: str
    kind: NotificationKind
    objects: tuple[tuple[str, str], ...] = ()  # (bucket, key) announced, processed or not
    topic_arn: str | None = None


_CT = CorpusCase("EVENTBRIDGE-CT", K.EVENTBRIDGE_CLOUDTRAIL)
_LAMBDA_BUCKET = "lambda-artifacts-deafc19498e3f2df"
_LAMBDA_OBJ = ((_LAMBDA_BUCKET, "b21b84d653bb07b05b1e6b33684dc11b"),)
_LAMBDA_TOPIC = "arn:aws:sns:us-east-2:123456789012:sns-lambda"

CORPUS_CASES: dict[str, CorpusCase] = {
    "aws-powertools__powertools-lambda-python/s3SqsEvent.json": CorpusCase(
        "LAMBDA-SQS", K.S3_EVENT, (("xxx", "test.pdf"),)
    ),
    "boogy__cloudtrail-rs/s3-event-urlencoded-key.json": CorpusCase(
        "S3-NOTIFICATION", K.S3_EVENT, (("ct-siem-sync", "my file=a.json.gz"),)
    ),
    "boogy__cloudtrail-rs/s3-test-event.json": CorpusCase("S3-TESTEVENT", K.S3_TEST_EVENT),
    # Only Sns.Message is parsed here, so no topic is known (parse_payload test below).
    "boogy__cloudtrail-rs/sns-s3-event.json": CorpusCase("LAMBDA-SNS", K.S3_EVENT, _LAMBDA_OBJ),
    "boogy__cloudtrail-rs/sqs-sns-event.json": CorpusCase(
        "LAMBDA-SQS", K.S3_EVENT, _LAMBDA_OBJ, _LAMBDA_TOPIC
    ),
    "DataDog__datadog-serverless-functions/sqs_s3.json": CorpusCase(
        "LAMBDA-SQS", K.S3_EVENT, (("my-bucket", "my-key.log"),)
    ),
    "grafana__loki/eventbridge-s3-event.json": CorpusCase(
        "EVENTBRIDGE-S3", K.EVENTBRIDGE_S3, (("bucket", "pizza.txt"),)
    ),
    "cloud-custodian__cloud-custodian/event-cloud-trail-appelb-add-tags.json": _CT,
    "cloud-custodian__cloud-custodian/event-cloud-trail-catalog-put-resource-policy.json": _CT,
    "cloud-custodian__cloud-custodian/event-cloud-trail-create-bucket.json": _CT,
    "cloud-custodian__cloud-custodian/event-cloud-trail-tag-distribution.json": _CT,
    "cloud-custodian__cloud-custodian/event-cloud-trail-tag-rest-stage.json": _CT,
    "cloud-custodian__cloud-custodian/event-cloud-trail-update-distribution.json": _CT,
}


def _bodies(shape: str, data: bytes) -> list[str | bytes]:
    """The SQS bodies (or SNS Messages) a corpus file of this shape stands for."""
    if shape == "LAMBDA-SQS":
        return [r["body"] for r in json.loads(data)["Records"]]
    if shape == "LAMBDA-SNS":
        return [r["Sns"]["Message"] for r in json.loads(data)["Records"]]
    return [data]


def test_corpus_table_covers_sources_md(corpus: Path) -> None:
    """Every notification-shaped file SOURCES.md lists has an expectation here."""
    listed = {}
    row = re.compile(r"^\| real/(?P<path>[^ |]+) \|(?:[^|]*\|){4} (?P<shape>[A-Z0-9-]+) \|")
    for line in (corpus.parent / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        m = row.match(line)
        if m and m["shape"] in NOTIFICATION_SHAPES:
            listed[m["path"]] = m["shape"]
    assert listed, "no notification-shaped rows found in SOURCES.md"
    assert listed == {path: case.shape for path, case in CORPUS_CASES.items()}


@pytest.mark.parametrize("rel", sorted(CORPUS_CASES))
def test_corpus_notifications(corpus: Path, rel: str) -> None:
    case = CORPUS_CASES[rel]
    data = (corpus / rel).read_bytes()
    bodies = _bodies(case.shape, data)
    assert bodies
    for body in bodies:
        n = parse_notification(body)
        assert n.kind is case.kind
        announced = [(r.bucket, r.key) for r in n.refs] + [(r.bucket, r.key) for r, _ in n.skipped]
        assert announced == list(case.objects)
        # None of these keys is a CloudTrail file, so nothing is to be downloaded.
        assert not n.refs
        if case.kind is K.EVENTBRIDGE_CLOUDTRAIL:
            (record,) = n.carried_records
            assert record in data  # the original bytes, not a re-encoding
            assert msgspec.json.decode(record) == json.loads(data)["detail"]
        else:
            assert n.is_ack_only
        assert n.topic_arn == case.topic_arn
    if case.shape == "LAMBDA-SNS":
        # A Lambda SNS record's Sns object is itself an envelope that parse_payload unwraps.
        for rec in json.loads(data)["Records"]:
            n = parse_payload(rec["Sns"])
            assert n.topic_arn == rec["Sns"]["TopicArn"] == _LAMBDA_TOPIC
            assert n.sns_message_id == rec["Sns"]["MessageId"]
            assert n.raw_delivery is False
            assert [(r.bucket, r.key) for r, _ in n.skipped] == list(case.objects)


def test_corpus_s3_event_carries_object_metadata(corpus: Path) -> None:
    body = json.loads(
        (corpus / "aws-powertools__powertools-lambda-python/s3SqsEvent.json").read_text(
            encoding="utf-8"
        )
    )["Records"][0]["body"]
    n = parse_notification(body, process_kinds=frozenset(ObjectKind))
    ((ref, reason),) = n.skipped
    assert (ref.etag, ref.version_id, ref.size) == (
        "2e3ad1e983318bbd8e73b080e2997980",
        "yd3d4HaWOT2zguDLvIQLU6ptDTwKBnQV",
        104681,
    )
    assert "not a CloudTrail" in reason
