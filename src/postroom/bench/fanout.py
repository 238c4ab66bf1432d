"""Campaign fan-out, end to end: N synthetic subscribers, one real campaign, worker processes,
and a local fake Mailgun or SendGrid (``bench/esp.py``'s lean server) that counts recipients.

The clock starts when the campaign is started (the audience snapshot, then the chunk jobs
published) and stops when the fake ESP has accepted every recipient: the hand-off time.
Workers are started, connected and idle before that. Each process reports its CPU seconds
and peak RSS. The subscribers are loaded before the clock starts, straight into the tables.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

from postroom.bench.esp import MAILGUN_DOMAIN, lean_esp
from postroom.bench.queues import clean_queue, fresh_queue_url
from postroom.config import Settings
from postroom.store.campaign_records import CampaignState, NewCampaign
from postroom.store.campaigns import Campaigns
from postroom.store.database import Database, is_sqlite, open_database, sync_url
from postroom.store.migrate import upgrade
from postroom.store.schema import lists, subscribers, subscriptions

POST = {
    "creator_name": "Jane Doe",
    "post_title": "Why slow writing wins",
    "post_url": "https://platform.example/jane/slow-writing",
}
LIST_ID = "bench-list"


@dataclass(frozen=True)
class ProcessUsage:
    name: str
    cpu_seconds: float
    peak_rss_mib: float


@dataclass(frozen=True)
class FanoutReport:
    recipients: int
    workers: int
    snapshot_seconds: float
    handoff_seconds: float
    processes: list[ProcessUsage]

    def lines(self) -> list[str]:
        rate = self.recipients / self.handoff_seconds
        lines = [
            f"recipients        {self.recipients:,} with {self.workers} worker processes",
            f"audience snapshot {self.snapshot_seconds:.2f} s",
            f"hand-off          {self.handoff_seconds:.2f} s (start -> last batch accepted)",
            f"rate              {rate:,.0f} recipients/s",
        ]
        for usage in self.processes:
            lines.append(
                f"{usage.name:<17} cpu {usage.cpu_seconds:6.1f} s   "
                f"peak rss {usage.peak_rss_mib:6.1f} MiB"
            )
        return lines


def run_fanout(
    recipients: int, esp: str, queue_url: str, database_url: str | None, workers: int
) -> FanoutReport:
    with tempfile.TemporaryDirectory(prefix="postroom-fanout-") as scratch, lean_esp(esp) as url:
        settings = _settings(Path(scratch), esp, url, fresh_queue_url(queue_url), database_url)
        upgrade(settings.resolved_database_url)
        campaign_id = asyncio.run(_prepare(settings, recipients))
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        ready = context.Value("i", 0)
        usage = context.Queue()
        processes = [
            context.Process(target=_work, args=(settings, f"worker {i + 1}", stop, ready, usage))
            for i in range(workers)
        ]
        for process in processes:
            process.start()
        try:
            while ready.value < workers:
                if not all(p.is_alive() for p in processes):
                    raise RuntimeError("a benchmark worker exited before starting")
                time.sleep(0.01)
            snapshot, handoff = asyncio.run(_start_and_wait(settings, campaign_id, url, recipients))
        finally:
            stop.set()
            for process in processes:
                process.join(60)
        used = [usage.get(timeout=10) for _ in processes]
        used.append(_self_usage("benchmark (main)"))
        asyncio.run(clean_queue(settings))
        asyncio.run(_remove(settings))
    return FanoutReport(recipients, workers, snapshot, handoff, used)


def _settings(
    scratch: Path, esp: str, url: str, queue_url: str, database_url: str | None
) -> Settings:
    options: dict[str, Any] = {
        "data_dir": scratch,
        "database_url": database_url or f"sqlite:///{scratch}/bench.db",
        "queue_url": queue_url,
        "secret_key": "bench-" * 6,
        "api_keys": ["bench"],
        "provider": esp,
        "alert_monitor": False,
        "campaign_scheduler_interval": 0.2,
    }
    if esp == "mailgun":
        options.update(
            mailgun_api_key="key-bench", mailgun_domain=MAILGUN_DOMAIN, mailgun_base_url=url
        )
    else:
        options.update(sendgrid_api_key="SG.bench", sendgrid_base_url=url)
    return Settings(**options)


async def _prepare(settings: Settings, recipients: int) -> str:
    db = open_database(settings.resolved_database_url)
    try:
        await db.write(_remove_bench_rows)  # what an interrupted run on this database left
        _vacuum(settings.resolved_database_url)
        await _load_audience(db, recipients)
        later = datetime(2999, 1, 1, tzinfo=UTC)  # started by the benchmark, not a scheduler
        status = await Campaigns(db).create(
            NewCampaign(LIST_ID, "new_post_notification", POST, send_at=later)
        )
        return status.id
    finally:
        await db.dispose()


async def _load_audience(db: Database, count: int) -> None:
    now = datetime.now(UTC)
    await db.write(
        lambda conn: conn.execute(
            lists.insert(), {"id": LIST_ID, "name": "Bench", "creator": "bench", "created_at": now}
        )
    )
    for start in range(0, count, 20_000):
        ids = [f"B{i:025d}" for i in range(start, min(start + 20_000, count))]
        people = [
            {"id": sid, "email": f"reader{i}@example.com", "name": f"Reader {i}",
             "status": "active", "created_at": now, "updated_at": now}
            for i, sid in enumerate(ids, start)
        ]  # fmt: skip
        subscribed = [
            {"list_id": LIST_ID, "subscriber_id": sid, "status": "active", "consent": "express",
             "consent_expires_at": None, "created_at": now, "updated_at": now,
             "confirmed_at": None, "unsubscribed_at": None}
            for sid in ids
        ]  # fmt: skip

        def insert(conn: Any, people: Any = people, subscribed: Any = subscribed) -> None:
            conn.execute(subscribers.insert(), people)
            conn.execute(subscriptions.insert(), subscribed)

        await db.write(insert)


async def _remove(settings: Settings) -> None:
    db = open_database(settings.resolved_database_url)
    try:
        await db.write(_remove_bench_rows)
    finally:
        await db.dispose()
    _vacuum(settings.resolved_database_url)


_BENCH_TABLES = ("campaign_recipients", "campaign_chunks", "campaigns", "subscriptions",
                 "subscribers", "lists")  # fmt: skip


def _vacuum(database_url: str) -> None:
    """PostgreSQL keeps a removed run's rows as dead tuples until vacuumed. Without this a
    reused database grew run after run (1.6 GB of ``campaign_recipients`` for 1M live rows after
    a day of runs) and its later runs were slower (66.5 s against 47.8 s for 1M)."""
    if is_sqlite(database_url):
        return  # a fresh file per run unless given; SQLite reuses freed pages itself
    from sqlalchemy import create_engine

    engine = create_engine(sync_url(database_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for table in _BENCH_TABLES:
                conn.exec_driver_sql(f"VACUUM ANALYZE {table}")
    finally:
        engine.dispose()


def _remove_bench_rows(conn: Any) -> None:
    """The benchmark's list, subscribers and campaigns, so a given database can be reused."""
    from sqlalchemy import delete, select

    from postroom.store.schema import campaign_chunks, campaign_recipients, campaigns

    ours = select(campaigns.c.id).where(campaigns.c.list_id == LIST_ID)
    conn.execute(delete(campaign_recipients).where(campaign_recipients.c.campaign_id.in_(ours)))
    conn.execute(delete(campaign_chunks).where(campaign_chunks.c.campaign_id.in_(ours)))
    conn.execute(delete(campaigns).where(campaigns.c.list_id == LIST_ID))
    members = select(subscriptions.c.subscriber_id).where(subscriptions.c.list_id == LIST_ID)
    conn.execute(delete(subscribers).where(subscribers.c.id.in_(members)))
    conn.execute(delete(subscriptions).where(subscriptions.c.list_id == LIST_ID))
    conn.execute(delete(lists).where(lists.c.id == LIST_ID))


