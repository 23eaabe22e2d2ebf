"""The trust boundary (trailproc._pipeline.trust): every rule, table-driven, and SNS signatures.

Pure rules are checked on parsed notifications and CloudWatch Logs documents; signature
checks sign envelopes with a certificate of our own, served from 127.0.0.1 through the
documented test-only setting `sns_test_cert_url_prefix`. No network beyond loopback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sns_signing import CertServer, envelope, make_certificate, sign, signed

from trailproc._config import Config, ConfigError, load_config
from trailproc._errors import Refused
from trailproc._pipeline.cwlogs import LogEvent, SubscriptionDocument
from trailproc._pipeline.keys import FileRef
from trailproc._pipeline.notifications import SnsEnvelope, parse_notification, parse_payload
from trailproc._pipeline.trust import (
    CertificateCache,
    Trust,
    TrustPolicy,
    cert_url_problem,
    check_document,
    check_envelope,
    check_file,
    check_notification,
    string_to_sign,
    verify_signature,
)
from trailproc._ports.certificates import HttpCertificates
from trailproc._sandbox import log_key

ACCOUNT = "123456789012"
OTHER = "999999999999"
TOPIC = "arn:aws:sns:us-east-1:123456789012:trail"
BUCKET = "trail-bucket"


def _cloudtrail_body(bucket: str = BUCKET, account: str = ACCOUNT) -> dict[str, Any]:
    return {"s3Bucket": bucket, "s3ObjectKey": [log_key(account=account, unique="k1")]}


def _eventbridge(account: str = ACCOUNT, recipient: str | None = ACCOUNT) -> dict[str, Any]:
    detail: dict[str, Any] = {"eventVersion": "1.08", "eventID": "e-1", "eventName": "X"}
    if recipient is not None:
        detail["recipientAccountId"] = recipient
    return {"version": "0", "id": "eb-1", "source": "aws.iam", "account": account,
            "detail-type": "AWS API Call via CloudTrail", "detail": detail}  # fmt: skip


def _wrapped(message: dict[str, Any], topic: str = TOPIC) -> dict[str, Any]:
    return envelope(message, topic_arn=topic, cert_url="https://sns.us-east-1.amazonaws.com/c.pem")


def _policy(**settings: Any) -> TrustPolicy:
    return TrustPolicy.of(load_config(env={}, **settings))


# --- notifications: the allow-lists and the opt-in -------------------------------------

NOTIFICATION_CASES = [
    # (id, body, settings, refusal text or None)
    ("file-no-lists", _cloudtrail_body(), {}, None),
    ("file-bucket-allowed", _cloudtrail_body(), {"allowed_buckets": [BUCKET]}, None),
    ("file-bucket-other", _cloudtrail_body("evil"), {"allowed_buckets": [BUCKET]},
     "allowed_buckets"),
    ("file-account-allowed", _cloudtrail_body(), {"allowed_accounts": [ACCOUNT]}, None),
    ("file-account-other", _cloudtrail_body(account=OTHER), {"allowed_accounts": [ACCOUNT]},
     "allowed_accounts"),
    ("topic-allowed", _wrapped(_cloudtrail_body()), {"allowed_topic_arns": [TOPIC]}, None),
    ("topic-other", _wrapped(_cloudtrail_body(), topic=TOPIC + "-x"),
     {"allowed_topic_arns": [TOPIC]}, "allowed_topic_arns"),
    ("topic-list-raw-body", _cloudtrail_body(), {"allowed_topic_arns": [TOPIC]},
     "allowed_topic_arns"),
    ("records-not-opted-in", _eventbridge(), {}, "accept_records_in_messages"),
    ("records-wrapped-not-opted-in", _wrapped(_eventbridge()),
     {"allowed_topic_arns": [TOPIC], "allowed_accounts": [ACCOUNT]},
     "accept_records_in_messages"),
    ("records-opted-in", _eventbridge(), {"accept_records_in_messages": True}, None),
    ("records-account-other", _eventbridge(OTHER, OTHER),
     {"accept_records_in_messages": True, "allowed_accounts": [ACCOUNT]}, "allowed_accounts"),
    ("records-recipient-other", _eventbridge(ACCOUNT, OTHER),
     {"accept_records_in_messages": True, "allowed_accounts": [ACCOUNT]}, "allowed_accounts"),
    ("records-no-recipient-envelope-other", _eventbridge(OTHER, None),
     {"accept_records_in_messages": True, "allowed_accounts": [ACCOUNT]}, "allowed_accounts"),
    ("records-no-recipient-envelope-ok", _eventbridge(ACCOUNT, None),
     {"accept_records_in_messages": True, "allowed_accounts": [ACCOUNT]}, None),
    ("s3-event-bucket-other",
     {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                   "s3": {"bucket": {"name": "evil"}, "object": {"key": log_key(unique="k2")}}}]},
     {"allowed_buckets": [BUCKET]}, "allowed_buckets"),
    ("eventbridge-s3-bucket-other",
     {"detail-type": "Object Created", "source": "aws.s3",
      "detail": {"bucket": {"name": "evil"}, "object": {"key": log_key(unique="k3")}}},
     {"allowed_buckets": [BUCKET]}, "allowed_buckets"),
    ("validation-other-topic", _wrapped("CloudTrail validation message.", topic="arn:x"),  # type: ignore[arg-type]
     {"allowed_topic_arns": [TOPIC]}, "allowed_topic_arns"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "settings", "refused"),
                         [c[1:] for c in NOTIFICATION_CASES],
                         ids=[c[0] for c in NOTIFICATION_CASES])  # fmt: skip
def test_notification_rules(body: Any, settings: dict[str, Any], refused: str | None) -> None:
    note = parse_notification(json.dumps(body))
    refusal = check_notification(_policy(**settings), note)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal.reason


def test_a_refusal_names_the_object_it_concerns() -> None:
    note = parse_notification(json.dumps(_cloudtrail_body("evil")))
    refusal = check_notification(_policy(allowed_buckets=[BUCKET]), note)
    assert refusal is not None
    error = refusal.error("m-1")
    assert isinstance(error, Refused)
    assert (error.message_id, error.bucket, error.key) == ("m-1", "evil", note.refs[0].key)


@pytest.mark.parametrize(
    ("bucket", "account", "settings", "refused"),
    [(BUCKET, ACCOUNT, {}, None),
     ("evil", ACCOUNT, {"allowed_buckets": [BUCKET]}, "allowed_buckets"),
     (BUCKET, OTHER, {"allowed_accounts": [ACCOUNT]}, "allowed_accounts"),
     (BUCKET, ACCOUNT, {"allowed_buckets": [BUCKET], "allowed_accounts": [ACCOUNT]}, None)],
)  # fmt: skip
def test_file_rules(bucket: str, account: str, settings: dict[str, Any], refused: str | None
                    ) -> None:  # fmt: skip
    refusal = check_file(_policy(**settings), FileRef.of(bucket, log_key(account=account)))
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal.reason


# --- CloudWatch Logs documents ---------------------------------------------------------


def _document(owner: str = ACCOUNT, group: str = "trail", stream: str = "s",
              recipient: str = ACCOUNT) -> SubscriptionDocument:  # fmt: skip
    record = json.dumps({"eventID": "e", "recipientAccountId": recipient}).encode()
    return SubscriptionDocument("DATA_MESSAGE", owner, group, stream, ("f",),
                                (LogEvent("1", 0, record),))  # fmt: skip


DOCUMENT_CASES = [
    ("not-opted-in", _document(), {}, "accept_records_in_messages"),
    ("opted-in", _document(), {"accept_records_in_messages": True}, None),
    ("group-other", _document(group="evil"),
     {"accept_records_in_messages": True, "allowed_log_groups": ["trail"]}, "allowed_log_groups"),
    ("stream-other", _document(stream="evil"),
     {"accept_records_in_messages": True, "allowed_log_streams": ["s"]}, "allowed_log_streams"),
    ("owner-other", _document(owner=OTHER),
     {"accept_records_in_messages": True, "allowed_accounts": [ACCOUNT]}, "owner"),
    ("record-account-other", _document(recipient=OTHER),
     {"accept_records_in_messages": True, "allowed_accounts": [ACCOUNT]}, "of log event"),
    ("all-allowed", _document(),
     {"accept_records_in_messages": True, "allowed_accounts": [ACCOUNT],
      "allowed_log_groups": ["trail"], "allowed_log_streams": ["s"]}, None),
]  # fmt: skip


@pytest.mark.parametrize(("document", "settings", "refused"), [c[1:] for c in DOCUMENT_CASES],
                         ids=[c[0] for c in DOCUMENT_CASES])  # fmt: skip
def test_document_rules(document: SubscriptionDocument, settings: dict[str, Any],
                        refused: str | None) -> None:  # fmt: skip
    refusal = check_document(_policy(**settings), document)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal.reason


# --- certificate URLs -----------------------------------------------------------------

CERT_URLS = [
    ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", None),
    ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", None),
    ("https://sns.us-east-1.amazonaws.com:443/SimpleNotificationService-abc.pem", None),
    ("https://sns.us-east-1.amazonaws.com/x.pem", ".pem file"),
    ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a.pem?x=1", ".pem file"),
    ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-a/../b.pem", ".pem file"),
    ("https://sns.us-east-1.amazonaws.com/?Action=GetCertificate", ".pem file"),
    ("http://sns.us-east-1.amazonaws.com/x.pem", "not https"),
    ("https://sns.us-east-1.amazonaws.com.evil.example/x.pem", "host"),
    ("https://evil.example/sns.us-east-1.amazonaws.com/x.pem", "host"),
    ("https://sns.us-east-1.amazonaws.com@evil.example/x.pem", "host"),
    ("https://user@sns.us-east-1.amazonaws.com/x.pem", "host"),
    ("https://sns.us-east-1.amazonaws.com:8443/x.pem", "host"),
    ("https://s3.amazonaws.com/x.pem", "host"),
    ("https://sns.amazonaws.com/x.pem", "host"),
    ("https://SNS.us-east-1.amazonaws.com/SimpleNotificationService-1.pem", None),  # any case
    ("file:///etc/passwd", "not https"),
    ("https://[::1/x.pem", "not a URL"),
    ("", "no SigningCertURL"),
    (None, "no SigningCertURL"),
]


@pytest.mark.parametrize(("url", "problem"), CERT_URLS)
def test_cert_url_rules(url: str | None, problem: str | None) -> None:
    found = cert_url_problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_the_test_prefix_admits_only_urls_under_it() -> None:
    prefix = "http://127.0.0.1:8000/"
    assert cert_url_problem("http://127.0.0.1:8000/c.pem", prefix) is None
    assert cert_url_problem("http://127.0.0.1:8001/c.pem", prefix) is not None


@pytest.mark.parametrize(
    "prefix",
    ["http://evil.example/", "ftp://127.0.0.1/", "http://127.0.0.1:8000", "127.0.0.1/"],
)
def test_test_cert_prefix_must_be_loopback(prefix: str) -> None:
    with pytest.raises(ConfigError, match="sns_test_cert_url_prefix"):
        load_config(env={}, sns_test_cert_url_prefix=prefix)


# --- envelope form, before any certificate ---------------------------------------------

VERIFY = {"verify_sns_signatures": True}
GOOD_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"


def _fields(**changes: Any) -> SnsEnvelope:
    base = SnsEnvelope.of(envelope(_cloudtrail_body(), topic_arn=TOPIC, cert_url=GOOD_URL))
    return replace(replace(base, signature="c2ln"), **changes)


ENVELOPE_CASES = [
    ("off", _fields(signature_version="3"), {}, None),
    ("ok-form", _fields(), VERIFY, None),
    ("v2-ok-form", _fields(signature_version="2"), VERIFY, None),
    ("version-3", _fields(signature_version="3"), VERIFY, "SignatureVersion"),
    ("version-missing", _fields(signature_version=None), VERIFY, "SignatureVersion"),
    ("no-signature", _fields(signature=None), VERIFY, "Signature"),
    ("no-timestamp", _fields(timestamp=None), VERIFY, "Timestamp"),
    ("no-message-id", _fields(message_id=None), VERIFY, "MessageId"),
    ("http-cert", _fields(signing_cert_url=GOOD_URL.replace("https", "http")), VERIFY, "https"),
    ("foreign-cert-host", _fields(signing_cert_url="https://evil.example/c.pem"), VERIFY, "host"),
    ("no-cert-url", _fields(signing_cert_url=None), VERIFY, "SigningCertURL"),
    ("raw-refused", None, VERIFY, "accept_unsigned_messages"),
    ("raw-allowed", None, {**VERIFY, "accept_unsigned_messages": True}, None),
    ("raw-verification-off", None, {}, None),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "settings", "refused"), [c[1:] for c in ENVELOPE_CASES],
                         ids=[c[0] for c in ENVELOPE_CASES])  # fmt: skip
def test_envelope_rules(fields: SnsEnvelope | None, settings: dict[str, Any],
                        refused: str | None) -> None:  # fmt: skip
    refusal = check_envelope(_policy(**settings), fields)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal.reason


def test_lambda_spelling_of_the_envelope_is_read() -> None:
    """Lambda's SNS records say SigningCertUrl and give a missing Subject as null."""
    sns = {"Type": "Notification", "MessageId": "m", "TopicArn": TOPIC, "Subject": None,
           "Message": "{}", "Timestamp": "t", "SignatureVersion": "1", "Signature": "s",
           "SigningCertUrl": GOOD_URL}  # fmt: skip
    fields = SnsEnvelope.of(sns)
    assert fields.signing_cert_url == GOOD_URL and fields.subject is None
    assert b"Subject" not in string_to_sign(fields)


