"""With verify_digests, a processed log file meets its digest's entry: a match is
counted; a mismatch is reported (on_error, with both hashes) but withholds nothing, and
the digest never reaches user code. Digest checks are set up from the config alone.

The core runs on in-memory ports (tests/memory_core.py); no sleeps, no network."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json

import pytest

from tests.memory_core import BUCKET, Core
from trailproc._errors import DigestMismatch
from trailproc._pipeline.digests import PendingDigestChecks

pytestmark = pytest.mark.timeout(20)

DIGEST_KEY = (
    "AWSLogs/123456789012/CloudTrail-Digest/us-east-1/2026/11/01/"
    "123456789012_CloudTrail-Digest_us-east-1_trail_us-east-1_20261101T010000Z.json.gz"
)


def put_digest(core: Core, key: str, sha256: str) -> None:
    document = {
        "digestS3Bucket": BUCKET,
        "digestS3Object": DIGEST_KEY,
        "logFiles": [{"s3Bucket": BUCKET, "s3Object": key, "hashValue": sha256}],
    }
    core.objects.put(BUCKET, DIGEST_KEY, gzip.compress(json.dumps(document).encode()))


def processed_sha256(core: Core, key: str) -> str:
    return hashlib.sha256(gzip.decompress(core.objects.objects[(BUCKET, key)].data)).hexdigest()


@pytest.mark.parametrize("digest_first", [False, True])
def test_a_log_file_matching_its_digest_is_counted_either_order(digest_first: bool) -> None:
    core = Core(settings={"verify_digests": True})
    key = core.put_log(20)
    put_digest(core, key, processed_sha256(core, key))
    for what in [DIGEST_KEY, key] if digest_first else [key, DIGEST_KEY]:
        core.notify(what)
        core.run()
    assert core.metrics.value("trailproc_digest_checks_total", outcome="match") == 1
    assert len(core.user.event_ids) == 20  # the digest's own records never reach the user
    assert core.user.errors == []
    assert len(core.deleted()) == 2


def test_a_mismatch_is_reported_and_withholds_nothing() -> None:
    core = Core(settings={"verify_digests": True})
    key = core.put_log(20)
    put_digest(core, key, "0" * 64)
    core.notify(key)
    core.notify(DIGEST_KEY)
    core.run()
    [error] = core.user.errors
    assert isinstance(error, DigestMismatch)
    assert (error.expected, error.actual) == ("0" * 64, processed_sha256(core, key))
    assert len(core.user.event_ids) == 20 and len(core.deleted()) == 2


@pytest.mark.parametrize("verify", [True, False])
def test_a_log_file_hash_waits_for_its_digest_only_with_verify_digests(verify: bool) -> None:
    core = Core(settings={"verify_digests": verify})
    key = core.put_log(5)
    core.notify(key)
    core.run()
    waiting = asyncio.run(core.store.recall(PendingDigestChecks.key(BUCKET, key)))
    assert (waiting is not None) == verify
