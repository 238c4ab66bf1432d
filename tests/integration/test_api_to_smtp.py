"""End to end through SMTP: HTTP API → SQL queue → worker → SmtpProvider → a real SMTP server.

The server is aiosmtpd, in this process, on a loopback port; it records what it accepts and
can refuse recipients the way a real MTA does.
"""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from tests.conftest import make_settings, wait_for_email_status

from postroom.api.app import create_app

AUTH = {"Authorization": "Bearer test-key"}
SIGN_IN: dict[str, Any] = {
    "email_type": "sign_in_link",
    "recipient_email": "reader@example.com",
    "recipient_name": "Ada Reader",
    "template_data": {"sign_in_url": "https://platform.example/login/xyz", "expires_minutes": 15},
}


@dataclass
class Mailbox:
    """Accepts everything except the scripted RCPT refusals; records each message."""

    refuse: dict[str, str] = field(default_factory=dict)
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Ok: queued as 4XyZ12"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    handler = Mailbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def client(tmp_path: Path, mailbox: tuple[Mailbox, int]) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path,
        provider="smtp",
        smtp_port=mailbox[1],
        sender="Platform <login@platform.example>",
    )
    with TestClient(create_app(settings, run_worker=True)) as test_client:
        yield test_client


def test_email_reaches_the_smtp_server_once_with_both_parts(
    client: TestClient, mailbox: tuple[Mailbox, int]
) -> None:
    handler, _port = mailbox
    response = client.post("/v1/emails", json=SIGN_IN, headers=AUTH)
    assert response.status_code == 202
    send_id = response.json()["id"]
    status = wait_for_email_status(client, send_id, "sent")
    assert status["provider_message_id"] == "4XyZ12"  # the server's queue id

    [(mail_from, rcpt_tos, content)] = handler.received
    assert mail_from == "login@platform.example"
    assert rcpt_tos == ["reader@example.com"]
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert message["To"] == "Ada Reader <reader@example.com>"
    assert message["Message-ID"] == f"<{send_id}@platform.example>"
    assert message["Subject"]
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and "https://platform.example/login/xyz" in text.get_content()
    assert html is not None and "https://platform.example/login/xyz" in html.get_content()
    # Transactional mail carries no unsubscribe headers.
    assert message["List-Unsubscribe"] is None


def test_unknown_mailbox_is_suppressed_and_later_mail_to_it_is_not_sent(
    client: TestClient, mailbox: tuple[Mailbox, int]
) -> None:
    handler, _port = mailbox
    handler.refuse["gone@example.com"] = "550 5.1.1 <gone@example.com>: user unknown"
    first = client.post(
        "/v1/emails", json={**SIGN_IN, "recipient_email": "gone@example.com"}, headers=AUTH
    )
    status = wait_for_email_status(client, first.json()["id"], "failed")
    assert "5.1.1" in status["last_error"]

    again = {**SIGN_IN, "recipient_email": "gone@example.com", "idempotency_key": "second"}
    second = client.post("/v1/emails", json=again, headers=AUTH)
    wait_for_email_status(client, second.json()["id"], "suppressed")
    assert handler.received == []
