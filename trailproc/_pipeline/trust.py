"""The trust boundary: may a message, and what it carries, reach user code?

Every road asks here, before anything is downloaded: the SQS daemon and the Lambda
triggers for notifications (`Trust.vet_notification`), the CloudWatch Logs / Kinesis /
Firehose triggers for subscription payloads (`Trust.vet_document`), and the roads that
list a bucket (`backfill`, `audit --fix`) for each file (`Trust.vet_file`). Records read
from CloudTrail's own API (`history`) are the credentials' account's: `check_account`.

The rules, one function each, pure (they return a `Refusal` or None):

* allow-lists: topic, bucket, account (of a file's key, of each record carried in a
  message), CloudWatch Logs group and stream;
* records carried inside a message need `accept_records_in_messages`: whoever may send
  the message may write them;
* with `verify_sns_signatures`, an SNS envelope must be signed by SNS (SignatureVersion 1
  or 2) with a certificate from `https://sns.<region>.amazonaws.com`, and a message
  without an envelope is refused unless `accept_unsigned_messages` is set.

The only I/O is fetching a signing certificate, behind the `CertificateSource` port and
a bounded cache (`CertificateCache`); the URL is checked before any request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from .._config import Config
from .._errors import Refused
from .cwlogs import SubscriptionDocument
from .events import Delivery, Event
from .keys import FileRef
from .notifications import Notification, SnsEnvelope

if TYPE_CHECKING:  # cryptography is imported only when signatures are checked
    from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = [
    "CertificateCache",
    "CertificateSource",
    "Refusal",
    "Trust",
    "TrustPolicy",
    "cert_url_problem",
    "check_account",
    "check_bucket",
    "check_document",
    "check_envelope",
    "check_file",
    "check_notification",
    "check_records",
    "string_to_sign",
    "verify_signature",
]

# SNS signs with certificates it serves from its regional endpoint, e.g.
# https://sns.us-east-1.amazonaws.com/SimpleNotificationService-<id>.pem.
_SNS_CERT_HOST = re.compile(r"\Asns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?\Z", re.ASCII)
_SNS_CERT_PATH = re.compile(r"\A/SimpleNotificationService-[A-Za-z0-9]+\.pem\Z", re.ASCII)
_HASHES = {"1": "SHA1", "2": "SHA256"}
# A base64 RSA signature is a few hundred characters; anything far longer is not one.
_MAX_SIGNATURE_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why something may not reach user code, and which object it concerned."""

    reason: str
    bucket: str | None = None
    key: str | None = None

    def error(self, message_id: str | None) -> Refused:
        return Refused(self.reason, message_id=message_id, bucket=self.bucket, key=self.key)


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """The trust settings of a `Config`, as sets."""

    allowed_buckets: frozenset[str] = frozenset()
    allowed_accounts: frozenset[str] = frozenset()
    allowed_topic_arns: frozenset[str] = frozenset()
    allowed_log_groups: frozenset[str] = frozenset()
    allowed_log_streams: frozenset[str] = frozenset()
    accept_records_in_messages: bool = False
    verify_sns_signatures: bool = False
    accept_unsigned_messages: bool = False
    test_cert_url_prefix: str | None = None

    @classmethod
    def of(cls, config: Config) -> TrustPolicy:
        return cls(
            allowed_buckets=frozenset(config.allowed_buckets),
            allowed_accounts=frozenset(config.allowed_accounts),
            allowed_topic_arns=frozenset(config.allowed_topic_arns),
            allowed_log_groups=frozenset(config.allowed_log_groups),
            allowed_log_streams=frozenset(config.allowed_log_streams),
            accept_records_in_messages=config.accept_records_in_messages,
            verify_sns_signatures=config.verify_sns_signatures,
            accept_unsigned_messages=config.accept_unsigned_messages,
            test_cert_url_prefix=config.sns_test_cert_url_prefix,
        )

    def summary(self) -> dict[str, Any]:
        """The effective settings, for the one log line at start ("any" = no allow-list)."""

        def listed(values: frozenset[str]) -> list[str] | str:
            return sorted(values) if values else "any"

        out: dict[str, Any] = {
            "allowed_buckets": listed(self.allowed_buckets),
            "allowed_accounts": listed(self.allowed_accounts),
            "allowed_topic_arns": listed(self.allowed_topic_arns),
            "allowed_log_groups": listed(self.allowed_log_groups),
            "allowed_log_streams": listed(self.allowed_log_streams),
            "accept_records_in_messages": self.accept_records_in_messages,
            "verify_sns_signatures": self.verify_sns_signatures,
            "accept_unsigned_messages": self.accept_unsigned_messages,
        }
        if self.test_cert_url_prefix:
            out["sns_test_cert_url_prefix"] = self.test_cert_url_prefix
        return out


