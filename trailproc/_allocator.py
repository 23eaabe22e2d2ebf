"""C allocator settings for a command that works through files of several megabytes.

glibc's malloc serves a request above its mmap threshold (128 KiB to start with) with
a fresh `mmap`, and gives memory freed at the top of its heap back to the system once
more than the trim threshold is free there. Its thresholds adapt to what is freed, but
a decode pipeline keeps crossing them: every log file allocates its decompressed
document, the inflater's output slices and the joined output batches afresh, and with
several threads each thread's arena trims its own heap. Each new page is then faulted
in and zeroed by the kernel again, so a run spent about a third of its CPU time in page
faults (twice the page faults of a bare gunzip-and-split loop over the same files).

`reuse_freed_memory` fixes both thresholds so that freed blocks of up to
`MMAP_THRESHOLD` stay in the heap and are reused: the process keeps up to
`TRIM_THRESHOLD` of free memory instead of returning it at once. Larger blocks (a
document over 16 MiB) are still mapped and unmapped on their own. The threads share at
most `ARENA_MAX` arenas: a thread that finds its arena locked otherwise moves to a new
one, which happens often on a busy machine, and memory freed in one arena is never
reused by another (the page faults then doubled now and then). Only on glibc (where
these settings exist; elsewhere it does nothing), and only for commands that own their
process: a library must not change its host program's allocator.
"""

from __future__ import annotations

import os

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "reuse_freed_memory"]

MMAP_THRESHOLD = 16 << 20
TRIM_THRESHOLD = 32 << 20
# mallopt(3) parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Arenas the decode threads share (glibc's default allows 8 per core).
ARENA_MAX = 2


def _on_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (AttributeError, ValueError, OSError):  # not a glibc system
        return False


def reuse_freed_memory() -> bool:
    """Keep freed blocks of up to `MMAP_THRESHOLD` for reuse (see the module's notes).

    Returns whether the settings were applied. Settings are per process and inherited by
    forked children."""
    if not _on_glibc():
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # Both, in this order: setting either one turns off the adaptive rule for both.
    applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    # A thread that finds its arena locked moves to a new one; under load that happens
    # often, and memory freed in one arena is never reused by another.
    return applied and bool(mallopt(_M_ARENA_MAX, ARENA_MAX))
