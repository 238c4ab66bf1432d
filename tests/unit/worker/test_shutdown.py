"""Graceful shutdown: in-flight mail is finished within the grace period, else released."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import make_settings

from postroom.messages import Priority, RenderedEmail, parse_event
from postroom.providers.base import SendResult
from postroom.store.ledger import SendStatus
from postroom.submission import submit
from postroom.wiring import build_worker, open_postroom, prepare_database


class GatedProvider:
    """Holds every send until the test opens the gate."""

    name = "gated"
    max_batch_size = 100

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.sent: list[str] = []

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        self.entered.set()
        await self.gate.wait()
        self.sent += [e.send_id for e in batch]
        return [SendResult(e.send_id, provider_message_id=e.send_id) for e in batch]

    async def close(self) -> None:
        pass


def welcome(to: str) -> object:
    return parse_event(
        {"email_type": "welcome", "recipient_email": to, "template_data": {"creator_name": "J"}},
        max_bytes=100_000,
    )


async def test_stop_lets_in_flight_mail_finish_within_the_grace(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, shutdown_grace=5.0)
    await prepare_database(settings)
    provider = GatedProvider()
    postroom = await open_postroom(settings, provider=provider)
    try:
        [accepted] = await submit(postroom, [welcome("a@example.com")])  # type: ignore[list-item]
        stop = asyncio.Event()
        run = asyncio.create_task(build_worker(postroom).run(stop))
        await asyncio.wait_for(provider.entered.wait(), 5)
        stop.set()
        await asyncio.sleep(0.1)
        assert not run.done(), "the worker must wait for its in-flight batch"
        provider.gate.set()
        await asyncio.wait_for(run, 5)
        record = await postroom.ledger.get(accepted.id)
        assert record is not None and record.status is SendStatus.SENT
        assert await postroom.queue.depth() == dict.fromkeys(Priority, 0)
    finally:
        await postroom.close()


async def test_stop_releases_what_the_grace_cannot_finish(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, shutdown_grace=0.2, lease_seconds=60.0)
    await prepare_database(settings)
    provider = GatedProvider()
    postroom = await open_postroom(settings, provider=provider)
    try:
        [accepted] = await submit(postroom, [welcome("b@example.com")])  # type: ignore[list-item]
        stop = asyncio.Event()
        run = asyncio.create_task(build_worker(postroom).run(stop))
        await asyncio.wait_for(provider.entered.wait(), 5)
        stop.set()
        await asyncio.wait_for(run, 5)  # returns after the grace, not after the 60 s lease
        assert provider.sent == []
        # Released, not left leased: another worker can claim it at once.
        [delivery] = await postroom.queue.receive(10, 5.0)
        assert delivery.attempt == 0
        record = await postroom.ledger.get(accepted.id)
        # The provider call was under way: the row stays `sending`, and the next worker to
        # hold the message after a lease has passed treats it as ambiguous (design §4).
        assert record is not None and record.status is SendStatus.SENDING
    finally:
        await postroom.close()
