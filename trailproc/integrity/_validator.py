"""Digest-chain validation: walk each region's digests newest to oldest, verify every
signature, then hash the log files each valid digest vouches for, concurrently.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from .._config import Config
from .._errors import DecompressedTooLarge
from .._pipeline.gunzip import NotGzipError, gunzip_exact
from .._pipeline.keys import ObjectKind, classify_key
from .._timeparse import parse_time, parse_time_or_none, to_utc
from ._keys import CloudTrailPublicKeys, KeyNotUsable, PublicKeyRing, PublicKeySource
from ._model import FileKind, FileResult, Gap, MissingTail, Status, ValidationReport
from ._remote import AwsReads
from ._signing import gunzip_sha256, signing_string, verify_signature
from ._storage import LocalStore, NotFound, ObjectStore, ReadError

__all__ = [
    "ProgressHook",
    "TrailArn",
    "TrailDelivery",
    "ValidationError",
    "parse_time",
    "trail_delivery",
    "validate",
]

log = structlog.get_logger("trailproc.integrity")

HOUR = dt.timedelta(hours=1)
# A digest lists the files delivered in the hour before its end time, so the one straddling
# the requested end lies up to an hour after it (the AWS CLI reads an hour past the end too);
# the margin absorbs CloudTrail's drifting digest times.
AFTER_END = HOUR + dt.timedelta(minutes=15)
# CloudTrail's digest end times wander by minutes: an expected hour this close to the range
# end, or to the last delivery GetTrailStatus reports, is not held against the chain.
DRIFT = dt.timedelta(minutes=15)
# Without GetTrailStatus, how long after its end time a digest may still be on its way.
DELIVERY_GRACE = HOUR
# A digest is read whole: one listing ~100,000 log files is ~30 MiB of JSON, so a bigger
# one is no CloudTrail digest (a gzip bomb planted in the bucket, say).
MAX_DIGEST_BYTES = 256 << 20
# How far before the range a region silent inside it is looked at for its last digest.
LOOKBACK = dt.timedelta(days=1)
_ARN_RE = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):cloudtrail:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"trail/(?P<name>[A-Za-z0-9._-]{1,128})$"
)
_KEY_TS_RE = re.compile(
    r"^(?P<dir>.*/)?(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<stem>[^/]+_)"
    r"(?P<ts>\d{8}T\d{6}Z)\.json\.gz$"
)


class ValidationError(Exception):
    """Validation could not run at all (bad ARN, bucket unreadable, ...)."""


@dataclass(frozen=True)
class TrailArn:
    partition: str
    region: str
    account_id: str
    name: str

    @classmethod
    def parse(cls, arn: str) -> TrailArn:
        m = _ARN_RE.match(arn.strip())
        if not m:
            raise ValidationError(
                f"not a trail ARN: {arn!r} (expected arn:aws:cloudtrail:REGION:ACCOUNT:trail/NAME)"
            )
        return cls(m["partition"], m["region"], m["account"], m["name"])


@dataclass(frozen=True)
class TrailDelivery:
    """What GetTrailStatus says about the trail's digests (or why it could not say)."""

    last_digest_delivery: dt.datetime | None = None
    note: str | None = None


def trail_delivery(client: Any, trail_arn: str) -> TrailDelivery:
    """`LatestDigestDeliveryTime` from CloudTrail GetTrailStatus, asked in the home region.

    Any failure (trail deleted, access denied, an endpoint without the field) is a note, not
    an error: the hourly cadence then decides alone.
    """
    try:
        answer = client.get_trail_status(Name=trail_arn)
    except Exception as exc:
        log.info("GetTrailStatus failed", trail=trail_arn, error=_one_line(exc))
        return TrailDelivery(note=f"unavailable ({_one_line(exc, 120)})")
    when = answer.get("LatestDigestDeliveryTime")
    if isinstance(when, str):
        when = parse_time_or_none(when)
    if not isinstance(when, dt.datetime):
        return TrailDelivery(note="no LatestDigestDeliveryTime in its answer")
    return TrailDelivery(last_digest_delivery=to_utc(when))


