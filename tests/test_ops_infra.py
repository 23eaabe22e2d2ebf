"""samples/infra: the CloudFormation template and the Terraform module.

Linted with cfn-lint and `terraform validate` where those are available; a structural
test that needs neither always runs, and checks that both create the same pieces and
grant the worker exactly the actions docs/iam.md documents.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "samples" / "infra"
CFN = INFRA / "cloudformation.yaml"
TF = INFRA / "terraform"

DAEMON_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "s3:GetObject",
}
# PutItem and DeleteItem: the pending digest hashes of verify_digests.
CHECKPOINT_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:UpdateItem",
    "dynamodb:DescribeTable",
    "dynamodb:PutItem",
    "dynamodb:DeleteItem",
}


def _load_cfn() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")

    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader: Any, suffix: str, node: Any) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {f"!{suffix}": value}

    Loader.add_multi_constructor("!", any_tag)
    return dict(yaml.load(CFN.read_text(encoding="utf-8"), Loader=Loader))


def _actions(statements: list[Any]) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            action = node.get("Action")
            if isinstance(action, str):
                found.add(action)
            elif isinstance(action, list):
                found.update(a for a in action if isinstance(a, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(statements)
    return found


def test_cloudformation_creates_every_piece() -> None:
    template = _load_cfn()
    types = {r["Type"] for r in template["Resources"].values()}
    assert {
        "AWS::CloudTrail::Trail",
        "AWS::S3::Bucket",
        "AWS::S3::BucketPolicy",
        "AWS::SNS::Topic",
        "AWS::SNS::TopicPolicy",
        "AWS::SQS::Queue",
        "AWS::SQS::QueuePolicy",
        "AWS::SNS::Subscription",
        "AWS::IAM::Role",
    } <= types
    resources = template["Resources"]
    queue = resources["NotificationQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"!GetAtt": "DeadLetterQueue.Arn"}
    trail = resources["Trail"]
    assert trail["Properties"]["SnsTopicName"] and trail["Properties"]["IsLogging"] is True
    assert set(trail["DependsOn"]) == {"TrailBucketPolicy", "NotificationTopicPolicy"}
    subscription = resources["NotificationSubscription"]["Properties"]
    assert subscription["Protocol"] == "sqs"
    worker = resources["WorkerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    assert _actions(worker) == DAEMON_ACTIONS | CHECKPOINT_ACTIONS


@pytest.mark.parametrize(
    "template", [CFN, REPO / "samples" / "lambda" / "template.yaml"], ids=["infra", "lambda-sam"]
)
def test_cloudformation_passes_cfn_lint(template: Path) -> None:
    from cfnlint import api  # in the test extra: never skipped

    matches = api.lint_file(template)
    assert not matches, "\n".join(str(m) for m in matches)


_RESOURCE = re.compile(r'^resource\s+"([a-z0-9_]+)"\s+"([a-z0-9_]+)"', re.M)


def _tf_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(TF.glob("*.tf")))


def test_terraform_creates_every_piece() -> None:
    text = _tf_text()
    resources = set(_RESOURCE.findall(text))
    types = {t for t, _n in resources}
    assert {
        "aws_cloudtrail",
        "aws_s3_bucket",
        "aws_s3_bucket_policy",
        "aws_sns_topic",
        "aws_sns_topic_policy",
        "aws_sqs_queue",
        "aws_sqs_queue_policy",
        "aws_sns_topic_subscription",
        "aws_iam_role",
        "aws_iam_role_policy",
    } <= types
    assert {("aws_sqs_queue", "deliveries"), ("aws_sqs_queue", "dead_letter")} <= resources
    assert "deadLetterTargetArn = aws_sqs_queue.dead_letter.arn" in text
    assert re.search(r"sns_topic_name\s*=\s*aws_sns_topic\.deliveries\.name", text)
    # Balanced braces: a cheap syntax check that needs no parser.
    assert text.count("{") == text.count("}")
    worker = text[text.index('data "aws_iam_policy_document" "worker"') :]
    worker = worker[: worker.index('resource "aws_iam_role" "worker"')]
    actions = set(re.findall(r'"((?:sqs|s3|dynamodb):[A-Za-z]+)"', worker))
    assert actions == DAEMON_ACTIONS | CHECKPOINT_ACTIONS


def test_terraform_parses() -> None:
    import hcl2  # in the test extra: never skipped

    for path in sorted(TF.glob("*.tf")):
        with path.open(encoding="utf-8") as handle:
            parsed = hcl2.load(handle)
        assert parsed, path.name


def test_terraform_validate(tmp_path: Path) -> None:
    # `terraform init` downloads the AWS provider unless a local plugin directory is
    # given; tests never use the network, so this runs only with TRAILPROC_TF_PLUGIN_DIR.
    terraform = shutil.which("terraform")
    plugin_dir = os.environ.get("TRAILPROC_TF_PLUGIN_DIR")
    if not terraform or not plugin_dir:
        pytest.skip("terraform validate needs terraform and TRAILPROC_TF_PLUGIN_DIR")
    work = tmp_path / "tf"
    shutil.copytree(TF, work)
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    subprocess.run([terraform, "init", "-backend=false", "-input=false",
                    f"-plugin-dir={plugin_dir}"], cwd=work, env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    result = subprocess.run([terraform, "validate", "-no-color"], cwd=work, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_iam_doc_lists_the_same_daemon_actions() -> None:
    text = (REPO / "docs" / "iam.md").read_text(encoding="utf-8")
    daemon = text[text.index("## The daemon") : text.index("### Add when")]
    assert set(re.findall(r'"((?:sqs|s3):[A-Za-z]+)"', daemon)) == DAEMON_ACTIONS
