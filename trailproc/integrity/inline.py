"""Moved to `trailproc.pipeline.digests` (the pipeline runs the inline digest checks);
this name stays importable."""

import sys
from typing import TYPE_CHECKING

from ..pipeline import digests

if TYPE_CHECKING:
    from ..pipeline.digests import *  # noqa: F403

sys.modules[__name__] = digests
