"""One notification, start to verdict: the part every message-driven source shares.

The SQS daemon and the Lambda shell both receive notification bodies; both must parse
them, refuse forged ones, route digests, ask `filter_source`, and run every file and
carried record through the pipeline. This module does all of that once and returns a
`Verdict`; each source only turns the verdict into its own acknowledgement (DeleteMessage
or visibility change for SQS, `batchItemFailures` or raising for Lambda).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from .._config import Config
from .._errors import BadMessage, Refused, TrailprocError
from .._observe import get_logger
from .._pipeline.engine import FileOutcome, FilePipeline
from .._pipeline.events import Delivery, Event
from .._pipeline.keys import FileRef, KeyInfo, ObjectKind
from .._pipeline.notifications import (
    BadNotification,
    Notification,
    parse_notification,
    parse_payload,
)
from .._pipeline.processor import ProgressInfo, ProgressState, Source
from .._pipeline.trust import Trust
from .._ports.certificates import HttpCertificates

__all__ = ["MessageRunner", "Verdict"]

log = get_logger("trailproc.messages")


@dataclass(frozen=True, slots=True)
class Verdict:
    """What should happen to a message.

    - `ack`: everything it names was handed over (or there was nothing to hand over);
    - `retry`: something failed or is busy elsewhere: keep it for a later attempt/DLQ;
    - `release`: shutdown stopped it with progress committed: make it visible now.
    `reason` labels the metric (processed, filtered, s3_test_event, failed, busy, ...).
    """

    action: Literal["ack", "retry", "release"]
    reason: str
    outcomes: tuple[FileOutcome, ...] = ()


class MessageRunner:
    """Parses, vets and runs notifications through one `FilePipeline`."""

    def __init__(self, config: Config, pipeline: FilePipeline, trust: Trust | None = None) -> None:
        self.config = config
        self.pipeline = pipeline
        self.processor = pipeline.processor
        self.trust = trust or Trust(config, HttpCertificates())
        kinds = {ObjectKind(k) for k in config.process_kinds}
        if pipeline.digest_checks is not None:
            # Digests go to the integrity check (set up with the runtime), never to user code.
            kinds.add(ObjectKind.DIGEST)
        self.kinds = frozenset(kinds)

    # --- parse and vet -------------------------------------------------------------------
    async def parse(
        self, body: str | bytes | Mapping[str, Any], message_id: str | None
    ) -> Notification | TrailprocError:
        """The notification, or the (already reported) error that makes it unusable:
        unreadable, or refused by the trust boundary (before anything is downloaded)."""
        pipeline, observer = self.pipeline, self.pipeline.observer
        info = ProgressInfo(True, message_id)
        token = observer.report_start(ProgressState.PARSE_MESSAGE, info)
        try:
            if isinstance(body, Mapping):
                note = parse_payload(body, process_kinds=self.kinds)
            else:
                note = parse_notification(body, process_kinds=self.kinds)
            await self.trust.vet_notification(note, message_id)
        except (BadNotification, Refused) as exc:
            observer.report_end(ProgressState.PARSE_MESSAGE, ProgressInfo(False, message_id), token)
            if isinstance(exc, Refused):
                error: TrailprocError = exc
            else:
                error = BadMessage(str(exc), message_id=message_id, bucket=exc.bucket, key=exc.key)
            pipeline.observer.fail(error)
            return error
        pipeline.observer.report_end(ProgressState.PARSE_MESSAGE, info, token)
        for ref, reason in note.skipped:
            log.info("object skipped", message_id=message_id, bucket=ref.bucket, key=ref.key,
                     reason=reason)  # fmt: skip
        return note

    # --- run -----------------------------------------------------------------------------
    async def run(
        self,
        note: Notification,
        *,
        message_id: str | None,
        receive_count: int = 1,
        sent_at: float | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> Verdict:
        """Hand over everything `note` names.

        An unexpected exception (a bug) is reported to the progress hooks as
        `UNCAUGHT_EXCEPTION` and raised on to the source, which keeps the message."""
        try:
            return await self._run(note, message_id, receive_count, sent_at, attributes)
        except Exception as exc:
            info = ProgressInfo(False, message_id, detail={"error": repr(exc)})
            token = self.pipeline.observer.report_start(ProgressState.UNCAUGHT_EXCEPTION, info)
            self.pipeline.observer.report_end(ProgressState.UNCAUGHT_EXCEPTION, info, token)
            raise

    async def _run(
        self,
        note: Notification,
        message_id: str | None,
        receive_count: int,
        sent_at: float | None,
        attributes: Mapping[str, str] | None,
    ) -> Verdict:
        if note.is_ack_only:
            log.info("message needs no processing", message_id=message_id,
                     kind=note.kind.value, skipped=len(note.skipped))  # fmt: skip
            return Verdict("ack", note.kind.value if not note.skipped else "all_skipped")
        note, digests = _digests_apart(note)
        if note.refs or note.carried_records:
            source = Source(
                message_id=message_id,
                refs=note.refs,
                receive_count=receive_count,
                sent_at=sent_at,
                topic_arn=note.topic_arn,
                attributes=dict(attributes or {}),
            )
            kept = self._filter_source(note, source, with_digests=bool(digests))
            if kept is None:
                return Verdict("ack", "filtered")
            note = kept
        return _verdict(await self._hand_over(note, digests, message_id))

    def _filter_source(
        self, note: Notification, source: Source, *, with_digests: bool
    ) -> Notification | None:
        """`note` as the user's `filter_source` leaves it: whole when accepted; when
        declined, nothing (None) or, `with_digests`, only its digests to check."""
        if self.processor.filter_source(source):
            return note
        if not with_digests:
            log.info("filter_source declined the message", message_id=source.message_id)
            return None
        log.info("filter_source declined the message's log files; checking its "
                 "digests only", message_id=source.message_id)  # fmt: skip
        return replace(note, refs=(), carried_records=())

    async def _hand_over(
        self, note: Notification, digests: tuple[FileRef, ...], message_id: str | None
    ) -> tuple[FileOutcome, ...]:
        """Run every file, digest and carried record of `note` through the pipeline at
        once, inside the `PROCESS_SOURCE` progress hooks."""
        pipeline, observer = self.pipeline, self.pipeline.observer
        info = ProgressInfo(True, message_id)
        token = observer.report_start(ProgressState.PROCESS_SOURCE, info)
        runs = [pipeline.run(ref, message_id) for ref in (*note.refs, *digests)]
        runs += [self._carried(raw, message_id, note.account) for raw in note.carried_records]
        outcomes = tuple(await asyncio.gather(*runs))
        ok = all(o.ok for o in outcomes)
        observer.report_end(ProgressState.PROCESS_SOURCE, ProgressInfo(ok, message_id), token)
        return outcomes

    def _carried(self, raw: bytes, message_id: str | None, account: str | None) -> Any:
        """A record delivered inside the message (EventBridge "via CloudTrail").

        Checkpointed under its eventID, so the same event arriving in another message, or
        the message coming back, is not handed over twice."""
        probe = _probe(raw)
        event_key = probe.event_id or hashlib.sha256(raw).hexdigest()
        info = KeyInfo(
            ObjectKind.LOG,
            account_id=probe.recipient_account_id or account,
            region=probe.aws_region,
        )
        ref = FileRef(bucket="eventbridge", key=f"cloudtrail-event/{event_key}", info=info)
        return self.pipeline.run_records(ref, [raw], message_id)


def _digests_apart(note: Notification) -> tuple[Notification, tuple[FileRef, ...]]:
    """`note` without its digest objects, and those digests (checked, never handed over)."""
    digests = tuple(r for r in note.refs if r.kind is ObjectKind.DIGEST)
    if not digests:
        return note, ()
    return replace(note, refs=tuple(r for r in note.refs if r not in digests)), digests


def _verdict(outcomes: tuple[FileOutcome, ...]) -> Verdict:
    """What the outcomes of a message's files make of it: a failure keeps it for retry
    before a shutdown releases it, and a file busy elsewhere keeps it too."""
    if all(o.ok for o in outcomes):
        return Verdict("ack", "processed", outcomes)
    if any(o.status == "failed" for o in outcomes):
        return Verdict("retry", "failed", outcomes)
    if any(o.status == "interrupted" for o in outcomes):
        return Verdict("release", "interrupted", outcomes)
    return Verdict("retry", "busy", outcomes)


def _probe(raw: bytes) -> Event:
    """A carried record as an Event, to read its header fields."""
    return Event(raw, Delivery(FileRef("", "")), 0)
