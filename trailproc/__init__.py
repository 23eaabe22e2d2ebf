"""trailproc: process AWS CloudTrail log deliveries from SQS/S3, losslessly and fast.

The public API is what this module exports, with four more public modules:
`trailproc.aws_lambda` (the Lambda entrypoint), `trailproc.checkpoint` (stores, and the
base class for your own), `trailproc.integrity` (digest validation) and
`trailproc.testing` (a local trail on moto, sample records, a digest signer). Modules
whose names start with `_` are private and change without notice.

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

from . import _compat
from ._config import Config, ConfigError, load_config
from ._errors import (
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
from ._pipeline.events import Delivery, Event
from ._pipeline.keys import FileRef, KeyInfo, ObjectKind, classify_key
from ._pipeline.processor import (
    EventProcessor,
    Handlers,
    ProgressInfo,
    ProgressState,
    Source,
    silence_closed_stdout,
)
from ._version import __version__ as __version__

_compat.install()

# Tracebacks and reprs name the errors where users import them from.
for _error in (BadLogFile, BadMessage, CheckpointError, ConfigError, DecompressedTooLarge,
               DigestMismatch, FetchError, HandlerError, InternalError, MemoryContended,
               OverMemoryBudget, QuarantineError, Refused, SetupError, TrailprocError):  # fmt: skip
    _error.__module__ = __name__
del _error

if TYPE_CHECKING:  # the runners pull in aioboto3; import them only when used
    from ._app import RunResult, process_paths, run, run_async
    from ._backfill import backfill
    from ._observe import configure_logging, get_logger
    from ._pipeline.notifications import BadNotification, Notification, parse_notification


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
    "configure_logging",
    "get_logger",
    "load_config",
    "parse_notification",
    "process_paths",
    "run",
    "run_async",
    "silence_closed_stdout",
]


def __getattr__(name: str) -> Any:
    if name in ("run", "run_async", "process_paths", "RunResult"):
        from . import _app as app

        return getattr(app, name)
    if name in ("BadNotification", "Notification", "parse_notification"):
        # Only sources that read SQS/Lambda messages parse notifications: `process` and
        # plain `import trailproc` skip the module.
        from ._pipeline import notifications

        return getattr(notifications, name)
    if name in ("configure_logging", "get_logger"):
        from . import _observe

        return getattr(_observe, name)
    if name == "backfill":
        from ._backfill import backfill

        return backfill
    raise AttributeError(f"module 'trailproc' has no attribute {name!r}")
