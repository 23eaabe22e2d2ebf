"""Public keys from CloudTrail's ListPublicKeys, over real HTTP on loopback.

moto has no ListPublicKeys, so the test proxy in front of moto answers that one API in
CloudTrail's JSON wire format (base64 blob, epoch timestamps) and forwards everything
else. `trailproc validate` then runs without --public-key-file, exactly as against AWS.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import rsa
from faultproxy import NO_FAULTS, FaultProxy

from trailproc._sandbox import MotoServer
from trailproc.integrity._cli import validate_command
from trailproc.integrity._keys import fingerprints
from trailproc.integrity._testing import DigestChainSigner, new_private_key

BUCKET, TRAIL, ACCOUNT = "trail-bucket", "test-trail", "123456789012"
ARN = f"arn:aws:cloudtrail:us-east-1:{ACCOUNT}:trail/{TRAIL}"
T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


def list_public_keys_answer(keys: list[rsa.RSAPublicKey], requests: list[dict[str, Any]]) -> Any:
    from cryptography.hazmat.primitives import serialization

    def answer(body: bytes) -> tuple[int, dict[str, str], bytes]:
        requests.append(json.loads(body or b"{}"))
        items = []
        for key in keys:
            der = key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            items.append({
                "Value": base64.b64encode(der).decode(),
                "ValidityStartTime": (T0 - dt.timedelta(days=30)).timestamp(),
                "ValidityEndTime": (T0 + dt.timedelta(days=30)).timestamp(),
                "Fingerprint": sorted(fingerprints(key, der))[0],
            })  # fmt: skip
        payload = json.dumps({"PublicKeyList": items}).encode()
        return 200, {"Content-Type": "application/x-amz-json-1.1"}, payload

    return answer


@pytest.fixture
def chain(aws_env: MotoServer) -> Iterator[tuple[DigestChainSigner, MotoServer]]:
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    signer = DigestChainSigner(new_private_key(), bucket=BUCKET, sink=s3, trail_name=TRAIL)
    signer.run_hours(T0, 3)
    yield signer, aws_env


def _validate(monkeypatch: pytest.MonkeyPatch, proxy: FaultProxy) -> Any:
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    return CliRunner().invoke(validate_command, [
        "--trail-arn", ARN, "--s3-bucket", BUCKET,
        "--start-time", "2026-11-01T00:00:00Z", "--end-time", "2026-11-01T03:00:00Z",
    ])  # fmt: skip


def test_keys_from_list_public_keys_validate_the_chain(
    chain: tuple[DigestChainSigner, MotoServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    signer, moto = chain
    requests: list[dict[str, Any]] = []
    other = new_private_key().public_key()  # a second, unrelated key in the list
    answer = list_public_keys_answer([other, signer.private_key.public_key()], requests)
    with FaultProxy(moto.url, faults=NO_FAULTS, answers={"ListPublicKeys": answer}) as proxy:
        result = _validate(monkeypatch, proxy)
    assert result.exit_code == 0, result.output
    assert "3/3 digest files valid" in result.stdout and "6/6 log files valid" in result.stdout
    # One ranged call for the delivering region covered the whole chain (cached after).
    assert proxy.stats["answered:ListPublicKeys"] == 1
    assert {"StartTime", "EndTime"} <= set(requests[0])


def test_a_key_missing_from_list_public_keys_is_reported(
    chain: tuple[DigestChainSigner, MotoServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    _signer, moto = chain
    requests: list[dict[str, Any]] = []
    answer = list_public_keys_answer([new_private_key().public_key()], requests)
    with FaultProxy(moto.url, faults=NO_FAULTS, answers={"ListPublicKeys": answer}) as proxy:
        result = _validate(monkeypatch, proxy)
    assert result.exit_code == 1
    assert "INVALID: public key not found" in result.stderr
    # Not found in the ranged answer: asked once more for the currently active keys.
    assert proxy.stats["answered:ListPublicKeys"] == 2 and "StartTime" not in requests[1]