class ProgressHook(Protocol):
    """Told how many log files there are to check and when each one is done."""

    def add_total(self, n: int) -> None: ...

    def advance(self, n: int) -> None: ...


@dataclass
class _Digest:
    bucket: str
    key: str
    region: str
    ts: dt.datetime  # from the key: the digest end time
    raw: bytes | None = None  # the gunzipped bytes, exactly
    doc: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    problem: FileResult | None = None

    @property
    def moved(self) -> bool:
        return self.doc is not None and (
            self.doc.get("digestS3Bucket"),
            self.doc.get("digestS3Object"),
        ) != (self.bucket, self.key)

    @property
    def start(self) -> dt.datetime | None:
        return parse_time_or_none(self.doc.get("digestStartTime")) if self.doc else None

    @property
    def end(self) -> dt.datetime:
        parsed = parse_time_or_none(self.doc.get("digestEndTime")) if self.doc else None
        return parsed or self.ts


@dataclass
class _Link:
    """What a newer digest says about the one before it."""

    bucket: str | None
    key: str | None
    signature: str | None
    trusted: bool  # the newer digest's own signature verified
    newer_start: dt.datetime | None

    @property
    def ts(self) -> dt.datetime | None:
        return classify_key(self.key).delivered_at if self.key else None


_REQUIRED = ("digestEndTime", "digestS3Bucket", "digestS3Object", "digestPublicKeyFingerprint")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line (error bodies can be whole HTML pages)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shift_key(key: str, when: dt.datetime) -> str | None:
    """`key` with its date folder and timestamp moved to `when` (an inferred digest key)."""
    m = _KEY_TS_RE.match(key)
    if not m:
        return None
    return f"{m['dir'] or ''}{when:%Y/%m/%d}/{m['stem']}{when:%Y%m%dT%H%M%SZ}.json.gz"


