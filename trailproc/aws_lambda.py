"""AWS Lambda entry points: the same processors and handlers, as a Lambda function.

Either point the function's handler setting at the ready one and name your code in an
environment variable::

    Handler:           trailproc.aws_lambda.handler
    TRAILPROC_HANDLER: myapp.handlers:handlers        (module:attr, loaded once per sandbox)

or build one in your own module::

    from trailproc.aws_lambda import make_handler
    handler = make_handler(handlers, checkpoint="dynamodb://trailproc-checkpoints")

Every ``TRAILPROC_*`` configuration variable applies (``TRAILPROC_CHECKPOINT``,
``TRAILPROC_MAX_EVENTS_PER_EMIT``, ``TRAILPROC_ALLOWED_BUCKETS``...), and so do
``TRAILPROC_LAMBDA_SAFETY_MARGIN``, ``TRAILPROC_LAMBDA_ABORT_MARGIN`` (seconds) and
``TRAILPROC_LAMBDA_FIFO_MODE`` (``batch`` or ``group``), whichever way the handler is
built (arguments given to `make_handler` win). The trigger is recognised from the event:
SQS, SNS, S3, EventBridge, a CloudWatch Logs subscription (``{"awslogs": ...}``), Kinesis
Data Streams and Firehose data transformation. What each gets back is described in
`trailproc._roads.lambda_`; records that CloudWatch Logs payloads carry are refused
unless ``TRAILPROC_ACCEPT_RECORDS_IN_MESSAGES=true`` (see docs/security.md).

Importing this module is cheap: the pipeline, boto and the user's code are loaded on the
first invocation, and kept for the warm ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._config import Config
    from ._pipeline.processor import EventProcessor
    from ._roads.lambda_ import LambdaRuntime

__all__ = ["handler", "make_handler", "reset_handler"]

HANDLER_ENV = "TRAILPROC_HANDLER"

LambdaHandler = Callable[[Any, Any], Any]


def make_handler(
    processor_or_handlers: EventProcessor
    | Sequence[EventProcessor]
    | Callable[..., Any]
    | str
    | None = None,
    *,
    config: Config | None = None,
    safety_margin: float | None = None,
    abort_margin: float | None = None,
    fifo_mode: str | None = None,
    concurrency: int | None = None,
    configure_logs: bool = True,
    **overrides: Any,
) -> LambdaRuntime:
    """A Lambda handler, ``handler(event, context)``, running `processor_or_handlers`.

    `processor_or_handlers`: an EventProcessor (a `Handlers` registry is one), several,
    a plain function taking one event, or a ``module:attr`` spec; None uses the
    configured handlers/output only. `overrides` are configuration keys, e.g.
    ``checkpoint="dynamodb://TABLE"`` (the default store here is ``memory``).
    `safety_margin`/`abort_margin` (seconds), `fifo_mode` and `concurrency`: see
    `trailproc._roads.lambda_.LambdaOptions`; the first three default to
    ``TRAILPROC_LAMBDA_SAFETY_MARGIN``, ``TRAILPROC_LAMBDA_ABORT_MARGIN`` and
    ``TRAILPROC_LAMBDA_FIFO_MODE`` when not given. With `configure_logs`, structlog writes
    one JSON object per line (unless ``log_format`` says otherwise), with the request id.
    """
    from ._app import build_processor
    from ._config import load_config, warn_unknown_env
    from ._observe import configure_logging
    from ._pipeline.processor import EventProcessor, FunctionProcessor
    from ._roads.lambda_ import LambdaOptions, LambdaRuntime

    config = config.replace(**overrides) if config else load_config(**overrides)
    if configure_logs:
        configure_logging(config.log_level, config.log_format)
    warn_unknown_env()
    user: Any = processor_or_handlers
    if isinstance(user, str):
        config = config.replace(handlers=[*config.handlers, user])
        user = None
    elif isinstance(user, type) and issubclass(user, EventProcessor):
        user = user()
    elif callable(user) and not isinstance(user, (EventProcessor, type)):
        user = FunctionProcessor(user)
    if safety_margin is None:
        safety_margin = _float_env("TRAILPROC_LAMBDA_SAFETY_MARGIN")
    if abort_margin is None:
        abort_margin = _float_env("TRAILPROC_LAMBDA_ABORT_MARGIN")
    if fifo_mode is None:
        fifo_mode = os.environ.get("TRAILPROC_LAMBDA_FIFO_MODE", "").strip() or "batch"
    options = LambdaOptions(
        safety_margin=safety_margin,
        abort_margin=abort_margin,
        fifo_mode=fifo_mode,  # type: ignore[arg-type]  # validated by LambdaOptions
        concurrency=concurrency,
    )
    return LambdaRuntime(build_processor(config, user), config, options)


def _float_env(name: str) -> float | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number of seconds") from None


_runtime: LambdaRuntime | None = None


def _cold_start() -> LambdaRuntime:
    spec = os.environ.get(HANDLER_ENV, "").strip() or None
    if spec is None and not (
        os.environ.get("TRAILPROC_HANDLERS") or os.environ.get("TRAILPROC_OUTPUT")
    ):
        raise RuntimeError(
            f"set {HANDLER_ENV}=module:attr to the processor or Handlers registry to run "
            "(or TRAILPROC_HANDLERS / TRAILPROC_OUTPUT)"
        )
    return make_handler(spec)  # the TRAILPROC_LAMBDA_* settings are read there


def handler(event: Any, context: Any) -> Any:
    """The ready Lambda handler: runs the processor named by ``TRAILPROC_HANDLER``."""
    global _runtime
    if _runtime is None:
        _runtime = _cold_start()
    return _runtime(event, context)


def reset_handler() -> None:
    """Forget the ready handler's warm state (closing it), as a new sandbox would."""
    global _runtime
    runtime, _runtime = _runtime, None
    if runtime is not None:
        runtime.close()
