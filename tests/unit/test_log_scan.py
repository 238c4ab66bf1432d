"""The suite's log scan catches the canary when it is written, and Postroom's formatter keeps
it out at INFO and above (redacted to its first letter and domain)."""

from __future__ import annotations

import logging

from tests import log_scan

from postroom.logs import formatter


def _line(level: int, message: str, *args: object) -> str:
    record = logging.LogRecord("postroom.test", level, __file__, 1, message, args, None)
    return formatter(json=True).format(record)


def test_the_formatter_redacts_the_canary_at_info_and_above() -> None:
    for level in (logging.INFO, logging.WARNING, logging.ERROR):
        line = _line(level, "sent to %s", log_scan.CANARY)
        assert log_scan._NEEDLE not in line
        assert "c\\u2026@example.com" in line  # c…@example.com, JSON-escaped


def test_the_scan_sees_what_would_leak() -> None:
    # At DEBUG addresses are kept (for local debugging): the needle is found in such a line,
    # which proves the scan would catch an address that escaped redaction.
    assert log_scan._NEEDLE in _line(logging.DEBUG, "sent to %s", log_scan.CANARY)


def test_records_at_info_are_scanned_in_this_session() -> None:
    before = log_scan._scanned[0]
    logging.getLogger("postroom.test").info("a line without addresses")
    assert log_scan._scanned[0] == before + 1
