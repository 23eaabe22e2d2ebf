"""One CloudWatch Logs subscription payload, start to result: the part the Lambda
triggers that carry such payloads (CloudWatch Logs itself, Kinesis, Firehose) share.

Each payload document is one checkpoint unit, named by its log group, stream and log
event ids, so a payload delivered again (a retried invocation, a Kinesis record read
again) is not handed over twice, and one stopped half-way resumes after its last
committed batch. The records inside are *records in messages*: nothing proves CloudTrail
wrote them, only that someone could write to the log group (or put to the stream), so
they pass the same trust boundary as EventBridge-routed records (see docs/security.md).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

from .._config import Config
from .._errors import BadLogFile, Refused, TrailprocError
from .._observe import get_logger
from .._pipeline.cwlogs import SubscriptionDocument, decode_base64_payload
from .._pipeline.engine import FilePipeline
from .._pipeline.keys import FileRef, KeyInfo, ObjectKind, StreamOrigin
from .._pipeline.processor import Source
from .._pipeline.trust import Trust

__all__ = ["DocumentResult", "SubscriptionRunner", "document_ref"]

log = get_logger("trailproc.subscriptions")

Status = Literal["ok", "control", "failed", "refused", "bad_payload"]

# CloudTrail names the streams it writes "<account>_CloudTrail_<region>".
_TRAIL_STREAM = re.compile(r"\A\d{12}_CloudTrail_([a-z0-9-]+)\Z", re.ASCII)


@dataclass(frozen=True, slots=True)
class DocumentResult:
    """What became of one payload: `ok` and `control` are acknowledged, the rest kept."""

    status: Status
    records: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "control")


def _why(error: TrailprocError) -> str:
    return f"{error.message} ({error.location})" if error.location else error.message


def document_ref(document: SubscriptionDocument, via: str) -> FileRef:
    """The checkpoint unit of a DATA_MESSAGE document.

    The key names owner, group, stream and first log event id (readable in the store);
    the etag is a hash of every log event id, so two documents starting with the same
    event (a forged one, say) are still two units. `:` cannot occur in group or stream
    names, so the key is unambiguous.
    """
    ids = tuple(e.id for e in document.log_events)
    first = ids[0] if ids else ""
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
    stream = _TRAIL_STREAM.match(document.log_stream)
    info = KeyInfo(
        ObjectKind.LOG, account_id=document.owner, region=stream.group(1) if stream else None
    )
    origin = StreamOrigin(
        road="cloudwatch-logs",
        via=via,
        log_group=document.log_group,
        log_stream=document.log_stream,
        log_event_ids=ids,
    )
    key = f"cloudwatch-logs:{document.owner}:{document.log_group}:{document.log_stream}:{first}"
    return FileRef(bucket="", key=key, etag=digest, info=info, origin=origin)


class SubscriptionRunner:
    """Decodes, vets and runs subscription payloads through one `FilePipeline`."""

    def __init__(self, config: Config, pipeline: FilePipeline, trust: Trust | None = None) -> None:
        self.config = config
        self.pipeline = pipeline
        self.trust = trust or Trust(config)

    def _count(self, via: str, status: Status) -> None:
        self.pipeline.observer.metrics.road_units.labels(via, status).inc()

    def decode(
        self, data: str | bytes, *, ident: str, via: str, gzip_only: bool = True
    ) -> SubscriptionDocument | DocumentResult:
        """base64 data → document, or the (already reported) result of a bad payload."""
        try:
            if not isinstance(data, str | bytes):
                raise BadLogFile(f"payload data is {type(data).__name__}, not a base64 string")
            return decode_base64_payload(
                data, max_bytes=self.pipeline.max_bytes, gzip_only=gzip_only
            )
        except BadLogFile as exc:
            exc.message = f"bad CloudWatch Logs payload: {exc.message}"
            self.pipeline.observer.fail(exc.located(message_id=ident))
            self._count(via, "bad_payload")
            return DocumentResult("bad_payload", error=_why(exc))

    async def run(self, document: SubscriptionDocument, *, ident: str, via: str) -> DocumentResult:
        """Hand over the records of one document (checkpointed as one unit)."""
        if document.is_control:
            log.info("CloudWatch Logs control message acknowledged", message_id=ident, via=via,
                     message=document.log_events[0].record[:200].decode(errors="replace")
                     if document.log_events else None)  # fmt: skip
            self._count(via, "control")
            return DocumentResult("control")
        try:
            self.trust.vet_document(document, ident)
        except Refused as exc:
            self.pipeline.observer.fail(exc)
            self._count(via, "refused")
            return DocumentResult("refused", error=_why(exc))
        ref = document_ref(document, via)
        if not self.pipeline.processor.filter_source(Source(message_id=ident, refs=(ref,))):
            log.info("filter_source declined the payload", message_id=ident, via=via)
            self._count(via, "ok")
            return DocumentResult("ok")
        records = [event.record for event in document.log_events]
        outcome = await self.pipeline.run_records(ref, records, ident)
        if outcome.ok:
            self._count(via, "ok")
            return DocumentResult("ok", records=outcome.records)
        self._count(via, "failed")
        error = _why(outcome.error) if outcome.error else outcome.status
        return DocumentResult("failed", records=outcome.records, error=error)
