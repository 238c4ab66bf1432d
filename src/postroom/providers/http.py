"""HTTP plumbing shared by the ESP adapters: one keep-alive session, timeouts, and the mapping of
transport failures and common status codes into the error tree, written once.

The line that matters is whether the request reached the ESP. A failure before the request
headers were written (connection refused, DNS, TLS, connect timeout, waiting for a pooled
connection) is transient: nothing was sent. A timeout or reset after they were written is
ambiguous: the ESP may have accepted the message and only its answer was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson
from pydantic import SecretStr

from postroom.config import Settings
from postroom.errors import (
    AmbiguousProviderError,
    ConfigurationError,
    InvalidMessageError,
    PermanentProviderError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    TransientProviderError,
)
from postroom.messages import RenderedEmail
from postroom.providers.base import LONGEST_WAIT_IN_PLACE, SendResult
from postroom.providers.http_batching import Personalized, alone

__all__ = [
    "DEFAULT_RATE_LIMIT_WAIT",
    "EspHttpClient",
    "EspRequest",
    "HttpEspProvider",
    "HttpReply",
    "RateLimitPause",
    "RateLimitSnapshot",
    "auth_failure",
    "classify_status",
    "retry_after_seconds",
]

_log = logging.getLogger("postroom.providers.http")

DEFAULT_RATE_LIMIT_WAIT = 2.0
"""Seconds to wait after a 429 that names no wait (Mailgun, Postmark document no header)."""
MAX_RATE_LIMIT_WAIT = 3600.0
"""A reset further away than this is a clock problem or a bug; cap the wait rather than park
mail for days."""


@dataclass(frozen=True, slots=True)
class HttpReply:
    status: int
    headers: Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDictProxy)
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON (a proxy's HTML error page)."""
        try:
            return orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            return None

    def text(self, limit: int = 300) -> str:
        return self.body[:limit].decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class RateLimitSnapshot:
    """What the ESP's rate-limit headers said on its latest answer (for a token bucket)."""

    limit: int | None
    remaining: int | None
    reset_at: float | None  # Unix epoch seconds
    observed_at: float


def retry_after_seconds(
    headers: Mapping[str, str],
    *,
    now: float | None = None,
    default: float = DEFAULT_RATE_LIMIT_WAIT,
) -> float:
    """How long the ESP asked us to wait: ``Retry-After`` (seconds or an HTTP date) or
    ``X-RateLimit-Reset`` (epoch seconds, SendGrid), the later of the two; ``default`` if none."""
    now = time.time() if now is None else now
    waits: list[float] = []
    retry_after = headers.get("Retry-After")
    if retry_after:
        try:
            waits.append(float(retry_after))
        except ValueError:
            with contextlib.suppress(TypeError, ValueError):
                waits.append(parsedate_to_datetime(retry_after).timestamp() - now)
    reset = _number(headers.get("X-RateLimit-Reset"))
    if reset is not None:
        waits.append(reset - now)
    if not waits:
        return default
    return min(max(max(waits), 0.0), MAX_RATE_LIMIT_WAIT)


