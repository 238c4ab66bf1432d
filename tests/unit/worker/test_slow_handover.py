"""A hand-over slower than the lease: the worker keeps its claim alive, nothing is sent twice."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from tests.conftest import make_settings

from postroom.messages import RenderedEmail, parse_event
from postroom.providers.base import SendResult
from postroom.store.ledger import SendStatus
from postroom.submission import submit
from postroom.wiring import build_worker, open_postroom, prepare_database

LEASE = 0.6


class SlowProvider:
    """Takes several leases to answer, like a tarpitting SMTP server."""

    name = "slow"
    max_batch_size = 10

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        await asyncio.sleep(LEASE * 4)
        self.sent += [e.send_id for e in batch]
        return [SendResult(e.send_id, provider_message_id=e.send_id) for e in batch]

    async def close(self) -> None:
        pass


async def test_a_slow_hand_over_is_not_taken_for_a_dead_worker(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, lease_seconds=LEASE, poll_interval=0.01)
    await prepare_database(settings)
    provider = SlowProvider()
    postroom = await open_postroom(settings, provider=provider)
    stop = asyncio.Event()
    try:
        event = parse_event(
            {
                "email_type": "welcome",
                "recipient_email": "patient@example.com",
                "template_data": {"creator_name": "Jane"},
            },
            max_bytes=100_000,
        )
        [accepted] = await submit(postroom, [event])
        # Two workers on one queue, as two processes would be.
        workers = [asyncio.create_task(build_worker(postroom).run(stop)) for _ in range(2)]
        for _ in range(200):
            record = await postroom.ledger.get(accepted.id)
            if record is not None and record.status is SendStatus.SENT:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(LEASE * 3)  # time for a wrongful second claim to show up
        stop.set()
        await asyncio.gather(*workers)
        assert provider.sent == [accepted.id]
        attempts = [a.outcome for a in await postroom.ledger.attempts(accepted.id)]
        assert attempts == ["sent"]
    finally:
        stop.set()
        await postroom.close()
