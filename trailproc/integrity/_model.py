"""Result types of digest-chain validation (plain data, JSON-friendly)."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FileKind",
    "FileResult",
    "Gap",
    "MissingTail",
    "Status",
    "ValidationReport",
    "format_time",
]


def format_time(when: dt.datetime | None) -> str | None:
    """UTC timestamp as CloudTrail writes it (`2026-11-01T00:00:00Z`)."""
    if when is None:
        return None
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Status(str, enum.Enum):
    """Outcome for one digest or log file."""

    VALID = "valid"
    HASH_MISMATCH = "hash_mismatch"
    NOT_FOUND = "not_found"
    INVALID_FORMAT = "invalid_format"
    SIGNATURE_FAILED = "signature_failed"
    MOVED = "moved"
    PUBLIC_KEY_NOT_FOUND = "public_key_not_found"
    ERROR = "error"  # could not be read for another reason (access denied, throttling, ...)


_MESSAGES = {
    Status.VALID: "valid",
    Status.HASH_MISMATCH: "INVALID: hash value doesn't match",
    Status.NOT_FOUND: "INVALID: not found",
    Status.INVALID_FORMAT: "INVALID: invalid format",
    Status.SIGNATURE_FAILED: "INVALID: signature verification failed",
    Status.MOVED: "INVALID: has been moved from its original location",
    Status.PUBLIC_KEY_NOT_FOUND: "INVALID: public key not found",
    Status.ERROR: "ERROR: unable to read",
}


class FileKind(str, enum.Enum):
    DIGEST = "digest"
    LOG = "log"


@dataclass
class FileResult:
    """The verdict on one digest or log file, named by its S3 location."""

    kind: FileKind
    bucket: str
    key: str
    status: Status
    detail: str | None = None  # overrides the standard message (e.g. an unreadable key)
    region: str | None = None
    digest_key: str | None = None  # log files: the digest that listed them
    start_time: str | None = None  # digests: digestStartTime / digestEndTime as written
    end_time: str | None = None
    inferred: bool = False  # a missing digest whose key was inferred from the hourly cadence

    @property
    def ok(self) -> bool:
        return self.status is Status.VALID

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def message(self) -> str:
        """The `aws cloudtrail validate-logs` wording for this outcome."""
        return self.detail or _MESSAGES[self.status]

    @property
    def label(self) -> str:
        return "Digest file" if self.kind is FileKind.DIGEST else "Log file"

    def line(self) -> str:
        """`Digest file<TAB>s3://bucket/key<TAB>INVALID: ...`."""
        return f"{self.label}\t{self.uri}\t{self.message}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind.value,
            "bucket": self.bucket,
            "key": self.key,
            "uri": self.uri,
            "status": self.status.value,
            "message": self.message,
        }
        for name in ("region", "digest_key", "start_time", "end_time"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.inferred:
            out["inferred"] = True
        return out


@dataclass(frozen=True)
class Gap:
    """A stretch with no digest: the chain restarted (validation or logging was off)."""

    start: dt.datetime
    end: dt.datetime
    region: str | None = None

    def line(self) -> str:
        return (
            f"No log files were delivered by CloudTrail between {format_time(self.start)} "
            f"and {format_time(self.end)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": format_time(self.start),
            "end": format_time(self.end),
            "region": self.region,
        }


@dataclass(frozen=True)
class MissingTail:
    """Hourly digests that should follow a chain's newest one inside the range, but do not.

    `hours` are the expected digest end times (newest digest's end + 1 h, + 2 h, ...).
    `last_delivery` is CloudTrail's `LatestDigestDeliveryTime` when GetTrailStatus answered;
    without it the hours are judged from the cadence and the clock alone.
    """

    account_id: str
    region: str
    after: dt.datetime  # end time of the newest digest found
    hours: tuple[dt.datetime, ...]
    last_delivery: dt.datetime | None = None
    status_note: str | None = None  # why GetTrailStatus did not answer, when it did not

    def line(self) -> str:
        n = len(self.hours)
        text = (
            f"Digest files missing for account {self.account_id} in {self.region}: none after "
            f"{format_time(self.after)}, {n} hourly digest{'s' if n != 1 else ''} expected "
            f"from {format_time(self.hours[0])} to {format_time(self.hours[-1])}"
        )
        if self.last_delivery is not None:
            last = format_time(self.last_delivery)
            return text + f" (CloudTrail last delivered a digest at {last})"
        note = f"; GetTrailStatus: {self.status_note}" if self.status_note else ""
        return text + f" (judged by the hourly cadence{note})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "region": self.region,
            "after": format_time(self.after),
            "hours": [format_time(h) for h in self.hours],
            "last_delivery": format_time(self.last_delivery),
            "status_note": self.status_note,
        }


def _counts(results: list[FileResult]) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    for r in results:
        by_status[r.status.value] = by_status.get(r.status.value, 0) + 1
    valid = by_status.get(Status.VALID.value, 0)
    return {
        "total": len(results),
        "valid": valid,
        "invalid": len(results) - valid,
        "by_status": by_status,
    }


@dataclass
class ValidationReport:
    """Everything one validation run found: digests newest first, then their log files."""

    trail_arn: str
    requested_start: dt.datetime
    requested_end: dt.datetime
    digests: list[FileResult] = field(default_factory=list)
    log_files: list[FileResult] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    missing_tails: list[MissingTail] = field(default_factory=list)
    found_start: dt.datetime | None = None  # oldest digestStartTime seen
    found_end: dt.datetime | None = None  # newest digestEndTime seen, capped at requested_end

    @property
    def ok(self) -> bool:
        """True when at least one digest was found, everything found is valid and no hourly
        digest is missing after a chain's newest one."""
        if self.missing_tails or not self.digests:
            return False
        return all(r.ok for r in (*self.digests, *self.log_files))

    @property
    def invalid(self) -> list[FileResult]:
        return [r for r in (*self.digests, *self.log_files) if not r.ok]

    def summary(self) -> dict[str, dict[str, Any]]:
        return {"digest_files": _counts(self.digests), "log_files": _counts(self.log_files)}

    def summary_lines(self) -> list[str]:
        """The two count lines of `aws cloudtrail validate-logs`."""
        lines = []
        for noun, results in (("digest", self.digests), ("log", self.log_files)):
            c = _counts(results)
            text = f"{c['valid']}/{c['total']} {noun} files valid"
            if c["invalid"]:
                text += f", {c['invalid']}/{c['total']} {noun} files INVALID"
            lines.append(text)
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "trail_arn": self.trail_arn,
            "requested": {
                "start": format_time(self.requested_start),
                "end": format_time(self.requested_end),
            },
            "found": {"start": format_time(self.found_start), "end": format_time(self.found_end)},
            "valid": self.ok,
            "summary": self.summary(),
            "digest_files": [r.to_dict() for r in self.digests],
            "log_files": [r.to_dict() for r in self.log_files],
            "gaps": [g.to_dict() for g in self.gaps],
            "missing_trailing_digests": [t.to_dict() for t in self.missing_tails],
        }