# --- the rules (pure) ------------------------------------------------------------------


def _record_account(raw: bytes, fallback: str | None) -> str | None:
    return Event(raw, Delivery(FileRef("", "")), 0).recipient_account_id or fallback


def check_bucket(policy: TrustPolicy, bucket: str) -> Refusal | None:
    """A bucket a road reads as a whole (`watch`) must be allowed."""
    if policy.allowed_buckets and bucket not in policy.allowed_buckets:
        return Refusal(f"bucket {bucket!r} not in allowed_buckets", bucket)
    return None


def check_file(policy: TrustPolicy, ref: FileRef) -> Refusal | None:
    """A log file may be read only from an allowed bucket, under an allowed account."""
    if policy.allowed_buckets and ref.bucket not in policy.allowed_buckets:
        return Refusal("bucket not in allowed_buckets", ref.bucket, ref.key)
    if policy.allowed_accounts and ref.info.account_id not in policy.allowed_accounts:
        return Refusal(f"account {ref.info.account_id!r} not in allowed_accounts",
                       ref.bucket, ref.key)  # fmt: skip
    return None


def check_account(policy: TrustPolicy, account: str | None) -> Refusal | None:
    """An account whose events a road reads as a whole (`history`: the credentials' own)."""
    if policy.allowed_accounts and account not in policy.allowed_accounts:
        return Refusal(f"account {account!r} not in allowed_accounts")
    return None


def check_records(
    policy: TrustPolicy, records: Iterable[bytes], fallback_account: str | None = None
) -> Refusal | None:
    """Each record's `recipientAccountId` (else `fallback_account`) must be allowed."""
    if not policy.allowed_accounts:
        return None
    for raw in records:
        account = _record_account(raw, fallback_account)
        if account not in policy.allowed_accounts:
            return Refusal(f"account {account!r} not in allowed_accounts")
    return None


def check_notification(policy: TrustPolicy, note: Notification) -> Refusal | None:
    """The allow-lists and the records-in-messages opt-in for one parsed notification.

    The envelope's signature is `check_envelope`'s job (it may need a certificate)."""
    if note.carried_records and not policy.accept_records_in_messages:
        # Whoever may send to the queue (or publish to the topic) can write such a
        # record; nothing in the message proves CloudTrail wrote it.
        return Refusal(
            f"message carries {len(note.carried_records)} CloudTrail record(s) in its body "
            "(EventBridge 'via CloudTrail'); these are refused unless "
            "accept_records_in_messages is set (see docs/security.md)"
        )
    if policy.allowed_topic_arns and note.topic_arn not in policy.allowed_topic_arns:
        return Refusal(f"notification from SNS topic {note.topic_arn!r}, not in "
                       "allowed_topic_arns")  # fmt: skip
    for ref in note.refs:
        refusal = check_file(policy, ref)
        if refusal is not None:
            return refusal
    # Records inside the message read no bucket, but a forged one would still reach the
    # handlers: the same account rule applies to them.
    return check_records(policy, note.carried_records, note.account)


