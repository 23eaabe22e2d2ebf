"""The user-code contract (`EventProcessor`, `Source`, the dispatcher) lives in
`trailproc.pipeline.processor`; this name stays importable as the same module."""

import sys
from typing import TYPE_CHECKING

from .pipeline import processor

if TYPE_CHECKING:
    from .pipeline.processor import *  # noqa: F403

sys.modules[__name__] = processor
