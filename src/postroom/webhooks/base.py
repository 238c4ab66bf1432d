"""The webhooks seam: verify a raw request, then parse it into normalized events.

Contract for every receiver (one module per ESP):

- ``verify(headers, raw_body, now)`` runs first, on the bytes exactly as received, and raises
  :class:`~postroom.errors.WebhookVerificationError` (with a ``reason``) unless the request is
  proven to come from the ESP: size cap, signature or credentials (compared in constant
  time), timestamp within ``max_age`` seconds of ``now`` (0 disables the check).
- ``parse(raw_body)`` runs only on a verified body and returns the events it carries, in the
  order given; it raises :class:`~postroom.errors.WebhookPayloadError` for a body it does not
  understand. Parsing is pure: no I/O, no clock.
- ``replay_token(raw_body)`` names a one-use token (Mailgun's) that the caller must refuse to
  see twice; receivers without one return ``None``.

No web framework and no database here: the API and the CLI are the shells around this.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson

from postroom.errors import WebhookPayloadError, WebhookVerificationError
from postroom.webhooks.events import NormalizedEvent

DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # SendGrid's batches stop at 768 KB
DEFAULT_MAX_AGE = 300.0
DEFAULT_REPLAY_TTL = 24 * 3600.0

Headers = Mapping[str, str]


class WebhookReceiver(ABC):
    """Verifies and parses one ESP's webhook requests."""

    provider: ClassVar[str]

    def __init__(
        self, *, max_age: float = DEFAULT_MAX_AGE, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ) -> None:
        self.max_age = max_age
        self.max_body_bytes = max_body_bytes

    def verify(self, headers: Headers, raw_body: bytes, now: float) -> None:
        """Raise :class:`WebhookVerificationError` unless the request comes from the ESP."""
        if len(raw_body) > self.max_body_bytes:
            raise WebhookVerificationError(
                "too_large", f"body of {len(raw_body)} bytes is over {self.max_body_bytes}"
            )
        self._verify({k.lower(): v for k, v in headers.items()}, raw_body, now)

    @abstractmethod
    def _verify(self, headers: dict[str, str], raw_body: bytes, now: float) -> None:
        """The ESP's own check; ``headers`` have lower-cased names."""

    @abstractmethod
    def parse(self, raw_body: bytes) -> list[NormalizedEvent]:
        """The events in a verified body."""

    def replay_token(self, raw_body: bytes) -> str | None:
        """A token that must not be accepted twice (after :meth:`verify`), or ``None``."""
        return None

    @property
    def replay_ttl(self) -> float:
        """How long a replay token must be remembered: longer than a timestamp stays fresh."""
        return max(DEFAULT_REPLAY_TTL, 2 * self.max_age)

    def check_fresh(self, timestamp: float, now: float) -> None:
        if self.max_age and abs(now - timestamp) > self.max_age:
            raise WebhookVerificationError(
                "stale",
                f"timestamp is {abs(now - timestamp):.0f} s from now (max {self.max_age:g})",
            )


class InMemoryReplayGuard:
    """One-use tokens remembered in this process (the CLI, tests); the service keeps them in
    the database, in the same transaction as the events, so a failed request can be retried."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def claim(self, key: str, now: float, ttl: float) -> bool:
        """True the first time ``key`` is seen within ``ttl`` seconds."""
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: t for k, t in self._seen.items() if t > now}
            expires = self._seen.get(key)
            if expires is not None and expires > now:
                return False
            self._seen[key] = now + ttl
            return True


def verify_and_parse(
    receiver: WebhookReceiver,
    headers: Headers,
    raw_body: bytes,
    now: float,
    replay_guard: InMemoryReplayGuard | None = None,
) -> list[NormalizedEvent]:
    """Verify, refuse a replayed token, then parse: the whole seam for in-process callers."""
    receiver.verify(headers, raw_body, now)
    token = receiver.replay_token(raw_body)
    key = f"{receiver.provider}:{token}"
    if token and replay_guard and not replay_guard.claim(key, now, receiver.replay_ttl):
        raise WebhookVerificationError("replay", "this request's token was already used")
    return receiver.parse(raw_body)


# --- helpers the ESP modules share -------------------------------------------------------


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    left = a.encode() if isinstance(a, str) else a
    right = b.encode() if isinstance(b, str) else b
    return hmac.compare_digest(left, right)


def load_json(raw_body: bytes, *, exact_integers: bool = False) -> Any:
    """The JSON body. orjson turns integers beyond 64 bits into floats silently, so a
    payload with numeric ids of unbounded size (Postmark's) asks for ``exact_integers``."""
    try:
        if exact_integers:
            return json.loads(raw_body)
        return orjson.loads(raw_body)
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError too
        raise WebhookPayloadError(f"body is not JSON: {exc}") from None


def require_header(headers: dict[str, str], name: str) -> str:
    value = headers.get(name.lower())
    if not value:
        raise WebhookVerificationError("malformed", f"missing header {name}")
    return value


def lower_email(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().lower()


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (ESPs omit sections freely)."""
    return value if isinstance(value, dict) else {}


def text(value: Any) -> str | None:
    """A non-empty string, or None (numbers become strings: ids arrive as either)."""
    if type(value) is str:  # what JSON gives nearly always: the checks below cost more
        return value or None
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) else None


def epoch(value: Any) -> datetime | None:
    if type(value) is int or type(value) is float:  # the usual case, checked cheaply
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str) and value.replace(".", "", 1).isdigit():
        return datetime.fromtimestamp(float(value), UTC)
    return None


def iso_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


_SMTP_CODE = re.compile(r"^(?:\s*smtp\s*;)?\s*([245]\d\d)(?:[\s-]|$)", re.IGNORECASE)
_ENHANCED = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")


def smtp_details(diagnostic: str | None) -> tuple[int | None, str | None]:
    """(basic code, enhanced status) read from a remote server's reply when the ESP gave none,
    e.g. ``"smtp; 550-5.1.1 The email account ..."`` → ``(550, "5.1.1")``."""
    if not diagnostic:
        return None, None
    code = _SMTP_CODE.match(diagnostic)
    enhanced = _ENHANCED.search(diagnostic)
    return (int(code.group(1)) if code else None), (enhanced.group(1) if enhanced else None)


# Apple Mail Privacy Protection fetches every image through Apple's proxies with this bare
# user agent as soon as the message arrives, whether or not anyone reads it.
_APPLE_PROXY_AGENT = "Mozilla/5.0"


def looks_machine_made(user_agent: str | None) -> bool:
    return user_agent is not None and user_agent.strip() == _APPLE_PROXY_AGENT


def send_ids_from(mapping: Any) -> tuple[str | None, str | None]:
    """(postroom_send_id, postroom_message_id) from custom args / user variables / metadata."""
    # A dict nearly always (parsed JSON); the ABC check alone cost a microsecond.
    if type(mapping) is not dict and not isinstance(mapping, Mapping):
        return None, None
    return text(mapping.get("postroom_send_id")), text(mapping.get("postroom_message_id"))


def unique(ids: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in ids if i))
