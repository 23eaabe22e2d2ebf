"""The AWS session trailproc builds: botocore's models, decoded faster, same data."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from botocore.loaders import create_loader

from trailproc._aws import aio_session, without_unused_parameters
from trailproc._sandbox import MotoServer


def _loader(session: Any) -> Any:  # the botocore session behind an aioboto3.Session
    return session._session.get_component("data_loader")


@pytest.mark.parametrize(
    ("service", "kind"),
    [
        ("s3", "service-2"),
        ("s3", "endpoint-rule-set-1"),
        ("sqs", "service-2"),
        ("dynamodb", "service-2"),
        ("cloudtrail", "service-2"),
    ],
)
def test_service_models_equal_botocore_defaults(service: str, kind: str) -> None:
    ours = _loader(aio_session()).load_service_model(service, kind)
    theirs = create_loader().load_service_model(service, kind)
    if kind.startswith("endpoint-rule-set"):
        # The one intended difference: parameters no rule reads are left out, so that
        # botocore's endpoint cache is keyed per bucket (tests/test_endpoint_rules.py
        # shows the endpoints resolve the same). Rules and everything else are equal.
        assert ours["rules"] == theirs["rules"]
        assert set(ours["parameters"]) <= set(theirs["parameters"])
        theirs = without_unused_parameters(theirs)
    assert ours == theirs
    # Same order too: botocore serialises members in model order.
    assert json.dumps(ours) == json.dumps(theirs)


def test_plain_data_files_equal_botocore_defaults() -> None:
    for name in ("endpoints", "partitions", "sdk-default-configuration"):
        assert _loader(aio_session()).load_data(name) == create_loader().load_data(name)


def test_aws_data_path_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A service model found only on AWS_DATA_PATH, as botocore documents for custom models.
    model_dir = tmp_path / "trailproc-test" / "2020-01-01"
    model_dir.mkdir(parents=True)
    model = {"metadata": {"apiVersion": "2020-01-01", "protocol": "json"}, "operations": {},
             "shapes": {}, "version": "2.0"}  # fmt: skip
    (model_dir / "service-2.json").write_text(json.dumps(model))
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path) + os.pathsep + str(tmp_path / "nowhere"))
    loaded = _loader(aio_session()).load_service_model("trailproc-test", "service-2")
    assert loaded == model


def test_clients_work_against_moto(aws_env: MotoServer) -> None:
    async def round_trip() -> list[str]:
        async with aio_session().client("sqs") as sqs:
            url = (await sqs.create_queue(QueueName="aws-session-test"))["QueueUrl"]
            await sqs.send_message(QueueUrl=url, MessageBody="hello")
            got = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
            return [m["Body"] for m in got["Messages"]]

    assert asyncio.run(round_trip()) == ["hello"]


@pytest.mark.parametrize(
    "value",
    [
        "Sat, 05 Dec 2026 10:00:00 GMT",
        "Thu, 01 Jan 1970 00:00:00 GMT",
        "Sat, 05 Dec 2026 10:00:00 +0000",
        "not a date GMT",
        "2026-12-05T10:00:00Z",
        "2026-12-05T10:00:00.123Z",
        "2026-12-05T10:00:00.123456Z",
        "2026-12-05T10:00:00+02:00",
        "2026-12-05",
        "1764928800",
        1764928800,
        1764928800.5,
    ],
)
def test_fast_timestamp_reads_what_botocore_reads(value: Any) -> None:
    from botocore.utils import parse_timestamp

    from trailproc._aws import fast_timestamp

    try:
        theirs = parse_timestamp(value)
    except ValueError:
        with pytest.raises(ValueError):
            fast_timestamp(value)
        return
    ours = fast_timestamp(value)
    assert ours == theirs and ours.utcoffset() == theirs.utcoffset()
    assert type(ours.tzinfo) is type(theirs.tzinfo)


def test_sessions_parse_timestamps_with_it() -> None:
    from trailproc._aws import fast_timestamp

    factory = aio_session()._session.get_component("response_parser_factory")
    assert factory._defaults["timestamp_parser"] is fast_timestamp
