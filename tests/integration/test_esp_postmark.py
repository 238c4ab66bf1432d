"""PostmarkProvider end to end against the fake Postmark on a loopback port: what arrives, how
batches are split, per-message ErrorCodes inside a batch, and one test per row of the error
table in ``providers/postmark.py`` (transport rows: ``test_esp_http_transport.py``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson
import pytest
from tests.esp_fakes.base import Fault
from tests.esp_fakes.messages import newsletter, sign_in, subscribers
from tests.esp_fakes.postmark import FakePostmark

from postroom.errors import (
    PermanentProviderError,
    RateLimitedError,
    TransientProviderError,
)
from postroom.providers.postmark import PostmarkProvider, classify_error_code


@pytest.fixture
async def fake() -> AsyncIterator[FakePostmark]:
    async with FakePostmark() as server:
        yield server


@pytest.fixture
async def provider(fake: FakePostmark) -> AsyncIterator[PostmarkProvider]:
    postmark = PostmarkProvider(fake.credential, message_stream="broadcast", base_url=fake.base_url)
    yield postmark
    await postmark.close()


async def test_each_message_arrives_with_its_headers_and_metadata(
    fake: FakePostmark, provider: PostmarkProvider
) -> None:
    batch = [*newsletter(2), sign_in()]
    results = await provider.send(batch)

    assert [r.send_id for r in results] == [e.send_id for e in batch]
    assert [r.provider_message_id for r in results] == [d.provider_id for d in fake.delivered]
    assert len({r.provider_message_id for r in results}) == 3  # one MessageID per message
    assert len(fake.calls) == 1 and len(fake.calls[0]) == 3  # one /email/batch call
    for email, got in zip(batch, fake.delivered, strict=True):
        assert (got.subject, got.html, got.text) == (email.subject, email.html, email.text)
        assert got.to == email.recipient and got.to_name == email.recipient_name
        assert got.sender == email.sender
        assert got.headers["Message-ID"] == email.message_id
        assert got.headers["X-Postroom-Send-Id"] == email.send_id
        assert got.ids == {
            "postroom_send_id": email.send_id,
            "postroom_message_id": email.message_id,
        }
        assert got.extra == {
            "Tag": email.email_type,
            "MessageStream": "broadcast",
            "ReplyTo": "Jane replies <reply@news.example>",
        }
        assert got.headers.get("List-Unsubscribe") == email.headers.get("List-Unsubscribe")
    assert "List-Unsubscribe-Post" in fake.delivered[0].headers


async def test_one_message_goes_to_the_single_endpoint(
    fake: FakePostmark, provider: PostmarkProvider
) -> None:
    [result] = await provider.send([sign_in()])
    assert result.ok
    assert isinstance(fake.calls[0], dict)  # /email takes one object, not a list


async def test_a_batch_over_500_is_split(fake: FakePostmark, provider: PostmarkProvider) -> None:
    batch = subscribers(501)
    results = await provider.send(batch)
    assert all(r.ok for r in results)
    assert sorted(len(c) if isinstance(c, list) else 1 for c in fake.calls) == [1, 500]
    assert provider.max_batch_size == 500


async def test_per_message_errors_inside_a_batch_stay_with_their_message(
    fake: FakePostmark, provider: PostmarkProvider
) -> None:
    batch = newsletter(4)
    fake.inactive.add(batch[1].recipient)
    results = await provider.send(batch)
    assert [r.ok for r in results] == [True, False, True, True]
    error = results[1].error
    assert isinstance(error, PermanentProviderError) and error.suppress
    assert error.code == "406"
    assert [d.to for d in fake.delivered] == [batch[i].recipient for i in (0, 2, 3)]


async def test_inactive_recipient_on_the_single_endpoint_is_suppressed(
    fake: FakePostmark, provider: PostmarkProvider
) -> None:
    email = sign_in()
    fake.inactive.add(email.recipient)
    [result] = await provider.send([email])
    assert isinstance(result.error, PermanentProviderError)
    assert result.error.suppress and result.error.code == "406"


def _answer(code: int, message: str, status: int = 422) -> Fault:
    return Fault.answer(status, orjson.dumps({"ErrorCode": code, "Message": message}))


async def test_error_300_for_an_illegal_to_address_is_suppressed(
    fake: FakePostmark, provider: PostmarkProvider
) -> None:
    fake.fail_next(_answer(300, "Error parsing 'To': Illegal email address 'x@'."))
    [result] = await provider.send([sign_in()])
    assert isinstance(result.error, PermanentProviderError) and result.error.suppress


@pytest.mark.parametrize(
    "message",
    [
        "Provide either email TextBody or HtmlBody or both.",
        "Error parsing 'From': Illegal email address 'jane@'.",
        "Maximum of 50 recipients allowed per email message.",
    ],
)
async def test_error_300_for_anything_else_is_permanent_without_suppression(
    fake: FakePostmark, provider: PostmarkProvider, message: str
) -> None:
    fake.fail_next(_answer(300, message))
    [result] = await provider.send([sign_in()])
    assert isinstance(result.error, PermanentProviderError) and not result.error.suppress


@pytest.mark.parametrize("code", [402, 403, 409, 411, 999])
async def test_invalid_request_codes_are_permanent(
    fake: FakePostmark, provider: PostmarkProvider, code: int
) -> None:
    fake.fail_next(_answer(code, "refused"))
    [result] = await provider.send([sign_in()])
    assert isinstance(result.error, PermanentProviderError) and not result.error.suppress
    assert result.error.code == str(code)


async def test_error_410_for_a_whole_batch_splits_it(
    fake: FakePostmark, provider: PostmarkProvider
) -> None:
    fake.fail_next(_answer(410, "Too many batch messages."))
    results = await provider.send(newsletter(4))
    assert all(r.ok for r in results)
    assert sorted(len(c) for c in fake.calls) == [2, 2]


@pytest.mark.parametrize("code", [10, 400, 401, 405, 412, 413])
async def test_token_signature_and_account_codes_are_permanent_and_alert(
    fake: FakePostmark, provider: PostmarkProvider, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_next(_answer(code, "refused for the account"))
    with caplog.at_level(logging.ERROR):
        [result] = await provider.send([sign_in()])
    assert isinstance(result.error, PermanentProviderError) and not result.error.suppress
    assert any(
        r.levelno >= logging.ERROR and f"ErrorCode {code}" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("code", [100, 500])
async def test_maintenance_codes_are_transient(
    fake: FakePostmark, provider: PostmarkProvider, code: int
) -> None:
    fake.fail_next(_answer(code, "maintenance"))
    [result] = await provider.send([sign_in()])
    assert type(result.error) is TransientProviderError


async def test_error_code_429_is_rate_limited(
    fake: FakePostmark, provider: PostmarkProvider
) -> None:
    fake.fail_next(_answer(429, "Rate limit exceeded"))
    [result] = await provider.send([sign_in()])
    assert isinstance(result.error, RateLimitedError) and result.error.retry_after == 2.0


async def test_bad_server_token_is_permanent_and_alerts_without_the_token(
    fake: FakePostmark, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wrong-server-token-value"
    postmark = PostmarkProvider(secret, base_url=fake.base_url)
    try:
        with caplog.at_level(logging.ERROR):
            results = await postmark.send(newsletter(2))
    finally:
        await postmark.close()
    assert all(isinstance(r.error, PermanentProviderError) for r in results)
    assert any(r.levelno >= logging.ERROR for r in caplog.records)
    assert all(secret not in r.getMessage() for r in caplog.records)
    assert fake.delivered == []


@pytest.mark.parametrize("status", [403, 404, 413])
async def test_other_http_4xx_are_permanent(
    fake: FakePostmark, provider: PostmarkProvider, status: int
) -> None:
    fake.fail_next(Fault.answer(status, b"{}"))
    [result] = await provider.send([sign_in()])
    assert isinstance(result.error, PermanentProviderError)


async def test_http_429_honours_retry_after(fake: FakePostmark, provider: PostmarkProvider) -> None:
    fake.fail_next(
        Fault.answer(429, b'{"ErrorCode": 429, "Message": "Rate limit"}', Retry_After="4")
    )
    results = await provider.send(newsletter(2))
    assert all(isinstance(r.error, RateLimitedError) for r in results)
    assert results[0].error is not None and results[0].error.retry_after == 4.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [500, 503])
async def test_http_5xx_is_transient(
    fake: FakePostmark, provider: PostmarkProvider, status: int
) -> None:
    fake.fail_next(Fault.answer(status, b"Service Unavailable"))
    [result] = await provider.send([sign_in()])
    assert type(result.error) is TransientProviderError


def test_every_documented_send_error_code_has_a_class() -> None:
    expected = {
        10: "Permanent", 100: "Transient", 300: "Permanent", 400: "Permanent",
        401: "Permanent", 402: "Permanent", 403: "Permanent", 405: "Permanent",
        406: "Permanent", 409: "Permanent", 410: "Permanent", 411: "Permanent",
        412: "Permanent", 413: "Permanent", 429: "RateLimited", 500: "Transient",
    }  # fmt: skip
    for code, kind in expected.items():
        assert type(classify_error_code(code, "")).__name__.startswith(kind), code
