"""The sandbox itself: SNS → SQS subscription delivers CloudTrail's notification."""

import json

from trailproc._sandbox import TrailSandbox, make_records


def test_delivery_reaches_queue_in_sns_envelope(sandbox: TrailSandbox) -> None:
    key = sandbox.deliver(make_records(3))
    msgs = sandbox.client("sqs").receive_message(QueueUrl=sandbox.queue_url, WaitTimeSeconds=1)
    body = json.loads(msgs["Messages"][0]["Body"])
    assert body["Type"] == "Notification"
    assert json.loads(body["Message"]) == {"s3Bucket": sandbox.bucket, "s3ObjectKey": [key]}
