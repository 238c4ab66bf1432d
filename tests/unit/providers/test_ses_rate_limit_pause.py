"""SES after a throttling answer: no SendEmail of the provider goes out until its wait has
passed (``providers/ses.py`` through ``http.RateLimitPause``), against the fake endpoint."""

from __future__ import annotations

import asyncio
import time

from tests.esp_fakes.base import Fault
from tests.esp_fakes.messages import sign_in
from tests.esp_fakes.ses import CREDENTIALS, REGION, FakeSesErrors

from postroom.errors import ProviderUnavailableError, RateLimitedError
from postroom.providers.ses import SesProvider


def _provider(fake: FakeSesErrors) -> SesProvider:
    return SesProvider(
        REGION,
        access_key_id=CREDENTIALS["aws_access_key_id"],
        secret_access_key=CREDENTIALS["aws_secret_access_key"],
        endpoint_url=fake.base_url,
        timeout=5.0,
    )


async def test_a_throttled_sendemail_holds_the_providers_next_calls() -> None:
    async with FakeSesErrors() as fake:
        ses = _provider(fake)
        fake.fail_next(Fault.answer(429, b'{"message": "Too many requests"}', Retry_After="0.5"))
        try:
            [throttled] = await ses.send([sign_in(send_id="s1")])
            start = time.monotonic()
            results = await asyncio.gather(
                *(ses.send([sign_in(f"r{n}@example.com", f"s{n + 2}")]) for n in range(3))
            )
            waited = time.monotonic() - start
        finally:
            await ses.close()
    assert isinstance(throttled.error, RateLimitedError)
    assert throttled.error.retry_after == 0.5
    assert all(result.ok for [result] in results)
    assert waited >= 0.4  # the rest of the 0.5 s after the answer was read
    assert fake.retry_after_violations == 0
    assert fake.requests == 4


async def test_a_long_throttle_hands_the_providers_next_calls_back_unsent() -> None:
    async with FakeSesErrors() as fake:
        ses = _provider(fake)
        fake.fail_next(Fault.answer(429, b'{"message": "Too many requests"}', Retry_After="900"))
        try:
            [throttled] = await ses.send([sign_in(send_id="s1")])
            requests = fake.requests
            start = time.monotonic()
            later = await ses.send([sign_in(f"r{n}@example.com", f"s{n + 2}") for n in range(3)])
            waited = time.monotonic() - start
        finally:
            await ses.close()
    assert isinstance(throttled.error, RateLimitedError)
    assert all(isinstance(r.error, ProviderUnavailableError) for r in later)
    assert waited < 1.0
    assert fake.requests == requests
