"""Crash test: worker processes SIGKILLed again and again while 5,000 emails go out.

Afterwards every email must be sent and the outbox must hold exactly one copy of each. A kill
between the outbox write and the ledger commit leaves a ``sending`` row: the next worker sees it
as ambiguous, resends it by policy (transactional mail), and the outbox, which deduplicates on
the send id like an ESP idempotency key, keeps one copy. Those cases are counted and reported.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
from tests.conftest import make_settings, submit_transactional_mix

from postroom.providers.outbox import INDEX_NAME
from postroom.store.ledger import SendStatus
from postroom.wiring import Postroom, open_postroom, prepare_database

EMAILS = 5_000
KILLS = 5
LEASE = 1.5

pytestmark = pytest.mark.slow


def worker_env(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "POSTROOM_DATA_DIR": str(data_dir),
        "POSTROOM_PROVIDER": "outbox",
        "POSTROOM_SECRET_KEY": "crash-test-secret-crash-test-secret",
        "POSTROOM_API_KEYS": "unused",
        "POSTROOM_LEASE_SECONDS": str(LEASE),
        # Small batches so that many are in flight at any kill.
        "POSTROOM_CLAIM_BATCH": "16",
        "POSTROOM_WORKER_CONCURRENCY": "32",
    }


def start_worker(data_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "postroom", "worker"],
        env=worker_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=open(data_dir / "worker.log", "ab"),
    )


async def test_sigkilled_workers_lose_nothing_and_send_nothing_twice(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, provider="outbox", lease_seconds=LEASE)
    await prepare_database(settings)
    postroom = await open_postroom(settings)
    try:
        await submit_transactional_mix(postroom, EMAILS)

        rng = random.Random(20261128)
        kills = 0
        while kills < KILLS:
            sent_before = await _count(postroom, SendStatus.SENT)
            process = start_worker(tmp_path)
            # Kill only once this worker is sending, at a random point of its work.
            while await _count(postroom, SendStatus.SENT) == sent_before:
                assert process.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
        assert await _count(postroom, SendStatus.SENT) < EMAILS, "run finished before the kills"

        final = start_worker(tmp_path)
        try:
            deadline = asyncio.get_running_loop().time() + 120
            while await _count(postroom, SendStatus.SENT) < EMAILS:
                assert asyncio.get_running_loop().time() < deadline, "not all sent in time"
                assert final.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
                await asyncio.sleep(0.1)
        finally:
            final.send_signal(signal.SIGTERM)
            assert final.wait(timeout=30) == 0, "worker did not stop cleanly on SIGTERM"

        statuses = await postroom.ledger.count_by_status()
        ambiguous = await postroom.ledger.count_attempts(SendStatus.AMBIGUOUS)
        files = Counter(path.stem for path in (tmp_path / "outbox").glob("*/*.eml"))
        index = Counter(
            orjson.loads(line)["send_id"]
            for line in (tmp_path / "outbox" / INDEX_NAME).read_bytes().splitlines()
        )
        explanation = (
            f"{kills} kills; ledger {dict(statuses)}; {ambiguous} sends were ambiguous after a "
            "kill between hand-over and ledger commit and were resent by policy (the outbox "
            "deduplicates on the send id, so each still has one copy)"
        )
        assert statuses == {SendStatus.SENT: EMAILS}, explanation
        assert len(files) == EMAILS and set(files.values()) == {1}, explanation
        assert len(index) == EMAILS and set(index.values()) == {1}, explanation
        assert await postroom.queue.depth() == dict.fromkeys(await postroom.queue.depth(), 0)
        assert await postroom.queue.dlq_list() == [], explanation
        print(explanation)
    finally:
        await postroom.close()


async def _count(postroom: Postroom, status: SendStatus) -> int:
    return (await postroom.ledger.count_by_status()).get(status, 0)
