"""Workloads that `run.py` times, each in a fresh interpreter: `python _workloads.py NAME ...`.

Every workload prints one line of JSON with its own in-process timing: `seconds` (wall)
and `cpu` (user + system of the whole process, all threads, plus any children it waited
for), so interpreter start-up is excluded unless a comparison says otherwise (`run.py`
also records the whole process from outside). Kept dependency-free except for what each
side legitimately uses (trailproc, msgspec, boto3, stdlib).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _files(folder: str) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.name.endswith(".json.gz"))


def _cpu() -> float:
    """CPU seconds of this process (every thread) and of its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _inflate() -> tuple[object, str]:
    """The gunzip trailproc uses (isal when installed, else zlib): same on both sides.

    Chosen the way `trailproc._pipeline.decode` chooses, without importing trailproc, so a
    baseline's whole-process figures include only what a hand-written script imports.
    """
    try:
        from isal import isal_zlib

        return isal_zlib, "isal"
    except ImportError:
        import zlib

        return zlib, "zlib"


def _emit(**fields: Any) -> None:
    print(json.dumps(fields))


def bare(folder: str, out: str) -> None:
    """The in-process limit: gunzip + msgspec split into raw records + write them."""
    import msgspec

    inflate: Any
    inflate, backend = _inflate()
    envelope = msgspec.defstruct("Envelope", [("Records", list[msgspec.Raw])])
    decoder = msgspec.json.Decoder(envelope)
    start, cpu, n = time.perf_counter(), _cpu(), 0
    with open(out, "wb") as sink:
        for path in _files(folder):
            document = inflate.decompress(path.read_bytes(), 31)
            records: list[msgspec.Raw] = getattr(decoder.decode(document), "Records")  # noqa: B009
            sink.write(b"\n".join([*records, b""]))
            n += len(records)
    _emit(seconds=time.perf_counter() - start, cpu=_cpu() - cpu, records=n, backend=backend)


def stdlib(folder: str, out: str) -> None:
    """The stdlib way: gunzip + json.loads + json.dumps per record."""
    import gzip

    start, cpu, n = time.perf_counter(), _cpu(), 0
    with open(out, "w", encoding="utf-8") as sink:
        for path in _files(folder):
            document = json.loads(gzip.decompress(path.read_bytes()))
            for record in document["Records"]:
                sink.write(json.dumps(record) + "\n")
                n += 1
    _emit(seconds=time.perf_counter() - start, cpu=_cpu() - cpu, records=n)


def json_loads(folder: str) -> None:
    """Eager decoding of every record into dicts: gunzip + json.loads of the file.

    Uses the same gunzip as trailproc (isal when installed), so that the comparison with
    `to_dict()` is decoding against decoding.
    """
    inflate: Any
    inflate, backend = _inflate()
    start, cpu, n = time.perf_counter(), _cpu(), 0
    for path in _files(folder):
        records = json.loads(inflate.decompress(path.read_bytes(), 31))["Records"]
        for _record in records:  # the same iteration a handler does
            n += 1
        del records
    _emit(seconds=time.perf_counter() - start, cpu=_cpu() - cpu, records=n, backend=backend)


def msgspec_dicts(folder: str) -> None:
    """What `to_dict()` costs without the pipeline: gunzip + split + a dict per record."""
    import msgspec

    from trailproc._pipeline.decode import split_records

    inflate: Any
    inflate, backend = _inflate()
    decoder = msgspec.json.Decoder(dict[str, Any])
    start, cpu, n = time.perf_counter(), _cpu(), 0
    for path in _files(folder):
        for raw in split_records(inflate.decompress(path.read_bytes(), 31)):
            decoder.decode(raw)
            n += 1
    _emit(seconds=time.perf_counter() - start, cpu=_cpu() - cpu, records=n, backend=backend)


def trailproc_process(folder: str, out: str, handler: str = "", batch: str = "") -> None:
    """`trailproc._app.process_paths` timed inside the process (no start-up)."""
    import asyncio

    from trailproc._app import process_paths_async
    from trailproc._config import load_config

    config = load_config(
        output=out or None,
        handlers=[handler] if handler else [],
        checkpoint="memory",
        log_level="warning",
    )
    if batch:
        config = config.replace(max_events_per_emit=int(batch))
    start, cpu = time.perf_counter(), _cpu()
    result = asyncio.run(process_paths_async([folder], config, progress=False))
    _emit(
        seconds=time.perf_counter() - start,
        cpu=_cpu() - cpu,
        records=result.records,
        failed=result.files_failed,
    )