def check_document(policy: TrustPolicy, document: SubscriptionDocument) -> Refusal | None:
    """A CloudWatch Logs subscription payload (Lambda, Kinesis, Firehose) with records."""
    if not policy.accept_records_in_messages:
        return Refusal(
            f"CloudWatch Logs payload from log group {document.log_group!r} carries "
            f"{len(document.log_events)} CloudTrail record(s); records carried in "
            "messages are refused unless accept_records_in_messages is set (see "
            "docs/security.md)"
        )
    if policy.allowed_log_groups and document.log_group not in policy.allowed_log_groups:
        return Refusal(f"log group {document.log_group!r} not in allowed_log_groups")
    if policy.allowed_log_streams and document.log_stream not in policy.allowed_log_streams:
        return Refusal(f"log stream {document.log_stream!r} not in allowed_log_streams")
    if policy.allowed_accounts:
        if document.owner not in policy.allowed_accounts:
            return Refusal(f"log group owner {document.owner!r} not in allowed_accounts")
        for event in document.log_events:
            account = _record_account(event.record, document.owner)
            if account not in policy.allowed_accounts:
                return Refusal(f"account {account!r} of log event {event.id} not in "
                               "allowed_accounts")  # fmt: skip
    return None


def cert_url_problem(url: str | None, test_prefix: str | None = None) -> str | None:
    """Why `url` may not serve an SNS signing certificate (None: it may)."""
    if not url:
        return "SNS envelope has no SigningCertURL"
    if test_prefix and url.startswith(test_prefix):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "SigningCertURL is not a URL"
    if parts.scheme != "https":
        return f"SigningCertURL scheme {parts.scheme!r} is not https"
    if (
        host is None
        or not _SNS_CERT_HOST.match(host)
        or parts.username is not None
        or port not in (None, 443)
    ):
        return f"SigningCertURL host {host!r} is not sns.<region>.amazonaws.com(.cn)"
    if not _SNS_CERT_PATH.match(parts.path) or parts.query or parts.fragment:
        # Only SNS's certificate files: no other object of the endpoint is fetched.
        return "SigningCertURL is not a /SimpleNotificationService-<id>.pem file"
    return None


def check_envelope(policy: TrustPolicy, envelope: SnsEnvelope | None) -> Refusal | None:
    """Everything about an envelope's signature that needs no certificate."""
    if not policy.verify_sns_signatures:
        return None
    if envelope is None:
        if policy.accept_unsigned_messages:
            return None
        return Refusal(
            "message has no SNS envelope to verify (raw delivery, or S3/EventBridge "
            "sending directly); refused because verify_sns_signatures is set and "
            "accept_unsigned_messages is not"
        )
    if envelope.signature_version not in _HASHES:
        return Refusal(f"SNS SignatureVersion {envelope.signature_version!r} is not 1 or 2")
    missing = [name for name, value in (
        ("Message", envelope.message), ("MessageId", envelope.message_id),
        ("Timestamp", envelope.timestamp), ("TopicArn", envelope.topic_arn),
        ("Type", envelope.type), ("Signature", envelope.signature),
    ) if value is None]  # fmt: skip
    if missing:
        return Refusal(f"SNS envelope lacks {', '.join(missing)}: cannot verify its signature")
    problem = cert_url_problem(envelope.signing_cert_url, policy.test_cert_url_prefix)
    if problem:
        return Refusal(f"{problem}; SNS signature not checked, message refused")
    return None


def string_to_sign(envelope: SnsEnvelope) -> bytes:
    """SNS's canonical form of a Notification: each signed field's name, then its value,
    each on its own line; Subject only when present."""
    fields = [("Message", envelope.message), ("MessageId", envelope.message_id)]
    if envelope.subject is not None:
        fields.append(("Subject", envelope.subject))
    fields += [("Timestamp", envelope.timestamp), ("TopicArn", envelope.topic_arn),
               ("Type", envelope.type)]  # fmt: skip
    text = "".join(f"{name}\n{value}\n" for name, value in fields)
    return text.encode("utf-8", "surrogatepass")


