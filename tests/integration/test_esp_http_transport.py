"""The transport rows of every ESP's error table, against each fake on a loopback port: a
failure before the request was written is transient, one after it is ambiguous.

SendGrid, Mailgun and Postmark share ``providers/http.py``; SES goes through aiobotocore, so it
is run through the same faults against the fake SES endpoint."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from tests.esp_fakes.base import FakeEsp, Fault
from tests.esp_fakes.mailgun import FakeMailgun
from tests.esp_fakes.messages import sign_in
from tests.esp_fakes.postmark import FakePostmark
from tests.esp_fakes.sendgrid import FakeSendGrid
from tests.esp_fakes.ses import CREDENTIALS, REGION, FakeSesErrors, free_port

from postroom.errors import AmbiguousProviderError, RateLimitedError, TransientProviderError
from postroom.providers.http import EspHttpClient
from postroom.providers.mailgun import MailgunProvider
from postroom.providers.postmark import PostmarkProvider
from postroom.providers.sendgrid import SendGridProvider
from postroom.providers.ses import SesProvider

TIMEOUT = 0.25


@dataclass
class Esp:
    make_fake: Callable[[], FakeEsp]
    make_provider: Callable[[FakeEsp, str, int], Any]  # fake, base URL, max connections


def _client(name: str, connections: int) -> EspHttpClient:
    return EspHttpClient(
        name, timeout=TIMEOUT, connect_timeout=TIMEOUT, max_connections=connections
    )


ESPS = {
    "sendgrid": Esp(
        FakeSendGrid,
        lambda fake, url, n: SendGridProvider(
            fake.credential, base_url=url, client=_client("sendgrid", n)
        ),
    ),
    "mailgun": Esp(
        FakeMailgun,
        lambda fake, url, n: MailgunProvider(
            fake.credential, "mg.news.example", base_url=url, client=_client("mailgun", n)
        ),
    ),
    "postmark": Esp(
        FakePostmark,
        lambda fake, url, n: PostmarkProvider(
            fake.credential, base_url=url, client=_client("postmark", n)
        ),
    ),
    "ses": Esp(
        FakeSesErrors,
        lambda fake, url, n: SesProvider(
            REGION,
            access_key_id=CREDENTIALS["aws_access_key_id"],
            secret_access_key=CREDENTIALS["aws_secret_access_key"],
            endpoint_url=url,
            timeout=TIMEOUT,
            connect_timeout=TIMEOUT,
        ),
    ),
}


@pytest.fixture(params=sorted(ESPS))
async def esp(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Esp, FakeEsp]]:
    chosen = ESPS[request.param]
    fake = chosen.make_fake()
    async with fake:
        yield chosen, fake


async def _send_one(provider: Any, send_id: str = "s00001") -> Any:
    try:
        [result] = await provider.send([sign_in(send_id=send_id)])
    finally:
        await provider.close()
    return result


async def test_connection_refused_is_transient(esp: tuple[Esp, FakeEsp]) -> None:
    chosen, fake = esp
    result = await _send_one(chosen.make_provider(fake, f"http://127.0.0.1:{free_port()}", 4))
    assert type(result.error) is TransientProviderError
    assert fake.requests == 0


async def test_unknown_host_is_transient(esp: tuple[Esp, FakeEsp]) -> None:
    chosen, fake = esp
    result = await _send_one(chosen.make_provider(fake, "http://postroom-test.invalid", 4))
    assert type(result.error) is TransientProviderError


async def test_connection_dropped_after_the_request_is_ambiguous(esp: tuple[Esp, FakeEsp]) -> None:
    chosen, fake = esp
    fake.fail_next(Fault.drop())
    result = await _send_one(chosen.make_provider(fake, fake.base_url, 4))
    assert isinstance(result.error, AmbiguousProviderError)
    assert fake.requests == 1


async def test_timeout_after_the_request_is_ambiguous(esp: tuple[Esp, FakeEsp]) -> None:
    chosen, fake = esp
    fake.fail_next(Fault.hang())
    result = await _send_one(chosen.make_provider(fake, fake.base_url, 4))
    assert isinstance(result.error, AmbiguousProviderError)


async def test_503_is_transient_and_the_next_call_succeeds(esp: tuple[Esp, FakeEsp]) -> None:
    chosen, fake = esp
    fake.fail_next(Fault.answer(503, b'{"message": "unavailable"}'))
    provider = chosen.make_provider(fake, fake.base_url, 4)
    try:
        [failed] = await provider.send([sign_in()])
        [sent] = await provider.send([sign_in()])
    finally:
        await provider.close()
    assert type(failed.error) is TransientProviderError
    assert sent.ok and sent.provider_message_id


async def test_429_is_rate_limited_with_the_servers_retry_after(esp: tuple[Esp, FakeEsp]) -> None:
    chosen, fake = esp
    fake.fail_next(Fault.answer(429, b'{"message": "Too many requests"}', Retry_After="2"))
    result = await _send_one(chosen.make_provider(fake, fake.base_url, 4))
    assert isinstance(result.error, RateLimitedError)
    assert result.error.retry_after == 2.0


@pytest.mark.parametrize("name", ["sendgrid", "mailgun", "postmark"])
async def test_waiting_for_a_pooled_connection_past_the_timeout_is_transient(name: str) -> None:
    # The only connection is held by a request the server never answers (sent with a longer
    # timeout of its own); the send times out waiting for the pool, before it was written.
    chosen = ESPS[name]
    async with chosen.make_fake() as fake:
        fake.fail_next(Fault.hang())
        provider = chosen.make_provider(fake, fake.base_url, 1)
        request = provider.request([provider.prepare(sign_in(send_id="s1"))])
        holder = asyncio.create_task(
            provider.client._open().post(
                request.url,
                data=request.body,
                headers=dict(request.headers),
                timeout=aiohttp.ClientTimeout(total=10),
            )
        )
        try:
            while fake.requests == 0:
                await asyncio.sleep(0.01)
            [result] = await provider.send([sign_in(send_id="s2")])
        finally:
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await holder
            await provider.close()
    assert type(result.error) is TransientProviderError
    assert fake.requests == 1
