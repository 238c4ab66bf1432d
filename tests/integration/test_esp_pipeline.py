"""Through the real pipeline: submit → queue → worker → ESP adapter → fake ESP over HTTP, on
SQLite and PostgreSQL. Each email ends ``sent`` with the ESP's message id, and the fake got
every recipient once with their own unsubscribe headers and our ids."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tests.conftest import RunningWorker
from tests.esp_fakes.base import FakeEsp, Fault
from tests.esp_fakes.mailgun import FakeMailgun
from tests.esp_fakes.postmark import FakePostmark
from tests.esp_fakes.sendgrid import FakeSendGrid

from postroom.messages import EmailEvent
from postroom.providers.base import Provider
from postroom.providers.mailgun import MailgunProvider
from postroom.providers.postmark import PostmarkProvider
from postroom.providers.sendgrid import SendGridProvider
from postroom.store.ledger import SendStatus
from postroom.submission import submit
from postroom.wiring import Postroom


@pytest.fixture(params=["sendgrid", "mailgun", "postmark"])
async def esp(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeEsp, Provider]]:
    provider: Provider
    if request.param == "sendgrid":
        fake: FakeEsp = FakeSendGrid()
        await fake.start()
        provider = SendGridProvider(fake.credential, base_url=fake.base_url)
    elif request.param == "mailgun":
        fake = FakeMailgun(domain="mg.news.example")
        await fake.start()
        provider = MailgunProvider(fake.credential, "mg.news.example", base_url=fake.base_url)
    else:
        fake = FakePostmark()
        await fake.start()
        provider = PostmarkProvider(fake.credential, base_url=fake.base_url)
    try:
        yield fake, provider
    finally:
        await fake.stop()  # the provider is closed with the Postroom that owns it


@pytest.fixture
def fake_provider(esp: tuple[FakeEsp, Provider]) -> Provider:
    """Overrides the conftest fixture: the ``postroom`` fixture hands this to the worker."""
    return esp[1]


def _events() -> list[EmailEvent]:
    post = {
        "creator_name": "Jane Doe",
        "post_title": "Why slow writing wins",
        "post_url": "https://platform.example/jane/slow-writing",
    }
    events = [
        EmailEvent(
            email_type="new_post_notification",
            recipient_email=f"reader{i}@example.com",
            recipient_name=f"Reader {i}",
            template_data=post,
            metadata={"post_id": "p1"},
        )
        for i in range(5)
    ]
    events.append(
        EmailEvent(
            email_type="sign_in_link",
            recipient_email="ada@example.com",
            template_data={"sign_in_url": "https://platform.example/login/1", "expires_minutes": 5},
        )
    )
    return events


async def test_submitted_emails_end_sent_with_the_esps_message_id(
    postroom: Postroom, running_worker: RunningWorker, esp: tuple[FakeEsp, Provider]
) -> None:
    fake, _provider = esp
    # One transient failure on the way: the worker retries it and nothing is sent twice.
    fake.fail_next(Fault.answer(503, b"{}"))
    accepted = await submit(postroom, _events())

    async def all_sent() -> bool:
        rows = [await postroom.ledger.get(a.id) for a in accepted]
        return all(row is not None and row.status is SendStatus.SENT for row in rows)

    await running_worker.until(all_sent)

    assert fake.requests > len(fake.calls)  # the 503 was answered, and its mail resent
    received = {d.to: d for d in fake.delivered}
    assert len(fake.delivered) == len(accepted) == len(received)
    for item in accepted:
        row = await postroom.ledger.get(item.id)
        assert row is not None
        got = received[item.recipient]
        assert row.provider == fake_name(fake)
        assert row.provider_message_id == got.provider_id.strip("<>")
        assert got.ids["postroom_send_id"] == item.id
        assert got.ids["postroom_message_id"] == row.message_id
        if item.recipient.startswith("reader"):
            assert got.headers["List-Unsubscribe"].startswith("<http")
            assert "/unsubscribe/" in (got.html or "")
        else:
            assert "List-Unsubscribe" not in got.headers


def fake_name(fake: FakeEsp) -> str:
    return {FakeSendGrid: "sendgrid", FakeMailgun: "mailgun", FakePostmark: "postmark"}[type(fake)]
