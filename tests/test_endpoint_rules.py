"""Endpoint rulesets loaded without the parameters no rule reads: S3's `Key`, `Prefix`
and `CopySource`, which made botocore's endpoint cache miss on every object key. The
pruned ruleset must resolve exactly what the full one does."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from botocore.endpoint_provider import EndpointProvider
from botocore.loaders import create_loader

from trailproc._aws import _fast_model_loader, without_unused_parameters


def stock(service: str) -> tuple[dict[str, Any], dict[str, Any]]:
    loader = create_loader()
    version = loader.determine_latest_version(service, "endpoint-rule-set-1")
    rules = loader.load_service_model(service, "endpoint-rule-set-1", version)
    return rules, loader.load_data("partitions")


def test_s3_loses_only_the_parameters_no_rule_reads() -> None:
    rules, _ = stock("s3")
    pruned = _fast_model_loader(None).load_service_model("s3", "endpoint-rule-set-1")
    assert set(rules["parameters"]) - set(pruned["parameters"]) == {
        "Key", "Prefix", "CopySource"}  # fmt: skip
    assert pruned["rules"] == rules["rules"]


@pytest.mark.parametrize("service", ["sqs", "dynamodb", "sts", "sns"])
def test_other_services_keep_every_parameter(service: str) -> None:
    rules, _ = stock(service)
    assert without_unused_parameters(rules)["parameters"] == rules["parameters"]


def test_pruned_s3_rules_resolve_what_the_full_rules_resolve() -> None:
    rules, partitions = stock("s3")
    full = EndpointProvider(rules, partitions)
    pruned = EndpointProvider(without_unused_parameters(rules), partitions)
    buckets = ["trail-bucket", "my.dotted.bucket", "arn:aws:s3:us-east-1:123456789012:"
               "accesspoint/logs", "Not_DNS_Compatible"]  # fmt: skip
    regions = ["us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1"]
    flags = [{}, {"UseFIPS": True}, {"UseDualStack": True}, {"ForcePathStyle": True},
             {"Accelerate": True}, {"Endpoint": "http://127.0.0.1:5000"}]  # fmt: skip
    compared = 0
    for bucket, region, extra in itertools.product(buckets, regions, flags):
        params = {"Bucket": bucket, "Region": region, **extra}
        try:
            expected: Any = full.resolve_endpoint(**params, Key="AWSLogs/x.json.gz")
        except Exception as exc:  # an invalid combination must fail the same way
            expected = type(exc).__name__
        try:
            got: Any = pruned.resolve_endpoint(**params)
        except Exception as exc:
            got = type(exc).__name__
        assert got == expected, params
        compared += 1
    assert compared == 96
