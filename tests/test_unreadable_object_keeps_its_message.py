"""An object that cannot be read (gone, archived, too large, connection cut) fails its
file with one error naming the message id, bucket and key; the message is kept (hidden
for a backoff), never deleted, and nothing is handed over.

The core runs on in-memory ports (tests/memory_core.py); no sleeps, no network."""

from __future__ import annotations

import pytest

from tests.memory_core import BUCKET, Core
from trailproc._errors import DecompressedTooLarge, FetchError

pytestmark = pytest.mark.timeout(20)


def kept(core: Core, message: dict[str, str]) -> None:
    assert core.deleted() == []
    assert core.hidden_for()[message["ReceiptHandle"]] > 0  # back after a backoff
    assert core.user.event_ids == []


def test_a_missing_object_is_reported_with_its_message_bucket_and_key() -> None:
    core = Core()
    message = core.notify("AWSLogs/123456789012/CloudTrail/us-east-1/2026/11/01/gone.json.gz")
    core.run()
    kept(core, message)
    [error] = core.user.errors
    assert isinstance(error, FetchError) and error.code == "NoSuchKey"
    assert (error.message_id, error.bucket) == (message["MessageId"], BUCKET)
    assert error.key is not None and error.key.endswith("gone.json.gz")


def test_an_archived_object_names_its_storage_class() -> None:
    core = Core()
    key = core.put_log(5)
    core.objects.objects[(BUCKET, key)].storage_class = "DEEP_ARCHIVE"
    message = core.notify(key)
    core.run()
    kept(core, message)
    [error] = core.user.errors
    assert "DEEP_ARCHIVE" in error.message and "restore" in error.message


def test_an_object_over_the_size_cap_is_refused_before_its_body_is_read() -> None:
    core = Core(settings={"max_decompressed_bytes": 1024})
    key = core.put_log(50)  # about 10 KB compressed
    message = core.notify(key)
    core.run()
    kept(core, message)
    [error] = core.user.errors
    assert isinstance(error, DecompressedTooLarge)
    assert core.objects.made("open") and core.objects.made("read") == []


def test_a_connection_cut_during_the_body_is_a_transient_failure_kept_for_retry() -> None:
    core = Core()
    key = core.put_log(5)
    core.objects.faults["read"] = [ConnectionResetError("reset by peer")]
    message = core.notify(key)
    core.run()
    kept(core, message)
    [error] = core.user.errors
    assert isinstance(error, FetchError) and error.code == "connection"
