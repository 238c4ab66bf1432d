"""Prometheus metrics: exact counts for a known mix of outcomes, queue gauges read at scrape
time, and counts summed over several worker processes (multiprocess mode)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import RunningWorker, make_settings
from tests.fakes import FakeProvider

from postroom import metrics
from postroom.api.app import create_app
from postroom.errors import PermanentProviderError
from postroom.messages import RenderedEmail, parse_event
from postroom.store.ledger import SendStatus
from postroom.store.suppressions import SuppressionScope
from postroom.submission import submit
from postroom.wiring import Postroom, open_postroom, prepare_database


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def sends(text: str, outcome: str, email_type: str = "welcome") -> float:
    wanted = (("email_type", email_type), ("outcome", outcome), ("provider", "fake"))
    return samples(text, "postroom_sends_total").get(wanted, 0.0)


def welcome(to: str) -> object:
    return parse_event(
        {"email_type": "welcome", "recipient_email": to, "template_data": {"creator_name": "J"}},
        max_bytes=100_000,
    )


async def test_a_known_mix_is_counted_exactly(postroom: Postroom) -> None:
    provider = postroom.provider
    assert isinstance(provider, FakeProvider)

    def refuse_bounces(email: RenderedEmail, _seen: int) -> PermanentProviderError | None:
        return PermanentProviderError("550 rejected") if "bad" in email.recipient else None

    provider.script = refuse_bounces
    await postroom.suppressions.add("gone@example.com", SuppressionScope.ALL, "hard_bounce")
    before = metrics.exposition().decode()
    recipients = [f"ok{n}@example.com" for n in range(5)] + ["bad1@example.com", "bad2@example.com"]
    events = [welcome(r) for r in [*recipients, "gone@example.com"]]
    await submit(postroom, events)  # type: ignore[arg-type]
    worker = RunningWorker(postroom)

    async def settled() -> bool:
        counts = await postroom.ledger.count_by_status()
        return sum(counts.get(s, 0) for s in SendStatus if s is not SendStatus.QUEUED) == 8

    try:
        await worker.until(settled)
    finally:
        await worker.shutdown()
    after = metrics.exposition().decode()
    assert sends(after, "sent") - sends(before, "sent") == 5
    assert sends(after, "failed") - sends(before, "failed") == 2
    assert sends(after, "suppressed") - sends(before, "suppressed") == 1
    latency = samples(after, "postroom_enqueue_to_accepted_seconds_count")[()]
    assert latency - samples(before, "postroom_enqueue_to_accepted_seconds_count").get((), 0) == 5


def test_queue_gauges_are_read_at_scrape_time(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": "Bearer test-key"}
        documents = [
            {
                "email_type": "welcome",
                "recipient_email": f"r{n}@example.com",
                "template_data": {"creator_name": "J"},
            }
            for n in range(3)
        ]
        assert client.post("/v1/emails", json=documents, headers=auth).status_code == 202
        text = client.get("/metrics").text
    assert samples(text, "postroom_queue_depth")[(("queue", "transactional"),)] == 3
    assert samples(text, "postroom_dead_letters")[()] == 0
    assert samples(text, "postroom_queue_oldest_age_seconds")[(("queue", "transactional"),)] >= 0


async def test_counts_from_several_worker_processes_add_up(
    tmp_path: Path, monkeypatch: object
) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    settings = make_settings(tmp_path, provider="outbox")
    await prepare_database(settings)
    postroom = await open_postroom(settings)
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        "POSTROOM_DATA_DIR": str(tmp_path),
        "POSTROOM_SECRET_KEY": str(settings.secret_key),
        "POSTROOM_API_KEYS": "unused",
    }
    try:
        # One worker process after the other, so that each surely counts some of the mail.
        for batch in range(2):
            events = [welcome(f"r{batch}-{n}@example.com") for n in range(20)]
            await submit(postroom, events)  # type: ignore[arg-type]
            process = subprocess.Popen([sys.executable, "-m", "postroom", "worker"], env=env)
            try:
                for _ in range(300):
                    sent = (await postroom.ledger.count_by_status()).get(SendStatus.SENT, 0)
                    if sent == 20 * (batch + 1):
                        break
                    await asyncio.sleep(0.05)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
    finally:
        await postroom.close()
    assert len(list(folder.glob("counter_*.db"))) == 2  # both processes wrote their counts
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))  # type: ignore[attr-defined]
    text = metrics.exposition().decode()
    wanted = (("email_type", "welcome"), ("outcome", "sent"), ("provider", "outbox"))
    assert samples(text, "postroom_sends_total")[wanted] == 40