def rate_limit_snapshot(headers: Mapping[str, str]) -> RateLimitSnapshot | None:
    limit = _number(headers.get("X-RateLimit-Limit"))
    remaining = _number(headers.get("X-RateLimit-Remaining"))
    reset = _number(headers.get("X-RateLimit-Reset"))
    if limit is None and remaining is None and reset is None:
        return None
    return RateLimitSnapshot(
        limit=None if limit is None else int(limit),
        remaining=None if remaining is None else int(remaining),
        reset_at=reset,
        observed_at=time.time(),
    )


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def required(value: str | SecretStr | None, variable: str, provider: str) -> str:
    """A credential the provider cannot work without, or a one-line ConfigurationError."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not text:
        raise ConfigurationError(f"{variable} is required when POSTROOM_PROVIDER={provider}")
    return text


def client_from_settings(esp: str, settings: Settings) -> EspHttpClient:
    return EspHttpClient(
        esp, timeout=settings.esp_timeout, connect_timeout=settings.esp_connect_timeout
    )


def auth_failure(esp: str, status: int, detail: str) -> PermanentProviderError:
    """A credential or permission problem: every message will fail until an operator acts.

    Logged at ERROR so alerting picks it up; the log names the ESP and status and the ESP's own
    message, never a request header (where the credential lives).
    """
    _log.error("%s refused our credentials (HTTP %d): %s", esp, status, detail)
    return PermanentProviderError(f"{esp} HTTP {status} (credentials): {detail}", code=str(status))


def classify_status(esp: str, reply: HttpReply, detail: str) -> ProviderError:
    """The common reading of an error status; adapters handle their ESP's exceptions first."""
    status = reply.status
    text = f"{esp} HTTP {status}: {detail}"
    if status == 429:
        return RateLimitedError(text, retry_after=retry_after_seconds(reply.headers), code="429")
    if status in (401, 403):
        return auth_failure(esp, status, detail)
    if status == 408 or status >= 500:
        # 408: the server gave up waiting for our request, so it did not take it.
        return TransientProviderError(text, code=str(status))
    return PermanentProviderError(text, code=str(status))


class _Progress(SimpleNamespace):
    headers_sent: bool = False


async def _on_headers_sent(
    _session: aiohttp.ClientSession, context: SimpleNamespace, _params: object
) -> None:
    progress = context.trace_request_ctx
    if isinstance(progress, _Progress):
        progress.headers_sent = True


class RateLimitPause:
    """A 429's wait, kept for a whole client: it is the ESP's word for the account.

    A request takes one of ``slots`` (as many as the client's connections) and only then
    checks the wait, so no request that passed the check can then sit in a connection queue
    and go out during a pause that began meanwhile. What is left between the check and the
    write is the client library's own step (a pooled connection, milliseconds).
    """

    def __init__(self, slots: int, esp: str, longest_wait: float = LONGEST_WAIT_IN_PLACE) -> None:
        self._size = slots
        self._esp = esp
        self._longest_wait = longest_wait
        self._slots: asyncio.Semaphore | None = None  # made on first use, in the running loop
        self._until = 0.0  # time.monotonic()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a slot once any pause has passed; raise ``ProviderUnavailableError`` instead
        when the pause has longer to run than a call may wait."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._size)
        async with self._slots:
            await self._wait_out()
            yield

    def pause(self, seconds: float) -> None:
        """Hold every request that has not passed the check for ``seconds`` from now."""
        self._until = max(self._until, time.monotonic() + seconds)

    async def _wait_out(self) -> None:
        pause = self._until - time.monotonic()
        if pause > self._longest_wait:
            raise ProviderUnavailableError(
                f"{self._esp}: rate limited, asked to wait {pause:.0f}s more; not sent",
                retry_after=pause,
            )
        if pause > 0:
            await asyncio.sleep(pause)
            await self._wait_out()  # another 429 may have made it longer meanwhile