# --- signatures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signer() -> Any:
    return make_certificate()


def test_string_to_sign_is_sns_canonical_form() -> None:
    fields = _fields(subject="Hello")
    assert string_to_sign(fields).decode() == (
        f"Message\n{fields.message}\nMessageId\n{fields.message_id}\nSubject\nHello\n"
        f"Timestamp\n{fields.timestamp}\nTopicArn\n{TOPIC}\nType\nNotification\n"
    )
    assert b"Subject" not in string_to_sign(_fields())


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", [None, "CloudTrail delivery"])
def test_signed_envelopes_verify(signer: Any, version: str, subject: str | None) -> None:
    key, pem = signer
    from cryptography import x509

    public = x509.load_pem_x509_certificate(pem).public_key()
    env = signed(_cloudtrail_body(), key, topic_arn=TOPIC, cert_url=GOOD_URL, version=version,
                 subject=subject)  # fmt: skip
    assert verify_signature(SnsEnvelope.of(env), public) is None  # type: ignore[arg-type]


TAMPERING = [
    ("message", lambda e: {**e, "Message": e["Message"].replace("trail-bucket", "evil")}),
    ("topic", lambda e: {**e, "TopicArn": TOPIC + "-other"}),
    ("subject-added", lambda e: {**e, "Subject": "x"}),
    ("timestamp", lambda e: {**e, "Timestamp": "2030-01-01T00:00:00.000Z"}),
    ("version-swapped", lambda e: {**e, "SignatureVersion": "2"}),
    ("not-base64", lambda e: {**e, "Signature": "%%%"}),
    ("huge-signature", lambda e: {**e, "Signature": "A" * 100_000}),
    ("empty-signature", lambda e: {**e, "Signature": ""}),
]