def parallel(folder: str, jobs: str, handler: str) -> None:
    """`trailproc._parallel.process_parallel` (process start-up of the children included)."""
    from trailproc._config import load_config
    from trailproc._parallel import process_parallel

    config = load_config(checkpoint="memory", log_level="warning")
    start, cpu = time.perf_counter(), _cpu()
    result = process_parallel([folder], config, int(jobs), [handler])
    _emit(
        seconds=time.perf_counter() - start,
        cpu=_cpu() - cpu,  # children included: the pool is joined before this line
        records=result.records,
        failed=result.files_failed,
        child_seconds=[job.get("seconds") for job in result.jobs],
    )


def boto3_consumer(queue_url: str, out: str, expected: str = "") -> None:
    """What a user writes by hand: receive, unwrap, get, gunzip, json.loads, write, delete.

    Stops at the first empty receive, or with `expected`, once that many records are
    written (a fed queue can be empty for a moment before the last file is announced).
    """
    until = int(expected) if expected else None
    import gzip

    import boto3

    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    start, cpu, n = time.perf_counter(), _cpu(), 0
    with open(out, "w", encoding="utf-8") as sink:
        while True:
            reply = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            messages = reply.get("Messages", [])
            if not messages and until is None:
                break
            for message in messages:
                body = json.loads(message["Body"])
                notice = json.loads(body["Message"]) if "Message" in body else body
                for key in notice["s3ObjectKey"]:
                    obj = s3.get_object(Bucket=notice["s3Bucket"], Key=key)
                    document = json.loads(gzip.decompress(obj["Body"].read()))
                    for record in document["Records"]:
                        sink.write(json.dumps(record) + "\n")
                        n += 1
                sink.flush()
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            if until is not None and n >= until:
                break
    _emit(seconds=time.perf_counter() - start, cpu=_cpu() - cpu, records=n)


class _Context:
    """What Lambda hands a handler as `context` (the parts handlers read)."""

    aws_request_id = "bench-request"
    function_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def lambda_trailproc(event_path: str) -> None:
    """A fresh interpreter serving one invocation with `trailproc.aws_lambda.handler`."""
    start, cpu = time.perf_counter(), _cpu()
    from trailproc.aws_lambda import handler

    event = json.loads(Path(event_path).read_text())
    reply = handler(event, _Context())
    assert not (reply or {}).get("batchItemFailures"), reply
    _emit(seconds=time.perf_counter() - start, cpu=_cpu() - cpu, reply=reply)


def lambda_boto3(event_path: str) -> None:
    """The hand-written handler: boto3 client at import, get, gunzip, json.loads, iterate."""
    start, cpu = time.perf_counter(), _cpu()
    import gzip

    import boto3

    s3 = boto3.client("s3")

    def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
        n = 0
        for record in event["Records"]:
            body = json.loads(record["body"])
            notice = json.loads(body["Message"]) if "Message" in body else body
            for key in notice["s3ObjectKey"]:
                obj = s3.get_object(Bucket=notice["s3Bucket"], Key=key)
                for _record in json.loads(gzip.decompress(obj["Body"].read()))["Records"]:
                    n += 1
        assert n > 0
        return {"batchItemFailures": []}

    reply = handler(json.loads(Path(event_path).read_text()), _Context())
    _emit(seconds=time.perf_counter() - start, cpu=_cpu() - cpu, reply=reply)


def peak_rss(*cmd: str) -> None:
    """Run `cmd` from this small process and report its own peak RSS (wait4).

    Linux counts the pre-exec part of a child in its ru_maxrss, so launching from the
    (large) benchmark driver would inflate the figure by the driver's size.
    """
    import subprocess

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        err = proc.stderr.read() if proc.stderr else b""
        sys.exit(f"{cmd[0]} exited {proc.returncode}: {err[-2000:]!r}")
    _emit(seconds=time.perf_counter() - start, max_rss_mb=usage.ru_maxrss / 1024)


def peak_rss_unchecked(*cmd: str) -> None:
    """`peak_rss`, reporting the exit code instead of failing on it (hostile cases may
    fail some files, or be killed by the benchmark's watchdog)."""
    import subprocess

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    _emit(seconds=time.perf_counter() - start, max_rss_mb=usage.ru_maxrss / 1024,
          exit=os.waitstatus_to_exitcode(status))  # fmt: skip


def import_time(module: str) -> None:
    start = time.perf_counter()
    __import__(module)
    seconds = time.perf_counter() - start
    heavy = ["boto3", "botocore", "aioboto3", "aiobotocore", "click"]
    _emit(seconds=seconds, loaded=[m for m in heavy if m in sys.modules])


if __name__ == "__main__":
    name, *args = sys.argv[1:]
    globals()[name.replace("-", "_")](*args)
