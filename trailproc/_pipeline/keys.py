"""Stage 2: an S3 object key → what kind of CloudTrail object it is (pure, no I/O).

CloudTrail's key layout carries the account, region, organization, delivery date and
trail prefix; we parse it once here so filters and checkpoints never re-parse keys.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass, field

__all__ = ["FileRef", "KeyInfo", "ObjectKind", "StreamOrigin", "classify_key"]


class ObjectKind(str, enum.Enum):
    """What a key in a trail bucket holds."""

    LOG = "log"
    INSIGHT = "insight"
    DIGEST = "digest"
    OTHER = "other"


_ORG = r"(?:(?P<org>o-[a-z0-9]{10,32})/)?"
_PREFIX = r"^(?:(?P<prefix>.+?)/)?AWSLogs/"
_DATE = r"(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"


def _log_pattern(folder: str) -> re.Pattern[str]:
    # The file name repeats account and region; a separator before the unique string is
    # sometimes missing in AWS's own examples, so `_?` keeps us lenient there.
    return re.compile(
        _PREFIX
        + _ORG
        + r"(?P<account>\d{12})/"
        + folder
        + r"/(?P<region>[a-z0-9-]+)/"
        + _DATE
        + r"(?P<facct>\d{12})_"
        + folder
        + r"_(?P<fregion>[a-z0-9-]+)_(?P<ts>\d{8}T\d{4}Z)_?"
        r"(?P<uniq>[A-Za-z0-9]+)\.json(?:\.gz)?\Z",
        re.ASCII,
    )


_LOG_RE = _log_pattern("CloudTrail")
_INSIGHT_RE = _log_pattern("CloudTrail-Insight")
_DIGEST_RE = re.compile(
    _PREFIX
    + _ORG
    + r"(?P<account>\d{12})/CloudTrail-Digest/(?P<region>[a-z0-9-]+)/"
    + _DATE
    # Trail names may contain "_" (so the greedy match leaves the *last* region-shaped
    # field to the home region) but never "/", which would mean another folder level.
    # The home region's first part is 2 letters in most partitions, 4 in aws-eusc
    # ("eusc-de-east-1"); accept any run of letters rather than list partitions.
    + r"(?P=account)_CloudTrail-Digest_(?P=region)_(?P<trail>[^/]+)_"
    r"(?P<home>[a-z]+(?:-[a-z]+)+-\d+)_(?P<ts>\d{8}T\d{6}Z)\.json\.gz\Z",
    re.ASCII,
)
# Looser fallback: anything under .../AWSLogs/[org/]account/CloudTrail/region/... is a log
# even if the file name is unusual (e.g. sanitised fixtures); we still learn account/region.
_LOOSE_RE = re.compile(
    _PREFIX + _ORG + r"(?P<account>\d{12})/(?P<folder>CloudTrail|CloudTrail-Insight)/"
    r"(?P<region>[a-z0-9-]+)/" + _DATE + r"[^/]+\.json(?:\.gz)?\Z",
    re.ASCII,
)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Facts parsed from a key. Fields are None when the key does not follow the layout."""

    kind: ObjectKind
    account_id: str | None = None
    region: str | None = None
    org_id: str | None = None
    prefix: str | None = None
    date: dt.date | None = None
    delivered_at: dt.datetime | None = None
    trail_name: str | None = None
    home_region: str | None = None


@dataclass(frozen=True, slots=True)
class StreamOrigin:
    """Where records that reached trailproc without an S3 object came from.

    `road`: "cloudwatch-logs" (a subscription payload, through Lambda, Kinesis or
    Firehose: `via` names which) or "history" (`LookupEvents`). For CloudWatch Logs,
    `log_event_ids[i]` is the id of the log event that carried record `i`.
    """

    road: str
    via: str | None = None
    log_group: str | None = None
    log_stream: str | None = None
    log_event_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FileRef:
    """One S3 object that a source asked us to handle (or a unit of records that came
    another way, named by `origin`)."""

    bucket: str
    key: str
    etag: str | None = None
    version_id: str | None = None
    size: int | None = None
    info: KeyInfo = field(default_factory=lambda: KeyInfo(ObjectKind.OTHER))
    # Not part of the identity: the checkpoint key (bucket, key, etag) is.
    origin: StreamOrigin | None = field(default=None, compare=False)

    @classmethod
    def of(
        cls,
        bucket: str,
        key: str,
        *,
        etag: str | None = None,
        version_id: str | None = None,
        size: int | None = None,
    ) -> FileRef:
        """Build a reference and classify its key."""
        if etag:
            etag = etag.strip('"')
        return cls(bucket, key, etag, version_id, size, classify_key(key))

    @property
    def kind(self) -> ObjectKind:
        return self.info.kind

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def _date(m: re.Match[str]) -> dt.date | None:
    try:
        return dt.date(int(m["y"]), int(m["m"]), int(m["d"]))
    except ValueError:
        return None


def _stamp(text: str, fmt: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def classify_key(key: str) -> KeyInfo:
    """Classify a trail-bucket key and parse what its layout tells."""
    for kind, pattern in ((ObjectKind.LOG, _LOG_RE), (ObjectKind.INSIGHT, _INSIGHT_RE)):
        m = pattern.match(key)
        if m:
            return KeyInfo(
                kind=kind,
                account_id=m["account"],
                region=m["region"],
                org_id=m["org"],
                prefix=m["prefix"],
                date=_date(m),
                delivered_at=_stamp(m["ts"], "%Y%m%dT%H%MZ"),
            )
    m = _DIGEST_RE.match(key)
    if m:
        return KeyInfo(
            kind=ObjectKind.DIGEST,
            account_id=m["account"],
            region=m["region"],
            org_id=m["org"],
            prefix=m["prefix"],
            date=_date(m),
            delivered_at=_stamp(m["ts"], "%Y%m%dT%H%M%SZ"),
            trail_name=m["trail"],
            home_region=m["home"],
        )
    m = _LOOSE_RE.match(key)
    if m:
        kind = ObjectKind.LOG if m["folder"] == "CloudTrail" else ObjectKind.INSIGHT
        return KeyInfo(
            kind=kind,
            account_id=m["account"],
            region=m["region"],
            org_id=m["org"],
            prefix=m["prefix"],
            date=_date(m),
        )
    return KeyInfo(ObjectKind.OTHER)