@pytest.mark.parametrize("tamper", [t[1] for t in TAMPERING], ids=[t[0] for t in TAMPERING])
def test_tampered_envelopes_fail(signer: Any, tamper: Any) -> None:
    key, pem = signer
    from cryptography import x509

    public = x509.load_pem_x509_certificate(pem).public_key()
    env = tamper(signed(_cloudtrail_body(), key, topic_arn=TOPIC, cert_url=GOOD_URL))
    assert verify_signature(SnsEnvelope.of(env), public) is not None  # type: ignore[arg-type]


def test_another_key_does_not_verify(signer: Any) -> None:
    _key, pem = signer
    other_key, _ = make_certificate("other")
    from cryptography import x509

    public = x509.load_pem_x509_certificate(pem).public_key()
    env = signed(_cloudtrail_body(), other_key, topic_arn=TOPIC, cert_url=GOOD_URL)
    refusal = verify_signature(SnsEnvelope.of(env), public)  # type: ignore[arg-type]
    assert refusal is not None and "does not match" in refusal.reason


# --- the gate, with certificates fetched over loopback HTTP ----------------------------


@pytest.fixture
def cert_server(signer: Any) -> Iterator[CertServer]:
    server = CertServer(signer[1]).start()
    try:
        yield server
    finally:
        server.stop()


