"""The shared shell of the fake ESPs: a loopback server, scripted faults, what was accepted."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Fault:
    """What the fake does instead of answering one request (after reading all of it)."""

    kind: str  # "status", "drop" (close the connection) or "hang" (never answer)
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
    def hang(cls) -> Fault:
        return cls("hang")


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
        self.calls: list[Any] = []  # the parsed body of every accepted call
        self.delivered: list[Delivered] = []
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def fail_next(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    async def fault_for(self, request: web.Request) -> web.StreamResponse | None:
        self.requests += 1
        now = time.monotonic()
        if now < self._blocked_until:
            self.retry_after_violations += 1
        if not self.faults:
            return None
        fault = self.faults.popleft()
        retry_after = {k.lower(): v for k, v in fault.headers.items()}.get("retry-after")
        if retry_after is not None:
            self._blocked_until = max(self._blocked_until, now + float(retry_after))
        await request.read()  # the whole request arrived: the ESP could have acted on it
        if fault.kind == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        if fault.kind == "hang":
            await self._release.wait()
            return web.Response(status=503)
        return web.Response(status=fault.status, headers=fault.headers, body=fault.body)

    @staticmethod
    def new_id(length: int = 22) -> str:
        return secrets.token_urlsafe(length)[:length]

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
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
