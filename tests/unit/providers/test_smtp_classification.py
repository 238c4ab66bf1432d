"""The SMTP reply/exception → error-class table in postroom.providers.smtp, one test per row."""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass

import pytest
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectTimeoutError,
    SMTPDataError,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPSenderRefused,
    SMTPServerDisconnected,
)

from postroom.errors import (
    AmbiguousProviderError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from postroom.providers.smtp import (
    RATE_LIMIT_RETRY_AFTER,
    classify_exception,
    classify_reply,
    queue_id,
)


@dataclass(frozen=True)
class Row:
    code: int
    message: str
    after_data: bool
    expected: type[ProviderError]
    suppress: bool | None = None
    label: str | None = None


REPLY_ROWS = {
    "421 closing is rate limiting": Row(
        421, "4.7.0 Try again later, closing connection", False, RateLimitedError, label="421 4.7.0"
    ),
    "421 without enhanced code": Row(421, "Service not available", False, RateLimitedError),
    "450 4.7.1 greylisting": Row(450, "4.7.1 Greylisted, try again", False, RateLimitedError),
    "451 4.7.1 rate": Row(451, "4.7.1 Rate limit exceeded", False, RateLimitedError),
    "452 4.5.3 too many recipients": Row(452, "4.5.3 Too many recipients", False, RateLimitedError),
    "4xx saying too many": Row(451, "Too many connections from your IP", False, RateLimitedError),
    "451 local error": Row(
        451, "4.3.0 Local error in processing", False, TransientProviderError, label="451 4.3.0"
    ),
    "451 plain": Row(451, "Requested action aborted", False, TransientProviderError),
    "452 mailbox full": Row(452, "4.2.2 Mailbox full", False, TransientProviderError),
    "4xx after data": Row(451, "4.3.0 Queue write failed", True, TransientProviderError),
    "552 at RCPT is temporary": Row(552, "Too many recipients", False, TransientProviderError),
    "552 after data is permanent": Row(
        552, "5.3.4 Message size exceeds limit", True, PermanentProviderError, suppress=False
    ),
    "535 auth failed": Row(
        535,
        "5.7.8 Authentication credentials invalid",
        False,
        PermanentProviderError,
        suppress=False,
        label="535 5.7.8",
    ),
    "530 auth required": Row(
        530, "5.7.0 Authentication required", False, PermanentProviderError, suppress=False
    ),
    "534 mechanism too weak": Row(
        534, "5.7.9 Mechanism too weak", False, PermanentProviderError, suppress=False
    ),
    "538 encryption required": Row(
        538, "5.7.11 Encryption required", False, PermanentProviderError, suppress=False
    ),
    "550 5.1.1 no such user": Row(
        550,
        "5.1.1 <x@example.com>: User unknown",
        False,
        PermanentProviderError,
        suppress=True,
        label="550 5.1.1",
    ),
    "550 5.1.2 bad domain": Row(
        550, "5.1.2 Host unknown", False, PermanentProviderError, suppress=True
    ),
    "553 5.1.3 bad syntax": Row(
        553, "5.1.3 Bad recipient address syntax", False, PermanentProviderError, suppress=True
    ),
    "550 5.1.10 null MX": Row(
        550,
        "5.1.10 Recipient address rejected: null MX",
        False,
        PermanentProviderError,
        suppress=True,
        label="550 5.1.10",
    ),
    "551 5.2.1 disabled": Row(
        551, "5.2.1 Mailbox disabled", False, PermanentProviderError, suppress=True
    ),
    "550 5.1.1 after data": Row(
        550, "5.1.1 User unknown", True, PermanentProviderError, suppress=True
    ),
    "plain 550 is not proof": Row(
        550,
        "Requested action not taken: mailbox unavailable",
        False,
        PermanentProviderError,
        suppress=False,
        label="550",
    ),
    "550 5.7.1 policy block": Row(
        550,
        "5.7.1 Service unavailable; client host blocked",
        False,
        PermanentProviderError,
        suppress=False,
    ),
    "554 5.7.1 spam content": Row(
        554, "5.7.1 Message rejected as spam", True, PermanentProviderError, suppress=False
    ),
    "552 5.2.2 mailbox full after data": Row(
        552, "5.2.2 Mailbox full", True, PermanentProviderError, suppress=False
    ),
    "garbled reply before data end": Row(
        -1, "Malformed SMTP response line", False, TransientProviderError
    ),
    "garbled reply after data": Row(
        -1, "Malformed SMTP response line", True, AmbiguousProviderError
    ),
}


@pytest.mark.parametrize("row", list(REPLY_ROWS.values()), ids=list(REPLY_ROWS))
def test_reply_row(row: Row) -> None:
    error = classify_reply(row.code, row.message, after_data=row.after_data)
    assert type(error) is row.expected
    if row.suppress is not None:
        assert isinstance(error, PermanentProviderError)
        assert error.suppress is row.suppress
    if isinstance(error, RateLimitedError):
        assert error.retry_after == RATE_LIMIT_RETRY_AFTER
    if row.label is not None:
        assert error.code == row.label
    assert str(row.code) in str(error)


def test_auth_failure_is_logged_at_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="postroom.providers.smtp"):
        classify_reply(535, "5.7.8 Authentication credentials invalid", after_data=False)
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert caplog.records[0].name == "postroom.providers.smtp"


