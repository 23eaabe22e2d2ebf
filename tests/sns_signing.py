"""Sign SNS envelopes as SNS does, with a certificate of our own served on 127.0.0.1.

The server counts requests, so tests can show that a refused URL is never fetched and
that a certificate is fetched once.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from trailproc._pipeline.notifications import SnsEnvelope
from trailproc._pipeline.trust import string_to_sign

_HASHES = {"1": hashes.SHA1(), "2": hashes.SHA256()}


def make_certificate(name: str = "sns.test") -> tuple[rsa.RSAPrivateKey, bytes]:
    """A fresh RSA key and a self-signed certificate for it (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class CertServer:
    """Serves `pem` at every path under http://127.0.0.1:<port>/ and counts requests."""

    pem: bytes
    requests: list[str] = field(default_factory=list)
    port: int = 0

    def start(self) -> CertServer:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                body = owner.pem if self.path.endswith(".pem") else b"not found"
                self.send_response(200 if self.path.endswith(".pem") else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def prefix(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def cert_url(self) -> str:
        return f"{self.prefix}SimpleNotificationService-test.pem"


def sign(envelope: dict[str, Any], key: rsa.RSAPrivateKey) -> dict[str, Any]:
    """`envelope` with its Signature set for its SignatureVersion (1 or 2)."""
    fields = SnsEnvelope.of(envelope)
    algorithm = _HASHES[str(envelope["SignatureVersion"])]
    signature = key.sign(string_to_sign(fields), padding.PKCS1v15(), algorithm)
    return {**envelope, "Signature": base64.b64encode(signature).decode()}


def envelope(
    message: dict[str, Any] | str,
    *,
    topic_arn: str,
    cert_url: str,
    version: str = "1",
    subject: str | None = None,
    message_id: str = "9a1b2c3d-0000-4000-8000-000000000001",
) -> dict[str, Any]:
    """An unsigned SNS Notification envelope as SNS delivers it to SQS."""
    out: dict[str, Any] = {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": topic_arn,
        "Message": message if isinstance(message, str) else json.dumps(message),
        "Timestamp": "2026-11-01T00:00:00.000Z",
        "SignatureVersion": version,
        "Signature": "",
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }
    if subject is not None:
        out["Subject"] = subject
    return out


def signed(message: dict[str, Any] | str, key: rsa.RSAPrivateKey, **kwargs: Any) -> dict[str, Any]:
    return sign(envelope(message, **kwargs), key)
