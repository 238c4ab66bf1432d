"""Structured logs: one JSON object per line (structlog over the standard ``logging``).

Every module logs through ``logging.getLogger``; this renders those records as JSON with the
time, level, logger, message and any ``extra`` fields (send, message, campaign and attempt
ids). Personal data and secrets are kept out at the source and scrubbed here as a last line:

- at INFO and above, email addresses anywhere in the message or fields become
  ``j…@example.com`` (the domain stays: it is what deliverability work needs);
- fields named like a secret (``password``, ``token``, ``api_key``, ``authorization``,
  ``secret``) and bodies (``html``, ``text``, ``body``) are never written.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

_ADDRESS = re.compile(r"([A-Za-z0-9.!#$%&'*+/=?^_`{|}~-])[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]*@")
_WITHHELD = ("password", "token", "api_key", "apikey", "authorization", "secret")
_BODIES = {"html", "text", "body"}


def redact_addresses(value: str) -> str:
    """``jane.doe@example.com`` → ``j…@example.com``."""
    return _ADDRESS.sub(lambda m: f"{m.group(1)}…@", value)


def _scrub(_logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    redact = method not in ("debug", "trace")
    for key in list(event):
        lowered = key.lower()
        if lowered in _BODIES or any(word in lowered for word in _WITHHELD):
            event[key] = "[withheld]"
        elif redact and isinstance(event[key], str):
            event[key] = redact_addresses(event[key])
    return event


def configure(level: str = "INFO", *, json: bool = True, stream: TextIO | None = None) -> None:
    """Route the standard logging through structlog's JSON (or console) renderer."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(json=json))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def formatter(*, json: bool = True) -> logging.Formatter:
    """How a record is written: JSON (or console) lines, scrubbed (see the module doc)."""
    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _scrub,
            renderer,
        ],
    )
