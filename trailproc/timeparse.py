"""Reading times given by users and found in files: one parser for the whole tool."""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["parse_time", "parse_time_or_none", "to_utc"]

# Forms fromisoformat (before Python 3.11) does not read, seen in CloudTrail data and CLIs.
_FALLBACK_FORMATS = ("%Y%m%dT%H%M%S%z", "%Y%m%dT%H%M%z", "%Y-%m-%dT%H:%M:%S.%f%z")


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (`2026-11-01T00:00:00Z`, offsets, fractions, no seconds), `YYYY-MM-DD`,
    or compact `20261101T000000Z` → an aware UTC datetime. No offset means UTC, as in
    CloudTrail's folders and file names."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        for fmt in _FALLBACK_FORMATS:
            try:
                when = dt.datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
        else:
            raise ValueError(
                f"not an ISO 8601 time or YYYY-MM-DD date: {text!r} "
                "(e.g. 2026-11-01 or 2026-11-01T05:00:00Z)"
            ) from None
    return to_utc(when)


def parse_time_or_none(value: Any) -> dt.datetime | None:
    """`parse_time` for values read from files: None instead of an error."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def to_utc(value: dt.datetime | dt.date) -> dt.datetime:
    """A date (midnight) or a datetime (naive = UTC) as an aware UTC datetime."""
    if not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)
