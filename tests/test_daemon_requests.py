"""What the daemon asks AWS for, seen on the wire through the loopback proxy: one
GetObject per file and no HeadBucket ahead of it; a bucket in another region is read
there after S3's redirect; every request counted in trailproc_aws_requests_total, the
DynamoDB checkpoint store's too."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from faultproxy import NO_FAULTS, FaultProxy
from helpers import run_in_process
from prometheus_client import generate_latest

import trailproc
from trailproc._app import run_async
from trailproc._observe import Metrics
from trailproc._pipeline.processor import EventProcessor
from trailproc._sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records


class Collect(EventProcessor):
    def __init__(self) -> None:
        self.ids: list[str] = []

    def process(self, events: list[Any]) -> None:
        self.ids.extend(e.event_id for e in events)


def _clean_proxy(upstream: str, **extra: Any) -> FaultProxy:
    return FaultProxy(upstream, faults=NO_FAULTS, **extra)


def _deliver(sandbox: TrailSandbox, bucket: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        records = make_records(3, seed=i)
        key = log_key(region="us-east-1", unique=f"{i:016x}")
        sandbox.client("s3").put_object(Bucket=bucket, Key=key, Body=encode_log(records))
        sandbox.notify([key], bucket=bucket)
        ids += [r["eventID"] for r in records]
    return ids


def _on_the_wire(proxy: FaultProxy, bucket: str) -> Counter[tuple[str, str]]:
    """The requests the proxy saw, as (service, operation)."""
    seen: Counter[tuple[str, str]] = Counter()
    for method, path, headers in proxy.headers_seen:
        target = headers.get("X-Amz-Target", "")
        if target.startswith("AmazonSQS."):
            seen["sqs", target.partition(".")[2]] += 1
        elif target.startswith("DynamoDB_"):
            seen["dynamodb", target.partition(".")[2]] += 1
        elif method == "GET" and bucket in path:
            seen["s3", "GetObject"] += 1
        else:
            seen["?", f"{method} {path}"] += 1
    return seen


def test_each_file_costs_one_get_object_and_no_head_bucket(
    sandbox: TrailSandbox, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ids = _deliver(sandbox, sandbox.bucket, 3)
    seen = Collect()
    with _clean_proxy(aws_env.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = run_in_process(sandbox, tmp_path, seen)
    assert result.files_done == 3 and Counter(seen.ids) == Counter(ids)
    s3 = [(m, p) for m, p, _h in proxy.headers_seen if sandbox.bucket in p]
    assert [m for m, _p in s3] == ["GET"] * 3  # no HEAD of the bucket, one GET per file


def test_a_bucket_in_another_region_is_read_there_after_the_redirect(
    sandbox: TrailSandbox, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sandbox.client("s3").create_bucket(
        Bucket="paris-trail", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"}
    )
    ids = _deliver(sandbox, "paris-trail", 2)

    def s3_region_check(method: str, path: str, headers: Any) -> Any:
        # What S3 answers a request for a bucket signed for the wrong region (moto
        # serves any region's buckets anywhere, so the proxy plays S3's part).
        signed_for = headers.get("Authorization", "")
        if "paris-trail" in path and "/eu-west-3/s3/" not in signed_for:
            body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>PermanentRedirect'
                    b"</Code><Message>use the bucket's region</Message></Error>")  # fmt: skip
            return 301, {"Content-Type": "application/xml",
                         "x-amz-bucket-region": "eu-west-3"}, body  # fmt: skip
        return None

    seen = Collect()
    with _clean_proxy(aws_env.url, intercept=s3_region_check) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = run_in_process(sandbox, tmp_path, seen)
    assert result.files_done == 2 and Counter(seen.ids) == Counter(ids)
    to_bucket = [(m, h["Authorization"]) for m, p, h in proxy.headers_seen if "paris-trail" in p]
    assert all(method == "GET" for method, _auth in to_bucket)  # no HeadBucket
    signed_there = [auth for _m, auth in to_bucket if "/eu-west-3/s3/" in auth]
    assert len(signed_there) == 2  # both files read in the bucket's region
    # At most one redirected request per file (downloads started together may each
    # meet it before botocore remembers the bucket's region).
    assert len(to_bucket) - len(signed_there) <= 2


def test_every_request_is_counted_by_service_and_operation(
    sandbox: TrailSandbox, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _deliver(sandbox, sandbox.bucket, 3)
    metrics = Metrics()
    config = trailproc.load_config(env={}, queue_url=sandbox.queue_url, exit_when_idle=True,
                                   wait_time_seconds=1, state_dir=str(tmp_path / "state"),
                                   stats_interval=0)  # fmt: skip
    with _clean_proxy(aws_env.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = asyncio.run(run_async(config, Collect(), metrics=metrics))
    assert result.files_done == 3
    counted = {labels: series.value for labels, series in metrics.aws_requests.series.items()}
    assert counted == dict(_on_the_wire(proxy, sandbox.bucket))
    assert counted["s3", "GetObject"] == 3 and counted["sqs", "ReceiveMessage"] >= 1
    exposed = generate_latest(metrics.registry).decode()
    assert 'trailproc_aws_requests_total{operation="GetObject",service="s3"} 3.0' in exposed


def test_the_dynamodb_stores_requests_are_counted_too(
    sandbox: TrailSandbox, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    files = 3
    _deliver(sandbox, sandbox.bucket, files)
    metrics = Metrics()
    config = trailproc.load_config(env={}, queue_url=sandbox.queue_url, exit_when_idle=True,
                                   wait_time_seconds=1, state_dir=str(tmp_path / "state"),
                                   stats_interval=0,
                                   checkpoint="dynamodb://trailproc-cp?create=true")  # fmt: skip
    with _clean_proxy(aws_env.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        result = asyncio.run(run_async(config, Collect(), metrics=metrics))
    assert result.files_done == files
    counted = {labels: series.value for labels, series in metrics.aws_requests.series.items()}
    assert counted == dict(_on_the_wire(proxy, sandbox.bucket))
    # Each file: a claim and a done mark at least, both conditional UpdateItem calls.
    assert counted["dynamodb", "UpdateItem"] >= 2 * files
    assert counted["dynamodb", "CreateTable"] == 1  # ?create=true, on a fresh moto
    exposed = generate_latest(metrics.registry).decode()
    assert 'trailproc_aws_requests_total{operation="UpdateItem",service="dynamodb"}' in exposed


def test_every_request_names_trailproc_in_a_user_agent_built_once(
    sandbox: TrailSandbox, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _deliver(sandbox, sandbox.bucket, 2)
    with _clean_proxy(aws_env.url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        run_in_process(sandbox, tmp_path, Collect())
    agents = {headers.get("User-Agent") for _m, _p, headers in proxy.headers_seen}
    assert len(agents) == 1, agents  # SQS and S3 alike: one string for the whole run
    (agent,) = agents
    assert agent.startswith("aiobotocore/") and f"app/trailproc#{trailproc.__version__}" in agent
    assert " m/" not in agent  # botocore's per-request feature codes are not rebuilt
