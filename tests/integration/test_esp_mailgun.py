"""MailgunProvider end to end against the fake Mailgun on a loopback port: what arrives, how
calls are batched, and one test per row of the error table in ``providers/mailgun.py``
(transport rows: ``test_esp_http_transport.py``)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator

import pytest
from tests.esp_fakes.base import Fault
from tests.esp_fakes.mailgun import FakeMailgun
from tests.esp_fakes.messages import newsletter, sign_in, sign_ins, subscribers

from postroom.errors import PermanentProviderError, RateLimitedError, TransientProviderError
from postroom.providers.mailgun import MailgunProvider

DOMAIN = "mg.news.example"


@pytest.fixture
async def fake() -> AsyncIterator[FakeMailgun]:
    async with FakeMailgun(domain=DOMAIN) as server:
        yield server


@pytest.fixture
async def provider(fake: FakeMailgun) -> AsyncIterator[MailgunProvider]:
    mailgun = MailgunProvider(fake.credential, DOMAIN, base_url=fake.base_url)
    yield mailgun
    await mailgun.close()


async def test_each_recipient_gets_exactly_what_was_rendered_for_them(
    fake: FakeMailgun, provider: MailgunProvider
) -> None:
    batch = [*newsletter(3), sign_in()]
    results = await provider.send(batch)

    assert [r.send_id for r in results] == [e.send_id for e in batch]
    assert all(r.ok for r in results)
    assert [sum(1 for k, _v in call if k == "to") for call in fake.calls] == [3, 1]
    # One Mailgun id per call, without the angle brackets (as webhooks report it).
    assert len({r.provider_message_id for r in results[:3]}) == 1
    assert results[0].provider_message_id == fake.delivered[0].provider_id.strip("<>")
    assert results[3].provider_message_id != results[0].provider_message_id

    received = {d.to: d for d in fake.delivered}
    for email in batch:
        got = received[email.recipient]
        assert (got.subject, got.html, got.text) == (email.subject, email.html, email.text)
        assert got.sender == email.sender
        assert got.to_name == email.recipient_name
        assert got.headers["Message-Id"] == email.message_id
        assert got.headers["X-Postroom-Send-Id"] == email.send_id
        assert got.headers["Reply-To"] == "Jane replies <reply@news.example>"
        assert got.ids == {
            "postroom_send_id": email.send_id,
            "postroom_message_id": email.message_id,
        }
        assert got.extra["tags"] == [email.email_type]
    for email in batch[:3]:
        got = received[email.recipient]
        assert got.headers["List-Unsubscribe"] == email.headers["List-Unsubscribe"]
        assert got.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "List-Unsubscribe" not in received["ada@example.com"].headers


async def test_sign_in_links_of_one_layout_share_a_call_and_arrive_exact(
    fake: FakeMailgun, provider: MailgunProvider
) -> None:
    links = ["https://platform.example/login?t=a&x=1", "https://platform.example/login?t=b&x=2"]
    batch = sign_ins(links * 2)
    results = await provider.send(batch)

    assert all(r.ok for r in results)
    assert [sum(1 for k, _v in call if k == "to") for call in fake.calls] == [4]
    received = {d.to: d for d in fake.delivered}
    for email in batch:
        got = received[email.recipient]
        assert (got.subject, got.html, got.text) == (email.subject, email.html, email.text)
        assert got.headers["X-Postroom-Send-Id"] == email.send_id


async def test_a_batch_over_the_limit_is_split_into_calls_of_1000(
    fake: FakeMailgun, provider: MailgunProvider
) -> None:
    batch = subscribers(1001)
    results = await provider.send(batch)
    assert all(r.ok for r in results)
    assert sorted(sum(1 for k, _v in call if k == "to") for call in fake.calls) == [1, 1000]
    received = {d.to: d for d in fake.delivered}
    assert len(received) == 1001
    last = batch[-1]
    assert received[last.recipient].html == last.html
    assert provider.max_batch_size == 1000


async def test_two_messages_to_one_address_go_in_separate_calls(
    fake: FakeMailgun, provider: MailgunProvider
) -> None:
    first, second = newsletter(2)
    twin = dataclasses.replace(second, recipient=first.recipient)
    results = await provider.send([first, twin])
    assert all(r.ok for r in results)
    # recipient-variables are keyed by address: one call each, each with its own values.
    assert len(fake.calls) == 2
    assert sorted(d.ids["postroom_send_id"] for d in fake.delivered) == ["n00000", "n00001"]


async def test_400_for_one_message_is_permanent_with_mailguns_reason(
    fake: FakeMailgun, provider: MailgunProvider
) -> None:
    fake.fail_next(Fault.answer(400, b'{"message": "to parameter is not a valid address"}'))
    [result] = await provider.send([sign_in()])
    assert isinstance(result.error, PermanentProviderError)
    assert "to parameter is not a valid address" in str(result.error)


async def test_400_about_a_recipient_in_a_shared_call_fails_only_that_recipient(
    fake: FakeMailgun, provider: MailgunProvider
) -> None:
    batch = subscribers(4)
    fake.rejected.add("reader2@example.com")
    results = await provider.send(batch)
    # 4 refused, then [2 refused, 2 sent], then the refused pair as two calls of one.
    assert [r.ok for r in results] == [True, True, False, True]
    assert isinstance(results[2].error, PermanentProviderError)
    assert sorted(sum(1 for k, _v in call if k == "to") for call in fake.calls) == [1, 2]
    assert fake.requests == 5


async def test_400_about_the_shared_part_fails_the_call_without_splitting(
    fake: FakeMailgun, provider: MailgunProvider
) -> None:
    fake.fail_next(Fault.answer(400, b'{"message": "from parameter is missing"}'))
    results = await provider.send(subscribers(4))
    assert all(isinstance(r.error, PermanentProviderError) for r in results)
    assert fake.requests == 1


async def test_413_is_permanent(fake: FakeMailgun, provider: MailgunProvider) -> None:
    fake.fail_next(Fault.answer(413, b'{"message": "Request Entity Too Large"}'))
    [result] = await provider.send([sign_in()])
    assert isinstance(result.error, PermanentProviderError)
    assert result.error.code == "413"


async def test_bad_api_key_is_permanent_and_alerts_without_the_key(
    fake: FakeMailgun, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "key-wrong-secret"
    mailgun = MailgunProvider(secret, DOMAIN, base_url=fake.base_url)
    try:
        with caplog.at_level(logging.ERROR):
            [result] = await mailgun.send([sign_in()])
    finally:
        await mailgun.close()
    assert isinstance(result.error, PermanentProviderError)
    assert result.error.code == "401"
    assert any(r.levelno >= logging.ERROR and "mailgun" in r.getMessage() for r in caplog.records)
    assert all(secret not in r.getMessage() for r in caplog.records)


async def test_403_is_permanent_and_alerts(
    fake: FakeMailgun, provider: MailgunProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next(Fault.answer(403, b'{"message": "Domain is disabled"}'))
    with caplog.at_level(logging.ERROR):
        [result] = await provider.send([sign_in()])
    assert isinstance(result.error, PermanentProviderError)
    assert any(r.levelno >= logging.ERROR for r in caplog.records)


@pytest.mark.parametrize("status", [402, 404])
async def test_unknown_domain_or_account_refusal_is_permanent_and_alerts(
    fake: FakeMailgun, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    domain = "wrong.example" if status == 404 else DOMAIN
    if status == 402:
        fake.fail_next(Fault.answer(402, b'{"message": "Request failed"}'))
    mailgun = MailgunProvider(fake.credential, domain, base_url=fake.base_url)
    try:
        with caplog.at_level(logging.ERROR):
            [result] = await mailgun.send([sign_in()])
    finally:
        await mailgun.close()
    assert isinstance(result.error, PermanentProviderError)
    assert result.error.code == str(status)
    assert any(r.levelno >= logging.ERROR and domain in r.getMessage() for r in caplog.records)


async def test_429_without_a_header_waits_the_default(
    fake: FakeMailgun, provider: MailgunProvider
) -> None:
    fake.fail_next(Fault.answer(429, b'{"message": "Too many requests"}'))
    [result] = await provider.send([sign_in()])
    assert isinstance(result.error, RateLimitedError)
    assert result.error.retry_after == 2.0


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
async def test_5xx_is_transient(fake: FakeMailgun, provider: MailgunProvider, status: int) -> None:
    fake.fail_next(Fault.answer(status, b"<html>gateway</html>"))
    [result] = await provider.send([sign_in()])
    assert type(result.error) is TransientProviderError