def _trust(server: CertServer, **settings: Any) -> Trust:
    config = load_config(env={}, verify_sns_signatures=True,
                         sns_test_cert_url_prefix=server.prefix, **settings)  # fmt: skip
    return Trust(config, HttpCertificates(timeout=10))


def _vet(trust: Trust, body: dict[str, Any]) -> Refused | None:
    note = parse_notification(json.dumps(body))
    try:
        asyncio.run(trust.vet_notification(note, "m-1"))
    except Refused as exc:
        return exc
    return None


def test_gate_accepts_signed_and_fetches_the_certificate_once(
    signer: Any, cert_server: CertServer
) -> None:
    key, _ = signer
    trust = _trust(cert_server, allowed_topic_arns=[TOPIC])
    note = parse_notification(json.dumps(signed(_cloudtrail_body(), key, topic_arn=TOPIC,
                                                cert_url=cert_server.cert_url)))  # fmt: skip

    async def twice() -> None:
        await trust.vet_notification(note, "m-1")
        await trust.vet_notification(note, "m-2")

    asyncio.run(twice())
    assert cert_server.requests == ["/SimpleNotificationService-test.pem"]


def test_gate_refuses_forgeries_and_never_fetches_a_foreign_url(
    signer: Any, cert_server: CertServer
) -> None:
    key, _ = signer
    other_key, _ = make_certificate("forger")
    trust = _trust(cert_server)
    forged = signed(_cloudtrail_body(), other_key, topic_arn=TOPIC, cert_url=cert_server.cert_url)
    assert "does not match" in str(_vet(trust, forged))
    foreign = signed(_cloudtrail_body(), key, topic_arn=TOPIC,
                     cert_url=f"http://127.0.0.2:{cert_server.port}/x.pem")  # fmt: skip
    assert "host" in str(_vet(trust, foreign)) or "https" in str(_vet(trust, foreign))
    v3 = sign({**envelope(_cloudtrail_body(), topic_arn=TOPIC, cert_url=cert_server.cert_url),
               "SignatureVersion": "1"}, key) | {"SignatureVersion": "3"}  # fmt: skip
    assert "SignatureVersion" in str(_vet(trust, v3))
    missing = signed(_cloudtrail_body(), key, topic_arn=TOPIC, cert_url=cert_server.cert_url)
    del missing["Timestamp"]
    assert "Timestamp" in str(_vet(trust, missing))
    assert "accept_unsigned_messages" in str(_vet(trust, _cloudtrail_body()))
    # Only the forged one (right host, wrong key) needed the certificate.
    assert cert_server.requests == ["/SimpleNotificationService-test.pem"]


