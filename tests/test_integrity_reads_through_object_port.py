"""`trailproc validate` reads S3 through the pipeline's object port and the same aioboto3
clients as the daemon (no second SDK stack): seen at a loopback proxy in front of moto,
and the blocking store the validator's threads use, over the in-memory port."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
from collections.abc import Iterator

import boto3
import pytest
from faultproxy import NO_FAULTS, FaultProxy

from trailproc._ports.objects import MemoryObjects, ObjectError
from trailproc._sandbox import MotoServer
from trailproc.integrity import validate
from trailproc.integrity._remote import LoopThread
from trailproc.integrity._signing import gunzip_sha256
from trailproc.integrity._storage import NotFound, PortStore, ReadError
from trailproc.integrity._testing import DigestChainSigner, new_private_key

BUCKET, TRAIL, ACCOUNT = "trail-bucket", "test-trail", "123456789012"
ARN = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


@pytest.fixture
def signer(aws_env: MotoServer) -> DigestChainSigner:
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    signer = DigestChainSigner(new_private_key(), bucket=BUCKET, sink=s3, trail_name=TRAIL)
    signer.run_hours(T0, 3)
    return signer


def _object_gets(proxy: FaultProxy) -> list[tuple[str, dict[str, str]]]:
    """(path, headers) of every GetObject the proxy saw (a GET of a key, no query)."""
    return [
        (path, headers)
        for method, path, headers in proxy.headers_seen
        if method == "GET" and "?" not in path and path.count("/") > 2
    ]


def test_validation_reads_through_the_daemons_aioboto3_clients(
    signer: DigestChainSigner, aws_env: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FaultProxy(aws_env.url, faults=NO_FAULTS) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        report = validate(ARN, BUCKET, T0, T0 + dt.timedelta(hours=3),
                          public_keys=[signer.public_key_pem()], trail_status=True)  # fmt: skip
    assert report.ok and len(report.digests) == 3 and len(report.log_files) == 6
    # Every request, S3 and CloudTrail's GetTrailStatus alike, was sent by aiobotocore.
    agents = [headers.get("User-Agent", "") for _m, _p, headers in proxy.headers_seen]
    assert agents and all("aiobotocore/" in agent for agent in agents), set(agents)
    assert any("GetTrailStatus" in h.get("X-Amz-Target", "") for *_, h in proxy.headers_seen)
    assert len(_object_gets(proxy)) == 3 + 6  # each digest and log file read once


def test_a_boto3_s3_client_given_is_still_the_one_that_reads(
    signer: DigestChainSigner, aws_env: MotoServer
) -> None:
    with FaultProxy(aws_env.url, faults=NO_FAULTS) as proxy:
        client = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1")
        report = validate(ARN, BUCKET, T0, T0 + dt.timedelta(hours=3), s3_client=client,
                          public_keys=[signer.public_key_pem()], trail_status=False)  # fmt: skip
    assert report.ok and len(report.log_files) == 6
    gets = _object_gets(proxy)
    assert len(gets) == 3 + 6
    assert all("Boto3/" in headers.get("User-Agent", "") for _path, headers in gets)


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


def test_port_store_maps_refusals_to_not_found_and_read_error(loop: LoopThread) -> None:
    memory = MemoryObjects()
    memory.put("b", "digest", b"body", metadata={"Signature": "00ff"})
    store = PortStore(memory, loop.run)
    assert store.get("b", "digest") == (b"body", {"signature": "00ff"})
    with pytest.raises(NotFound):
        store.get("b", "absent")
    memory.faults["open"] = [ObjectError("AccessDenied", "not yours")]
    with pytest.raises(ReadError, match="AccessDenied"):
        store.get("b", "digest")


def test_port_store_streams_a_log_file_in_bounded_chunks(loop: LoopThread) -> None:
    plain = os.urandom(300_000)
    memory = MemoryObjects()
    memory.put("b", "log.json.gz", gzip.compress(plain))
    store = PortStore(memory, loop.run)
    sizes: list[int] = []
    with store.open("b", "log.json.gz") as stream:
        whole = b""
        while chunk := stream.read(64 * 1024):
            sizes.append(len(chunk))
            whole += chunk
    assert gzip.decompress(whole) == plain and len(sizes) > 1
    assert max(sizes) <= 64 * 1024
    with store.open("b", "log.json.gz") as stream:
        assert gunzip_sha256(stream) == hashlib.sha256(plain).hexdigest()


def test_port_store_lists_keys_and_folders_across_pages(loop: LoopThread) -> None:
    memory = MemoryObjects(page_size=2)
    for key in ("p/a/1", "p/a/2", "p/b/1", "p/c/1", "p/d", "p/e", "q/x"):
        memory.put("b", key, b"x")
    store = PortStore(memory, loop.run)
    assert list(store.list_keys("b", "p/a/")) == ["p/a/1", "p/a/2"]
    assert sorted(store.list_keys("b", "p/")) == ["p/a/1", "p/a/2", "p/b/1", "p/c/1", "p/d", "p/e"]
    assert store.list_folders("b", "p/") == ["a", "b", "c"]
    assert len(memory.made("list")) > 3  # more than one page each time
