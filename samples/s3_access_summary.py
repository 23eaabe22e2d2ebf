"""Per-principal summary of S3 data access: who read, wrote and deleted what, and how much.

Needs S3 data events enabled on the trail. Prints a table when the run ends.

From the repository root:
Run stand-alone:          python samples/s3_access_summary.py [--queue-url URL | PATH...]
Run as a daemon handler:
    trailproc run --handler samples.s3_access_summary:S3AccessSummary --queue-url URL
"""

from __future__ import annotations

import collections
import sys
from typing import Any

import trailproc

READS = {"GetObject", "HeadObject", "GetObjectAcl", "SelectObjectContent"}
WRITES = {"PutObject", "CopyObject", "CompleteMultipartUpload", "UploadPart", "PutObjectAcl"}
DELETES = {"DeleteObject", "DeleteObjects"}


class S3AccessSummary(trailproc.EventProcessor):
    """Aggregates S3 object-level events by (principal, bucket)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        self.table: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(
            collections.Counter
        )

    def filter_event(self, event: trailproc.Event) -> bool:
        # Decided from the cheap header fields: other events are never fully decoded.
        return event.event_source == "s3.amazonaws.com" and event.event_name in (
            READS | WRITES | DELETES
        )

    def process(self, events: list[trailproc.Event]) -> None:
        for e in events:
            bucket = (e.request_parameters or {}).get("bucketName", "?")
            row = self.table[(e.principal_arn or "unknown", bucket)]
            name = e.event_name
            kind = "read" if name in READS else "write" if name in WRITES else "delete"
            row[kind] += 1
            if e.error_code:
                row["denied" if "Denied" in e.error_code else "errors"] += 1
            extra = e.additional_event_data or {}
            row["bytes_in"] += int(extra.get("bytesTransferredIn") or 0)
            row["bytes_out"] += int(extra.get("bytesTransferredOut") or 0)

    def rows(self) -> list[tuple[str, str, collections.Counter[str]]]:
        return sorted(((p, b, c) for (p, b), c in self.table.items()),
                      key=lambda r: -sum(r[2][k] for k in ("read", "write", "delete")))  # fmt: skip

    def close(self) -> None:
        w = self.stream.write
        w(f"{'principal':60} {'bucket':16} {'reads':>6} {'writes':>6} {'deletes':>7} "
          f"{'denied':>6} {'MB out':>8}\n")  # fmt: skip
        for principal, bucket, c in self.rows():
            w(f"{principal[-60:]:60} {bucket[:16]:16} {c['read']:6d} {c['write']:6d} "
              f"{c['delete']:7d} {c['denied']:6d} {c['bytes_out'] / 1e6:8.2f}\n")  # fmt: skip
        self.stream.flush()


if __name__ == "__main__":
    from _runner import main

    main(S3AccessSummary(), __doc__.splitlines()[0])
