"""The shared shell of the fake ESPs: a loopback server, scripted faults, what was accepted."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Fault:
    """What the fake does instead of answering one request (after reading all of it)."""

    # "status", "drop" (close the connection unanswered), "accept_drop" (act on the request,
    # then close the connection before answering: the mail went out, the answer is lost) or
    # "hang" (never answer)
    kind: str
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def answer(cls, status: int, body: bytes = b"", **headers: str) -> Fault:
        return cls("status", status, {k.replace("_", "-"): v for k, v in headers.items()}, body)

    @classmethod
    def drop(cls) -> Fault:
        return cls("drop")

    @classmethod
    def accept_drop(cls) -> Fault:
        return cls("accept_drop")

    @classmethod
    def hang(cls) -> Fault:
        return cls("hang")


@dataclass
class FaultMix:
    """Random faults for load tests: ``rate`` of the calls (when no scripted fault is queued)
    answer 429 with a ``Retry-After`` of 1 to 3 s, 503, or lose the connection after the whole
    request was read (half of those after the ESP acted on it), in equal shares."""

    rate: float = 0.3
    seed: int = 4
    retry_after: tuple[int, int] = (1, 3)
    drawn: dict[str, int] = field(default_factory=dict)  # how many of each kind were chosen

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self) -> Fault | None:
        if self._rng.random() >= self.rate:
            return None
        kind = self._rng.choice(["429", "503", "drop"])
        if kind == "drop" and self._rng.random() < 0.5:
            kind = "accept_drop"
        self.drawn[kind] = self.drawn.get(kind, 0) + 1
        if kind == "429":
            seconds = self._rng.randint(*self.retry_after)
            return Fault.answer(429, b'{"message": "Too many requests"}', Retry_After=str(seconds))
        if kind == "503":
            return Fault.answer(503, b'{"message": "Service unavailable"}')
        return Fault.drop() if kind == "drop" else Fault.accept_drop()


@dataclass
class Delivered:
    """One message as its recipient would get it, after the ESP's substitutions."""

    to: str
    to_name: str | None
    sender: str
    subject: str
    text: str | None
    html: str | None
    headers: dict[str, str]
    ids: dict[str, str]  # custom args / variables / metadata / tags
    provider_id: str
    extra: dict[str, Any] = field(default_factory=dict)


class FakeEsp:
    """Subclasses add their routes in ``routes`` and call ``fault_for`` first in each handler."""

    def __init__(self, credential: str = "test-credential") -> None:
        self.credential = credential
        self.faults: deque[Fault] = deque()
        self.requests = 0  # every request that reached a handler, faults included
        # Requests that arrived while a Retry-After we answered was still running.
        self.retry_after_violations = 0
        self._blocked_until = 0.0
        self.fault_mix: FaultMix | None = None
        # Requests beyond ``rate_limit_per_second`` in any one-second window (None: no limit
        # is counted). A fake that advertises its limit (SendGrid's X-RateLimit-Limit) says
        # the same number.
        self.rate_limit_per_second: int | None = None
        self.rate_limit_violations = 0
        self._recent: deque[float] = deque()
        self._drop_after: set[int] = set()  # requests to answer by closing the connection
        self._down_until = 0.0  # an outage: every request answers 503 until then
        self.calls: list[Any] = []  # the parsed body of every accepted call
        self.delivered: list[Delivered] = []
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def fail_next(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def outage(self, seconds: float) -> None:
        """Answer every request with 503 for the next ``seconds``."""
        self._down_until = time.monotonic() + seconds

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    async def fault_for(self, request: web.Request) -> web.StreamResponse | None:
        self.requests += 1
        now = time.monotonic()
        if now < self._blocked_until:
            self.retry_after_violations += 1
        self._count_rate(now)
        fault = self.faults.popleft() if self.faults else None
        if fault is None and now < self._down_until:
            fault = Fault.answer(503, b'{"message": "Service unavailable"}')
        if fault is None and self.fault_mix is not None:
            fault = self.fault_mix.draw()
        if fault is None:
            return None
        if fault.kind == "accept_drop":
            self._drop_after.add(id(request))
            return None  # the handler accepts it; the middleware then drops the connection
        await request.read()  # the whole request arrived: the ESP could have acted on it
        retry_after = {k.lower(): v for k, v in fault.headers.items()}.get("retry-after")
        if retry_after is not None:
            # From the moment the answer leaves: a request the client sent before it could
            # read the answer is no violation.
            answered = time.monotonic()
            self._blocked_until = max(self._blocked_until, answered + float(retry_after))
        if fault.kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        if fault.kind == "hang":
            await self._release.wait()
            return web.Response(status=503)
        return web.Response(status=fault.status, headers=fault.headers, body=fault.body)

    def _count_rate(self, now: float) -> None:
        limit = self.rate_limit_per_second
        if limit is None:
            return
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) > limit:
            self.rate_limit_violations += 1

    @web.middleware
    async def _drop_after_handling(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        response = await handler(request)
        if id(request) in self._drop_after:
            self._drop_after.discard(id(request))
            assert request.transport is not None
            request.transport.abort()
        return response

    @staticmethod
    def new_id(length: int = 22) -> str:
        return secrets.token_urlsafe(length)[:length]

    async def start(self) -> str:
        app = web.Application(
            client_max_size=64 * 1024 * 1024, middlewares=[self._drop_after_handling]
        )
        self.routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeEsp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
