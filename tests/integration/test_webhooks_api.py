"""``POST /webhooks/{provider}`` on SQLite and PostgreSQL: real fixtures in, forgeries refused
with zero database change, and the loop closed end to end (a bounce stops the next send)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select
from tests.conftest import make_settings, wait_for_email_status
from tests.log_scan import CANARY
from tests.unit.webhooks.esp_fixtures import (
    CERT_DIR,
    ESP_DIR,
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    SENDGRID_KEY_B,
    request,
    ses_topics,
)

from postroom.api.app import create_app
from postroom.config import Settings
from postroom.store.database import sync_url
from postroom.store.schema import events, send_feedback, suppressions, webhook_tokens

TABLES = (events, suppressions, send_feedback, webhook_tokens)
SES_BOUNCE = "ses/notifications/bounce_permanent_with_dsn.json"
SENDGRID_PRIVATE_B = serialization.load_der_private_key(
    base64.b64decode(
        (ESP_DIR / "sendgrid/keys/published-test-key-B.private.sec1-der.b64.txt").read_text()
    ),
    password=None,
)


def webhook_settings(settings: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "sendgrid_webhook_public_key": SENDGRID_KEY_B,
        "mailgun_webhook_signing_key": MAILGUN_KEY,
        "ses_topic_arns": list(ses_topics()),
        "sns_cert_dir": CERT_DIR,
        "postmark_webhook_user": POSTMARK_USER,
        "postmark_webhook_password": POSTMARK_PASSWORD,
        "webhook_max_age": 0,
    }
    values.update(overrides)
    return Settings(**{**settings.model_dump(), **values})  # validated, unlike model_copy


class Service:
    def __init__(self, settings: Settings, *, run_worker: bool = False) -> None:
        self.settings = settings
        self.confirmed: list[str] = []
        self.app = create_app(settings, run_worker=run_worker)
        self.app.state.sns_confirm = self.confirmed.append

    def rows(self) -> dict[str, int]:
        engine = create_engine(sync_url(self.settings.resolved_database_url))
        try:
            with engine.connect() as conn:
                return {
                    t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in TABLES
                }
        finally:
            engine.dispose()


@pytest.fixture
def service(settings: Settings) -> Iterator[tuple[Service, TestClient]]:
    svc = Service(webhook_settings(settings))
    with TestClient(svc.app) as client:
        yield svc, client


def post_fixture(client: TestClient, provider: str, file: str, **header_changes: str) -> Any:
    req = request(file)
    return client.post(
        f"/webhooks/{provider}", content=req.body, headers={**req.headers, **header_changes}
    )


def sendgrid_signed(body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    assert isinstance(SENDGRID_PRIVATE_B, ec.EllipticCurvePrivateKey)
    signature = SENDGRID_PRIVATE_B.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        "Content-Type": "application/json",
    }


def mailgun_body(event: dict[str, Any], token: str, timestamp: int) -> bytes:
    signature = hmac.new(MAILGUN_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
    block = {"timestamp": str(timestamp), "token": token, "signature": signature.hexdigest()}
    return orjson.dumps({"signature": block, "event-data": event})


ACCEPTED = [
    ("sendgrid", "sendgrid/docs-bounce_hard.json", 1),
    ("mailgun", "mailgun/docs-delivered.json", 1),
    ("ses", "ses/notifications/bounce_permanent_no_dsn_two_recipients.json", 2),
    ("ses", "ses/events/open.json", 1),
    ("postmark", "postmark/anymail-bounce_hard_5_1_1.json", 1),
]


def test_fixtures_are_accepted_and_stored_once(service: tuple[Service, TestClient]) -> None:
    svc, client = service
    total = 0
    for provider, file, stored in ACCEPTED:
        first = post_fixture(client, provider, file)
        assert first.status_code == 200, (file, first.text)
        assert first.json()["stored"] == stored, file
        total += stored
        if provider != "mailgun":  # Mailgun's token is one-use: see the replay test
            again = post_fixture(client, provider, file)
            assert again.status_code == 200 and again.json()["stored"] == 0, file
        assert svc.rows()["events"] == total
    assert svc.rows()["suppressions"] == 0  # the fixtures name no send of ours


BASIC_GUESS = "Basic " + base64.b64encode(b"fixture-user:guess").decode()
FORGERIES = [
    ("sendgrid", "sendgrid/negative-tampered-bounce.json", {}, 403),  # one changed field
    ("sendgrid", "sendgrid/signed-vector-B-bad-signature.json", {}, 403),
    (
        "sendgrid",
        "sendgrid/docs-bounce_hard.json",
        {"X-Twilio-Email-Event-Webhook-Timestamp": "1513299570"},
        403,
    ),
    (
        "sendgrid",
        "sendgrid/docs-bounce_hard.json",
        {"X-Twilio-Email-Event-Webhook-Signature": ""},
        400,
    ),
    ("mailgun", "mailgun/negative-bad-signature.json", {}, 403),
    ("ses", "ses/sns-real/negative-tampered-notification_v2.json", {}, 403),
    ("ses", SES_BOUNCE, {"x-amz-sns-message-type": "SubscriptionConfirmation"}, 400),
    ("postmark", "postmark/docs-bounce_hard.json", {"Authorization": BASIC_GUESS}, 401),
    ("postmark", "postmark/docs-bounce_hard.json", {"Authorization": ""}, 401),
]


def test_forgeries_are_refused_and_write_nothing(service: tuple[Service, TestClient]) -> None:
    svc, client = service
    before = svc.rows()
    for provider, file, headers, status in FORGERIES:
        response = post_fixture(client, provider, file, **headers)
        assert response.status_code == status, (file, headers, response.text)
    assert svc.rows() == before


def test_wrong_sendgrid_key_is_refused(settings: Settings) -> None:
    wrong = (ESP_DIR / "sendgrid/keys/wrong-key.public.b64.txt").read_text().strip()
    svc = Service(webhook_settings(settings, sendgrid_webhook_public_key=wrong))
    with TestClient(svc.app) as client:
        response = post_fixture(client, "sendgrid", "sendgrid/docs-bounce_hard.json")
    assert response.status_code == 403 and "signature" in response.text
    assert svc.rows()["events"] == 0


def test_stale_timestamps_are_refused(settings: Settings) -> None:
    svc = Service(webhook_settings(settings, webhook_max_age=300))
    with TestClient(svc.app) as client:
        for provider, file in [("sendgrid", "sendgrid/docs-delivered.json"), ("ses", SES_BOUNCE)]:
            response = post_fixture(client, provider, file)
            assert response.status_code == 403 and "stale" in response.text, file
        body = (
            b"["
            + orjson.dumps({"email": "a@example.com", "event": "delivered", "timestamp": 1})
            + b"]\r\n"
        )
        fresh = client.post("/webhooks/sendgrid", content=body, headers=sendgrid_signed(body))
        assert fresh.status_code == 200, fresh.text
    assert svc.rows()["events"] == 1


def test_a_replayed_mailgun_token_is_refused(service: tuple[Service, TestClient]) -> None:
    svc, client = service
    event = orjson.loads(request("mailgun/docs-opened.json").body)["event-data"]
    body = mailgun_body(event, "token-1", int(time.time()))
    assert client.post("/webhooks/mailgun", content=body).status_code == 200
    before = svc.rows()
    replay = client.post("/webhooks/mailgun", content=body)
    assert replay.status_code == 403 and "replay" in replay.text
    other_event = {**event, "id": "another-event"}
    reused = client.post(
        "/webhooks/mailgun", content=mailgun_body(other_event, "token-1", int(time.time()))
    )
    assert reused.status_code == 403
    assert svc.rows() == before


def test_sns_from_a_foreign_topic_or_host_is_refused(settings: Settings) -> None:
    svc = Service(
        webhook_settings(settings, ses_topic_arns=["arn:aws:sns:us-east-1:123456789012:ours"])
    )
    with TestClient(svc.app) as client:
        foreign = post_fixture(client, "ses", SES_BOUNCE)
        confirm = post_fixture(client, "ses", "ses/sns-real/subscription_confirmation_v1.json")
    assert foreign.status_code == 403 and "topic" in foreign.text
    assert confirm.status_code == 403 and svc.confirmed == []
    assert svc.rows()["events"] == 0


def test_sns_certificate_url_off_aws_is_refused(service: tuple[Service, TestClient]) -> None:
    svc, client = service
    message = orjson.loads(request(SES_BOUNCE).body)
    for url in (
        "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-0000-self-signed-test-fixture-not-aws.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000-self-signed-test-fixture-not-aws.pem",
        "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000-self-signed-test-fixture-not-aws.pem",
    ):
        body = orjson.dumps({**message, "SigningCertURL": url})
        response = client.post("/webhooks/ses", content=body, headers=request(SES_BOUNCE).headers)
        assert response.status_code == 403 and "certificate" in response.text, url
    assert svc.rows()["events"] == 0


def test_sns_subscription_is_confirmed_for_an_allowed_topic(
    service: tuple[Service, TestClient],
) -> None:
    svc, client = service
    response = post_fixture(client, "ses", "ses/sns-real/subscription_confirmation_v1.json")
    assert response.status_code == 200, response.text
    [url] = svc.confirmed
    assert url.startswith("https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&")


def test_oversized_bodies_are_refused(settings: Settings) -> None:
    svc = Service(webhook_settings(settings, webhook_max_body_bytes=2048))
    body = b"[" + b" " * 4096 + b"]"
    with TestClient(svc.app) as client:
        response = client.post("/webhooks/sendgrid", content=body, headers=sendgrid_signed(body))
    assert response.status_code == 413
    assert svc.rows()["events"] == 0


def test_unconfigured_and_unknown_providers_are_404(settings: Settings) -> None:
    svc = Service(settings)  # no webhook keys at all
    with TestClient(svc.app) as client:
        assert post_fixture(client, "postmark", "postmark/docs-delivery.json").status_code == 404
        assert client.post("/webhooks/sparkpost", content=b"{}").status_code == 404


def test_the_route_is_documented_and_other_methods_are_refused(settings: Settings) -> None:
    # Served by a plain Starlette route ahead of FastAPI's, documented by FastAPI's.
    svc = Service(webhook_settings(settings))
    with TestClient(svc.app) as client:
        documented = client.get("/openapi.json").json()["paths"]["/webhooks/{provider}"]
        assert list(documented) == ["post"]
        answer = documented["post"]["responses"]["200"]["content"]["application/json"]
        assert answer["schema"] == {"$ref": "#/components/schemas/WebhookAnswer"}
        assert client.get("/webhooks/mailgun").status_code == 405
        assert client.post("/webhooks/mailgun/extra", content=b"{}").status_code == 404


def test_a_signed_bounce_stops_the_next_send(tmp_path: Path) -> None:
    """End to end on the embedded default: send, a SendGrid hard bounce for that send, and
    the next send to the address is skipped and recorded as suppressed."""
    svc = Service(webhook_settings(make_settings(tmp_path)), run_worker=True)
    auth = {"Authorization": "Bearer test-key"}
    welcome = {
        "email_type": "welcome",
        "recipient_email": "Gone@Example.com",
        "template_data": {"creator_name": "Jane"},
    }
    with TestClient(svc.app) as client:
        first = client.post(
            "/v1/emails", json={**welcome, "idempotency_key": "first"}, headers=auth
        )
        send_id = first.json()["id"]
        wait_for_email_status(client, send_id, "sent")
        bounce = {
            "email": "gone@example.com",
            "event": "bounce",
            "type": "bounce",
            "status": "5.1.1",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
            "sg_event_id": "e2e-bounce",
            "sg_message_id": "e2e.filter0001.0",
            "timestamp": int(time.time()),
            "postroom_send_id": send_id,
        }
        body = orjson.dumps([bounce]) + b"\r\n"
        hooked = client.post("/webhooks/sendgrid", content=body, headers=sendgrid_signed(body))
        assert hooked.status_code == 200 and hooked.json()["stored"] == 1
        second = client.post(
            "/v1/emails", json={**welcome, "idempotency_key": "second"}, headers=auth
        )
        wait_for_email_status(client, second.json()["id"], "suppressed")
    assert svc.rows()["suppressions"] == 1


def test_a_complaint_stops_marketing_but_not_transactional_mail(tmp_path: Path) -> None:
    """End to end: a newsletter, a Postmark spam complaint about it, then the next newsletter
    to the address is suppressed while a sign-in style (transactional) email still goes."""
    svc = Service(webhook_settings(make_settings(tmp_path)), run_worker=True)
    auth = {"Authorization": "Bearer test-key"}
    newsletter = {
        "email_type": "new_post_notification",
        "recipient_email": CANARY,
        "template_data": {
            "creator_name": "Jane",
            "post_title": "Slow",
            "post_url": "https://p.example/1",
        },
    }
    welcome = {
        "email_type": "welcome",
        "recipient_email": CANARY,
        "template_data": {"creator_name": "Jane"},
    }
    with TestClient(svc.app) as client:
        first = client.post(
            "/v1/emails", json={**newsletter, "idempotency_key": "n1"}, headers=auth
        )
        send_id = first.json()["id"]
        wait_for_email_status(client, send_id, "sent")
        complaint = orjson.loads(request("postmark/anymail-spam_complaint.json").body)
        complaint.update(Email=CANARY.upper(), Metadata={"postroom_send_id": send_id})
        hooked = client.post(
            "/webhooks/postmark",
            content=orjson.dumps(complaint),
            headers=request("postmark/anymail-spam_complaint.json").headers,
        )
        assert hooked.status_code == 200 and hooked.json()["stored"] == 1
        second = client.post(
            "/v1/emails", json={**newsletter, "idempotency_key": "n2"}, headers=auth
        )
        wait_for_email_status(client, second.json()["id"], "suppressed")
        receipt = client.post("/v1/emails", json={**welcome, "idempotency_key": "w1"}, headers=auth)
        wait_for_email_status(client, receipt.json()["id"], "sent")
