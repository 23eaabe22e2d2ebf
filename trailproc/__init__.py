"""trailproc: process AWS CloudTrail log deliveries from SQS/S3, losslessly and fast.

The public API is what this module exports; everything else is private.

    import trailproc

    class Alerts(trailproc.EventProcessor):
        def process(self, events):
            for e in events:
                if e.event_name == "StopLogging":
                    print("trail stopped by", e.principal_arn)

    trailproc.run(Alerts(), queue_url="https://sqs.us-east-1.amazonaws.com/1234/trail")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__
from .config import Config, ConfigError, load_config
from .errors import (
    BadLogFile,
    BadMessage,
    CheckpointError,
    DecompressedTooLarge,
    DigestMismatch,
    FetchError,
    HandlerError,
    InternalError,
    MemoryContended,
    OverMemoryBudget,
    QuarantineError,
    Refused,
    SetupError,
    TrailprocError,
)
from .pipeline.events import Delivery, Event
from .pipeline.keys import FileRef, KeyInfo, ObjectKind, classify_key
from .pipeline.processor import EventProcessor, Handlers, ProgressInfo, ProgressState, Source

if TYPE_CHECKING:  # the runners pull in aioboto3; import them only when used
    from .app import RunResult, process_paths, run
    from .backfill import backfill
    from .pipeline.notifications import BadNotification, Notification, parse_notification


__all__ = [
    "BadLogFile",
    "BadMessage",
    "BadNotification",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DecompressedTooLarge",
    "Delivery",
    "DigestMismatch",
    "Event",
    "EventProcessor",
    "FetchError",
    "FileRef",
    "HandlerError",
    "Handlers",
    "InternalError",
    "KeyInfo",
    "MemoryContended",
    "Notification",
    "ObjectKind",
    "OverMemoryBudget",
    "ProgressInfo",
    "ProgressState",
    "QuarantineError",
    "Refused",
    "RunResult",
    "SetupError",
    "Source",
    "TrailprocError",
    "backfill",
    "classify_key",
    "load_config",
    "parse_notification",
    "process_paths",
    "run",
]


def __getattr__(name: str) -> Any:
    if name in ("run", "process_paths", "RunResult"):
        from . import app

        return getattr(app, name)
    if name in ("BadNotification", "Notification", "parse_notification"):
        # Only sources that read SQS/Lambda messages parse notifications: `process` and
        # plain `import trailproc` skip the module.
        from .pipeline import notifications

        return getattr(notifications, name)
    if name == "backfill":
        from .backfill import backfill

        return backfill
    raise AttributeError(f"module 'trailproc' has no attribute {name!r}")
