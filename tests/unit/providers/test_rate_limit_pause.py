"""A 429's wait held for a whole client (``providers/http.py``: ``RateLimitPause``), which the
HTTP adapters and SES share: real time, in tenths of a second."""

from __future__ import annotations

import asyncio
import time

import pytest

from postroom.errors import ProviderUnavailableError
from postroom.providers.http import RateLimitPause


async def _enter(pause: RateLimitPause, hold: float = 0.0) -> float:
    """Take a slot (checking the wait), note when, keep it ``hold`` seconds."""
    async with pause.slot():
        entered = time.monotonic()
        await asyncio.sleep(hold)
    return entered


async def test_a_request_taking_a_slot_during_a_pause_waits_it_out() -> None:
    pause = RateLimitPause(4, "esp")
    start = time.monotonic()
    pause.pause(0.2)
    assert await _enter(pause) - start >= 0.2


async def test_a_longer_pause_set_while_waiting_is_waited_out_too() -> None:
    pause = RateLimitPause(4, "esp")
    start = time.monotonic()
    pause.pause(0.1)
    waiting = asyncio.create_task(_enter(pause))
    await asyncio.sleep(0.05)
    pause.pause(0.2)  # another 429 meanwhile: now ends 0.25 s after the start
    assert await waiting - start >= 0.25


async def test_a_shorter_pause_does_not_cut_a_longer_one() -> None:
    pause = RateLimitPause(4, "esp")
    start = time.monotonic()
    pause.pause(0.2)
    pause.pause(0.05)
    assert await _enter(pause) - start >= 0.2


async def test_requests_queued_for_a_slot_check_the_pause_once_they_hold_one() -> None:
    """One slot, held while a 429 comes in: the request queued behind it was not yet checked,
    so it waits out the pause instead of going out as soon as the slot frees."""
    pause = RateLimitPause(1, "esp")
    start = time.monotonic()
    holder = asyncio.create_task(_enter(pause, hold=0.05))
    await asyncio.sleep(0)
    queued = asyncio.create_task(_enter(pause))
    await asyncio.sleep(0.01)
    pause.pause(0.2)
    assert await holder - start < 0.05
    assert await queued - start >= 0.2


async def test_no_pause_no_wait() -> None:
    pause = RateLimitPause(2, "esp")
    start = time.monotonic()
    await asyncio.gather(*(_enter(pause) for _ in range(4)))
    assert time.monotonic() - start == pytest.approx(0.0, abs=0.05)


async def test_a_pause_longer_than_a_call_may_wait_hands_the_request_back_at_once() -> None:
    pause = RateLimitPause(2, "mailgun", longest_wait=0.5)
    pause.pause(600)
    start = time.monotonic()
    with pytest.raises(ProviderUnavailableError) as refused:
        await _enter(pause)
    assert time.monotonic() - start < 0.05
    assert 599 < refused.value.retry_after <= 600
    assert "mailgun" in str(refused.value)


async def test_a_request_waiting_when_the_pause_grows_too_long_is_handed_back() -> None:
    pause = RateLimitPause(2, "esp", longest_wait=0.5)
    pause.pause(0.1)
    waiting = asyncio.create_task(_enter(pause))
    await asyncio.sleep(0.05)
    pause.pause(600)  # a later 429 asks for ten minutes
    with pytest.raises(ProviderUnavailableError):
        await waiting
