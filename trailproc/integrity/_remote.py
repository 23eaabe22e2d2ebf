"""The AWS side of a validation: S3 through the object port and CloudTrail through the
same aioboto3 clients the daemon uses (`AwsClients`: credential chain, profile, region
and endpoint rules alike), all on one event loop in a background thread.

The validator hashes log files on a pool of worker threads; each of their requests is
handed to that loop and waited for (`asyncio.run_coroutine_threadsafe`), so the threads
share the loop's clients and connection pools.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, TypeVar

from .._aws import AwsClients, S3Router, ThreadedS3Client
from .._config import Config
from .._ports.objects import S3Objects
from ._storage import PortStore

__all__ = ["AwsReads", "LoopThread"]

_T = TypeVar("_T")


class LoopThread:
    """An event loop running in a daemon thread; `run` executes a coroutine on it from any
    other thread and returns its result (or raises its exception)."""

    def __init__(self, name: str = "trailproc-validate-io") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, step: Awaitable[_T]) -> _T:
        async def wrapped() -> _T:
            return await step

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result()

    def close(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.run(self.loop.shutdown_default_executor())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class _LoopClient:
    """A client of one AWS service as the validator's threads call it (`client.op(**kw)`,
    blocking), each call sent by the loop's aioboto3 client of that service and region."""

    def __init__(self, reads: AwsReads, service: str, region: str | None) -> None:
        self._reads = reads
        self._service = service
        self._region = region

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        def call(**kwargs: Any) -> Any:
            return self._reads.loop.run(self._reads.call(self._service, self._region,
                                                         operation, kwargs))  # fmt: skip

        return call


class AwsReads:
    """What a validation reads from AWS: `store` (S3 through the object port) and
    `client(service, region)` (CloudTrail's ListPublicKeys, GetTrailStatus). Close it
    when done: the clients are closed on the loop, then the loop stops.

    `s3_client`: a botocore S3 client the caller made (sync); it is served to the port
    on the loop's worker threads, as the Lambda's cold-start client is.
    """

    def __init__(self, config: Config, *, s3_client: Any = None) -> None:
        self.loop = LoopThread()
        self._stack = AsyncExitStack()
        self._clients: AwsClients | None = None
        try:
            port = self.loop.run(self._port(config, s3_client))
        except BaseException:
            self.close()
            raise
        self.store = PortStore(port, self.loop.run)

    async def _port(self, config: Config, s3_client: Any) -> S3Objects:
        self._clients = await self._stack.enter_async_context(AwsClients(config))
        if s3_client is not None:
            return S3Objects(ThreadedS3Client(s3_client))
        return S3Objects(router=S3Router(self._clients))

    async def call(
        self, service: str, region: str | None, operation: str, kwargs: dict[str, Any]
    ) -> Any:
        assert self._clients is not None
        client = await self._clients.client(service, region=region)
        return await getattr(client, operation)(**kwargs)

    def client(self, service: str, region: str | None = None) -> Any:
        return _LoopClient(self, service, region)

    def close(self) -> None:
        try:
            self.loop.run(self._stack.aclose())
        finally:
            self.loop.close()
