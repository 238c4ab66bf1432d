"""Each verifier's negative cases: wrong key, a flipped byte, stale timestamps, replayed
tokens, foreign SNS topics and certificate hosts, wrong credentials, oversized bodies."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from tests.unit.webhooks.esp_fixtures import (
    CERT_DIR,
    ESP_DIR,
    MAILGUN_KEY,
    SENDGRID_KEY_B,
    Request,
    by_file,
    receiver_for,
    request,
    ses_topics,
)

from postroom.errors import ConfigurationError, WebhookVerificationError
from postroom.webhooks.base import InMemoryReplayGuard, verify_and_parse
from postroom.webhooks.mailgun import MailgunReceiver
from postroom.webhooks.postmark import PostmarkReceiver
from postroom.webhooks.sendgrid import SendGridReceiver
from postroom.webhooks.ses import SesReceiver
from postroom.webhooks.sns import CertificateSource, string_to_sign

SG_FILE = "sendgrid/signed-vector-A-real-dropped.json"
SES_FILE = "ses/events/bounce.json"
SNS_REAL = "ses/sns-real/notification_v1_with_subject.json"
FIXTURE_SNS_KEY = serialization.load_pem_private_key(
    (ESP_DIR / "ses/keys/fixture-sns-signing-key.private.pkcs8.pem").read_bytes(), password=None
)


def refused(receiver: Any, req: Request, now: float = 0) -> str:
    with pytest.raises(WebhookVerificationError) as caught:
        receiver.verify(req.headers, req.body, now)
    return caught.value.reason


def flip(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]


# --- SendGrid ------------------------------------------------------------------------------


def test_sendgrid_real_vector_verifies_only_with_its_key_and_exact_bytes() -> None:
    entry, req = by_file(SG_FILE), request(SG_FILE)
    receiver = receiver_for(entry)
    receiver.verify(req.headers, req.body, 0)
    assert req.body.endswith(b"\r\n")
    assert refused(receiver, dataclasses.replace(req, body=req.body.rstrip(b"\r\n"))) == "signature"
    assert refused(receiver, dataclasses.replace(req, body=flip(req.body, 20))) == "signature"
    wrong = (ESP_DIR / "sendgrid/keys/wrong-key.public.b64.txt").read_text()
    assert refused(SendGridReceiver(wrong, max_age=0), req) == "signature"
    assert refused(SendGridReceiver(SENDGRID_KEY_B, max_age=0), req) == "signature"


def test_sendgrid_refuses_missing_or_garbled_headers() -> None:
    req = request(SG_FILE)
    receiver = receiver_for(by_file(SG_FILE))
    for name, value in [
        ("X-Twilio-Email-Event-Webhook-Signature", ""),
        ("X-Twilio-Email-Event-Webhook-Signature", "not base64!"),
        ("X-Twilio-Email-Event-Webhook-Timestamp", "yesterday"),
    ]:
        assert (
            refused(receiver, dataclasses.replace(req, headers={**req.headers, name: value}))
            == "malformed"
        )
    # header names are case-insensitive
    lowered = {k.lower(): v for k, v in req.headers.items()}
    receiver.verify(lowered, req.body, 0)


def test_sendgrid_timestamp_must_be_fresh() -> None:
    req = request(SG_FILE)
    stamp = int(req.headers["X-Twilio-Email-Event-Webhook-Timestamp"])
    receiver = receiver_for(by_file(SG_FILE), max_age=300)
    receiver.verify(req.headers, req.body, stamp + 299)
    assert refused(receiver, req, stamp + 301) == "stale"
    assert refused(receiver, req, stamp - 301) == "stale"


def test_sendgrid_key_must_be_a_p256_public_key() -> None:
    with pytest.raises(ConfigurationError):
        SendGridReceiver("bm90IGEga2V5")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    der = rsa_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ConfigurationError):
        SendGridReceiver(base64.b64encode(der).decode())


def test_every_receiver_caps_the_body() -> None:
    for file in (SG_FILE, "mailgun/docs-delivered.json", SES_FILE, "postmark/docs-delivery.json"):
        req = request(file)
        receiver = receiver_for(by_file(file), max_body_bytes=len(req.body) - 1)
        assert refused(receiver, req) == "too_large", file


# --- Mailgun -------------------------------------------------------------------------------


def mailgun_request(token: str, timestamp: int, key: str = MAILGUN_KEY) -> Request:
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    event = orjson.loads(request("mailgun/docs-opened.json").body)["event-data"]
    block = {"timestamp": str(timestamp), "token": token, "signature": signature}
    return Request({}, orjson.dumps({"signature": block, "event-data": event}))


def test_mailgun_refuses_wrong_key_and_altered_token() -> None:
    receiver = MailgunReceiver(MAILGUN_KEY, max_age=0)
    good = mailgun_request("tok-1", 1_700_000_000)
    receiver.verify(good.headers, good.body, 0)
    assert refused(MailgunReceiver("key-other", max_age=0), good) == "signature"
    altered = Request({}, good.body.replace(b"tok-1", b"tok-2"))
    assert refused(receiver, altered) == "signature"
    for body in (b"not json", b"{}", b'{"signature": {"token": "t"}}'):
        assert refused(receiver, Request({}, body)) == "malformed"


def test_mailgun_timestamp_must_be_fresh() -> None:
    receiver = MailgunReceiver(MAILGUN_KEY, max_age=300)
    req = mailgun_request("tok-3", 1_700_000_000)
    receiver.verify(req.headers, req.body, 1_700_000_100)
    assert refused(receiver, req, 1_700_000_400) == "stale"


def test_mailgun_token_is_single_use() -> None:
    receiver = MailgunReceiver(MAILGUN_KEY, max_age=300)
    guard = InMemoryReplayGuard()
    req = mailgun_request("tok-4", 1_700_000_000)
    [event] = verify_and_parse(receiver, req.headers, req.body, 1_700_000_010, guard)
    assert event.type == "opened"
    with pytest.raises(WebhookVerificationError) as caught:
        verify_and_parse(receiver, req.headers, req.body, 1_700_000_020, guard)
    assert caught.value.reason == "replay"
    # Remembered for longer than a timestamp stays fresh, and forgotten after that.
    assert not guard.claim("mailgun:tok-4", 1_700_000_010 + receiver.replay_ttl - 1, 60)
    assert guard.claim("mailgun:tok-4", 1_700_000_010 + receiver.replay_ttl + 1, 60)


# --- SES / SNS -----------------------------------------------------------------------------


def ses_receiver(topics: Any = None, cert_dir: Path = CERT_DIR, **limits: Any) -> SesReceiver:
    limits.setdefault("max_age", 0)
    return SesReceiver(
        ses_topics() if topics is None else topics, CertificateSource(cert_dir), **limits
    )


def sns_message(file: str = SES_FILE, **changes: Any) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(request(file).body)
    message.update(changes)
    return {k: v for k, v in message.items() if v is not None}


def signed(message: dict[str, Any], key: Any = FIXTURE_SNS_KEY) -> Request:
    algorithm = hashes.SHA256() if message["SignatureVersion"] == "2" else hashes.SHA1()
    signature = key.sign(string_to_sign(message), padding.PKCS1v15(), algorithm)
    message = {**message, "Signature": base64.b64encode(signature).decode()}
    return Request({"x-amz-sns-message-type": message["Type"]}, orjson.dumps(message))


def test_sns_accepts_a_message_we_sign_with_the_fixture_key() -> None:
    for version in ("1", "2"):
        req = signed(sns_message(SignatureVersion=version, Subject=None))
        [event] = ses_receiver().parse(req.body)
        ses_receiver().verify(req.headers, req.body, 0)
        assert event.type == "bounced_hard"


def test_sns_refuses_a_foreign_topic_even_when_validly_signed() -> None:
    req = request(SES_FILE)
    assert refused(ses_receiver(topics=["arn:aws:sns:us-east-1:123456789012:ours"]), req) == "topic"
    assert refused(ses_receiver(topics=[]), req) == "topic"
    # Signed with a certificate we trust, for a topic that is not on the list.
    other = signed(sns_message(TopicArn="arn:aws:sns:us-east-1:210987654321:ses-feedback"))
    assert refused(ses_receiver(), other) == "topic"


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000-self-signed-test-fixture-not-aws.pem",
        "https://sns.us-east-1.amazonaws.com.attacker.example/SimpleNotificationService-0000-self-signed-test-fixture-not-aws.pem",
        "https://attacker.example/SimpleNotificationService-0000-self-signed-test-fixture-not-aws.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000-self-signed-test-fixture-not-aws.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-0000-self-signed-test-fixture-not-aws.pem",
        "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-0000-self-signed-test-fixture-not-aws.pem",
        "https://sns.us-east-1.amazonaws.com/../../etc/passwd",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-missing.pem",
    ],
)
def test_sns_certificate_must_come_from_the_topic_region_sns_host(url: str) -> None:
    req = signed(sns_message(SigningCertURL=url))
    assert refused(ses_receiver(), req) == "certificate"


def test_sns_certificate_must_be_issued_to_sns(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "SimpleNotificationService-evil.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
    )
    url = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-evil.pem"
    req = signed(sns_message(SigningCertURL=url), key)
    assert refused(ses_receiver(cert_dir=tmp_path), req) == "certificate"


def test_sns_signature_covers_every_signed_field() -> None:
    receiver = ses_receiver()
    message = sns_message(SNS_REAL)
    receiver.verify({}, orjson.dumps(message), 0)
    for field, value in [
        ("Message", "Hello"),
        ("Subject", "other"),
        ("MessageId", "x"),
        ("Timestamp", "2026-03-06T19:53:21.425Z"),
    ]:
        tampered = orjson.dumps({**message, field: value})
        assert refused(receiver, Request({}, tampered)) == "signature", field
    no_subject = orjson.dumps({k: v for k, v in message.items() if k != "Subject"})
    assert refused(receiver, Request({}, no_subject)) == "signature"
    for version in ("3", None):
        body = orjson.dumps({**message, "SignatureVersion": version})
        assert refused(receiver, Request({}, body)) == "signature"


def test_sns_message_shape_and_freshness() -> None:
    req = request(SES_FILE)
    mismatch = {**req.headers, "x-amz-sns-message-type": "SubscriptionConfirmation"}
    assert refused(ses_receiver(), Request(mismatch, req.body)) == "malformed"
    other_topic = {**req.headers, "x-amz-sns-topic-arn": "arn:aws:sns:us-east-1:123456789012:x"}
    assert refused(ses_receiver(), Request(other_topic, req.body)) == "malformed"
    assert refused(ses_receiver(), Request({}, b"[1, 2]")) == "malformed"
    assert refused(ses_receiver(), Request({}, orjson.dumps({"Type": "Other"}))) == "malformed"
    stamp = dt.datetime.fromisoformat(orjson.loads(req.body)["Timestamp"]).timestamp()
    ses_receiver(max_age=300).verify(req.headers, req.body, stamp + 200)
    assert refused(ses_receiver(max_age=300), req, stamp + 400) == "stale"


def test_sns_subscribe_url_must_confirm_the_topic_on_its_host() -> None:
    entry_file = "ses/sns-real/subscription_confirmation_v1.json"
    message = sns_message(entry_file)
    ses_receiver().verify({}, orjson.dumps(message), 0)
    evil = message["SubscribeURL"].replace("sns.us-west-2.amazonaws.com", "attacker.example")
    assert (
        refused(ses_receiver(), Request({}, orjson.dumps({**message, "SubscribeURL": evil})))
        == "certificate"
    )


def test_sns_certificates_are_cached_per_url(tmp_path: Path) -> None:
    name = "SimpleNotificationService-0000-self-signed-test-fixture-not-aws.pem"
    (tmp_path / name).write_bytes((CERT_DIR / name).read_bytes())
    receiver = ses_receiver(cert_dir=tmp_path)
    req = request(SES_FILE)
    receiver.verify(req.headers, req.body, 0)
    (tmp_path / name).unlink()
    receiver.verify(req.headers, req.body, 0)


# --- Postmark ------------------------------------------------------------------------------


def test_postmark_requires_the_configured_basic_credentials() -> None:
    req = request("postmark/docs-delivery.json")
    receiver = PostmarkReceiver("fixture-user", "fixture-pass", max_age=0)
    receiver.verify(req.headers, req.body, 0)
    for authorization in [
        None,
        "",
        "Bearer abc",
        "Basic " + base64.b64encode(b"fixture-user:fixture-pas").decode(),
        "Basic " + base64.b64encode(b"fixture-user:fixture-pass ").decode(),
        "Basic not-base64!",
    ]:
        headers = {k: v for k, v in req.headers.items() if k != "Authorization"}
        if authorization is not None:
            headers["Authorization"] = authorization
        assert refused(receiver, Request(headers, req.body)) == "unauthorized", authorization
    assert refused(PostmarkReceiver("fixture-user", "other"), req) == "unauthorized"


def test_verification_errors_never_show_the_secret() -> None:
    req = request("postmark/docs-delivery.json")
    with pytest.raises(WebhookVerificationError) as caught:
        PostmarkReceiver("fixture-user", "s3cret-value").verify(req.headers, req.body, 0)
    assert "s3cret" not in str(caught.value) and "fixture-pass" not in str(caught.value)
    with pytest.raises(WebhookVerificationError) as caught:
        MailgunReceiver("key-s3cret").verify({}, request("mailgun/docs-delivered.json").body, 0)
    assert "s3cret" not in str(caught.value)
