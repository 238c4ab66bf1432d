"""Chaos on the production backends: PostgreSQL with the SQL queue or RabbitMQ, four worker
processes SIGKILLed at random again and again (and, on RabbitMQ, the broker's app stopped and
started mid-run), mail handed to a fake SendGrid over HTTP that records every copy it gets.

Afterwards every email was delivered, and a send id the fake got twice must be one the ledger
marks ambiguous (a worker died between the ESP's answer and the ledger commit, and
transactional mail is resent by policy). The short variant runs in the default suite; the long
one (20,000 emails) with ``make chaos``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from tests.conftest import (
    fresh_postgres_database,
    make_settings,
    require_service,
    submit_transactional_mix,
)
from tests.contract.rabbitmq_broker import RABBITMQ_URL, throwaway_prefix
from tests.esp_fakes.sendgrid import FakeSendGrid

from postroom.config import Settings
from postroom.store import migrate
from postroom.store.ledger import SendStatus
from postroom.wiring import Postroom, open_postroom

WORKERS = 4
KILLS = 10
LEASE = 2.0
RETRY_SCHEDULE = "0.5,1,2"


@contextlib.asynccontextmanager
async def queue_url(backend: str) -> AsyncIterator[str]:
    if backend == "sql":
        yield "sql://"
        return
    tiers = [float(t) for t in RETRY_SCHEDULE.split(",")] + [LEASE]
    from postroom.queue import rabbitmq_topology

    async with throwaway_prefix([*rabbitmq_topology.DEFAULT_WAIT_TIERS, *tiers]) as prefix:
        yield f"{RABBITMQ_URL}?prefix={prefix}"


def worker_env(settings: Settings, fake: FakeSendGrid) -> dict[str, str]:
    return {
        **os.environ,
        "POSTROOM_DATA_DIR": str(settings.data_dir),
        "POSTROOM_DATABASE_URL": str(settings.database_url),
        "POSTROOM_QUEUE_URL": settings.queue_url,
        "POSTROOM_PROVIDER": "sendgrid",
        "POSTROOM_SENDGRID_API_KEY": fake.credential,
        "POSTROOM_SENDGRID_BASE_URL": fake.base_url,
        "POSTROOM_SECRET_KEY": str(settings.secret_key),
        "POSTROOM_API_KEYS": "unused",
        "POSTROOM_LEASE_SECONDS": str(LEASE),
        "POSTROOM_RETRY_SCHEDULE": RETRY_SCHEDULE,
        "POSTROOM_IMMEDIATE_RETRY_DELAY": "0.01",
        "POSTROOM_CLAIM_BATCH": "16",
        "POSTROOM_WORKER_CONCURRENCY": "32",
    }


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "postroom", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


async def restart_broker() -> None:
    """Stop and start RabbitMQ's application (the node stays up): every connection drops."""
    for action in ("stop_app", "start_app"):
        await asyncio.to_thread(
            subprocess.run, ["rabbitmqctl", action], check=True, capture_output=True
        )
    await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", "await_startup"], check=True, capture_output=True
    )


async def run_chaos(backend: str, emails: int, tmp_path: Path) -> None:
    if backend == "rabbitmq":
        require_service(
            subprocess.run(["which", "rabbitmqctl"], capture_output=True).returncode == 0,
            "rabbitmqctl (to restart the broker)",
        )
    fake = FakeSendGrid()
    await fake.start()
    with fresh_postgres_database() as database_url:
        migrate.upgrade(database_url)
        async with queue_url(backend) as url:
            settings = make_settings(
                tmp_path, database_url=database_url, queue_url=url, provider="outbox"
            )
            postroom = await open_postroom(settings)
            try:
                await submit_transactional_mix(postroom, emails)
                await _kill_and_restart(backend, worker_env(settings, fake), tmp_path, postroom)
                await _check(postroom, fake, emails)
            finally:
                await postroom.close()
                await fake.stop()


async def _kill_and_restart(
    backend: str, env: dict[str, str], tmp_path: Path, postroom: Postroom
) -> None:
    log = tmp_path / "workers.log"
    rng = random.Random(20261128)
    workers = [start_worker(env, log) for _ in range(WORKERS)]
    try:
        while await _sent(postroom) == 0:
            await asyncio.sleep(0.05)
        for kill in range(KILLS):
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            victim = rng.randrange(WORKERS)
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            workers[victim] = start_worker(env, log)
            if backend == "rabbitmq" and kill == KILLS // 2:
                await restart_broker()
        deadline = asyncio.get_running_loop().time() + 300
        while await _sent(postroom) < await _total(postroom):
            assert asyncio.get_running_loop().time() < deadline, log.read_text()[-3000:]
            for worker in workers:
                assert worker.poll() is None, log.read_text()[-3000:]
            await asyncio.sleep(0.2)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=60)


async def _check(postroom: Postroom, fake: FakeSendGrid, emails: int) -> None:
    copies = Counter(d.ids["postroom_send_id"] for d in fake.delivered)
    duplicated = {send_id for send_id, n in copies.items() if n > 1}
    ambiguous = {
        send_id
        for send_id in duplicated
        if any(a.outcome == SendStatus.AMBIGUOUS for a in await postroom.ledger.attempts(send_id))
    }
    statuses = await postroom.ledger.count_by_status()
    lost = emails - len(copies)
    report = (
        f"{KILLS} kills; lost {lost}; duplicates {len(duplicated)} "
        f"(of which ambiguous in the ledger {len(ambiguous)}); "
        f"ambiguous attempts {await postroom.ledger.count_attempts(SendStatus.AMBIGUOUS)}; "
        f"ledger {dict(statuses)}"
    )
    print(report)
    assert lost == 0, report
    assert statuses == {SendStatus.SENT: emails}, report
    assert duplicated == ambiguous, report
    assert await postroom.queue.dlq_list() == [], report


async def _sent(postroom: Postroom) -> int:
    return (await postroom.ledger.count_by_status()).get(SendStatus.SENT, 0)


async def _total(postroom: Postroom) -> int:
    return sum((await postroom.ledger.count_by_status()).values())


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sql", "rabbitmq"])
async def test_chaos_short(backend: str, tmp_path: Path) -> None:
    await run_chaos(backend, 2_000, tmp_path)


@pytest.mark.long
@pytest.mark.parametrize("backend", ["sql", "rabbitmq"])
async def test_chaos_long(backend: str, tmp_path: Path) -> None:
    await run_chaos(backend, 20_000, tmp_path)
