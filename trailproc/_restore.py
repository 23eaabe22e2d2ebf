"""Archived log files: request their restore, hand them on once they are readable.

Lifecycle rules often move old CloudTrail logs to S3 Glacier Flexible Retrieval or Deep
Archive, where GetObject fails with InvalidObjectState. `backfill --restore-days N`
passes every listed file through `restored_refs`: a file in an archive storage class
(or an Intelligent-Tiering archive tier) gets a RestoreObject request (a temporary
copy for N days), and is handed on once HeadObject's `Restore` header says the copy is
ready; readable files are handed on at once. Restores take minutes to hours (Standard
tier: 3-5 hours for Flexible Retrieval, up to 12 for Deep Archive).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ._errors import error_code, retry_transient
from ._observe import get_logger
from ._pipeline.keys import FileRef
from .checkpoint import CheckpointStore, FileId

__all__ = ["ARCHIVE_CLASSES", "RestoreSettings", "restored_refs"]

log = get_logger("trailproc.restore")

# Storage classes whose objects must be restored before GetObject reads them.
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})

ClientFor = Callable[[FileRef], Awaitable[Any]]


@dataclass(frozen=True)
class RestoreSettings:
    """How archived files are restored: the temporary copy's lifetime in `days`, the
    retrieval `tier`, and how often a pending restore is checked."""

    days: int
    tier: str = "Standard"
    poll_seconds: float = 300.0


def _state(head: dict[str, Any]) -> str:
    """'readable', 'restoring' or 'archived' from a HeadObject response."""
    archived = head.get("StorageClass") in ARCHIVE_CLASSES or bool(head.get("ArchiveStatus"))
    if not archived:
        return "readable"
    restore = str(head.get("Restore") or "")
    if 'ongoing-request="false"' in restore:
        return "readable"
    return "restoring" if 'ongoing-request="true"' in restore else "archived"


async def _head(client: Any, ref: FileRef, extra: dict[str, str]) -> dict[str, Any]:
    response: dict[str, Any] = await retry_transient(
        lambda: client.head_object(Bucket=ref.bucket, Key=ref.key, **extra)
    )
    return response


async def _request(
    client: Any, ref: FileRef, head: dict[str, Any], settings: RestoreSettings,
    extra: dict[str, str],
) -> None:  # fmt: skip
    days, tier = settings.days, settings.tier
    # Intelligent-Tiering archive tiers are restored without a number of days.
    request: dict[str, Any] = {} if head.get("ArchiveStatus") else {
        "Days": days, "GlacierJobParameters": {"Tier": tier}}  # fmt: skip
    try:
        await retry_transient(lambda: client.restore_object(
            Bucket=ref.bucket, Key=ref.key, RestoreRequest=request, **extra))  # fmt: skip
    except Exception as exc:
        if error_code(exc) != "RestoreAlreadyInProgress":
            raise
    log.info("restore requested", bucket=ref.bucket, key=ref.key,
             storage_class=head.get("StorageClass") or head.get("ArchiveStatus"),
             days=days, tier=tier)  # fmt: skip


async def restored_refs(
    refs: AsyncIterator[FileRef],
    client_for: ClientFor,
    store: CheckpointStore,
    *,
    settings: RestoreSettings,
    access_args: Callable[[str], dict[str, str]] = lambda bucket: {},
    stopping: asyncio.Event | None = None,
    unrestored: list[FileRef] | None = None,
) -> AsyncIterator[FileRef]:
    """`refs`, with archived files held back until their restore is done (see module).

    Files the store records as done are handed on without a request (the pipeline
    skips them). Until `stopping` is set, restoring files are polled every
    `settings.poll_seconds`; files still restoring when it is set are logged, appended to
    `unrestored` and not handed on.
    """
    poll_seconds = settings.poll_seconds
    waiting: list[tuple[FileRef, Any, dict[str, str]]] = []
    async for ref in refs:
        if ref.etag and await store.is_done(FileId(ref.bucket, ref.key, ref.etag)):
            yield ref
            continue
        client, extra = await client_for(ref), access_args(ref.bucket)
        head = await _head(client, ref, extra)
        state = _state(head)
        if state == "readable":
            yield ref
            continue
        if state == "archived":
            await _request(client, ref, head, settings, extra)
        waiting.append((ref, client, extra))
    while waiting and not (stopping is not None and stopping.is_set()):
        still = []
        for ref, client, extra in waiting:
            if _state(await _head(client, ref, extra)) == "readable":
                yield ref
            else:
                still.append((ref, client, extra))
        waiting = still
        if not waiting:
            break
        log.info("waiting for restores", files=len(waiting), poll_seconds=poll_seconds)
        if stopping is None:
            await asyncio.sleep(poll_seconds)
        else:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), poll_seconds)
    for ref, _client, _extra in waiting:
        if unrestored is not None:
            unrestored.append(ref)
        log.warning("stopped while the file was being restored: run again to process it",
                    bucket=ref.bucket, key=ref.key)  # fmt: skip
