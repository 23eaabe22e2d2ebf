"""A notified log file is handed over once, in batches, and its message deleted; the
same notification delivered again hands nothing over twice and is deleted too.

The whole core runs on in-memory ports (tests/memory_core.py): queue, objects, clock
and checkpoint store; no sleeps, no network."""

from __future__ import annotations

import pytest

from tests.memory_core import BUCKET, Core

pytestmark = pytest.mark.timeout(20)


def test_every_record_of_a_notified_file_is_handed_over_and_the_message_deleted() -> None:
    core = Core(settings={"max_events_per_emit": 40})
    key = core.put_log(100)
    message = core.notify(key)
    core.run()
    assert len(core.user.event_ids) == 100 == len(set(core.user.event_ids))
    assert core.user.batches == 3  # 40 + 40 + 20
    assert core.deleted() == [message["ReceiptHandle"]]
    assert core.objects.made("read") == [(BUCKET, key)]
    assert core.user.errors == []


def test_a_redelivered_notification_hands_nothing_over_twice() -> None:
    core = Core()
    key = core.put_log(30)
    first = core.notify(key)
    core.run()
    again = core.notify(key)  # SQS delivers at least once
    core.run()
    assert len(core.user.event_ids) == 30 == len(set(core.user.event_ids))
    assert core.deleted() == [first["ReceiptHandle"], again["ReceiptHandle"]]
    assert core.metrics.value("trailproc_files_total", kind="log", outcome="already_done") == 1
