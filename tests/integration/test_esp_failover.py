"""Failover through the real wiring: SendGrid as the primary (``POSTROOM_PROVIDER``) and
Mailgun as the secondary (``POSTROOM_FAILOVER_PROVIDER``), each a fake ESP over HTTP.

The issue's scenario is a primary answering 503 for 30 s. The default suite scales time down:
the outage lasts 3 s and the breaker stays open 0.5 s between probes (``BREAKER_THRESHOLD=3``),
so several probes fall inside the outage and fail, as they would in the 30 s case, and the test
takes seconds. The 30 s outage itself (breaker open 5 s between probes) runs with ``-m long``.

While the primary is down, mail keeps flowing through the secondary, and the ledger names
Mailgun as the provider of those sends; once the primary answers again a probe closes the
breaker and mail goes through SendGrid again. Nothing is sent twice (a 503 accepts nothing).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import pytest
from tests.conftest import RunningWorker, make_settings
from tests.esp_fakes.mailgun import FakeMailgun
from tests.esp_fakes.sendgrid import FakeSendGrid

from postroom.messages import EmailEvent
from postroom.store.ledger import SendStatus
from postroom.submission import Accepted, submit
from postroom.wiring import Postroom, open_postroom, prepare_database
from postroom.worker.failover import BreakerState, FailoverProvider


class Timing(NamedTuple):
    outage: float  # seconds the primary answers 503
    open_seconds: float  # how long the breaker stays open between probes


@pytest.fixture(
    params=[
        pytest.param(Timing(3.0, 0.5), id="scaled"),
        pytest.param(Timing(30.0, 5.0), id="30s", marks=pytest.mark.long),
    ]
)
def timing(request: pytest.FixtureRequest) -> Timing:
    value: Timing = request.param
    return value


@pytest.fixture
async def primary() -> AsyncIterator[FakeSendGrid]:
    fake = FakeSendGrid()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def secondary() -> AsyncIterator[FakeMailgun]:
    fake = FakeMailgun(domain="mg.news.example")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def postroom(
    tmp_path: Path, primary: FakeSendGrid, secondary: FakeMailgun, timing: Timing
) -> AsyncIterator[Postroom]:
    settings = make_settings(
        tmp_path,
        provider="sendgrid",
        sendgrid_api_key=primary.credential,
        sendgrid_base_url=primary.base_url,
        failover_provider="mailgun",
        mailgun_api_key=secondary.credential,
        mailgun_domain=secondary.domain,
        mailgun_base_url=secondary.base_url,
        breaker_threshold=3,
        breaker_open_seconds=timing.open_seconds,
    )
    await prepare_database(settings)
    pr = await open_postroom(settings)
    try:
        yield pr
    finally:
        await pr.close()


def _welcomes(wave: str, count: int = 20) -> list[EmailEvent]:
    return [
        EmailEvent(
            email_type="welcome",
            recipient_email=f"{wave}{i}@example.com",
            template_data={"creator_name": "Jane Doe"},
        )
        for i in range(count)
    ]


async def _sent_by(postroom: Postroom, wave: list[Accepted]) -> dict[str, str | None]:
    """Send id → the provider the ledger names, once every email of ``wave`` is sent."""
    rows = [await postroom.ledger.get(a.id) for a in wave]
    assert all(row is not None and row.status is SendStatus.SENT for row in rows)
    return {row.id: row.provider for row in rows if row is not None}


async def test_mail_flows_through_the_secondary_while_the_primary_is_down(
    postroom: Postroom, primary: FakeSendGrid, secondary: FakeMailgun, timing: Timing
) -> None:
    outage, open_seconds = timing
    failover = postroom.provider
    assert isinstance(failover, FailoverProvider)
    breaker = failover.breaker
    running = RunningWorker(postroom)

    async def all_sent(wave: list[Accepted]) -> None:
        async def done() -> bool:
            rows = [await postroom.ledger.get(a.id) for a in wave]
            return all(r is not None and r.status is SendStatus.SENT for r in rows)

        await running.until(done, timeout=outage)

    try:
        primary.outage(outage)
        down_since = time.monotonic()
        # Mail submitted as the outage begins, and again while the breaker is probing.
        during = await submit(postroom, _welcomes("early"))
        await all_sent(during)
        await asyncio.sleep(open_seconds * 2)
        later = await submit(postroom, _welcomes("later"))
        await all_sent(later)
        assert primary.down, "the outage ended before the test could observe it"
        during += later
        opened = breaker.opened_count
        assert opened >= 2  # probes inside the outage failed and opened it again

        # The primary recovers; the next call after the open period is a probe that closes it.
        await asyncio.sleep(max(0.0, down_since + outage - time.monotonic()) + open_seconds)
        recovered = await submit(postroom, _welcomes("recovered"))
        await all_sent(recovered)
    finally:
        await running.shutdown()

    assert breaker.state is BreakerState.CLOSED
    assert set((await _sent_by(postroom, during)).values()) == {"mailgun"}
    assert set((await _sent_by(postroom, recovered)).values()) == {"sendgrid"}
    via_secondary = {d.to for d in secondary.delivered}
    via_primary = {d.to for d in primary.delivered}
    assert via_secondary == {a.recipient for a in during}
    assert via_primary == {a.recipient for a in recovered}
    received = collections.Counter(d.to for d in [*primary.delivered, *secondary.delivered])
    assert max(received.values()) == 1
    assert primary.requests > len(primary.calls)  # the 503s were answered, not skipped