def verify_signature(envelope: SnsEnvelope, public_key: rsa.RSAPublicKey) -> Refusal | None:
    """Check the envelope's signature (after `check_envelope` passed) with `public_key`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    text = envelope.signature or ""
    if len(text) > _MAX_SIGNATURE_CHARS:
        return Refusal("SNS Signature is too long to be one")
    try:
        signature = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return Refusal("SNS Signature is not base64")
    algorithm = getattr(hashes, _HASHES[envelope.signature_version or ""])()
    try:
        public_key.verify(signature, string_to_sign(envelope), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        return Refusal(f"SNS signature does not match (SignatureVersion "
                       f"{envelope.signature_version}): the envelope was not sent by SNS "
                       "or was altered")  # fmt: skip
    return None


# --- the certificate port and its cache --------------------------------------------------


class CertificateSource(Protocol):
    """Fetches a PEM certificate; raises OSError (or a subclass) when it cannot."""

    async def fetch(self, url: str) -> bytes: ...


class CertificateCache:
    """Public keys of signing certificates, by URL: bounded LRU; concurrent requests for
    one URL share one fetch. Failures are not cached (the message is kept and retried)."""

    def __init__(self, source: CertificateSource, max_entries: int = 32) -> None:
        self.source = source
        self.max_entries = max_entries
        self._keys: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._pending: dict[str, asyncio.Future[rsa.RSAPublicKey]] = {}
        self.fetches = 0

    async def public_key(self, url: str) -> rsa.RSAPublicKey:
        key = self._keys.get(url)
        if key is not None:
            self._keys.move_to_end(url)
            return key
        pending = self._pending.get(url)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[rsa.RSAPublicKey] = asyncio.get_running_loop().create_future()
        self._pending[url] = future
        try:
            key = await self._load(url)
        except BaseException as exc:
            # Others waiting on this fetch get an error of their own, not our cancellation.
            shared = exc if isinstance(exc, Exception) else OSError("certificate fetch stopped")
            future.set_exception(shared)
            future.exception()  # retrieved: no "never retrieved" warning when unshared
            raise
        finally:
            del self._pending[url]
        future.set_result(key)
        self._keys[url] = key
        while len(self._keys) > self.max_entries:
            self._keys.popitem(last=False)
        return key

    async def _load(self, url: str) -> rsa.RSAPublicKey:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.fetches += 1
        pem = await self.source.fetch(url)
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise OSError(f"{url} did not return a PEM certificate") from None
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise OSError(f"certificate at {url} has no RSA key")
        return key


# --- the gate every road holds -------------------------------------------------------------


class Trust:
    """The policy of one configuration, and the certificates it needs. Methods raise
    `Refused` (with the location filled in) or return."""

    def __init__(self, config: Config, certificates: CertificateSource | None = None) -> None:
        self.policy = TrustPolicy.of(config)
        self.certificates = CertificateCache(certificates) if certificates else None

    async def vet_notification(self, note: Notification, message_id: str | None) -> None:
        policy = self.policy
        refusal = check_envelope(policy, note.envelope) or check_notification(policy, note)
        if refusal is None and policy.verify_sns_signatures and note.envelope is not None:
            refusal = await self._verify(note.envelope)
        if refusal is not None:
            raise refusal.error(message_id)

    async def _verify(self, envelope: SnsEnvelope) -> Refusal | None:
        url = envelope.signing_cert_url or ""
        if self.certificates is None:
            return Refusal("no certificate source to verify SNS signatures with")
        try:
            key = await self.certificates.public_key(url)
        except (OSError, asyncio.TimeoutError) as exc:
            return Refusal(f"cannot fetch the SNS signing certificate {url}: {exc}")
        return verify_signature(envelope, key)

    def vet_document(self, document: SubscriptionDocument, ident: str | None) -> None:
        refusal = check_document(self.policy, document)
        if refusal is not None:
            raise refusal.error(ident)

    def vet_file(self, ref: FileRef, message_id: str | None = None) -> None:
        refusal = check_file(self.policy, ref)
        if refusal is not None:
            raise refusal.error(message_id)

    def vet_records(
        self, records: Iterable[bytes], ident: str | None, account: str | None = None
    ) -> None:
        refusal = check_records(self.policy, records, account)
        if refusal is not None:
            raise refusal.error(ident)
