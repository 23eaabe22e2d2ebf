"""Record filters from the configuration: `--event-name 'Delete*'` and friends.

A `RecordFilter` looks only at a record's header fields (event source and name, account,
region, error code, event time), which `Event` decodes together in one msgspec call that
skips the rest of the record: filtering never decodes whole records.

Semantics, the same wherever records are read (`run`, `process`, `backfill`, Lambda):

- within one criterion the patterns are alternatives (`--event-name 'Delete*'
  --event-name 'Put*'`); different criteria must all hold;
- patterns are shell-style globs (`*`, `?`, `[abc]`) matched case-sensitively against
  the whole value, exactly like the `Handlers` registry's `event_name=` filters; a value
  without glob characters is an exact match;
- a record without the field (or with a non-string value) does not match that
  criterion; with `since`/`until`, a record whose `eventTime` is missing or unreadable
  is left out;
- `account_ids` match `recipientAccountId`, or the account in the log file's key when
  the record has none; `regions` match `awsRegion`;
- `since` is inclusive, `until` exclusive.

The configured filter runs first and the processor's `filter_event` after it: a record
reaches user code only if both keep it. Records left out are counted in
`trailproc_records_filtered_total` and in the run summary.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MethodType
from typing import TYPE_CHECKING, Any

from .._timeparse import parse_time_or_ago
from .events import Event
from .processor import EventProcessor

if TYPE_CHECKING:
    from .._config import Config

__all__ = ["RecordFilter", "keep_both"]

Check = Callable[[Event], bool]


def _pattern(globs: Sequence[str]) -> Callable[[str], Any]:
    """One compiled regex for all globs (fnmatch's own translation: case-sensitive)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs)).match


def _matches(field: Callable[[Event], Any], globs: Sequence[str]) -> Check:
    match = _pattern(globs)

    def check(event: Event) -> bool:
        value = field(event)
        return isinstance(value, str) and match(value) is not None

    return check


# Header fields read straight from the decoded header (`Event._h`, one msgspec call per
# record, cached): a filter runs once per record, so every call saved counts.
def _event_name(event: Event) -> Any:
    return event._h.eventName


def _event_source(event: Event) -> Any:
    return event._h.eventSource


def _aws_region(event: Event) -> Any:
    return event._h.awsRegion


def _error_code(event: Event) -> Any:
    return event._h.errorCode


def _account_of(event: Event) -> Any:
    return event.recipient_account_id or event.delivery.account_id


def _second_text(when: dt.datetime) -> str:
    """`when` rounded up to a whole second, as CloudTrail writes `eventTime`."""
    if when.microsecond:
        when = when.replace(microsecond=0) + dt.timedelta(seconds=1)
    return f"{when.year:04d}-{when:%m-%dT%H:%M:%S}Z"


# `2026-11-01T05:00:00Z`, the form CloudTrail writes: such texts sort like the times
# they name, so they are compared as text; only those in range are parsed (to leave out
# impossible dates such as month 13, as unreadable times are).
_plain_time = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").fullmatch


@dataclass(frozen=True)
class RecordFilter:
    """Which records to hand over, judged on header fields only. Empty: keep all."""

    event_sources: tuple[str, ...] = ()
    event_names: tuple[str, ...] = ()
    account_ids: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    error_codes: tuple[str, ...] = ()
    errors_only: bool = False
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    _test: Check | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("event_sources", "event_names", "account_ids", "regions", "error_codes"):
            if any(not p.strip() for p in getattr(self, name)):
                raise ValueError(f"{name} has an empty pattern")
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"since ({self.since.isoformat()}) is not before until "
                             f"({self.until.isoformat()})")  # fmt: skip
        object.__setattr__(self, "_test", _all_of(self._build_checks()))

    @classmethod
    def from_config(cls, config: Config, *, now: dt.datetime | None = None) -> RecordFilter:
        """The filter the `filter_*` settings describe; ages (`24h`) count back from `now`
        (default: the current time)."""
        now = now or dt.datetime.now(dt.timezone.utc)
        return cls(
            event_sources=tuple(config.filter_event_sources),
            event_names=tuple(config.filter_event_names),
            account_ids=tuple(config.filter_account_ids),
            regions=tuple(config.filter_regions),
            error_codes=tuple(config.filter_error_codes),
            errors_only=config.filter_errors_only,
            since=parse_time_or_ago(config.filter_since, now=now) if config.filter_since else None,
            until=parse_time_or_ago(config.filter_until, now=now) if config.filter_until else None,
        )

    def _build_checks(self) -> list[Check]:
        # Cheapest and most selective first: most records fail on their name or source.
        checks: list[Check] = []
        if self.event_names:
            checks.append(_matches(_event_name, self.event_names))
        if self.event_sources:
            checks.append(_matches(_event_source, self.event_sources))
        if self.account_ids:
            checks.append(_matches(_account_of, self.account_ids))
        if self.regions:
            checks.append(_matches(_aws_region, self.regions))
        if self.error_codes:
            checks.append(_matches(_error_code, self.error_codes))
        elif self.errors_only:
            checks.append(lambda e: isinstance(e._h.errorCode, str) and bool(e._h.errorCode))
        if self.since or self.until:
            checks.append(self._time_check())
        return checks

    def _time_check(self) -> Check:
        since, until = self.since, self.until
        # For whole-second times, t >= since and t < until hold exactly when they hold
        # against since and until rounded up to a whole second.
        low = _second_text(since) if since else ""
        high = _second_text(until) if until else "~"  # "~" sorts after every digit

        def in_range(event: Event) -> bool:
            text = event._h.eventTime
            if isinstance(text, str) and _plain_time(text):
                return low <= text < high and event.event_time is not None
            when = event.event_time
            if when is None:
                return False
            return (since is None or when >= since) and (until is None or when < until)

        return in_range

    @property
    def active(self) -> bool:
        """True if any criterion is set (else every record passes)."""
        return self._test is not None

    @property
    def test(self) -> Check | None:
        """The filter as one function of an event (None when inactive)."""
        return self._test

    def __call__(self, event: Event) -> bool:
        return self._test is None or self._test(event)

    def describe(self) -> dict[str, Any]:
        """The criteria that are set, for a log line."""
        out: dict[str, Any] = {}
        for name in ("event_sources", "event_names", "account_ids", "regions", "error_codes"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        if self.errors_only and not self.error_codes:
            out["errors_only"] = True
        for name in ("since", "until"):
            when = getattr(self, name)
            if when is not None:
                out[name] = when.isoformat()
        return out


def _all_of(checks: Sequence[Check]) -> Check | None:
    """One function requiring every check, in order (no loop per record)."""
    if not checks:
        return None
    first, rest = checks[0], _all_of(checks[1:])
    if rest is None:
        return first
    return lambda event: first(event) and rest(event)


def keep_both(configured: RecordFilter | None, processor: EventProcessor) -> Check | None:
    """The per-record filter of a pipeline: the configured one and the processor's
    `filter_event`, both required (None: keep everything). The configured filter runs
    first, so it spares `filter_event` (which may decode whole records) what it drops."""
    own: Check | None = processor.filter_event
    if isinstance(own, MethodType) and own.__func__ is EventProcessor.filter_event:
        own = None  # the base class keeps everything
    first = configured.test if configured is not None else None
    if first is None or own is None:
        return first or own
    second = own
    return lambda event: first(event) and second(event)
