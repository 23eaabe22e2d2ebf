"""The delete batcher: deletes collected for a moment and sent 10 at a time."""

from __future__ import annotations

import asyncio
from typing import Any

from ..._errors import RetryAgain, retry_transient
from ..._observe import get_logger
from ..._ports.clock import Clock, SystemClock
from ..._ports.queue import QueuePort

__all__ = ["GONE_CODES", "DeleteBatcher"]

log = get_logger("trailproc.sqs")

# Codes meaning the receipt handle no longer names a message in flight here.
GONE_CODES = {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight",
              "AWS.SimpleQueueService.MessageNotInflight"}  # fmt: skip
BATCH_SIZE = 10  # DeleteMessageBatch's limit

_Entry = tuple[str, str | None, "asyncio.Future[bool]"]  # receipt handle, message id, result


class DeleteBatcher:
    """Collects deletes for `linger` seconds and sends them 10 at a time.

    An entry SQS failed on its own side (`SenderFault` false: an internal error or
    throttling of that entry) is sent again a few times; one it refused (an invalid or
    expired receipt handle) is not.
    """

    def __init__(
        self,
        queue: QueuePort,
        linger: float = 0.05,
        entry_attempts: int = 5,
        clock: Clock | None = None,
    ) -> None:
        self.queue = queue
        self.linger = linger
        self.entry_attempts = entry_attempts
        self.clock = clock or SystemClock()
        self._pending: list[_Entry] = []
        self._timer: asyncio.Future[None] | asyncio.Handle | None = None
        self._sending: set[asyncio.Future[None]] = set()

    async def delete(
        self, receipt_handle: str, message_id: str | None = None, *, last: bool = False
    ) -> bool:
        """Resolve True once SQS confirmed the delete, False if it refused.

        `last`: the caller knows no other delete can join this batch before the linger
        ends (nothing else is being worked on), so waiting would only add latency.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((receipt_handle, message_id, future))
        if len(self._pending) >= BATCH_SIZE or last:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.ensure_future(self._flush_after(self.linger))
        return await future

    async def _flush_after(self, delay: float) -> None:
        await self.clock.sleep(delay)
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch = self._pending[:BATCH_SIZE]
        self._pending = self._pending[BATCH_SIZE:]
        if batch:
            # Keep a reference: the loop holds tasks only weakly.
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        if self._pending:
            self._timer = asyncio.get_running_loop().call_soon(self._flush)

    async def _send(self, batch: list[_Entry]) -> None:
        pending = list(batch)  # entries not yet confirmed or refused
        attempts = 0

        async def attempt() -> None:
            nonlocal attempts, pending
            attempts += 1
            entries = [(str(i), entry[0]) for i, entry in enumerate(pending)]
            failed = {f["Id"]: f for f in await self.queue.delete_batch(entries)}
            again: list[_Entry] = []
            for i, entry in enumerate(pending):
                _handle, message_id, future = entry
                failure = failed.get(str(i))
                if future.done():
                    continue
                if failure is None:
                    future.set_result(True)
                elif failure.get("SenderFault") or failure.get("Code") in GONE_CODES:
                    self._refused(message_id, failure, attempts)
                    future.set_result(False)
                else:  # failed on SQS's side: send it again
                    again.append(entry)
            pending = again
            if again:
                raise RetryAgain(f"{len(again)} delete entries failed on SQS's side")

        try:
            await retry_transient(attempt, attempts=self.entry_attempts)
        except RetryAgain:
            for _handle, message_id, future in pending:
                if not future.done():
                    self._refused(message_id, {"Code": "InternalError"}, attempts)
                    future.set_result(False)
        except Exception as exc:
            for _handle, _message_id, future in pending:
                if not future.done():
                    future.set_exception(exc)

    @staticmethod
    def _refused(message_id: str | None, failure: dict[str, Any], attempts: int) -> None:
        log.warning("delete refused by SQS", message_id=message_id, code=failure.get("Code"),
                    detail=failure.get("Message"), attempts=attempts,
                    then="it comes back and is skipped by its checkpoint")  # fmt: skip
