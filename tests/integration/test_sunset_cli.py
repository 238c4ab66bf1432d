"""``postroom sunset`` in process on SQLite and PostgreSQL: the dry run is the default and
changes nothing; ``--apply`` queues the re-engagement email once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from postroom.cli.main import app
from postroom.config import Settings
from postroom.store.consent import Consent, ConsentKind
from postroom.store.subscribers import NewSubscriber, Subscribers
from postroom.wiring import open_postroom, prepare_database


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    long_ago = datetime.now(UTC) - timedelta(days=400)

    async def create() -> None:
        await prepare_database(settings)
        pr = await open_postroom(settings)
        try:
            repo = Subscribers(pr.db, clock=lambda: long_ago)
            await repo.create_list("Essays", "Jane", "jane")
            consent = Consent(ConsentKind.EXPRESS, "test", long_ago, None)
            await repo.subscribe("jane", [NewSubscriber("idle@example.com", None, consent)])
        finally:
            await pr.close()

    asyncio.run(create())
    return {
        "POSTROOM_DATA_DIR": str(settings.data_dir),
        "POSTROOM_DATABASE_URL": settings.resolved_database_url,
        "POSTROOM_SECRET_KEY": str(settings.secret_key),
        "POSTROOM_API_KEYS": "test-key",
        "POSTROOM_SUNSET_INACTIVE_DAYS": "365",
    }


def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["sunset", *args], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout + result.stderr


def test_dry_run_by_default_then_apply_once(env: dict[str, str]) -> None:
    for _ in range(2):
        code, out = invoke(env)
        assert code == 0, out
        assert "1 would get the re-engagement email" in out and "idle@example.com" in out
        assert "dry run: nothing was changed" in out
        assert "warning: provider outbox reports no opens or clicks" in out
    code, out = invoke(env, "--apply")
    assert code == 0 and "1 due the re-engagement email (1 newly queued)" in out, out
    code, out = invoke(env, "--apply")
    assert code == 0 and "0 due the re-engagement email (0 newly queued)" in out, out
    assert "1 waiting" in out


def test_a_transactional_email_type_is_refused(env: dict[str, str]) -> None:
    code, out = invoke(env, "--email-type", "welcome")
    assert code == 1 and "not marketing mail" in out