def test_gate_checks_allow_lists_before_fetching(signer: Any, cert_server: CertServer) -> None:
    key, _ = signer
    trust = _trust(cert_server, allowed_buckets=[BUCKET])
    env = signed(_cloudtrail_body("evil"), key, topic_arn=TOPIC, cert_url=cert_server.cert_url)
    assert "allowed_buckets" in str(_vet(trust, env))
    assert cert_server.requests == []


def test_gate_refuses_when_the_certificate_cannot_be_fetched(
    signer: Any, cert_server: CertServer
) -> None:
    key, _ = signer
    env = signed(_cloudtrail_body(), key, topic_arn=TOPIC,
                 cert_url=cert_server.prefix + "missing.txt")  # fmt: skip
    error = _vet(_trust(cert_server), env)
    assert error is not None and "cannot fetch" in str(error) and "404" in str(error)


def test_gate_on_a_lambda_sns_record(signer: Any, cert_server: CertServer) -> None:
    """Lambda hands the envelope as a mapping, with its own spelling of the URL field."""
    key, _ = signer
    env = signed(_cloudtrail_body(), key, topic_arn=TOPIC, cert_url=cert_server.cert_url)
    sns = {**env, "SigningCertUrl": env.pop("SigningCertURL"), "Subject": None}
    note = parse_payload(sns)
    asyncio.run(_trust(cert_server).vet_notification(note, "m-1"))
    sns["Message"] = json.dumps(_cloudtrail_body("evil"))
    with pytest.raises(Refused, match="does not match"):
        asyncio.run(_trust(cert_server).vet_notification(parse_payload(sns), "m-1"))


