"""Test helpers for code built on trailproc: a local trail on moto, records, a signer.

    import os
    import trailproc
    from trailproc.testing import TrailSandbox, make_records, moto_server

    with moto_server() as server:                  # needs moto: pip install 'moto[server]'
        os.environ.update(server.env())            # endpoint, region, test credentials
        box = TrailSandbox(server.url).create()    # bucket, topic, queue, subscription
        box.deliver(make_records(100))             # one log file, announced on SNS
        trailproc.run(MyProcessor(), queue_url=box.queue_url, exit_when_idle=True)

`DigestChainSigner` writes CloudTrail digest files signed with a key of your own, for
testing digest validation; `run_on_sample_data` runs a processor over generated
deliveries on a throwaway moto server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._sandbox import MotoServer, TrailSandbox, encode_log, log_key, make_records, moto_server

if TYPE_CHECKING:
    from ._demo import run_on_sample_data
    from .integrity._testing import (
        DigestChainSigner,
        SignedDigest,
        SignedLog,
        digest_key,
        new_private_key,
    )

__all__ = [
    "DigestChainSigner",
    "MotoServer",
    "SignedDigest",
    "SignedLog",
    "TrailSandbox",
    "digest_key",
    "encode_log",
    "log_key",
    "make_records",
    "moto_server",
    "new_private_key",
    "run_on_sample_data",
]


def __getattr__(name: str) -> Any:
    # The signer needs `cryptography`, the sample runner the AWS stack: load on first use.
    if name in ("DigestChainSigner", "SignedDigest", "SignedLog", "digest_key", "new_private_key"):
        from .integrity import _testing

        return getattr(_testing, name)
    if name == "run_on_sample_data":
        from ._demo import run_on_sample_data

        return run_on_sample_data
    raise AttributeError(f"module 'trailproc.testing' has no attribute {name!r}")
