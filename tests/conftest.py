"""Shared fixtures: one moto server per test session, on 127.0.0.1, reset per test.

Everything under test talks to it over real HTTP through AWS_ENDPOINT_URL; nothing in
the SDK is patched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from trailproc._sandbox import MotoServer, TrailSandbox

REPO = Path(__file__).resolve().parent.parent
# CI checks the project out with shared/ beside it; a developer checkout has it one up too.
SHARED = Path(os.environ.get("TRAILPROC_SHARED_DIR", REPO.parent / "shared"))
CORPUS = SHARED / "corpus" / "real"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Code under test configures structlog for the stream of the moment (capsys,
    CliRunner); put the previous configuration back so later tests do not log into a
    closed stream."""
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    yield
    if was_configured:
        structlog.configure(**saved)
    else:  # keep "never configured": some commands act on that (validate's --json)
        structlog.reset_defaults()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


# Requests moto serves before it enforces IAM: two users made with `helpers.iam_user`
# (user, access key, policy each; moto counts the three calls per user).
IAM_SETUP_REQUESTS = 6


@pytest.fixture
def enforcing() -> Iterator[MotoServer]:
    """A moto server of its own that checks IAM policies after IAM_SETUP_REQUESTS."""
    server = MotoServer().start(authorize_after=IAM_SETUP_REQUESTS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MotoServer:
    """A clean moto and the environment variables a user would set to reach it."""
    moto.reset()
    for name, value in moto.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("TRAILPROC_STATE_DIR", str(tmp_path / "state"))
    return moto


@pytest.fixture
def sandbox(aws_env: MotoServer) -> TrailSandbox:
    """Trail bucket + SNS topic + SQS queue (with DLQ), subscribed as CloudTrail users do."""
    return TrailSandbox(aws_env.url).create()


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        # A clone alone never has the corpus; the README says how to run these tests.
        pytest.skip(f"shared corpus not found at {CORPUS}: put shared/ beside the checkout "
                    "or set TRAILPROC_SHARED_DIR")  # fmt: skip
    return CORPUS


@pytest.fixture
def runtime_factory() -> Iterator[Any]:
    """`make(processor, **options)`: a Lambda runtime (memory checkpoints unless told
    otherwise), closed after the test."""
    from trailproc.aws_lambda import make_handler

    made: list[Any] = []

    def make(processor: Any, **options: Any) -> Any:
        options.setdefault("checkpoint", "memory")
        runtime = make_handler(processor, **options)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        runtime.close()
