"""SendGridProvider end to end against the fake SendGrid on a loopback port: what arrives, how
calls are batched, and one test per row of the error table in ``providers/sendgrid.py``."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator

import orjson
import pytest
from tests.esp_fakes.base import Fault
from tests.esp_fakes.messages import newsletter, sign_in, sign_ins, subscribers
from tests.esp_fakes.sendgrid import FakeSendGrid

from postroom.errors import (
    PermanentProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    TransientProviderError,
)
from postroom.providers.sendgrid import SendGridProvider


@pytest.fixture
async def fake() -> AsyncIterator[FakeSendGrid]:
    async with FakeSendGrid() as server:
        yield server


@pytest.fixture
async def provider(fake: FakeSendGrid) -> AsyncIterator[SendGridProvider]:
    sendgrid = SendGridProvider(fake.credential, base_url=fake.base_url)
    yield sendgrid
    await sendgrid.close()


async def test_each_recipient_gets_exactly_what_was_rendered_for_them(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    batch = [*newsletter(3), sign_in()]
    results = await provider.send(batch)

    assert [r.send_id for r in results] == [e.send_id for e in batch]
    assert all(r.ok for r in results)
    # The three newsletter copies share one call (they differ only in per-recipient values);
    # the sign-in link has content of its own.
    assert [len(call["personalizations"]) for call in fake.calls] == [3, 1]
    assert len({r.provider_message_id for r in results[:3]}) == 1
    assert results[3].provider_message_id != results[0].provider_message_id
    assert results[0].provider_message_id == fake.delivered[0].provider_id

    received = {d.to: d for d in fake.delivered}
    for email in batch:
        got = received[email.recipient]
        assert (got.subject, got.html, got.text) == (email.subject, email.html, email.text)
        assert got.sender == "jane@news.example"
        assert got.to_name == email.recipient_name
        assert got.headers["Message-ID"] == email.message_id
        assert got.headers["X-Postroom-Send-Id"] == email.send_id
        assert got.ids == {
            "postroom_send_id": email.send_id,
            "postroom_message_id": email.message_id,
            "postroom_email_type": email.email_type,
        }
        assert got.extra["reply_to"] == {"email": "reply@news.example", "name": "Jane replies"}
        assert got.extra["categories"] == [email.email_type]
    for email in batch[:3]:
        got = received[email.recipient]
        assert got.headers["List-Unsubscribe"] == email.headers["List-Unsubscribe"]
        assert got.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "List-Unsubscribe" not in received["ada@example.com"].headers


async def test_sign_in_links_of_one_layout_share_a_call_and_arrive_exact(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    links = ["https://platform.example/login?t=a", "https://platform.example/login?t=b"]
    batch = sign_ins(links * 2)
    results = await provider.send(batch)

    assert all(r.ok for r in results)
    assert [len(call["personalizations"]) for call in fake.calls] == [4]
    assert "platform.example/login" not in orjson.dumps(fake.calls[0]["content"]).decode()
    received = {d.to: d for d in fake.delivered}
    for email in batch:
        got = received[email.recipient]
        assert (got.subject, got.html, got.text) == (email.subject, email.html, email.text)
        assert got.headers["X-Postroom-Send-Id"] == email.send_id


async def test_a_batch_over_the_limit_is_split_into_calls_of_1000(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    batch = subscribers(1001)
    results = await provider.send(batch)
    assert all(r.ok for r in results)
    assert sorted(len(call["personalizations"]) for call in fake.calls) == [1, 1000]
    assert sorted(d.to for d in fake.delivered) == sorted(e.recipient for e in batch)
    assert provider.max_batch_size == 1000


async def test_two_messages_to_one_address_go_in_separate_calls(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    first, second = newsletter(2)
    twin = dataclasses.replace(second, recipient=first.recipient)
    results = await provider.send([first, twin])
    assert all(r.ok for r in results)  # the fake refuses an address twice in one call
    assert [len(call["personalizations"]) for call in fake.calls] == [1, 1]


async def test_202_gives_every_recipient_the_x_message_id(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    results = await provider.send(newsletter(2))
    assert results[0].provider_message_id == results[1].provider_message_id
    assert results[0].provider_message_id is not None
    assert len(results[0].provider_message_id) == 22


async def test_400_in_a_shared_call_fails_only_the_bad_recipient(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    batch = subscribers(8)
    fake.rejected.add("reader5@example.com")
    results = await provider.send(batch)
    # The call is refused whole, then halved until the bad address is alone.
    failed = [r.send_id for r in results if not r.ok]
    assert failed == ["b00005"]
    assert isinstance(results[5].error, PermanentProviderError)
    assert "Does not contain a valid address" in str(results[5].error)
    assert sorted(d.to for d in fake.delivered) == sorted(
        e.recipient for e in batch if e.send_id != "b00005"
    )
    assert sorted(len(c["personalizations"]) for c in fake.calls) == [1, 2, 4]


async def test_400_about_the_shared_part_fails_the_call_without_splitting(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    body = {
        "errors": [
            {"message": "The from email does not contain a valid address.", "field": "from.email"}
        ]
    }
    fake.fail_next(Fault.answer(400, orjson.dumps(body)))
    results = await provider.send(subscribers(6))
    assert all(isinstance(r.error, PermanentProviderError) for r in results)
    assert fake.requests == 1


async def test_413_for_a_call_of_several_is_split(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    fake.fail_next(Fault.answer(413, b'{"errors":[{"message":"content too large"}]}'))
    results = await provider.send(subscribers(6))
    assert all(r.ok for r in results)
    assert sorted(len(c["personalizations"]) for c in fake.calls) == [3, 3]


async def test_400_for_one_message_is_permanent_with_sendgrids_reason(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    body = {"errors": [{"message": "Does not contain a valid address.", "field": "to.0.email"}]}
    fake.fail_next(Fault.answer(400, orjson.dumps(body)))
    [result] = await provider.send([sign_in()])
    assert isinstance(result.error, PermanentProviderError)
    assert not result.error.suppress
    assert "to.0.email: Does not contain a valid address." in str(result.error)


@pytest.mark.parametrize("status", [404, 405, 413])
async def test_other_4xx_are_permanent(
    fake: FakeSendGrid, provider: SendGridProvider, status: int
) -> None:
    fake.fail_next(Fault.answer(status, b'{"errors":[{"message":"no"}]}'))
    [result] = await provider.send([sign_in()])
    assert isinstance(result.error, PermanentProviderError)
    assert result.error.code == str(status)


@pytest.mark.parametrize("status", [401, 403])
async def test_credentials_refused_are_permanent_and_alert_without_the_key(
    fake: FakeSendGrid, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "SG.wrong-secret-value"
    sendgrid = SendGridProvider(secret, base_url=fake.base_url)
    if status == 403:
        sendgrid = SendGridProvider(fake.credential, base_url=fake.base_url)
        fake.fail_next(Fault.answer(403, b'{"errors":[{"message":"access forbidden"}]}'))
    try:
        with caplog.at_level(logging.ERROR):
            [result] = await sendgrid.send([sign_in()])
    finally:
        await sendgrid.close()
    assert isinstance(result.error, PermanentProviderError)
    alerts = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert alerts and "sendgrid" in alerts[0].getMessage()
    assert all(
        secret not in r.getMessage() and fake.credential not in r.getMessage()
        for r in caplog.records
    )
    assert fake.delivered == []


async def test_429_waits_until_x_ratelimit_reset(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    reset = int(time.time()) + 7
    fake.fail_next(
        Fault.answer(
            429,
            b'{"errors":[{"field":null,"message":"too many requests"}]}',
            X_RateLimit_Limit="600",
            X_RateLimit_Remaining="0",
            X_RateLimit_Reset=str(reset),
        )
    )
    results = await provider.send(newsletter(2))
    assert all(isinstance(r.error, RateLimitedError) for r in results)
    error = results[0].error
    assert isinstance(error, RateLimitedError)
    assert 5.0 <= error.retry_after <= 7.0
    snapshot = provider.rate_limit
    assert snapshot is not None and (snapshot.limit, snapshot.remaining) == (600, 0)
    assert snapshot.reset_at == reset


async def test_429_honours_retry_after(fake: FakeSendGrid, provider: SendGridProvider) -> None:
    fake.fail_next(Fault.answer(429, b"{}", Retry_After="3"))
    [result] = await provider.send([sign_in()])
    assert isinstance(result.error, RateLimitedError)
    assert result.error.retry_after == 3.0


async def test_a_long_retry_after_hands_the_next_calls_back_unsent(
    fake: FakeSendGrid, provider: SendGridProvider
) -> None:
    """Waiting ten minutes inside a call would outlive the message's queue lease; the calls
    after such a 429 are not offered (the worker releases them without spending an attempt)."""
    fake.fail_next(Fault.answer(429, b"{}", Retry_After="600"))
    [limited] = await provider.send([sign_in()])
    requests = fake.requests
    start = time.monotonic()
    later = await provider.send([sign_in("b@example.com", "s2"), *newsletter(2)])
    assert time.monotonic() - start < 1.0
    assert isinstance(limited.error, RateLimitedError)
    assert all(isinstance(r.error, ProviderUnavailableError) for r in later)
    assert all(598 <= r.error.retry_after <= 600 for r in later if r.error)
    assert fake.requests == requests


@pytest.mark.parametrize("status", [408, 500, 502, 503])
async def test_5xx_is_transient(
    fake: FakeSendGrid, provider: SendGridProvider, status: int
) -> None:
    fake.fail_next(Fault.answer(status, b'{"errors":[{"message":"internal server error"}]}'))
    [result] = await provider.send([sign_in()])
    assert isinstance(result.error, TransientProviderError)
    assert not isinstance(result.error, RateLimitedError)
    [again] = await provider.send([sign_in()])  # and the keep-alive session carries on
    assert again.ok
