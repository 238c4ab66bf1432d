"""The shared shell of the fake ESPs: a loopback server, scripted faults, what was accepted.

A fake serves on the caller's event loop by default, which is enough to check what the adapter
sends. For measuring the sender's timing (a ``Retry-After`` kept, a request rate) start it with
``own_process=True``: it then serves from a process of its own and stamps each request as its
headers arrive, not whenever a loop (or, in a thread, an interpreter lock) busy with the sender
gets round to it. Its state (counts, ``calls``, ``delivered``, faults drawn) comes back at
``stop``; faults must be scripted before ``start``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from aiohttp import web

ARRIVED = web.RequestKey("arrived", float)  # a request's time.monotonic() as its headers came in


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
    request was read (half of those after the ESP acted on it), in the ``shares`` given (equal
    by default)."""

    rate: float = 0.3
    seed: int = 4
    retry_after: tuple[int, int] = (1, 3)
    shares: dict[str, float] = field(default_factory=lambda: {"429": 1, "503": 1, "drop": 1})
    drawn: dict[str, int] = field(default_factory=dict)  # how many of each kind were chosen

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self) -> Fault | None:
        if self._rng.random() >= self.rate:
            return None
        [kind] = self._rng.choices(list(self.shares), weights=list(self.shares.values()))
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
        # Requests that arrived while a Retry-After we answered was still running, later than
        # ``in_flight_allowance`` seconds after the 429 was written: a request that arrives
        # sooner may have left the client before the 429 reached it, which neither we nor a
        # real ESP can tell apart from a request sent after (see ``in_flight_allowance``).
        self.retry_after_violations = 0
        self.retry_after_lateness: list[float] = []  # seconds after each counted 429 was written
        self.in_flight_allowance = 0.0
        self._waits: deque[tuple[float, float]] = deque()  # (429 written at, wait ends at)
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
        self._process: tuple[BaseProcess, Connection] | None = None
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
        now: float = request.get(ARRIVED, time.monotonic())
        self._check_retry_after(now)
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
        if fault.kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        if fault.kind == "hang":
            await self._release.wait()
            return web.Response(status=503)
        response = web.Response(status=fault.status, headers=fault.headers, body=fault.body)
        retry_after = {k.lower(): v for k, v in fault.headers.items()}.get("retry-after")
        if retry_after is not None:
            # The wait runs from the moment the answer left (handed to the socket), as the
            # client cannot keep it before it could read it.
            await response.prepare(request)
            await response.write_eof()
            written = time.monotonic()
            self._waits.append((written, written + float(retry_after)))
        return response

    def _check_retry_after(self, now: float) -> None:
        self._waits = deque(wait for wait in self._waits if wait[1] > now)
        # The longest-running wait decides: was any 429 out long enough to have been read?
        late = max((now - written for written, _ in self._waits), default=0.0)
        if late > self.in_flight_allowance:
            self.retry_after_violations += 1
            self.retry_after_lateness.append(late)

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
        request[ARRIVED] = time.monotonic()  # its headers are in: the time the ESP saw it
        response = await handler(request)
        if id(request) in self._drop_after:
            self._drop_after.discard(id(request))
            assert request.transport is not None
            request.transport.abort()
        return response

    @staticmethod
    def new_id(length: int = 22) -> str:
        return secrets.token_urlsafe(length)[:length]

    async def start(self, *, own_process: bool = False) -> str:
        """Serve on a free loopback port; ``own_process``: from a process of its own."""
        if not own_process:
            return await self._serve()
        context = multiprocessing.get_context("spawn")  # forking a running loop is unsafe
        ours, theirs = context.Pipe()
        process = context.Process(target=_serve_in_process, args=(self, theirs), daemon=True)
        process.start()
        self._process = (process, ours)
        self.base_url = await asyncio.to_thread(ours.recv)
        return self.base_url

    async def _serve(self) -> str:
        self._release = asyncio.Event()  # of the loop that serves
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

    async def _close(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def stop(self) -> None:
        if self._process is None:
            await self._close()
            return
        process, pipe = self._process
        self._process = None
        pipe.send("stop")
        state = await asyncio.to_thread(pipe.recv)
        self.__dict__.update(state)
        await asyncio.to_thread(process.join, 10)
        pipe.close()

    def __getstate__(self) -> dict[str, Any]:
        """What crosses to and from a serving process: the fake's settings and records."""
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("_release", "_runner", "_process", "base_url")
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._release = asyncio.Event()
        self._runner = None
        self._process = None
        self.base_url = ""

    async def __aenter__(self) -> FakeEsp:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _serve_in_process(fake: FakeEsp, pipe: Connection) -> None:
    """A serving process: the address out, then serve until told to stop, then the records."""

    async def serve() -> None:
        pipe.send(await fake._serve())
        await asyncio.to_thread(pipe.recv)
        await fake._close()

    asyncio.run(serve())
    pipe.send(fake.__getstate__())
