"""Integrity validation of CloudTrail log files against their signed hourly digests."""

from .._pipeline.digests import HashCheck, PendingDigestChecks, parse_digest
from ._keys import (
    CloudTrailPublicKeys,
    KeyNotUsable,
    PublicKeyRing,
    PublicKeySource,
    fingerprints,
    load_public_key,
)
from ._model import FileKind, FileResult, Gap, MissingTail, Status, ValidationReport
from ._signing import signing_string, verify_signature
from ._validator import (
    ProgressHook,
    TrailArn,
    TrailDelivery,
    ValidationError,
    parse_time,
    validate,
)

__all__ = [
    "CloudTrailPublicKeys",
    "FileKind",
    "FileResult",
    "Gap",
    "HashCheck",
    "KeyNotUsable",
    "MissingTail",
    "PendingDigestChecks",
    "ProgressHook",
    "PublicKeyRing",
    "PublicKeySource",
    "Status",
    "TrailArn",
    "TrailDelivery",
    "ValidationError",
    "ValidationReport",
    "fingerprints",
    "load_public_key",
    "parse_digest",
    "parse_time",
    "signing_string",
    "validate",
    "verify_signature",
]


def __getattr__(name: str) -> object:
    # The signer pulls in test helpers; import it only when asked for.
    if name == "DigestChainSigner":
        from ._testing import DigestChainSigner

        return DigestChainSigner
    raise AttributeError(name)