async def _start_and_wait(
    settings: Settings, campaign_id: str, esp_url: str, recipients: int
) -> tuple[float, float]:
    from postroom.campaigns.assembly import build_scheduler
    from postroom.wiring import build_queue

    db = open_database(settings.resolved_database_url)
    queue = build_queue(settings, db)
    campaigns = Campaigns(db)
    try:
        started = time.perf_counter()
        if not await campaigns.start(campaign_id):
            raise RuntimeError("the campaign did not start")
        snapshot = time.perf_counter() - started
        await build_scheduler(settings, db, queue).tick()  # publish the chunk jobs
        polls = 0
        while await _esp_recipients(esp_url) < recipients:
            polls += 1
            if polls % 20 == 0:  # the campaign's status costs a query: look now and then
                status = await campaigns.get(campaign_id)
                if status.failed or status.status is CampaignState.CANCELLED:
                    raise RuntimeError(f"the campaign went wrong: {status.as_dict()}")
            await asyncio.sleep(0.05)  # the clock's resolution; polls cost the ESP CPU
        handoff = time.perf_counter() - started
        return snapshot, handoff
    finally:
        await queue.close()
        await db.dispose()


async def _esp_recipients(esp_url: str) -> int:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{esp_url}/stats") as response:
        return int((await response.json())["recipients"])


def _work(
    settings: Settings,
    name: str,
    stop: ProcessEvent,
    ready: Any,
    usage: Any,
) -> None:
    from postroom.bench.esp import run_loop
    from postroom.wiring import build_worker, open_postroom

    async def main() -> None:
        postroom = await open_postroom(settings)
        try:
            await postroom.queue.depth()  # connected (and declared) before the clock starts
            worker = build_worker(postroom)
            worker.settle_heap()
            stopping = asyncio.Event()
            task = asyncio.create_task(worker.run(stopping))
            with ready.get_lock():
                ready.value += 1
            await asyncio.to_thread(stop.wait)
            stopping.set()
            await task
        finally:
            await postroom.close()

    run_loop(main())
    usage.put(_self_usage(name))


def _self_usage(name: str) -> ProcessUsage:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return ProcessUsage(name, own.ru_utime + own.ru_stime, _peak_rss_mib())


def _peak_rss_mib() -> float:
    """This process's high-water mark (``VmHWM``): ``ru_maxrss`` would survive the exec of a
    spawned process and report the parent's peak."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