class _Run:
    """One validation: walks each region's digest chain and hashes the log files listed."""

    def __init__(
        self,
        scope: _Scope,
        sources: _Sources,
        pool: ThreadPoolExecutor,
        *,
        progress: ProgressHook | None,
        now: dt.datetime,
    ) -> None:
        self.trail = scope.trail
        self.bucket = scope.bucket
        self.prefix = scope.prefix
        self.account_id = scope.account_id
        self.start = scope.start
        self.end = scope.end
        self.regions = scope.regions
        self.store = sources.store
        self.keys = sources.keys
        self.delivery = sources.delivery
        self.pool = pool
        self.progress = progress
        self.now = now
        self.digests: list[FileResult] = []
        self.log_futures: list[Future[FileResult]] = []
        self.gaps: list[Gap] = []
        self.missing_tails: list[MissingTail] = []
        self.silent: list[tuple[str, str]] = []  # (digest folder, region) with no digest
        self.found_start: dt.datetime | None = None
        self.found_end: dt.datetime | None = None

    # -- discovery -------------------------------------------------------------------------

    def _account_roots(self) -> list[str]:
        root = (self.prefix + "/" if self.prefix else "") + "AWSLogs/"
        roots = [f"{root}{self.account_id}/"]
        try:
            folders = self.store.list_folders(self.bucket, root)
        except (ReadError, NotFound) as exc:
            raise ValidationError(f"cannot list s3://{self.bucket}/{root}: {exc}") from exc
        # Organization trails: AWSLogs/<o-org-id>/<account>/...
        roots += [f"{root}{org}/{self.account_id}/" for org in folders if org.startswith("o-")]
        return roots

    def _digest_keys(self) -> dict[tuple[str, str], list[str]]:
        """(account root, delivering region) → digest keys of this trail within the range."""
        chains: dict[tuple[str, str], list[str]] = {}
        for root in self._account_roots():
            digest_root = f"{root}CloudTrail-Digest/"
            try:
                regions = self.store.list_folders(self.bucket, digest_root)
            except (ReadError, NotFound) as exc:
                raise ValidationError(
                    f"cannot list s3://{self.bucket}/{digest_root}: {exc}"
                ) from exc
            for region in sorted(regions):
                if self.regions and region not in self.regions:
                    continue
                found: list[str] = []
                last = self.end + AFTER_END
                day = self.start.date()
                while day <= last.date():
                    stem = (
                        f"{digest_root}{region}/{day:%Y/%m/%d}/{self.account_id}_CloudTrail-Digest_"
                        f"{region}_{self.trail.name}_{self.trail.region}_"
                    )
                    try:
                        candidates = list(self.store.list_keys(self.bucket, stem))
                    except (ReadError, NotFound) as exc:
                        raise ValidationError(
                            f"cannot list s3://{self.bucket}/{stem}: {exc}"
                        ) from exc
                    for key in candidates:
                        info = classify_key(key)
                        if (
                            info.kind is ObjectKind.DIGEST
                            and info.trail_name == self.trail.name
                            and info.home_region == self.trail.region
                            and info.delivered_at is not None
                            and self.start <= info.delivered_at <= last
                        ):
                            found.append(key)
                    day += dt.timedelta(days=1)
                if found:
                    chains[(root, region)] = found
                else:
                    self.silent.append((digest_root, region))
        return chains

    def _newest_before_start(self, digest_root: str, region: str) -> str | None:
        """The key of the region's newest digest in the LOOKBACK before the range."""
        newest: tuple[dt.datetime, str] | None = None
        day = (self.start - LOOKBACK).date()
        while day <= self.start.date():
            stem = (
                f"{digest_root}{region}/{day:%Y/%m/%d}/{self.account_id}_CloudTrail-Digest_"
                f"{region}_{self.trail.name}_{self.trail.region}_"
            )
            try:
                keys = list(self.store.list_keys(self.bucket, stem))
            except (ReadError, NotFound):
                keys = []
            for key in keys:
                when = classify_key(key).delivered_at
                if when is not None and when < self.start and (newest is None or when > newest[0]):
                    newest = (when, key)
            day += dt.timedelta(days=1)
        return newest[1] if newest else None

    def _silent_regions(self) -> None:
        """A region that delivered digests just before the range but none inside it (all
        of them deleted, say) is held to the cadence from its last digest."""
        for digest_root, region in self.silent:
            key = self._newest_before_start(digest_root, region)
            if key is not None:
                self._trailing(region, [self._load(key, region)])

    # -- digests ---------------------------------------------------------------------------

    def _load(self, key: str, region: str, bucket: str | None = None) -> _Digest:
        ts = classify_key(key).delivered_at
        assert ts is not None
        d = _Digest(bucket or self.bucket, key, region, ts)

        def problem(status: Status, detail: str | None = None) -> _Digest:
            d.problem = self._digest_result(d, status, detail)
            return d

        try:
            body, d.metadata = self.store.get(d.bucket, key)
        except NotFound:
            return problem(Status.NOT_FOUND)
        except ReadError as exc:
            return problem(Status.ERROR, f"ERROR: {_one_line(exc)}")
        try:
            d.raw = gunzip_exact(body, max_bytes=MAX_DIGEST_BYTES)
            doc = json.loads(d.raw)
        except DecompressedTooLarge:
            return problem(Status.INVALID_FORMAT, f"INVALID: invalid format (over "
                           f"{MAX_DIGEST_BYTES >> 20} MiB decompressed)")  # fmt: skip
        except (NotGzipError, ValueError, UnicodeDecodeError):
            return problem(Status.INVALID_FORMAT)
        if not isinstance(doc, dict) or not all(isinstance(doc.get(f), str) for f in _REQUIRED):
            return problem(Status.INVALID_FORMAT)
        if not isinstance(doc.get("logFiles", []), list):
            return problem(Status.INVALID_FORMAT)
        d.doc = doc
        return d

    def _digest_result(
        self, d: _Digest, status: Status, detail: str | None = None, *, inferred: bool = False
    ) -> FileResult:
        return FileResult(
            kind=FileKind.DIGEST,
            bucket=d.bucket,
            key=d.key,
            status=status,
            detail=detail,
            region=d.region,
            start_time=str(d.doc.get("digestStartTime")) if d.doc else None,
            end_time=str(d.doc.get("digestEndTime")) if d.doc else None,
            inferred=inferred,
        )

    def _verify(self, d: _Digest, signature: str | None) -> FileResult:
        doc = d.doc
        assert doc is not None and d.raw is not None
        fingerprint = str(doc["digestPublicKeyFingerprint"])
        try:
            key = self.keys.get(d.region, fingerprint, d.end)
        except KeyNotUsable:
            return self._digest_result(
                d, Status.PUBLIC_KEY_NOT_FOUND, "INVALID: unable to load PKCS #1 key"
            )
        except Exception as exc:  # ListPublicKeys failed (access denied, throttled, ...)
            log.warning("public key lookup failed", region=d.region, error=_one_line(exc))
            return self._digest_result(
                d, Status.ERROR, f"ERROR: unable to get public keys: {_one_line(exc)}"
            )
        if key is None:
            return self._digest_result(d, Status.PUBLIC_KEY_NOT_FOUND)
        if not signature:
            log.debug("digest has no signature", key=d.key)
            return self._digest_result(d, Status.SIGNATURE_FAILED)
        previous = doc.get("previousDigestSignature")
        message = signing_string(
            str(doc["digestEndTime"]),
            d.bucket,
            d.key,
            hashlib.sha256(d.raw).hexdigest(),
            previous if isinstance(previous, str) else None,
        )
        if not verify_signature(key, signature, message):
            return self._digest_result(d, Status.SIGNATURE_FAILED)
        return self._digest_result(d, Status.VALID)

    def _missing(
        self, link: _Link, region: str, older: _Digest | None, *, to_start: bool = False
    ) -> None:
        """The digest `link` names is gone; so is every hourly digest down to `older`, or
        (`to_start`: nothing older was listed) down to the start of the range."""
        assert link.key is not None
        bucket = link.bucket or self.bucket
        self.digests.append(
            FileResult(FileKind.DIGEST, bucket, link.key, Status.NOT_FOUND, region=region)
        )
        link_ts = link.ts
        if link_ts is None:
            return
        if older is not None:
            slots = round((link_ts - older.end) / HOUR)
        elif to_start:
            # Hours whose digest would list files delivered inside the range.
            slots = max(0, int((link_ts - self.start - DRIFT) / HOUR)) + 1
        else:
            return
        for k in range(1, slots):
            key = _shift_key(link.key, link_ts - k * HOUR)
            if key is None:
                break
            self.digests.append(
                FileResult(
                    FileKind.DIGEST, bucket, key, Status.NOT_FOUND, region=region, inferred=True
                )
            )

    def _in_range(self, d: _Digest) -> bool:
        """Digests after the end only count when they list files delivered before it."""
        if d.ts <= self.end:
            return True
        start = d.start or d.ts - HOUR  # unreadable: assume the usual hour
        return start < self.end

    # -- trailing digests ------------------------------------------------------------------

    def _delivered_by_now(self, end: dt.datetime) -> bool:
        """Would CloudTrail have delivered the digest ending at `end` by now?"""
        last = self.delivery.last_digest_delivery
        if last is not None:
            return end <= last + DRIFT
        return end + DELIVERY_GRACE <= self.now

    def _trailing(self, region: str, loaded: list[_Digest]) -> None:
        """Name the hourly digests that should follow the chain's newest one in the range.

        Deleting the newest digests leaves no link pointing at them: only the cadence (one
        digest an hour while logging is on) and GetTrailStatus's last delivery show them.
        """
        anchors = [d for d in loaded if d.doc is not None and not d.moved]
        if not anchors:
            return  # every digest found is already reported invalid
        newest = anchors[0]
        hours: list[dt.datetime] = []
        end = newest.ts + HOUR
        # An hour counts while it begins well inside the range and was due by now; hours
        # before the range (a region silent since before its start) are not the range's.
        while end - HOUR + DRIFT < self.end and self._delivered_by_now(end):
            if end > self.start + DRIFT:
                hours.append(end)
            end += HOUR
        if not hours:
            return
        self.missing_tails.append(
            MissingTail(
                account_id=self.account_id,
                region=region,
                after=newest.ts,
                hours=tuple(hours),
                last_delivery=self.delivery.last_digest_delivery,
                status_note=self.delivery.note,
            )
        )
        for when in reversed(hours):
            key = _shift_key(newest.key, when)
            if key is not None:
                self.digests.append(
                    FileResult(
                        FileKind.DIGEST,
                        newest.bucket,
                        key,
                        Status.NOT_FOUND,
                        "INVALID: not found (expected from the hourly digest cadence)",
                        region=region,
                        inferred=True,
                    )
                )

    def _walk(self, region: str, keys: list[str]) -> None:
        loaded = list(self.pool.map(lambda k: self._load(k, region), keys))
        loaded = [d for d in loaded if self._in_range(d)]
        loaded.sort(key=lambda d: (d.ts, d.key), reverse=True)
        self._trailing(region, loaded)
        link: _Link | None = None
        for d in loaded:
            link = self._follow(link, region, d.ts)
            if d.problem is None and d.moved:
                link = self._moved(d, link)
                continue
            link, signature = self._meet(link, d, region)
            if d.problem is not None:
                self.digests.append(d.problem)
                continue
            link = self._check(d, signature)
        link = self._follow(link, region, None)
        if (
            link is not None
            and link.key is not None
            and link.ts is not None
            and link.ts >= self.start
        ):
            self._missing(link, region, None, to_start=True)

    def _is_at(self, link: _Link, d: _Digest) -> bool:
        """Whether `d` is where `link` says the chain's next digest is."""
        return (link.bucket or self.bucket, link.key) == (d.bucket, d.key)

    def _moved(self, d: _Digest, link: _Link | None) -> _Link | None:
        """A copy away from where CloudTrail put it: reported, but it is no chain link.
        Where the chain expected its next digest, another one was put: the chain is cut
        there (the file is there, so not "not found")."""
        self.digests.append(self._digest_result(d, Status.MOVED))
        if link is not None and self._is_at(link, d):
            return None
        return link

    def _meet(self, link: _Link | None, d: _Digest, region: str) -> tuple[_Link | None, str | None]:
        """`d` held against the link the chain follows. Returns the link still awaited
        (None once it is met, cut or reported missing) and the signature to verify `d`
        with: the one its newer digest signed, when that digest verified and points here."""
        signature = d.metadata.get("signature")
        if link is None:
            return None, signature
        if link.key is None:
            # The newer digest started a chain: nothing was signed in between.
            if link.newer_start is not None and d.problem is None:
                self.gaps.append(Gap(d.end, link.newer_start, region))
            return None, signature
        if self._is_at(link, d):
            return None, link.signature if link.trusted and link.signature else signature
        if link.ts is not None and link.ts > d.ts:
            self._missing(link, region, d if d.problem is None else None)
            return None, signature
        # `d` is newer than the digest the chain expects next; keep waiting.
        return link, signature

    def _check(self, d: _Digest, signature: str | None) -> _Link:
        """Verify a loaded digest and queue its log files; returns its link to the previous."""
        result = self._verify(d, signature)
        self.digests.append(result)
        self._note_range(d)
        doc = d.doc
        assert doc is not None
        prev_key = doc.get("previousDigestS3Object")
        if result.ok:
            self._check_logs(d)
        return _Link(
            bucket=doc.get("previousDigestS3Bucket") or None,
            key=prev_key if isinstance(prev_key, str) and prev_key else None,
            signature=doc.get("previousDigestSignature") or None,
            trusted=result.ok,
            newer_start=d.start,
        )

    def _follow(self, link: _Link | None, region: str, floor: dt.datetime | None) -> _Link | None:
        """Follow the chain into another bucket (the trail delivered there before) by its
        links, while it stays there, in range and newer than `floor` (the next digest listed
        here). That bucket is not listed: a digest missing there ends the walk in it."""
        seen: set[tuple[str, str]] = set()
        while (
            link is not None
            and link.key is not None
            and link.bucket not in (None, self.bucket)
            and link.ts is not None
            and link.ts >= self.start
            and (floor is None or link.ts > floor)
            and (link.bucket, link.key) not in seen
        ):
            assert link.bucket is not None
            seen.add((link.bucket, link.key))
            d = self._load(link.key, region, link.bucket)
            if d.problem is not None or d.moved:
                self.digests.append(d.problem or self._digest_result(d, Status.MOVED))
                return None
            own = d.metadata.get("signature")
            link = self._check(d, link.signature if link.trusted and link.signature else own)
        return link

    def _note_range(self, d: _Digest) -> None:
        start, end = d.start, min(d.end, self.end)  # as the AWS CLI: never past the request
        if start is not None and (self.found_start is None or start < self.found_start):
            self.found_start = start
        if self.found_end is None or end > self.found_end:
            self.found_end = end

    # -- log files -------------------------------------------------------------------------

    def _check_logs(self, d: _Digest) -> None:
        assert d.doc is not None
        entries = [e for e in d.doc.get("logFiles") or [] if isinstance(e, dict)]
        if self.progress and entries:
            self.progress.add_total(len(entries))
        for entry in entries:
            self.log_futures.append(self.pool.submit(self._check_log, d, entry))

    def _check_log(self, d: _Digest, entry: dict[str, Any]) -> FileResult:
        bucket = str(entry.get("s3Bucket") or d.bucket)
        key = str(entry.get("s3Object") or "")
        expected = str(entry.get("hashValue") or "").lower()
        algorithm = str(entry.get("hashAlgorithm") or "SHA-256")

        def result(status: Status, detail: str | None = None) -> FileResult:
            if self.progress:
                self.progress.advance(1)
            return FileResult(
                FileKind.LOG, bucket, key, status, detail, region=d.region, digest_key=d.key
            )

        if algorithm.upper().replace("-", "") != "SHA256":
            return result(Status.ERROR, f"ERROR: unsupported hash algorithm {algorithm}")
        try:
            with self.store.open(bucket, key) as stream:
                actual = gunzip_sha256(stream)
        except NotFound:
            return result(Status.NOT_FOUND)
        except NotGzipError:
            return result(Status.INVALID_FORMAT)
        except ReadError as exc:
            return result(Status.ERROR, f"ERROR: {_one_line(exc)}")
        except Exception as exc:  # a connection dropped mid-stream and the like
            return result(Status.ERROR, f"ERROR: {type(exc).__name__}: {_one_line(exc)}")
        return result(Status.VALID if actual == expected else Status.HASH_MISMATCH)

    # -- all -------------------------------------------------------------------------------

    def run(self) -> ValidationReport:
        for (_root, region), keys in self._digest_keys().items():
            self._walk(region, keys)
        self._silent_regions()
        report = ValidationReport(
            trail_arn="",
            requested_start=self.start,
            requested_end=self.end,
            digests=self.digests,
            log_files=[f.result() for f in self.log_futures],
            gaps=self.gaps,
            missing_tails=self.missing_tails,
            found_start=self.found_start,
            found_end=self.found_end,
        )
        return report


