"""Transactional latency: enqueue → provider acceptance at a fixed rate.

A producer (this process) submits one email per call at the requested rate, the way API
requests arrive; a worker in a second process sends them through the sink, wrapped so that it
notes when the provider has accepted each message. Both use one SQLite database, as the
embedded default does. Sinks: ``outbox`` (files on disk), ``sendgrid`` (the SendGrid adapter
over HTTP to a lean local fake SendGrid in a third process) and ``memory`` (a provider that
accepts at once: Postroom's own cost alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

from postroom.bench.esp import lean_esp
from postroom.config import Settings
from postroom.messages import RenderedEmail, parse_event
from postroom.providers.base import Provider, SendResult
from postroom.store.ledger import SendStatus
from postroom.submission import submit
from postroom.wiring import build_provider, build_worker, open_postroom, prepare_database

STAMP = "bench_enqueued_at"


@dataclass(frozen=True)
class LatencyReport:
    sink: str
    workers: int
    rate: float
    achieved_rate: float
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def lines(self) -> list[str]:
        return [
            f"provider         {self.sink} ({self.workers} worker process(es))",
            f"target rate      {self.rate:,.0f} emails/s",
            f"achieved rate    {self.achieved_rate:,.0f} emails/s ({self.count:,} emails)",
            f"enqueue→provider p50 {self.p50_ms:.1f} ms  p90 {self.p90_ms:.1f} ms  "
            f"p99 {self.p99_ms:.1f} ms  max {self.max_ms:.1f} ms",
        ]


SINKS = ("outbox", "sendgrid", "memory")


class StampedProvider:
    """Wraps a provider and notes, per accepted message, seconds since its enqueue stamp.
    Without an inner provider it accepts every message at once: a local ESP that answers
    instantly, which leaves Postroom's own cost and no disk or network."""

    def __init__(self, inner: Provider | None, sink: Path) -> None:
        self.inner = inner
        self.name = inner.name if inner else "memory"
        self.max_batch_size = inner.max_batch_size if inner else 1000
        self.sink = sink
        self.latencies: list[float] = []

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        if self.inner is None:
            results = [SendResult(e.send_id, provider_message_id=e.send_id) for e in batch]
        else:
            results = await self.inner.send(batch)
        now = time.time()
        self.latencies.extend(
            now - float(e.metadata[STAMP])
            for e, result in zip(batch, results, strict=True)
            if result.ok and STAMP in e.metadata
        )
        return results

    async def close(self) -> None:
        self.sink.write_text("\n".join(f"{x:.6f}" for x in self.latencies))
        if self.inner is not None:
            await self.inner.close()


def _worker_main(
    settings: Settings, sink: Path, memory: bool, ready: ProcessEvent, stop: ProcessEvent
) -> None:
    async def main() -> None:
        inner = None if memory else build_provider(settings)  # outbox or sendgrid
        postroom = await open_postroom(settings, provider=StampedProvider(inner, sink))
        stopping = asyncio.Event()
        worker = build_worker(postroom)
        worker.settle_heap()
        task = asyncio.create_task(worker.run(stopping))
        ready.set()
        await asyncio.to_thread(stop.wait)  # a process event: wait for it off the loop
        stopping.set()
        await task
        await postroom.close()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())


async def _produce(settings: Settings, rate: float, duration: float) -> tuple[int, float]:
    postroom = await open_postroom(settings)
    try:
        total = int(rate * duration)
        started = time.perf_counter()
        for n in range(total):
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            event = parse_event(
                {
                    "email_type": "sign_in_link",
                    "recipient_email": f"bench{n}@example.com",
                    "template_data": {
                        "sign_in_url": f"https://platform.example/login/{n}",
                        "expires_minutes": 15,
                    },
                    "metadata": {STAMP: f"{time.time():.6f}"},
                },
                max_bytes=settings.max_document_bytes,
            )
            await submit(postroom, [event])
        return total, time.perf_counter() - started
    finally:
        await postroom.close()


async def _wait_until_sent(settings: Settings, count: int, patience: float) -> bool:
    """Wait for the worker to catch up; a worker slower than the rate shows up as latency."""
    postroom = await open_postroom(settings)
    try:
        deadline = time.monotonic() + patience
        while time.monotonic() < deadline:
            if (await postroom.ledger.count_by_status()).get(SendStatus.SENT, 0) >= count:
                return True
            await asyncio.sleep(0.1)
        return False
    finally:
        await postroom.close()


def run_transactional(
    rate: float,
    duration: float,
    *,
    sink: str = "outbox",
    workers: int = 1,
    data_dir: Path | None = None,
) -> LatencyReport:
    if sink not in SINKS:
        raise ValueError(f"sink must be one of {', '.join(SINKS)}")
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="postroom-bench-"))
        base = data_dir or Path(scratch)
        esp: dict[str, object] = {}
        if sink == "sendgrid":
            url = stack.enter_context(lean_esp("sendgrid"))
            esp = {"provider": "sendgrid", "sendgrid_api_key": "SG.bench", "sendgrid_base_url": url}
        settings = Settings(data_dir=base, secret_key="bench-" * 6, api_keys=["bench"], **esp)  # type: ignore[arg-type]
        asyncio.run(prepare_database(settings))
        files = [base / f"latencies-{n}.txt" for n in range(workers)]
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        readiness = [context.Event() for _ in files]
        processes = [
            context.Process(
                target=_worker_main, args=(settings, file, sink == "memory", ready, stop)
            )
            for file, ready in zip(files, readiness, strict=True)
        ]
        for process in processes:
            process.start()
        try:
            if not all(ready.wait(60) for ready in readiness):
                raise RuntimeError("the benchmark workers did not start")
            count, elapsed = asyncio.run(_produce(settings, rate, duration))
            drained = asyncio.run(_wait_until_sent(settings, count, patience=120.0))
        finally:
            stop.set()
            for process in processes:
                process.join(60)
        latencies = sorted(float(x) * 1000 for file in files for x in file.read_text().split())
    if len(latencies) < count or not drained:
        raise RuntimeError(f"only {len(latencies)} of {count} emails reached the provider")
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")  # never past the max
    return LatencyReport(
        sink=sink,
        workers=workers,
        rate=rate,
        achieved_rate=count / elapsed,
        count=count,
        p50_ms=cuts[49],
        p90_ms=cuts[89],
        p99_ms=cuts[98],
        max_ms=latencies[-1],
    )