class EspHttpClient:
    """A keep-alive aiohttp session for one ESP, created on first use (never at import).

    After a 429 no request of this client goes out until its wait has passed
    (:class:`RateLimitPause`, one slot per connection).
    """

    def __init__(
        self,
        esp: str,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_connections: int = 64,
        keepalive: float = 15.0,
    ) -> None:
        self.esp = esp
        self.timeout = aiohttp.ClientTimeout(total=timeout, connect=connect_timeout)
        self.max_connections = max_connections
        # Shorter than common server idle timeouts, so we rarely reuse a connection the server
        # is closing at that moment: that race would read as an ambiguous send.
        self.keepalive = keepalive
        self.rate_limit: RateLimitSnapshot | None = None
        self._session: aiohttp.ClientSession | None = None
        self.pause = RateLimitPause(max_connections, esp)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_on_headers_sent)
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, keepalive_timeout=self.keepalive
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                trace_configs=[trace],
            )
        return self._session

    async def post(self, url: str, *, body: bytes, headers: Mapping[str, str]) -> HttpReply:
        """POST ``body``; return the reply whatever its status, or raise a transient or
        ambiguous :class:`ProviderError` when the transport failed."""
        progress = _Progress()
        async with self.pause.slot():
            try:
                async with self._open().post(
                    url, data=body, headers=dict(headers), trace_request_ctx=progress
                ) as response:
                    payload = await response.read()
                    reply = HttpReply(response.status, response.headers, payload)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise self._transport_error(exc, sent=progress.headers_sent) from exc
            if reply.status == 429:
                self.pause.pause(retry_after_seconds(reply.headers))
        snapshot = rate_limit_snapshot(reply.headers)
        if snapshot is not None:
            self.rate_limit = snapshot
        return reply

    def _transport_error(self, exc: BaseException, *, sent: bool) -> ProviderError:
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if sent and not isinstance(exc, aiohttp.ClientConnectorError):
            # The request left us; the ESP may have queued the mail before the answer was lost.
            return AmbiguousProviderError(f"{self.esp}: answer lost after the request: {detail}")
        return TransientProviderError(f"{self.esp}: request not sent: {detail}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True, slots=True)
class EspRequest:
    url: str
    body: bytes
    headers: Mapping[str, str]


class HttpEspProvider:
    """The shared shell of the HTTP ESP adapters: plan calls, send them concurrently over one
    session, put results back in input order. An adapter fills in four pure steps.

    A call the ESP refuses as a whole for what may be one recipient's fault (``split_on``: a
    400 naming a recipient field, a 413) is split in halves and resent, so one bad recipient
    cannot fail the other 999 of its call. A refusal about the shared part (a bad From) fails
    the call at once: halving would only repeat it.
    """

    name: str
    max_batch_size: int

    def __init__(self, client: EspHttpClient) -> None:
        self.client = client

    @property
    def rate_limit(self) -> RateLimitSnapshot | None:
        """The ESP's rate-limit headers as of its latest answer (None if it sends none)."""
        return self.client.rate_limit

    def prepare(self, email: RenderedEmail) -> Personalized:
        return alone(email)

    def prepare_all(self, batch: Sequence[RenderedEmail]) -> list[Personalized]:
        return [self.prepare(email) for email in batch]

    def plan(self, items: Sequence[Personalized]) -> list[list[int]]:
        """Positions of ``items`` grouped into calls (default: one call per message)."""
        return [[index] for index in range(len(items))]

    def request(self, items: Sequence[Personalized]) -> EspRequest:
        raise NotImplementedError

    def parse(self, items: Sequence[Personalized], reply: HttpReply) -> list[SendResult]:
        raise NotImplementedError

    def split_on(self, reply: HttpReply) -> bool:
        """Whether a refusal of a call of several may be one recipient's fault."""
        return reply.status == 413

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        items = self.prepare_all(batch)
        results: list[SendResult | None] = [None] * len(items)
        await asyncio.gather(*(self._call(items, group, results) for group in self.plan(items)))
        missing = [i for i, result in enumerate(results) if result is None]
        if missing:  # a planning bug; never drop a message silently
            raise AssertionError(f"{self.name}: no result for positions {missing}")
        return [result for result in results if result is not None]

    async def _call(
        self, items: Sequence[Personalized], group: list[int], out: list[SendResult | None]
    ) -> None:
        chosen = [items[i] for i in group]
        try:
            request = self.request(chosen)
        except InvalidMessageError as exc:
            error = PermanentProviderError(f"{self.name}: message cannot be sent: {exc}")
            for i in group:
                out[i] = SendResult(items[i].email.send_id, error=error)
            return
        try:
            reply = await self.client.post(request.url, body=request.body, headers=request.headers)
        except ProviderError as exc:
            for i in group:
                out[i] = SendResult(items[i].email.send_id, error=exc)
            return
        if len(group) > 1 and self.split_on(reply):
            half = len(group) // 2
            await asyncio.gather(
                self._call(items, group[:half], out), self._call(items, group[half:], out)
            )
            return
        for i, result in zip(group, self.parse(chosen, reply), strict=True):
            out[i] = result

    async def close(self) -> None:
        await self.client.close()
