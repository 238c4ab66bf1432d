"""Where alerts go: the log, a JSON webhook (Slack compatible), email to operators.

A sink raises when it could not deliver; the monitor logs that and carries on, so a dead
webhook receiver never stops evaluation or the other sinks. Sinks hear about firings and
resolutions; email goes out for firings only (a resolution is not worth waking someone).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import aiohttp

from postroom.alerts.history import Alert
from postroom.alerts.rules import Severity
from postroom.errors import PostroomError
from postroom.messages import EmailEvent, Priority, parse_event

log = logging.getLogger("postroom.alerts")

ALERT_EMAIL_TYPE = "alert"
_MAX_ALERT_BYTES = 64 * 1024


class NoticeKind(StrEnum):
    FIRED = "fired"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Notice:
    kind: NoticeKind
    alert: Alert
    action: str | None = None  # what Postroom did about it (a campaign paused)

    @property
    def text(self) -> str:
        alert = self.alert
        if self.kind is NoticeKind.RESOLVED:
            return f"RESOLVED {alert.rule} ({alert.subject}): {alert.message}"
        action = f" {self.action}" if self.action else ""
        severity = alert.severity.value.upper()
        return f"{severity} {alert.rule} ({alert.subject}): {alert.message}.{action}"

    def fields(self) -> dict[str, Any]:
        alert = self.alert
        return {
            "status": self.kind.value,
            "id": alert.id,
            "rule": alert.rule,
            "severity": alert.severity.value,
            "subject": alert.subject,
            "message": alert.message,
            "value": alert.value,
            "threshold": alert.threshold,
            "fired_at": alert.fired_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
            "action": self.action,
        }


class SinkError(PostroomError):
    """A sink could not deliver a notice."""


class AlertSink(Protocol):
    name: str

    async def notify(self, notices: Sequence[Notice]) -> None: ...

    async def close(self) -> None: ...


class LogSink:
    """A record per notice: WARNING or CRITICAL as the alert's severity, INFO when resolved."""

    name = "log"

    async def notify(self, notices: Sequence[Notice]) -> None:
        for notice in notices:
            level = logging.INFO
            if notice.kind is NoticeKind.FIRED:
                critical = notice.alert.severity is Severity.CRITICAL
                level = logging.CRITICAL if critical else logging.WARNING
            extra = {f"alert_{k}": v for k, v in notice.fields().items() if v is not None}
            log.log(level, "alert %s", notice.text, extra=extra)

    async def close(self) -> None:
        return None


class WebhookSink:
    """POSTs ``{"text": ..., "alert": {...}}`` per notice: Slack's incoming webhooks show
    ``text`` and ignore the rest; other receivers read the structured ``alert``."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def notify(self, notices: Sequence[Notice]) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        for notice in notices:
            payload = {"text": notice.text, "alert": notice.fields()}
            try:
                async with self._session.post(self.url, json=payload) as reply:
                    if reply.status >= 300:
                        raise SinkError(f"alert webhook answered HTTP {reply.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise SinkError(f"alert webhook unreachable: {exc!r}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


Submit = Callable[[Sequence[EmailEvent]], Awaitable[object]]


class EmailSink:
    """Alert email to operators through the normal submission path: email type ``alert``,
    class ``critical``, keyed by the alert id so a retried notice is one email."""

    name = "email"

    def __init__(self, submit: Submit, recipients: Sequence[str]) -> None:
        self._submit = submit
        self._recipients = list(recipients)

    async def notify(self, notices: Sequence[Notice]) -> None:
        events = [
            alert_email(notice, to)
            for notice in notices
            if notice.kind is NoticeKind.FIRED
            for to in self._recipients
        ]
        if events:
            await self._submit(events)

    async def close(self) -> None:
        return None


def alert_email(notice: Notice, recipient: str) -> EmailEvent:
    alert = notice.alert
    data: dict[str, Any] = {
        "rule": alert.rule,
        "severity": alert.severity.value,
        "subject": alert.subject,
        "message": alert.message,
        "fired_at": alert.fired_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "value": alert.value,
        "threshold": alert.threshold,
        "alert_id": alert.id,
        "action": notice.action,
    }
    return parse_event(
        {
            "email_type": ALERT_EMAIL_TYPE,
            "recipient_email": recipient,
            "template_data": data,
            "metadata": {"alert_id": alert.id},
            "idempotency_key": f"alert:{alert.id}",
            "priority": Priority.CRITICAL.value,
        },
        max_bytes=_MAX_ALERT_BYTES,
    )
