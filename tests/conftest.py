"""Shared fixtures: settings on a temporary data dir, a built Postroom, a running worker."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from tests import log_scan
from tests.fakes import FakeProvider

from postroom.config import Settings
from postroom.messages import parse_event
from postroom.store import migrate
from postroom.submission import submit
from postroom.wiring import Postroom, build_pipeline, build_worker, open_postroom, prepare_database
from postroom.worker.pipeline import DeliveryPipeline

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    log_scan.install()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    log_scan.report(session)


def require_service(available: bool, what: str) -> None:
    """Skip on a laptop without ``what``; in CI a missing service is a failure."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is not reachable, and CI must run every integration test")
    pytest.skip(f"{what} is not reachable")


def wait_for_email_status(
    client: Any, send_id: str, status: str, timeout: float = 10.0
) -> dict[str, Any]:
    """Poll ``GET /v1/emails/{id}`` (with the test API key) until the email has ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/emails/{send_id}", headers={"Authorization": "Bearer test-key"})
        body: dict[str, Any] = response.json()
        if body["status"] == status or time.monotonic() > deadline:
            assert body["status"] == status, body
            return body
        time.sleep(0.02)


# Server-level connection (no database): each test creates and drops its own database on it.
POSTGRES_SERVER = os.environ.get("POSTROOM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


@functools.cache
def postgres_reachable() -> bool:
    try:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _postgres_admin(statement: sql.Composed) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(statement)


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test (dropped afterwards); yields its URL."""
    require_service(postgres_reachable(), f"PostgreSQL at {POSTGRES_SERVER}")
    name = f"postroom_test_{secrets.token_hex(6)}"
    _postgres_admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{POSTGRES_SERVER.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        _postgres_admin(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


async def submit_transactional_mix(postroom: Postroom, count: int) -> None:
    """Submit ``count`` emails, 1,000 per call: welcome mail with a sign-in link every tenth
    (both transactional, so mail whose outcome was lost is resent by the default policy)."""
    events = [
        parse_event(
            {
                "email_type": "welcome" if i % 10 else "sign_in_link",
                "recipient_email": f"reader{i}@example.com",
                "template_data": {
                    "creator_name": "Jane Doe",
                    "sign_in_url": f"https://platform.example/login/{i}",
                    "expires_minutes": 15,
                },
            },
            max_bytes=100_000,
        )
        for i in range(count)
    ]
    for start in range(0, count, 1000):
        await submit(postroom, events[start : start + 1000])


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "api_keys": ["test-key"],
        "secret_key": "test-secret-key-test-secret-key!",
        "retry_schedule": [0.05, 0.1],
        "immediate_retry_delay": 0.001,
        "poll_interval": 0.005,
        "lease_seconds": 5.0,
        "shutdown_grace": 5.0,
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings on a fresh database of each kind the store supports."""
    if request.param == "sqlite":
        yield make_settings(tmp_path)
        return
    with fresh_postgres_database() as url:
        migrate.upgrade(url)  # a server database is migrated explicitly, as in production
        yield make_settings(tmp_path, database_url=url)


@pytest.fixture
def fake_provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
async def postroom(settings: Settings, fake_provider: FakeProvider) -> AsyncIterator[Postroom]:
    await prepare_database(settings)
    pr = await open_postroom(settings, provider=fake_provider)
    try:
        yield pr
    finally:
        await pr.close()


class RunningWorker:
    """A worker running in the test's event loop until the test ends."""

    def __init__(self, postroom: Postroom) -> None:
        self.pipeline: DeliveryPipeline = build_pipeline(postroom)
        self.worker = build_worker(postroom, self.pipeline)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.worker.run(self.stop))

    async def until(self, condition: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await condition():
            if self.task.done():
                self.task.result()
                raise AssertionError("worker stopped")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"condition not met within {timeout}s")
            await asyncio.sleep(0.01)

    async def shutdown(self) -> None:
        self.stop.set()
        await self.task


@pytest.fixture
async def running_worker(postroom: Postroom) -> AsyncIterator[RunningWorker]:
    running = RunningWorker(postroom)
    try:
        yield running
    finally:
        await running.shutdown()