def _key_source(
    public_keys: PublicKeySource | Iterable[str | os.PathLike[str] | bytes] | None,
    client_factory: Callable[[str], Any],
    start: dt.datetime,
    end: dt.datetime,
) -> PublicKeySource:
    if public_keys is None:
        return CloudTrailPublicKeys(client_factory, start - HOUR, end + AFTER_END + HOUR)
    if isinstance(public_keys, PublicKeySource):
        return public_keys
    if isinstance(public_keys, (bytes, str, os.PathLike)):
        public_keys = [public_keys]
    ring = PublicKeyRing.empty()
    for item in public_keys:
        if isinstance(item, bytes):
            ring.add(item)
        else:
            with open(item, "rb") as f:
                ring.add(f.read())
    return ring


def _ask_delivery(
    client_factory: Callable[[str], Any], trail: TrailArn, trail_arn: str
) -> TrailDelivery:
    try:
        client = client_factory(trail.region)
    except Exception as exc:  # no region or endpoint configuration usable
        return TrailDelivery(note=f"unavailable ({_one_line(exc, 120)})")
    return trail_delivery(client, trail_arn)


@dataclass(frozen=True)
class _Scope:
    """What one validation covers: a trail's digest chains in a bucket, over a time range."""

    arn: str
    trail: TrailArn
    bucket: str
    prefix: str
    account_id: str
    start: dt.datetime
    end: dt.datetime
    regions: Sequence[str] | None

    @classmethod
    def parse(
        cls, trail_arn: str, bucket: str, start_time: dt.datetime, end_time: dt.datetime | None,
        *, prefix: str, account_id: str | None, regions: Sequence[str] | None,
    ) -> _Scope:  # fmt: skip
        trail = TrailArn.parse(trail_arn)
        start = to_utc(start_time)  # naive = UTC, as everywhere in trailproc
        end = to_utc(end_time or dt.datetime.now(dt.timezone.utc))
        if end < start:
            raise ValidationError("end time is before start time")
        return cls(trail_arn, trail, bucket, prefix.strip("/"), account_id or trail.account_id,
                   start, end, regions)  # fmt: skip


