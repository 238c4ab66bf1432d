"""Rate limits kept in Redis hold across workers: two reservation clients (two worker
processes, or hosts) share one schedule."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import time

import pytest
from tests.conftest import require_service

from postroom.config import Settings
from postroom.errors import ConfigurationError
from postroom.worker.throttle import Rate
from postroom.worker.throttle_redis import RedisReservations

REDIS_URL = os.environ.get("POSTROOM_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2):
            return True
    except OSError:
        return False


async def test_two_workers_share_one_schedule() -> None:
    require_service(redis_reachable(), "Redis at 127.0.0.1:6379")
    prefix = f"postroom-test-{secrets.token_hex(4)}:"
    a, b = RedisReservations(REDIS_URL, prefix=prefix), RedisReservations(REDIS_URL, prefix=prefix)
    try:
        rate = Rate(20, burst=1)  # one slot every 50 ms
        waits = await asyncio.gather(
            *(store.reserve("esp:requests", 1, rate) for store in [a, b] * 10)
        )
        # Twenty reservations from two clients take twenty distinct 50 ms slots.
        assert sorted(round(w / 0.05) for w in waits) == list(range(20))
    finally:
        await a.close()
        await b.close()


async def test_a_paced_sender_never_exceeds_the_rate() -> None:
    require_service(redis_reachable(), "Redis at 127.0.0.1:6379")
    store = RedisReservations(REDIS_URL, prefix=f"postroom-test-{secrets.token_hex(4)}:")
    sent: list[float] = []

    async def worker() -> None:
        for _ in range(10):
            wait = await store.reserve("esp:recipients", 1, Rate(100, burst=1))
            await asyncio.sleep(wait)
            sent.append(time.monotonic())

    try:
        await asyncio.gather(*(worker() for _ in range(3)))
    finally:
        await store.close()
    sent.sort()
    # 30 sends at 100/s span at least 0.29 s; no 100 ms window holds more than 10 + 1.
    assert sent[-1] - sent[0] >= 0.28
    assert max(sum(1 for t in sent if s <= t < s + 0.1) for s in sent) <= 11


def test_a_bad_redis_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="POSTROOM_RATE_LIMIT_URL"):
        RedisReservations("http://not-redis")


def test_domain_rates_parse_from_the_environment_form() -> None:
    settings = Settings(domain_rates="Gmail.com=20, yahoo.com=2.5")  # type: ignore[arg-type]
    assert settings.domain_rates == {"gmail.com": 20.0, "yahoo.com": 2.5}
    with pytest.raises(ValueError, match="DOMAIN=RECIPIENTS_PER_SECOND"):
        Settings(domain_rates="gmail.com")  # type: ignore[arg-type]