EXCEPTION_ROWS: dict[str, tuple[BaseException, bool, type[ProviderError]]] = {
    "refused": (ConnectionRefusedError(111, "Connection refused"), False, TransientProviderError),
    "connect error": (SMTPConnectError("Error connecting"), False, TransientProviderError),
    "connect timeout": (SMTPConnectTimeoutError("Timed out"), False, TransientProviderError),
    "dns": (socket.gaierror(-2, "Name or service not known"), False, TransientProviderError),
    "tls": (
        ssl.SSLCertVerificationError("certificate verify failed"),
        False,
        TransientProviderError,
    ),
    "dropped before data": (
        SMTPServerDisconnected("Connection lost"),
        False,
        TransientProviderError,
    ),
    "timeout before data": (SMTPReadTimeoutError("Timed out"), False, TransientProviderError),
    "dropped after data": (SMTPServerDisconnected("Connection lost"), True, AmbiguousProviderError),
    "timeout after data": (SMTPReadTimeoutError("Timed out"), True, AmbiguousProviderError),
    "missing extension": (
        SMTPNotSupported("STARTTLS extension not supported"),
        False,
        PermanentProviderError,
    ),
    "auth error": (
        SMTPAuthenticationError(535, "5.7.8 Bad credentials"),
        False,
        PermanentProviderError,
    ),
    "sender refused": (SMTPSenderRefused(451, "4.7.1 Slow down", "a@b.c"), False, RateLimitedError),
    "recipient refused": (
        SMTPRecipientRefused(550, "5.1.1 No such user", "a@b.c"),
        False,
        PermanentProviderError,
    ),
    "data refused": (SMTPDataError(554, "5.7.1 Spam"), True, PermanentProviderError),
}


@pytest.mark.parametrize(
    ("exc", "after_data", "expected"), list(EXCEPTION_ROWS.values()), ids=list(EXCEPTION_ROWS)
)
def test_exception_row(exc: BaseException, after_data: bool, expected: type[ProviderError]) -> None:
    assert type(classify_exception(exc, after_data=after_data)) is expected


def test_recipient_refused_5_1_1_suppresses() -> None:
    error = classify_exception(
        SMTPRecipientRefused(550, "5.1.1 No such user", "a@b.c"), after_data=False
    )
    assert isinstance(error, PermanentProviderError) and error.suppress


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("2.0.0 Ok: queued as 4Tq1xY2ZkNz3", "4Tq1xY2ZkNz3"),
        ("OK id=1rKx2a-0007Qn-3T", "1rKx2a-0007Qn-3T"),
        ("2.0.0 40TAB1cX012345 Message accepted for delivery", "40TAB1cX012345"),
        (
            "Ok 0100018d2f3c4b5a-1234abcd-5678-90ef-abcd-1234567890ab-000000",
            "0100018d2f3c4b5a-1234abcd-5678-90ef-abcd-1234567890ab-000000",
        ),
        ("OK", None),
        ("2.0.0 Ok", None),
    ],
)
def test_queue_id_from_reply(reply: str, expected: str | None) -> None:
    assert queue_id(reply) == expected
