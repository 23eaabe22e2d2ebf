"""A Lambda function alerting on risky CloudTrail activity, built on trailproc.

Deployed by `template.yaml` next to this file: CloudTrail → S3 + SNS → SQS → this
function. The function handler setting is ``app.handler``; alternatively set it to
``trailproc.aws_lambda.handler`` with ``TRAILPROC_HANDLER=app:handlers``.

Alerts are written as JSON log lines (``"event": "alert"``: easy to turn into a
CloudWatch metric filter and alarm) and, when ``ALERT_TOPIC_ARN`` is set, published to
that SNS topic.
"""

from __future__ import annotations

import json
import os
from typing import Any

from trailproc import Event, Handlers, get_logger
from trailproc.aws_lambda import make_handler

log = get_logger("alerts")
handlers = Handlers()

TRAIL_TAMPERING = ["StopLogging", "DeleteTrail", "UpdateTrail", "PutEventSelectors"]
IAM_CHANGES = ["Attach*Policy", "Put*Policy", "CreatePolicyVersion", "CreateAccessKey"]

_sns: Any = None


def alert(rule: str, event: Event, detail: str = "") -> None:
    """Log one alert and, if configured, publish it."""
    fields = {
        "rule": rule,
        "event_id": event.event_id,
        "event_name": event.event_name,
        "principal": event.principal_arn,
        "account": event.recipient_account_id or event.delivery.account_id,
        "region": event.aws_region,
        "time": event.event_time_text,
        "detail": detail,
    }
    log.warning("alert", **fields)
    topic = os.environ.get("ALERT_TOPIC_ARN")
    if topic:
        global _sns
        if _sns is None:
            import boto3

            _sns = boto3.client("sns")
        _sns.publish(TopicArn=topic, Subject=f"CloudTrail alert: {rule}"[:100],
                     Message=json.dumps(fields))  # fmt: skip


@handlers.on(event_source="cloudtrail.amazonaws.com", event_name=TRAIL_TAMPERING)
def trail_tampering(event: Event) -> None:
    alert("cloudtrail-tampering", event)


@handlers.on(event_source="signin.amazonaws.com", event_name="ConsoleLogin")
def console_login(event: Event) -> None:
    identity = event.user_identity or {}
    if identity.get("type") == "Root":
        alert("root-sign-in", event, f"from {event.source_ip_address}")
    elif (event.additional_event_data or {}).get("MFAUsed") == "No":
        alert("console-sign-in-without-mfa", event, f"from {event.source_ip_address}")


@handlers.on(event_source="iam.amazonaws.com", event_name=IAM_CHANGES)
def iam_change(event: Event) -> None:
    alert("iam-change", event)


# Built at import (the init phase); AWS clients are opened on the first invocation.
# The checkpoint store comes from TRAILPROC_CHECKPOINT (the template sets DynamoDB). The
# warm state (event loop, clients, store) is closed by trailproc when the interpreter exits.
handler = make_handler(handlers)