@dataclass(frozen=True)
class _Sources:
    """Where a validation reads: the objects, the public keys, and what CloudTrail says
    of the trail's digest deliveries; `close` releases the AWS clients."""

    store: ObjectStore
    keys: PublicKeySource
    delivery: TrailDelivery
    close: Callable[[], None]


def _open_sources(
    scope: _Scope,
    session: Any,
    *,
    public_keys: PublicKeySource | Iterable[str | os.PathLike[str] | bytes] | None,
    local_dir: str | os.PathLike[str] | None,
    s3_client: Any,
    max_workers: int,
    trail_status: bool | TrailDelivery | None,
) -> _Sources:
    """The sources `validate` was given, and AWS clients (`AwsReads`: the object port and
    aioboto3, as the daemon reads) for those it was not."""
    ask_status = local_dir is None if trail_status is None else trail_status is True
    asks_cloudtrail = public_keys is None or ask_status
    reads: AwsReads | None = None
    if local_dir is None or (asks_cloudtrail and session is None):
        if s3_client is None and session is not None and local_dir is None:
            s3_client = session.client("s3")
        reads = AwsReads(Config(download_concurrency=max(1, max_workers)), s3_client=s3_client)
    try:
        store = LocalStore(local_dir) if local_dir is not None else _s3_store(reads)
        cloudtrail = _cloudtrail_clients(session, reads)
        keys = _key_source(public_keys, cloudtrail, scope.start, scope.end)
        if isinstance(trail_status, TrailDelivery):
            delivery = trail_status
        elif ask_status:
            delivery = _ask_delivery(cloudtrail, scope.trail, scope.arn)
        else:
            delivery = TrailDelivery(note="not asked")
    except BaseException:
        if reads is not None:
            reads.close()
        raise
    return _Sources(store, keys, delivery, reads.close if reads is not None else lambda: None)


