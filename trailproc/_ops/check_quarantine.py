"""`trailproc check` probe for the `quarantine` setting: can trailproc write there?

Writes one probe object (its name does not end in `.json`, so `quarantine list` never
shows it), reads the listing, and removes the probe again.
"""

from __future__ import annotations

from typing import Any

from .._errors import error_code

__all__ = ["check_quarantine"]

PROBE = ".trailproc-check-probe"


def _why(exc: BaseException) -> str:
    code = error_code(exc)
    return f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"


def check_quarantine(checker: Any, location: str) -> None:
    """PutObject (or a fsynced file), listing and delete where records are quarantined."""
    from .._pipeline.quarantine import open_quarantine

    name = f"quarantine: write {location}"
    try:
        store = open_quarantine(location, lambda: checker.client("s3"))
    except ValueError as exc:
        checker.add(name, "fail", str(exc), "give a folder path or s3://bucket/prefix/")
        return
    s3 = location.startswith("s3://")
    try:
        store.put(PROBE, b"{}")
        store.names()
        store.remove(PROBE)
    except Exception as exc:
        fix = ("allow s3:PutObject, s3:ListBucket and s3:DeleteObject there (GetObject too "
               "for `quarantine replay`)" if s3 else
               "create the folder and let trailproc's user write to it")  # fmt: skip
        checker.add(name, "fail", _why(exc), fix)
        return
    checker.add(name, "pass", "write, list and delete allowed")
