"""``postroom dlq list|show|replay|purge`` on the RabbitMQ backend, as a user runs it: a fresh
process per command against the local broker, with dead letters put there by ``dead_letter``
and by the broker's own delivery limit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
from tests.contract.rabbitmq_broker import RABBITMQ_URL, throwaway_prefix

from postroom.messages import Priority
from postroom.queue.base import OutgoingMessage
from postroom.queue.rabbitmq import RabbitMqQueue
from postroom.store.migrate import upgrade

TIMEOUT = 60.0


def document(recipient: str) -> bytes:
    return orjson.dumps(
        {
            "email_type": "welcome",
            "recipient_email": recipient,
            "template_data": {"creator_name": "Jane"},
        }
    )


def run_cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "postroom", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def output(process: subprocess.Popen[str]) -> str:
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, f"{process.args[3:]} exited {process.returncode}:\n{stderr}"
    return stdout


async def finished(*processes: subprocess.Popen[str]) -> list[str]:
    return await asyncio.gather(*(asyncio.to_thread(output, p) for p in processes))


def cli_env(data_dir: Path, queue_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(
        POSTROOM_DATA_DIR=str(data_dir),
        POSTROOM_QUEUE_URL=queue_url,
        POSTROOM_MAX_DELIVERIES="1",  # the queues were declared with this delivery limit
        POSTROOM_SECRET_KEY="dlq-test-secret-dlq-test-secret!",
        POSTROOM_API_KEYS="dlq-test-key",
    )
    return env


async def test_dlq_commands_on_rabbitmq(tmp_path: Path) -> None:
    async with throwaway_prefix() as prefix:
        queue_url = f"{RABBITMQ_URL}?prefix={prefix}"
        queue = RabbitMqQueue.from_url(queue_url, max_deliveries=1)
        try:
            await dead_letter_three(queue)
            data_dir = tmp_path / "data"
            data_dir.mkdir()
            # Migrated once here, not by the first command (each starts in seconds as it is).
            upgrade(f"sqlite:///{data_dir / 'postroom.db'}")
            await check_commands(queue, cli_env(data_dir, queue_url))
        finally:
            await queue.close()


async def dead_letter_three(queue: RabbitMqQueue) -> None:
    """a and b dead-lettered by a worker, c by the broker once its lease ran out (it is
    handed out once: ``max_deliveries`` 1)."""
    await queue.enqueue(
        [
            OutgoingMessage("a", Priority.CRITICAL, document("a@example.com")),
            OutgoingMessage("b", Priority.TRANSACTIONAL, document("b@example.com")),
            OutgoingMessage("c", Priority.MARKETING, document("c@example.com")),
        ]
    )
    a, b, _held_until_its_lease_runs_out = await queue.receive(3, lease_seconds=0.2)
    assert await queue.dead_letter(a, "invalid document: [bracketed] reason")
    assert await queue.retry(b, 0, "SMTP connection failed")
    b = (await queue.receive(1, lease_seconds=30))[0]
    assert await queue.dead_letter(b, "gave up after 1 retry: SMTP connection failed")
    for _ in range(100):
        if len(await queue.dlq_list()) == 3:
            break
        await asyncio.sleep(0.05)


async def check_commands(queue: RabbitMqQueue, env: dict[str, str]) -> None:
    # One command at a time: a DLQ read holds what it has read until it is done, so two at
    # once would not see each other's part (docs/architecture.md).
    (listed,) = await finished(run_cli(env, "dlq", "list", "--json"))
    (shown,) = await finished(run_cli(env, "dlq", "show", "b"))
    letters = [orjson.loads(line) for line in listed.splitlines()]
    assert [(x["id"], x["queue"], x["recipient"], x["attempt"]) for x in letters] == [
        ("a", "critical", "a@example.com", 0),
        ("b", "transactional", "b@example.com", 1),
        ("c", "marketing", "c@example.com", 0),
    ]
    assert letters[0]["reason"] == "invalid document: [bracketed] reason"
    assert "delivery limit" in letters[2]["reason"]
    assert "reason   gave up after 1 retry: SMTP connection failed" in shown
    assert orjson.loads(shown[shown.index("{") :])["recipient_email"] == "b@example.com"

    (replayed,) = await finished(run_cli(env, "dlq", "replay", "b"))
    assert replayed.strip() == "replayed 1 message"
    again = await queue.receive(10, lease_seconds=30)
    assert [(d.id, d.priority, d.attempt) for d in again] == [("b", Priority.TRANSACTIONAL, 0)]
    assert await queue.ack(again) == 1

    (purged_all,) = await finished(run_cli(env, "dlq", "purge", "--all", "--yes"))
    assert purged_all.strip() == "purged 2 messages"
    assert await queue.dlq_list() == []
