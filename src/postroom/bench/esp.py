"""ESP hand-over throughput: recipients/s given to a local fake SendGrid or Mailgun through the
provider adapter, and the adapter's CPU per recipient.

The fake runs in a process of its own, so this process's CPU time is the adapter's alone
(personalizing, grouping, building and serializing the calls, HTTP). It is lean on purpose:
it reads each request, counts its recipients and answers as the ESP does (SendGrid 202 with
``X-Message-Id``, Mailgun 200 with an ``id``), without the per-recipient checks the test fakes
make. The recipients it counted must equal those handed over, or the run fails.

Two modes. ``batch``: copies of one newsletter, one per subscriber (own address, send id,
Message-ID and unsubscribe URL), made as a campaign makes them (each carries the mailing's
layout), which the adapter groups 1,000 to a call; a few calls in
flight, as a worker with several claims has. ``single``: distinct messages (each its own
sign-in link), one call each, handed over 64 at a time as a worker at its default
concurrency and claim size does (the adapter makes the 64 calls concurrently).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import multiprocessing
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from aiohttp import web

from postroom.messages import EmailEvent, RenderedEmail
from postroom.providers.base import Provider

ESPS = ("sendgrid", "mailgun")
MODES = ("batch", "single")
BATCH_CALLS_IN_FLIGHT = 4
SINGLE_IN_FLIGHT = 64  # the worker's default concurrency (POSTROOM_WORKER_CONCURRENCY)
MAILGUN_DOMAIN = "mg.bench.example"
T = TypeVar("T")


@dataclass(frozen=True)
class EspBenchReport:
    esp: str
    mode: str
    recipients: int
    calls: int
    seconds: float
    cpu_seconds: float
    esp_cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.recipients / self.seconds

    @property
    def cpu_us_per_recipient(self) -> float:
        return self.cpu_seconds / self.recipients * 1e6

    def lines(self) -> list[str]:
        return [
            f"esp              {self.esp} ({self.mode} mode, local fake in its own process)",
            f"handed over      {self.recipients:,} recipients in {self.calls:,} calls, "
            f"{self.seconds:.2f} s",
            f"throughput       {self.per_second:,.0f} recipients/s",
            f"client CPU       {self.cpu_us_per_recipient:.1f} µs per recipient",
            f"fake ESP CPU     {self.esp_cpu_seconds / self.recipients * 1e6:.1f} µs per recipient",
        ]


# --- the lean fake ESP (its own process) ---------------------------------------------------


class _LeanEsp:
    """Counts recipients per call from the raw body: SendGrid's JSON has one ``"to":[`` per
    personalization (orjson writes no spaces), Mailgun's multipart form one ``to`` field per
    recipient."""

    def __init__(self, esp: str) -> None:
        self.esp = esp
        self.recipients = 0
        self.calls = 0

    async def sendgrid(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls += 1
        self.recipients += body.count(b'"to":[')
        return web.Response(status=202, headers={"X-Message-Id": f"bench{self.calls}"})

    async def mailgun(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls += 1
        self.recipients += body.count(b'name="to"\r\n')
        payload = b'{"id": "<%d@%s>", "message": "Queued. Thank you."}' % (
            self.calls,
            MAILGUN_DOMAIN.encode(),
        )
        return web.Response(body=payload, content_type="application/json")

    async def stats(self, _request: web.Request) -> web.Response:
        cpu = time.process_time()
        return web.json_response({"recipients": self.recipients, "calls": self.calls, "cpu": cpu})


def _serve(esp: str, conn: Connection) -> None:
    async def main() -> None:
        lean = _LeanEsp(esp)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v3/mail/send", lean.sendgrid)
        app.router.add_post("/v3/{domain}/messages", lean.mailgun)
        app.router.add_get("/stats", lean.stats)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        conn.send(server.sockets[0].getsockname()[1])
        await asyncio.to_thread(conn.recv)  # until told to stop
        await runner.cleanup()

    run_loop(main())


@contextlib.contextmanager
def lean_esp(esp: str) -> Iterator[str]:
    """A lean fake ``esp`` in a process of its own, for as long as the block runs; yields its
    base URL (also the transactional benchmark's ``sendgrid`` sink)."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    server = context.Process(target=_serve, args=(esp, theirs), daemon=True)
    server.start()
    try:
        if not ours.poll(60):
            raise RuntimeError("the fake ESP did not start")
        yield f"http://127.0.0.1:{ours.recv()}"
    finally:
        ours.send("stop")
        server.join(10)
        if server.is_alive():
            server.kill()


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


# --- the messages ----------------------------------------------------------------------------


def _renderer() -> Any:
    # Imported here: the fake ESP's process imports this module and needs none of it.
    from postroom.config import Settings
    from postroom.rendering.registry import TemplateRegistry, bundled_templates_dir
    from postroom.wiring import build_renderer

    settings = Settings(secret_key="bench-" * 6, api_keys=["bench"])
    return build_renderer(settings, TemplateRegistry.load(bundled_templates_dir()))


def newsletter_copies(count: int) -> list[RenderedEmail]:
    """A newsletter's copies as a campaign makes them (``campaigns/render.py``): one per
    subscriber with their own address, name, send id, Message-ID and unsubscribe URL, each
    carrying the mailing's layout, which the batch APIs are built from."""
    from postroom.campaigns.render import ChunkRenderer
    from postroom.store.campaign_records import CampaignContent, ChunkRecipient

    content = CampaignContent(
        id="01KBENCH000000000000000000",
        list_id="bench-list",
        email_type="new_post_notification",
        template_data={
            "creator_name": "Jane Doe",
            "post_title": "Why slow writing wins",
            "post_url": "https://platform.example/jane/slow-writing",
        },
        metadata={},
        ab_test=None,
    )
    recipients = [
        ChunkRecipient(i, f"B{i:025d}", f"reader{i}@example.com", f"Reader {i}", None)
        for i in range(count)
    ]
    return ChunkRenderer(_renderer()).render(content, recipients, None, failed=[])


def subscriber_copies(
    base: RenderedEmail, count: int, send_id_of: Callable[[int], str]
) -> list[RenderedEmail]:
    """``base`` (a marketing message for ``reader0@example.com``) as ``count`` subscribers'
    copies: ``readerN@example.com`` with their own name, send id, Message-ID and unsubscribe
    URL (header and both bodies), as rendering each would give, but fast for thousands."""
    url = base.headers["List-Unsubscribe"].split(">")[0][1:]
    domain = base.message_id.strip("<>").rpartition("@")[2]
    copies = []
    for i in range(count):
        send_id, own_url = send_id_of(i), f"{url}-{i}"
        headers = {
            **base.headers,
            "List-Unsubscribe": base.headers["List-Unsubscribe"].replace(url, own_url),
            "X-Postroom-Send-Id": send_id,
        }
        copies.append(
            dataclasses.replace(
                base,
                send_id=send_id,
                message_id=f"<{send_id}@{domain}>",
                recipient=f"reader{i}@example.com",
                recipient_name=f"Reader {i}",
                html=base.html.replace(url, own_url),
                text=base.text.replace(url, own_url),
                headers=headers,
            )
        )
    return copies


def distinct_messages(count: int) -> list[RenderedEmail]:
    """Sign-in links, each with its own URL and no record of the values printed in them:
    nothing to group, one call per message (the cost of content that differs in layout)."""
    link = "https://platform.example/login?t=bench"
    event = EmailEvent(
        email_type="sign_in_link",
        recipient_email="reader0@example.com",
        template_data={"sign_in_url": link, "expires_minutes": 15},
    )
    base = _renderer().render(event, send_id="bench000000")
    domain = base.message_id.strip("<>").rpartition("@")[2]
    return [
        dataclasses.replace(
            base,
            send_id=f"bench{i:06d}",
            message_id=f"<bench{i:06d}@{domain}>",
            recipient=f"reader{i}@example.com",
            html=base.html.replace(link, f"{link}{i}"),
            text=base.text.replace(link, f"{link}{i}"),
            headers={**base.headers, "X-Postroom-Send-Id": f"bench{i:06d}"},
            printed=(),
        )
        for i in range(count)
    ]


# --- the client ---------------------------------------------------------------------------


def _provider(esp: str, base_url: str) -> Provider:
    if esp == "sendgrid":
        from postroom.providers.sendgrid import SendGridProvider

        return SendGridProvider("SG.bench", base_url=base_url)
    from postroom.providers.mailgun import MailgunProvider

    return MailgunProvider("key-bench", MAILGUN_DOMAIN, base_url=base_url)


async def _hand_over(
    provider: Provider, groups: Sequence[Sequence[RenderedEmail]], lanes: int
) -> int:
    """Send ``groups`` with ``lanes`` of them in flight; the number of failed messages."""
    pending = iter(groups)
    failed = 0

    async def lane() -> None:
        nonlocal failed
        for group in pending:
            results = await provider.send(group)
            failed += sum(1 for r in results if not r.ok)

    await asyncio.gather(*(lane() for _ in range(lanes)))
    return failed


async def _measure(
    esp: str, mode: str, emails: list[RenderedEmail], base_url: str
) -> tuple[float, float]:
    provider = _provider(esp, base_url)
    try:
        if mode == "batch":
            size = provider.max_batch_size
            groups = [emails[i : i + size] for i in range(0, len(emails), size)]
            lanes = BATCH_CALLS_IN_FLIGHT
        else:
            # A worker at its defaults claims 64 messages and hands them over at once.
            size = SINGLE_IN_FLIGHT
            groups = [emails[i : i + size] for i in range(0, len(emails), size)]
            lanes = 1
        # One untimed call opens the connection pool's first connection and warms the caches.
        await _hand_over(provider, [groups[0][:1]], 1)
        cpu, started = time.process_time(), time.perf_counter()
        failed = await _hand_over(provider, groups, lanes)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await provider.close()
    if failed:
        raise RuntimeError(f"{failed} messages were not accepted by the fake ESP")
    return seconds, cpu


async def _stats(base_url: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/stats") as reply:
        stats: dict[str, Any] = await reply.json()
        return stats


def run_esp_bench(esp: str, mode: str, recipients: int) -> EspBenchReport:
    if esp not in ESPS or mode not in MODES or recipients < 1:
        raise ValueError(f"esp must be one of {ESPS}, mode one of {MODES}, recipients positive")
    with lean_esp(esp) as base_url:
        emails = newsletter_copies(recipients) if mode == "batch" else distinct_messages(recipients)
        # The input stays put for the whole run: keep it out of the collector's full passes,
        # which would otherwise charge the adapter for walking a heap far larger than a worker's.
        gc.freeze()

        async def main() -> tuple[float, float, dict[str, Any], dict[str, Any]]:
            before = await _stats(base_url)
            seconds, cpu = await _measure(esp, mode, emails, base_url)
            return seconds, cpu, before, await _stats(base_url)

        seconds, cpu, before, after = run_loop(main())
    counted = after["recipients"] - 1  # the untimed warm-up call carried one recipient
    if counted != recipients:
        raise RuntimeError(f"handed over {recipients} recipients, the fake ESP counted {counted}")
    return EspBenchReport(
        esp=esp,
        mode=mode,
        recipients=recipients,
        calls=after["calls"] - 1,
        seconds=seconds,
        cpu_seconds=cpu,
        esp_cpu_seconds=after["cpu"] - before["cpu"],
    )
