"""`trailproc redrive`: dead-lettered messages back onto the queue, against moto over real
HTTP. SQS's message-move task is answered by a loopback proxy (which moves the messages
itself, as SQS would), the receive/send/delete path runs on moto directly."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
from click.testing import CliRunner
from faultproxy import NO_FAULTS, FaultProxy, event_ids
from helpers import run_in_process

import trailproc
from trailproc._cli import main
from trailproc._redrive import RedriveResult, redrive_async
from trailproc._sandbox import TrailSandbox, encode_log, log_key, make_records


def _dead_letters(sandbox: TrailSandbox, count: int) -> Counter[str]:
    """`count` log files in the bucket whose notifications sit in the DLQ; returns the
    eventIDs of their records."""
    sqs = sandbox.client("sqs")
    ids: Counter[str] = Counter()
    for i in range(count):
        records = make_records(3, seed=100 + i)
        key = log_key(unique=f"f{i:04d}")
        sandbox.put(key, encode_log(records))
        body = json.dumps({"s3Bucket": sandbox.bucket, "s3ObjectKey": [key]})
        sqs.send_message(QueueUrl=sandbox.dlq_url, MessageBody=body, MessageAttributes={
            "origin": {"DataType": "String", "StringValue": f"file-{i}"}})  # fmt: skip
        ids.update(r["eventID"] for r in records)
    return ids


def _redrive(endpoint: str, *args: Any, **kwargs: Any) -> RedriveResult:
    config = trailproc.load_config(env={}, endpoint_url=endpoint)
    return asyncio.run(redrive_async(*args, config=config, **kwargs))


def test_redrive_moves_25_dead_letters_back_and_the_daemon_processes_them(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    ids = _dead_letters(sandbox, 25)
    # No --to: the destination is the queue whose redrive policy names this DLQ.
    result = CliRunner().invoke(
        main, ["redrive", "--from", sandbox.dlq_url, "--method", "copy", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["moved"] == 25 and report["destination"] == sandbox.queue_url
    assert sandbox.queue_depth(sandbox.dlq_url) == 0
    assert sandbox.queue_depth() == 25

    out = tmp_path / "out.jsonl"
    run = run_in_process(sandbox, tmp_path, output=str(out))
    assert run.files_done == 25
    assert event_ids(str(out)) == ids  # every record once
    assert sandbox.queue_depth() == 0


def test_redrive_keeps_body_and_attributes_and_stops_at_max(sandbox: TrailSandbox) -> None:
    _dead_letters(sandbox, 12)
    result = _redrive(sandbox.endpoint_url, sandbox.dlq_url, to=sandbox.queue_url,
                      max_messages=7)  # fmt: skip
    assert result.method == "copy" and result.moved == 7
    assert sandbox.queue_depth(sandbox.dlq_url) == 5
    moved = _peek(sandbox, sandbox.queue_url, 7)
    assert len({m["Body"] for m in moved}) == 7
    for message in moved:
        key = json.loads(message["Body"])["s3ObjectKey"][0]
        index = int(key.rsplit("_f", 1)[1].split(".")[0])
        assert message["MessageAttributes"]["origin"]["StringValue"] == f"file-{index}"


def _peek(sandbox: TrailSandbox, queue_url: str, count: int) -> list[dict[str, Any]]:
    """Receive up to `count` messages (they stay hidden for the queue's visibility time)."""
    sqs = sandbox.client("sqs")
    seen: list[dict[str, Any]] = []
    for _ in range(10):
        response = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        seen.extend(response.get("Messages", []))
        if len(seen) >= count:
            break
    return seen


def test_a_lost_send_reply_loses_no_message_and_hands_nothing_over_twice(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    """The first SendMessageBatch reaches SQS but its reply is dropped: the SDK sends the
    batch again, so those messages may arrive twice; none may be missing, and the
    daemon still hands each record over once."""
    ids = _dead_letters(sandbox, 25)
    with FaultProxy(sandbox.endpoint_url, faults=NO_FAULTS,
                    drop_replies={"SendMessageBatch": 1}) as proxy:  # fmt: skip
        result = _redrive(proxy.url, sandbox.dlq_url, to=sandbox.queue_url, method="copy")
        assert proxy.stats["dropped_reply:SendMessageBatch"] == 1
    assert result.moved == 25
    assert sandbox.queue_depth(sandbox.dlq_url) == 0
    assert 25 <= sandbox.queue_depth() <= 35  # at least once; the repeated batch at most

    out = tmp_path / "out.jsonl"
    run_in_process(sandbox, tmp_path, output=str(out))
    assert event_ids(str(out)) == ids


def _move_task_answers(
    sandbox: TrailSandbox, calls: list[tuple[str, dict[str, Any]]], running_polls: int = 1
) -> dict[str, Any]:
    """StartMessageMoveTask / ListMessageMoveTasks answered as SQS does, the move done
    with ordinary calls on moto (so the daemon afterwards sees real messages)."""
    sqs = boto3.client("sqs", endpoint_url=sandbox.endpoint_url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    state: dict[str, Any] = {"moved": 0, "handle": None, "polls": 0}
    headers = {"Content-Type": "application/x-amz-json-1.0"}

    def start(body: bytes) -> tuple[int, dict[str, str], bytes]:
        request = json.loads(body)
        calls.append(("start", request))
        assert request["SourceArn"].endswith(":cloudtrail-queue-dlq")
        while messages := sqs.receive_message(
            QueueUrl=sandbox.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages"):
            for m in messages:
                sqs.send_message(QueueUrl=sandbox.queue_url, MessageBody=m["Body"])
                sqs.delete_message(QueueUrl=sandbox.dlq_url, ReceiptHandle=m["ReceiptHandle"])
                state["moved"] += 1
        state["handle"] = uuid.uuid4().hex
        return 200, headers, json.dumps({"TaskHandle": state["handle"]}).encode()

    def list_tasks(body: bytes) -> tuple[int, dict[str, str], bytes]:
        calls.append(("list", json.loads(body)))
        state["polls"] += 1
        running = state["polls"] <= running_polls
        task = {"TaskHandle": state["handle"] if running else None,
                "Status": "RUNNING" if running else "COMPLETED",
                "SourceArn": json.loads(body)["SourceArn"],
                "ApproximateNumberOfMessagesMoved": state["moved"] // (2 if running else 1),
                "StartedTimestamp": 1}  # fmt: skip
        task = {k: v for k, v in task.items() if v is not None}
        return 200, headers, json.dumps({"Results": [task]}).encode()

    return {"StartMessageMoveTask": start, "ListMessageMoveTasks": list_tasks}


def test_redrive_uses_the_sqs_move_task_where_the_queue_supports_it(
    sandbox: TrailSandbox, tmp_path: Path
) -> None:
    ids = _dead_letters(sandbox, 25)
    calls: list[tuple[str, dict[str, Any]]] = []
    with FaultProxy(sandbox.endpoint_url, faults=NO_FAULTS,
                    answers=_move_task_answers(sandbox, calls)) as proxy:  # fmt: skip
        result = _redrive(proxy.url, sandbox.dlq_url, to=sandbox.queue_url, poll_seconds=0.05)
    assert (result.method, result.status, result.moved) == ("move-task", "COMPLETED", 25)
    start = [request for name, request in calls if name == "start"]
    assert len(start) == 1 and start[0]["DestinationArn"].endswith(":cloudtrail-queue")
    assert [name for name, _ in calls].count("list") == 2  # polled until COMPLETED

    out = tmp_path / "out.jsonl"
    run_in_process(sandbox, tmp_path, output=str(out))
    assert event_ids(str(out)) == ids


def test_redrive_copies_when_sqs_refuses_the_move_task(sandbox: TrailSandbox) -> None:
    _dead_letters(sandbox, 4)

    def refuse(body: bytes) -> tuple[int, dict[str, str], bytes]:
        payload = {"__type": "com.amazonaws.sqs#UnsupportedOperation",
                   "message": "not supported for this queue"}  # fmt: skip
        return 400, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(payload).encode()

    with FaultProxy(sandbox.endpoint_url, faults=NO_FAULTS,
                    answers={"StartMessageMoveTask": refuse}) as proxy:  # fmt: skip
        result = _redrive(proxy.url, sandbox.dlq_url)
        assert proxy.stats["answered:StartMessageMoveTask"] == 1
    assert (result.method, result.moved) == ("copy", 4)
    assert str(result.destination).endswith("/cloudtrail-queue")  # the DLQ's source queue
    assert sandbox.queue_depth(sandbox.dlq_url) == 0 and sandbox.queue_depth() == 4


def test_redrive_refuses_max_with_the_move_task(sandbox: TrailSandbox) -> None:
    result = CliRunner().invoke(main, ["redrive", "--from", sandbox.dlq_url, "--max", "3",
                                       "--method", "move-task"])  # fmt: skip
    assert result.exit_code == 1 and "--max needs the copy method" in result.output
