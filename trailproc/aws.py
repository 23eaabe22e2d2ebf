"""AWS clients, created the way the AWS CLI would: standard credential chain, region,
profile and AWS_ENDPOINT_URL all honoured; nothing read from anywhere else.

aioboto3 is imported here, lazily, so `import trailproc` stays fast.
"""

from __future__ import annotations

import gzip
import os
from contextlib import AsyncExitStack
from typing import Any

import msgspec

from .config import Config

__all__ = ["AwsClients", "aio_session", "botocore_config", "import_aws_stack"]


def _fast_model_loader(search_path: str | None) -> Any:
    """botocore's data loader (same search path, AWS_DATA_PATH included), decoding its
    JSON models with msgspec.

    The first two clients load ~3.5 MB of JSON models (endpoints, S3's service model
    and endpoint rules, ...): ~120 ms with `json.loads(..., object_pairs_hook=
    OrderedDict)`, ~45 ms with msgspec, on every start-up and every Lambda cold start.
    The result is the same data in plain dicts, which keep insertion order as botocore
    needs. `Loader(file_loader=...)` is botocore's own hook for this.
    """
    from botocore.loaders import JSONFileLoader, Loader

    class MsgspecFileLoader(JSONFileLoader):
        def load_file(self, file_path: str) -> Any:
            for suffix, opener in ((".json", open), (".json.gz", gzip.open)):
                if os.path.isfile(file_path + suffix):
                    with opener(file_path + suffix, "rb") as handle:
                        return msgspec.json.decode(handle.read())
            return None

    paths = [
        os.path.expanduser(os.path.expandvars(path))
        for path in (search_path.split(os.pathsep) if search_path else [])
    ]
    return Loader(extra_search_paths=paths, file_loader=MsgspecFileLoader())


def import_aws_stack() -> None:
    """Import aioboto3 and what its clients use now (before forking workers)."""
    import aioboto3  # noqa: F401
    from aiobotocore.session import AioSession  # noqa: F401


def aio_session(profile: str | None = None, region: str | None = None) -> Any:
    """An `aioboto3.Session` (standard credential chain, profile, region and endpoint
    settings) whose clients load their service models faster (see
    `_fast_model_loader`)."""
    import aioboto3
    from aiobotocore.session import AioSession

    core = AioSession(profile=profile)
    loader = _fast_model_loader(core.get_config_variable("data_path"))
    core.register_component("data_loader", loader)
    return aioboto3.Session(botocore_session=core, profile_name=profile, region_name=region)


def botocore_config(config: Config, *, pool: int = 10) -> Any:
    from botocore.config import Config as BotoConfig

    return BotoConfig(
        # botocore's own quick retries first; tenacity rides out longer storms on top.
        retries={"mode": "standard", "max_attempts": 4},
        max_pool_connections=max(pool, 10),
        connect_timeout=10,
        read_timeout=max(30, config.wait_time_seconds + 10),
        tcp_keepalive=True,
    )


def _plain_http(endpoint_url: str | None, service: str) -> bool:
    """Whether the endpoint a client will use is plain http:// (where botocore takes it:
    the config, then AWS_ENDPOINT_URL_<SERVICE>, then AWS_ENDPOINT_URL). When in doubt
    (the environment's endpoints are ignored, or none is set) the answer is no, so TLS
    verification stays on."""
    url = endpoint_url or ""
    ignored = os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true"
    if not url and not ignored:
        url = (
            os.environ.get("AWS_ENDPOINT_URL_" + service.upper().replace("-", "_"))
            or os.environ.get("AWS_ENDPOINT_URL")
            or ""
        )
    return url.lower().startswith("http://")


class AwsClients:
    """An async context manager handing out aioboto3 clients that share one session."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}
        self._session: Any = None

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = aio_session(self.config.profile, self.config.region)
        return self._session

    async def client(self, service: str) -> Any:
        if service not in self._clients:
            kwargs: dict[str, Any] = {
                "config": botocore_config(self.config, pool=self.config.download_concurrency + 4)
            }
            if self.config.endpoint_url:
                kwargs["endpoint_url"] = self.config.endpoint_url
            if _plain_http(self.config.endpoint_url, service):
                # No TLS on this endpoint (a local emulator): skip building an SSL context
                # and loading the CA bundle (~50 ms per client), which would go unused.
                kwargs["verify"] = False
            self._clients[service] = await self._stack.enter_async_context(
                self.session.client(service, **kwargs)
            )
        return self._clients[service]

    async def __aenter__(self) -> AwsClients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()
        self._clients.clear()
