"""Gap filling: log files a digest lists that no notification named yet are handed over
through the pipeline (`fill_gaps_from_digests`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .keys import FileRef, ObjectKind
from .observer import PipelineObserver
from .trust import TrustPolicy, check_file

__all__ = ["GapFiller"]

# Runs one file through the pipeline (`FilePipeline.run`): (ref, message id) → outcome.
RunFile = Callable[[FileRef, "str | None"], Awaitable[Any]]


class GapFiller:
    """Hands over the log files a digest lists that no notification has named yet.

    When a digest is checked, a listed log file whose hash is not waiting in the store
    was not processed (CloudTrail writes a digest about an hour after the files it
    lists). Each such file of the digest's own bucket, account and region (and inside
    the allow-lists) is run through the pipeline like a notified one. The checkpoint
    store makes this safe: a file that was in fact done, or whose notification turns up
    later, is not handed over twice. A file handed over this way counts in
    `trailproc_missed_deliveries_total` and is logged once with its key; it then meets
    the digest's expected hash like any other log file. A file that cannot be read (for
    example deleted) is reported as a failure and not retried: `trailproc audit` finds it.
    """

    def __init__(
        self,
        run: RunFile,
        observer: PipelineObserver,
        *,
        allowed_buckets: Sequence[str] = (),
        allowed_accounts: Sequence[str] = (),
        concurrency: int = 4,
    ) -> None:
        self.run = run
        self.observer = observer
        # The trust boundary's file rule: a digest vouches only for allowed files.
        self.policy = TrustPolicy(allowed_buckets=frozenset(allowed_buckets),
                                  allowed_accounts=frozenset(allowed_accounts))  # fmt: skip
        self.concurrency = concurrency

    def candidates(self, digest: FileRef, unseen: Sequence[tuple[str, str]]) -> list[FileRef]:
        """The entries a digest may vouch for: its own bucket, account and region."""
        refs = []
        for bucket, key in unseen:
            ref = FileRef.of(bucket, key)
            same_origin = (bucket, ref.info.account_id, ref.info.region) == (
                digest.bucket, digest.info.account_id, digest.info.region,
            )  # fmt: skip
            if ref.kind is not ObjectKind.LOG or not same_origin:
                continue
            if check_file(self.policy, ref) is not None:
                continue
            refs.append(ref)
        return refs

    async def __call__(
        self, digest: FileRef, unseen: Sequence[tuple[str, str]], message_id: str | None
    ) -> int:
        """Fill the gaps `digest` shows; returns how many files were handed over."""
        limit = asyncio.Semaphore(self.concurrency)
        filled = 0
        run, observer = self.run, self.observer

        async def one(ref: FileRef) -> None:
            nonlocal filled
            async with limit:
                outcome = await run(ref, message_id)
            if outcome.status == "done":
                filled += 1
                observer.gap_filled(ref, digest, outcome.records)

        await asyncio.gather(*(one(ref) for ref in self.candidates(digest, unseen)))
        return filled
