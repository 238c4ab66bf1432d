"""The canary: one recipient address used across the suite (API sends, campaigns, webhooks,
suppressions, unsubscribes, GDPR) that must never appear in a log line at INFO or above.

Every log record the test process makes at INFO or above is written as Postroom writes it
(``postroom.logs.formatter``: scrubbed JSON) and searched for the canary's local part; the
session fails when one holds it, printing the lines. Records are caught as loggers hand them
to their handlers, so handlers that tests or ``postroom.logs.configure`` install change
nothing. Worker subprocesses log through the same formatter to their own files.
"""

from __future__ import annotations

import logging

import pytest

CANARY = "canary.reader.x7q@example.com"
_NEEDLE = CANARY.split("@")[0][1:]  # what a redacted address would no longer show

_hits: list[str] = []
_scanned = [0]


def _formatter() -> logging.Formatter:
    from postroom.logs import formatter

    return formatter(json=True)


def install() -> None:
    """Scan every record from now on (called once, at session start)."""
    format_record = _formatter().format
    call_handlers = logging.Logger.callHandlers

    def scanned(logger: logging.Logger, record: logging.LogRecord) -> None:
        # Here the record is complete (``extra`` fields included) and past the logger's
        # level and filters, whatever handlers are installed.
        if record.levelno >= logging.INFO:
            _scanned[0] += 1
            try:
                line = format_record(record)
            except Exception:  # a record that cannot be formatted is scanned raw
                line = f"{record.msg} {record.args} {vars(record)}"
            if _NEEDLE in line:
                _hits.append(line[:500])
        call_handlers(logger, record)

    logging.Logger.callHandlers = scanned  # type: ignore[method-assign]
    root = logging.getLogger()
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)  # records at INFO must be made to be scanned


def report(session: pytest.Session) -> None:
    if not _hits:
        return
    print(f"\nlog scan: the canary {CANARY} appears in {len(_hits)} log lines at INFO+:")
    for line in _hits[:20]:
        print(f"  {line}")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