# --- the certificate cache -------------------------------------------------------------


class _Port:
    """An in-memory certificate source counting fetches."""

    def __init__(self, pem: bytes, delay: float = 0.0) -> None:
        self.pem = pem
        self.delay = delay
        self.urls: list[str] = []

    async def fetch(self, url: str) -> bytes:
        self.urls.append(url)
        await asyncio.sleep(self.delay)
        if url.endswith("bad"):
            return b"not a certificate"
        return self.pem


def test_cache_is_bounded_lru_and_shares_concurrent_fetches(signer: Any) -> None:
    port = _Port(signer[1], delay=0.01)
    cache = CertificateCache(port, max_entries=2)

    async def scenario() -> None:
        await asyncio.gather(*(cache.public_key("u1") for _ in range(5)))
        assert port.urls == ["u1"]
        await cache.public_key("u2")
        await cache.public_key("u1")  # u1 most recent
        await cache.public_key("u3")  # evicts u2
        await cache.public_key("u1")
        await cache.public_key("u2")
        with pytest.raises(OSError, match="PEM"):
            await cache.public_key("bad")
        with pytest.raises(OSError, match="PEM"):
            await cache.public_key("bad")  # failures are not cached

    asyncio.run(scenario())
    assert port.urls == ["u1", "u2", "u3", "u2", "bad", "bad"]


def test_summary_names_every_setting() -> None:
    summary = _policy(allowed_buckets=["b"], verify_sns_signatures=True).summary()
    assert summary["allowed_buckets"] == ["b"] and summary["allowed_accounts"] == "any"
    assert summary["verify_sns_signatures"] is True
    assert set(summary) >= {
        "accept_records_in_messages",
        "accept_unsigned_messages",
        "allowed_topic_arns",
        "allowed_log_groups",
        "allowed_log_streams",
    }


def test_config_defaults_leave_verification_off() -> None:
    config = Config()
    assert not config.verify_sns_signatures and not config.accept_unsigned_messages
    assert config.sns_test_cert_url_prefix is None


def test_a_cancelled_fetch_fails_its_sharers_with_an_error_not_a_cancellation(signer: Any) -> None:
    port = _Port(signer[1], delay=10)
    cache = CertificateCache(port)

    async def scenario() -> None:
        first = asyncio.ensure_future(cache.public_key("u"))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(cache.public_key("u"))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(OSError, match="stopped"):
            await second
        assert first.cancelled()

    asyncio.run(scenario())
