"""Amazon SNS message verification: the envelope that carries SES notifications.

A valid signature is necessary but not sufficient: any AWS account can create a topic and
publish a validly signed forged bounce. So, before the (costly) signature check: the topic
must be on the allow-list, and the certificate URL must be HTTPS on the SNS host of the
topic's own region. Certificates come from ``POSTROOM_SNS_CERT_DIR`` (files named like the
URL's last segment, for air-gapped installs and tests) or over verified HTTPS, cached.
"""

from __future__ import annotations

import base64
import re
import threading
import urllib.request
from collections.abc import Collection
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from postroom.errors import WebhookVerificationError

MESSAGE_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")

# The string to sign: ``Name\nValue\n`` for these fields in this order (Subject only when
# present). Values are the decoded JSON strings; Message is used as sent, not re-serialized.
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS["UnsubscribeConfirmation"] = _SIGNED_FIELDS["SubscriptionConfirmation"]
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

_TOPIC_ARN = re.compile(r"^arn:(aws|aws-cn|aws-us-gov):sns:([a-z0-9-]+):\d{12}:[\w-]{1,256}$")
_CERT_NAME = re.compile(r"^SimpleNotificationService-[A-Za-z0-9-]+\.pem$")
_FETCH_TIMEOUT = 5.0


def sns_host(topic_arn: str) -> str:
    """``sns.<region>.amazonaws.com`` (``.com.cn`` in China) for the topic's region."""
    match = _TOPIC_ARN.match(topic_arn)
    if match is None:
        raise WebhookVerificationError("topic", "TopicArn is not an SNS topic ARN")
    partition, region = match.groups()
    suffix = "amazonaws.com.cn" if partition == "aws-cn" else "amazonaws.com"
    return f"sns.{region}.{suffix}"


def string_to_sign(message: dict[str, Any]) -> bytes:
    fields = _SIGNED_FIELDS[message["Type"]]
    parts = []
    for name in fields:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise WebhookVerificationError("malformed", f"SNS field {name} missing")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


def check_sns_url(url: Any, host: str, what: str) -> str:
    """``url`` if it is plain HTTPS on ``host`` (no port, no credentials), else refuse."""
    if not isinstance(url, str):
        raise WebhookVerificationError("certificate", f"{what} missing")
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.hostname != host or parts.port or parts.username:
        raise WebhookVerificationError("certificate", f"{what} is not https://{host}/")
    return url


class CertificateSource:
    """SNS signing certificates by URL: from a local folder when given, else fetched over
    HTTPS (TLS-verified, no redirects) and cached for the life of the process."""

    def __init__(self, cert_dir: Path | None = None) -> None:
        self._dir = cert_dir
        self._cache: dict[str, x509.Certificate] = {}
        self._lock = threading.Lock()

    def certificate(self, url: str) -> x509.Certificate:
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None:
            return cached
        name = urlsplit(url).path.rsplit("/", 1)[-1]
        if not _CERT_NAME.match(name):
            raise WebhookVerificationError("certificate", "certificate URL is not an SNS .pem")
        pem = self._read(name) if self._dir is not None else self._fetch(url)
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise WebhookVerificationError(
                "certificate", f"{name} is not a PEM certificate"
            ) from None
        with self._lock:
            self._cache[url] = cert
        return cert

    def _read(self, name: str) -> bytes:
        assert self._dir is not None
        try:
            return (self._dir / name).read_bytes()
        except OSError:
            raise WebhookVerificationError(
                "certificate", f"{name} is not in POSTROOM_SNS_CERT_DIR"
            ) from None

    def _fetch(self, url: str) -> bytes:
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(url, timeout=_FETCH_TIMEOUT) as response:
                body: bytes = response.read(64 * 1024)
                return body
        except OSError as exc:
            raise WebhookVerificationError("certificate", f"cannot fetch {url}: {exc}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could lead off the allow-listed host


def verify_envelope(
    message: dict[str, Any],
    headers: dict[str, str],
    *,
    topic_arns: Collection[str],
    certificates: CertificateSource,
) -> None:
    """Raise unless ``message`` is an SNS message from an allowed topic, signed by SNS."""
    kind = message.get("Type")
    if kind not in MESSAGE_TYPES:
        raise WebhookVerificationError("malformed", "not an SNS message")
    declared = headers.get("x-amz-sns-message-type")
    if declared is not None and declared != kind:
        raise WebhookVerificationError("malformed", "x-amz-sns-message-type disagrees with Type")
    topic = message.get("TopicArn")
    declared_topic = headers.get("x-amz-sns-topic-arn")
    if declared_topic is not None and declared_topic != topic:
        raise WebhookVerificationError("malformed", "x-amz-sns-topic-arn disagrees with TopicArn")
    if not isinstance(topic, str) or topic not in topic_arns:
        raise WebhookVerificationError(
            "topic", f"topic {topic!r} is not in POSTROOM_SES_TOPIC_ARNS"
        )
    host = sns_host(topic)
    cert_url = check_sns_url(message.get("SigningCertURL"), host, "SigningCertURL")
    if kind == "SubscriptionConfirmation":
        check_subscribe_url(message, host)
    algorithm = _HASHES.get(str(message.get("SignatureVersion")))
    if algorithm is None:
        raise WebhookVerificationError("signature", "unsupported SNS SignatureVersion")
    try:
        signature = base64.b64decode(str(message.get("Signature") or ""), validate=True)
    except ValueError:
        raise WebhookVerificationError("malformed", "Signature is not base64") from None
    cert = certificates.certificate(cert_url)
    _check_subject(cert, host)
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookVerificationError("certificate", "SNS certificate key is not RSA")
    try:
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise WebhookVerificationError("signature", "SNS signature does not match") from None


def _check_subject(cert: x509.Certificate, host: str) -> None:
    # SNS signs with a certificate for sns.amazonaws.com, or sns-signing.<region>... in
    # newer regions.
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    signing_host = host.replace("sns.", "sns-signing.", 1)
    allowed = {"sns.amazonaws.com", "sns.amazonaws.com.cn", signing_host}
    if not any(name in allowed for name in names):
        raise WebhookVerificationError("certificate", "certificate is not issued to SNS")


def check_subscribe_url(message: dict[str, Any], host: str) -> str:
    """The SubscribeURL, if it confirms this message's topic on its region's SNS host."""
    url = check_sns_url(message.get("SubscribeURL"), host, "SubscribeURL")
    query = parse_qs(urlsplit(url).query)
    if query.get("Action") != ["ConfirmSubscription"] or query.get("TopicArn") != [
        message.get("TopicArn")
    ]:
        raise WebhookVerificationError("certificate", "SubscribeURL does not confirm this topic")
    return url


def confirm_subscription(url: str) -> None:
    """GET the (already checked) SubscribeURL: SNS sends nothing until it is confirmed."""
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(url, timeout=_FETCH_TIMEOUT) as response:
        response.read(64 * 1024)