def _s3_store(reads: AwsReads | None) -> ObjectStore:
    assert reads is not None
    return reads.store


def _cloudtrail_clients(session: Any, reads: AwsReads | None) -> Callable[[str], Any]:
    """CloudTrail clients by region: the caller's boto3 `session`'s when one was given,
    else the loop's aioboto3 clients."""
    if session is not None:
        return lambda region: session.client("cloudtrail", region_name=region)

    def client(region: str) -> Any:
        assert reads is not None
        return reads.client("cloudtrail", region)

    return client


def validate(  # noqa: PLR0913 - public API: the options are documented keywords, one per setting
    trail_arn: str,
    s3_bucket: str,
    start_time: dt.datetime,
    end_time: dt.datetime | None = None,
    *,
    s3_prefix: str = "",
    account_id: str | None = None,
    regions: Sequence[str] | None = None,
    public_keys: PublicKeySource | Iterable[str | os.PathLike[str] | bytes] | None = None,
    local_dir: str | os.PathLike[str] | None = None,
    s3_client: Any = None,
    session: Any = None,
    max_workers: int = 16,
    progress: ProgressHook | None = None,
    trail_status: bool | TrailDelivery | None = None,
    now: dt.datetime | None = None,
) -> ValidationReport:
    """Validate a trail's digest chain and the log files it lists, for `[start_time, end_time]`.

    Digests are those whose end time (the timestamp in their key) lies in the range, and the
    one after it when it lists files delivered before `end_time`, in every delivering region
    found under the account's `CloudTrail-Digest/` folder (or only `regions`). Each region's
    chain is walked newest to oldest; log files listed by a digest whose signature verified
    are hashed concurrently (`max_workers` threads).

    Digests deleted from the end of the range leave no link pointing at them, so each
    region's chain is also held to the hourly cadence: every hour after its newest digest
    that begins inside the range and was due by `now` (default: the clock), or by the last
    digest delivery CloudTrail's GetTrailStatus reports, is reported missing
    (`report.missing_tails`). `trail_status`: True to ask GetTrailStatus, False not to,
    None to ask unless `local_dir` is given; or a `TrailDelivery` already known.

    `public_keys`: None to ask CloudTrail `ListPublicKeys` in each delivering region; or key
    files / PEM or DER bytes (offline); or any object with `get(region, fingerprint, when)`.
    `local_dir`: read from a local mirror of the bucket instead of S3 (`<dir>/<key>`, with
    each digest's signature in `<dir>/<key>.signature`). The S3 bucket and keys are still
    what is signed and reported.

    S3 and CloudTrail are read with the daemon's clients (object port, credential chain,
    region, endpoint rules), or a boto3 `s3_client` / `session` (S3 and CloudTrail) given.
    """
    scope = _Scope.parse(trail_arn, s3_bucket, start_time, end_time,
                         prefix=s3_prefix, account_id=account_id, regions=regions)  # fmt: skip
    sources = _open_sources(scope, session, public_keys=public_keys, local_dir=local_dir,
                            s3_client=s3_client, max_workers=max_workers,
                            trail_status=trail_status)  # fmt: skip
    log.debug("validating digest chain", trail=trail_arn, bucket=s3_bucket,
              start=str(scope.start), end=str(scope.end))  # fmt: skip
    now = to_utc(now or dt.datetime.now(dt.timezone.utc))
    try:
        with ThreadPoolExecutor(
            max(1, max_workers), thread_name_prefix="trailproc-validate"
        ) as pool:
            report = _Run(scope, sources, pool, progress=progress, now=now).run()
    finally:
        sources.close()
    report.trail_arn = trail_arn
    return report
