"""`trailproc check` probes for `audit` and `redrive` (`--audit-bucket`, `--redrive-from`).

Harmless like the other probes: listings and reads only; the DLQ receive uses
``VisibilityTimeout=0`` so a message it sees stays visible, and the delete is called
with a receipt handle no message has. Sending to the destination and starting a move
task cannot be probed without acting, so they are reported as not probed.
"""

from __future__ import annotations

from typing import Any

from .._errors import error_code

__all__ = ["check_audit", "check_redrive"]

_DENIED = {"AccessDenied", "AccessDeniedException", "403", "Forbidden", "AuthorizationError"}
_INVALID_HANDLE = {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight",
                   "AWS.SimpleQueueService.MessageNotInflight"}  # fmt: skip


def _why(exc: BaseException) -> str:
    code = error_code(exc)
    return f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"


def check_audit(checker: Any, bucket: str) -> None:
    """s3:ListBucket on the trail bucket (the audit lists date folders and digests)."""
    name = f"audit: s3:ListBucket {bucket}"
    try:
        checker.client("s3").list_objects_v2(Bucket=bucket, Prefix="AWSLogs/", MaxKeys=1)
    except Exception as exc:
        checker.add(name, "fail", _why(exc),
                    f"allow s3:ListBucket on arn:aws:s3:::{bucket}")  # fmt: skip
        return
    checker.add(name, "pass", "listing allowed (digests are read with s3:GetObject)")


def check_redrive(checker: Any, dlq_url: str) -> None:
    """What `trailproc redrive --from dlq_url` calls, probed without moving anything."""
    sqs = checker.client("sqs")
    try:
        arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
    except Exception as exc:
        checker.add("redrive: dead-letter queue", "fail", _why(exc),
                    f"check the URL and allow sqs:GetQueueAttributes on {dlq_url}")  # fmt: skip
        return
    checker.add("redrive: dead-letter queue", "pass", f"{arn} reachable")
    _probe(checker, "redrive: sqs:ListDeadLetterSourceQueues",
           lambda: sqs.list_dead_letter_source_queues(QueueUrl=dlq_url),
           "allow it, or always give redrive --to")  # fmt: skip
    _probe(checker, "redrive: sqs:ReceiveMessage",
           lambda: sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=1,
                                       VisibilityTimeout=0, WaitTimeSeconds=0),
           f"allow sqs:ReceiveMessage on {arn}")  # fmt: skip
    try:
        sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle="trailproc-check-probe-not-a-handle")
        checker.add("redrive: sqs:DeleteMessage", "pass", "allowed")
    except Exception as exc:
        if error_code(exc) in _INVALID_HANDLE:
            checker.add("redrive: sqs:DeleteMessage", "pass",
                        "allowed (probed with a handle no message has)")  # fmt: skip
        else:
            checker.add("redrive: sqs:DeleteMessage", "fail", _why(exc),
                        f"allow sqs:DeleteMessage on {arn}")  # fmt: skip
    try:
        sqs.list_message_move_tasks(SourceArn=arn, MaxResults=1)
        checker.add(
            "redrive: message move task",
            "pass",
            "sqs:ListMessageMoveTasks allowed (StartMessageMoveTask is not probed)",
        )
    except Exception as exc:  # fmt: skip
        checker.add("redrive: message move task", "warn",
                    f"not available ({_why(exc)}): redrive will receive, send and delete",
                    "allow sqs:StartMessageMoveTask and sqs:ListMessageMoveTasks on the DLQ, "
                    "or use redrive --method copy")  # fmt: skip
    checker.add(
        "redrive: sqs:SendMessage",
        "skip",
        "not probed (it would send); the destination queue needs it",
    )


def _probe(checker: Any, name: str, call: Any, fix: str) -> None:
    try:
        call()
    except Exception as exc:
        status = "fail" if error_code(exc) in _DENIED else "warn"
        checker.add(name, status, _why(exc), fix)
        return
    checker.add(name, "pass", "allowed")
