"""Old names keep working for one minor version, each with a DeprecationWarning naming
the new one."""

from __future__ import annotations

import warnings

import pytest

from trailproc import EventProcessor
from trailproc._pipeline.notifications import parse_notification
from trailproc._pipeline.processor import Dispatcher


def test_a_processor_declaring_inline_is_called_directly_and_warned_about() -> None:
    with pytest.warns(DeprecationWarning, match="never_blocks"):

        class Old(EventProcessor):
            inline = True

            def process(self, events: list[object]) -> None:
                pass

    assert Old().never_blocks is True
    assert Dispatcher._mode(Old(), in_thread=True) == "direct"


def test_reading_or_setting_inline_warns_and_maps_to_never_blocks() -> None:
    class Plain(EventProcessor):
        def process(self, events: list[object]) -> None:
            pass

    processor = Plain()
    with pytest.warns(DeprecationWarning, match="never_blocks"):
        assert processor.inline is False
    with pytest.warns(DeprecationWarning, match="never_blocks"):
        processor.inline = True
    assert processor.never_blocks is True
    assert Dispatcher._mode(processor, in_thread=True) == "direct"


def test_never_blocks_raises_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class New(EventProcessor):
            never_blocks = True

            def process(self, events: list[object]) -> None:
                pass

        assert Dispatcher._mode(New(), in_thread=True) == "direct"


def test_notification_inline_records_is_the_deprecated_name_of_carried_records() -> None:
    body = (
        '{"version":"0","id":"1","detail-type":"AWS API Call via CloudTrail",'
        '"source":"aws.s3","account":"111122223333","time":"2024-01-01T00:00:00Z",'
        '"region":"us-east-1","resources":[],"detail":{"eventVersion":"1.09",'
        '"eventID":"e1","eventName":"GetObject","eventSource":"s3.amazonaws.com",'
        '"eventTime":"2024-01-01T00:00:00Z","awsRegion":"us-east-1",'
        '"recipientAccountId":"111122223333"}}'
    )
    note = parse_notification(body)
    assert len(note.carried_records) == 1
    with pytest.warns(DeprecationWarning, match="carried_records"):
        assert note.inline_records == note.carried_records
