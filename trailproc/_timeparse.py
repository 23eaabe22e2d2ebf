"""Reading times given by users and found in files: one parser for the whole tool."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

__all__ = ["parse_time", "parse_time_or_ago", "parse_time_or_none", "to_utc"]

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


_AGO_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGO = re.compile(r"(\d{1,9})([smhdw])")


def parse_time_or_ago(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """`parse_time`, or an age before `now` (default: the current time): `90s`, `30m`,
    `24h`, `7d`, `2w`. An age is measured back from `now`, so `24h` is a day ago."""
    match = _AGO.fullmatch(text.strip().lower())
    if match is None:
        try:
            return parse_time(text)
        except ValueError:
            raise ValueError(
                f"not a time or an age: {text!r} (e.g. 2026-11-01, "
                "2026-11-01T05:00:00Z, or 24h / 30m / 7d for that long ago)"
            ) from None
    seconds = int(match.group(1)) * _AGO_UNITS[match.group(2)]
    base = to_utc(now) if now is not None else dt.datetime.now(dt.timezone.utc)
    try:
        return base - dt.timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"age {text!r} reaches back before year 1") from None
