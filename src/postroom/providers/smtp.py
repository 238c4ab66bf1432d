"""SMTP delivery over aiosmtplib: one connection per batch, one MAIL/RCPT/DATA per message.

Replies (RFC 5321) and enhanced status codes (RFC 3463) map into the error tree here, once:

=============================================  ===========================================
reply or failure                               result
=============================================  ===========================================
421 (any), 4xx with 4.7.x, 4xx with 4.5.3,     RateLimitedError(retry_after=60)
4xx saying "rate", "too many", "throttl…"
other 4xx                                      TransientProviderError
552 before DATA (RFC 5321 §4.5.3.1.10)         TransientProviderError
530, 534, 535, 538, 5.7.8, 5.7.9, 5.7.11       PermanentProviderError (auth; logged at error)
5xx with 5.1.1, 5.1.2, 5.1.3, 5.1.10, 5.2.1    PermanentProviderError(suppress=True)
other 5xx, including plain 550                 PermanentProviderError(suppress=False)
other codes (malformed reply) before DATA end  TransientProviderError
other codes after the DATA terminator          AmbiguousProviderError
refused, DNS, TLS, timeout, drop before DATA   TransientProviderError
drop or timeout after the DATA terminator      AmbiguousProviderError
server lacks STARTTLS/AUTH/SMTPUTF8            PermanentProviderError (operator problem)
=============================================  ===========================================
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Sequence
from email.utils import parseaddr

from aiosmtplib import (
    SMTP,
    SMTPDataError,
    SMTPException,
    SMTPNotSupported,
    SMTPResponse,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from postroom.config import SmtpSecurity
from postroom.errors import (
    AmbiguousProviderError,
    InvalidMessageError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from postroom.messages import RenderedEmail
from postroom.providers.base import MessageSigner, SendResult
from postroom.providers.mime import build_mime, envelope_address

__all__ = ["RATE_LIMIT_RETRY_AFTER", "SmtpProvider", "classify_exception", "classify_reply"]

_log = logging.getLogger("postroom.providers.smtp")

RATE_LIMIT_RETRY_AFTER = 60.0
"""Seconds to wait after a throttling reply: SMTP has no Retry-After, and greylisting
(450 4.7.1) typically lets a retry through after one to five minutes."""

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_BAD_MAILBOX = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.10", "5.2.1"})
_AUTH_CODES = frozenset({530, 534, 535, 538})
_AUTH_ENHANCED = frozenset({"5.7.8", "5.7.9", "5.7.11"})
_RATE_WORDS = re.compile(r"rate|too many|throttl|slow down|try again later", re.IGNORECASE)
_DOT_LINE = re.compile(rb"(?m)^\.")
_QUEUE_ID = (
    re.compile(r"queued as ([A-Za-z0-9][\w.-]*)", re.IGNORECASE),  # Postfix
    re.compile(r"\bid=([A-Za-z0-9][\w.-]*)"),  # Exim
    re.compile(r"^(?:2\.\d\.\d+ )?([A-Za-z0-9]{6,}) Message accepted", re.IGNORECASE),  # Sendmail
    re.compile(r"^(?:2\.\d\.\d+ )?Ok:? ([0-9a-f][0-9a-f-]{20,})\b", re.IGNORECASE),  # SES
)


def _enhanced(message: str) -> str | None:
    match = _ENHANCED.match(message.lstrip())
    return ".".join(match.groups()) if match else None


def classify_reply(code: int, message: str, *, after_data: bool) -> ProviderError:
    """Map an SMTP reply that refused (or garbled) a message to an error class.

    ``after_data`` is True when the reply answers the end of the message content.
    """
    enhanced = _enhanced(message)
    label = f"{code} {enhanced}" if enhanced else str(code)
    text = f"SMTP {code} {message}".strip()[:500]
    if 400 <= code < 500:
        # 421 closes the channel; servers use it (and 4.7.x, 4.5.3) to push back on volume.
        throttled = code == 421 or enhanced == "4.5.3" or (enhanced or "").startswith("4.7.")
        if throttled or _RATE_WORDS.search(message):
            return RateLimitedError(text, retry_after=RATE_LIMIT_RETRY_AFTER, code=label)
        return TransientProviderError(text, code=label)
    if 500 <= code < 600:
        if code == 552 and not after_data:
            # RFC 5321 §4.5.3.1.10: 552 at RCPT meant "too many recipients" in old servers;
            # clients should treat it as temporary. After DATA it means "message too big".
            return TransientProviderError(text, code=label)
        if code in _AUTH_CODES or enhanced in _AUTH_ENHANCED:
            # Wrong or missing credentials is an operator problem, not this message's: say so
            # loudly, and do not keep retrying into an account lockout.
            _log.error("SMTP authentication failed: %s", text)
            return PermanentProviderError(text, code=label)
        # Only an enhanced code proves the mailbox is bad. A bare 550 is also what servers say
        # for policy blocks (our IP on a blocklist, spam content): suppressing on it would
        # drop good subscribers whenever our own reputation is the problem.
        return PermanentProviderError(text, code=label, suppress=enhanced in _BAD_MAILBOX)
    if after_data:
        return AmbiguousProviderError(f"unreadable reply after message data: {text}", code=label)
    return TransientProviderError(f"unexpected reply: {text}", code=label)


def classify_exception(exc: BaseException, *, after_data: bool) -> ProviderError:
    """Map an aiosmtplib or socket exception to an error class (see the module table)."""
    if isinstance(exc, SMTPResponseException):
        return classify_reply(exc.code, exc.message, after_data=after_data)
    if isinstance(exc, SMTPNotSupported):
        _log.error("SMTP server lacks a required extension: %s", exc)
        return PermanentProviderError(f"SMTP server does not support it: {exc}")
    detail = f"{type(exc).__name__}: {exc}"
    if after_data:
        # The whole message and its terminator were handed to the server: it may have
        # accepted the message before the reply was lost. Resending could duplicate it.
        return AmbiguousProviderError(f"reply lost after message data: {detail}")
    return TransientProviderError(f"SMTP connection failed: {detail}")


def queue_id(reply_text: str) -> str | None:
    """The server's queue id in a 250 reply to DATA, for the common MTAs."""
    for pattern in _QUEUE_ID:
        match = pattern.search(reply_text)
        if match:
            return match.group(1)
    return None


class SmtpProvider:
    """Hands mail to an SMTP server (STARTTLS, implicit TLS or plain; AUTH when configured).

    With a ``signer``, every message is DKIM-signed after it is built and before DATA.
    """

    name = "smtp"
    max_batch_size = 100

    def __init__(
        self,
        host: str,
        port: int,
        security: SmtpSecurity,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        verify_tls: bool = True,
        tls_context: ssl.SSLContext | None = None,
        signer: MessageSigner | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.security = SmtpSecurity(security)
        self.username = username
        self.password = password
        self.timeout = timeout
        self.verify_tls = verify_tls
        self.tls_context = tls_context
        self.signer = signer
        self._open: set[SMTP] = set()

    def _client(self) -> SMTP:
        return SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.security is SmtpSecurity.TLS,
            # False, not None: None would upgrade opportunistically, which "none" must not do.
            start_tls=self.security is SmtpSecurity.STARTTLS,
            validate_certs=self.verify_tls,
            tls_context=self.tls_context,
            username=self.username or None,
            password=self.password if self.username else None,
            timeout=self.timeout,
        )

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        results: list[SendResult] = []
        client: SMTP | None = None
        try:
            for index, email in enumerate(batch):
                if client is None or not client.is_connected:
                    if client is not None:
                        self._open.discard(client)
                    client = self._client()
                    self._open.add(client)
                    try:
                        await client.connect()
                    except (SMTPException, OSError) as exc:
                        # Nothing of the remaining messages reached the server.
                        error = classify_exception(exc, after_data=False)
                        _log.warning("SMTP connect to %s:%s failed: %s", self.host, self.port, exc)
                        results.extend(SendResult(e.send_id, error=error) for e in batch[index:])
                        break
                results.append(await self._send_one(client, email))
        finally:
            if client is not None:
                self._open.discard(client)
                await _quit(client, self.timeout)
        return results

    async def _send_one(self, client: SMTP, email: RenderedEmail) -> SendResult:
        try:
            data = build_mime(email)
            if self.signer is not None:
                # Signed last: nothing may touch the bytes between here and DATA (dot-stuffing
                # in _transmit is undone by the receiver before it verifies).
                data = self.signer.sign(data)
            sender = envelope_address(parseaddr(email.sender)[1])
            recipient = envelope_address(email.recipient)
        except InvalidMessageError as exc:
            error = PermanentProviderError(f"message cannot be serialised: {exc}")
            return SendResult(email.send_id, error=error)
        after_data = False
        try:
            options, encoding = await _utf8_options(client, sender, recipient, data)
            await client.mail(sender, options=options, encoding=encoding)
            await client.rcpt(recipient, encoding=encoding)
            start = await client.execute_command(b"DATA")
            if start.code != 354:
                raise SMTPDataError(start.code, start.message)
            reply = await self._transmit(client, data)
            after_data = True
            if reply.code != 250:
                raise SMTPDataError(reply.code, reply.message)
        except SMTPNotSupported as exc:
            # Refused before MAIL FROM: the connection is clean and stays open.
            return SendResult(email.send_id, error=classify_exception(exc, after_data=False))
        except _TransmittedError as sent:
            return SendResult(email.send_id, error=classify_exception(sent.cause, after_data=True))
        except SMTPResponseException as exc:
            await _reset(client)
            return SendResult(email.send_id, error=classify_exception(exc, after_data=after_data))
        except ValueError as exc:
            # aiosmtplib refuses control characters or non-ASCII in an envelope address locally,
            # before anything is sent: this message can never go out as it is.
            await _reset(client)
            error = PermanentProviderError(f"envelope refused by the SMTP client: {exc}")
            return SendResult(email.send_id, error=error)
        except (SMTPException, OSError) as exc:
            client.close()
            return SendResult(email.send_id, error=classify_exception(exc, after_data=after_data))
        return SendResult(
            email.send_id, provider_message_id=queue_id(reply.message) or email.message_id
        )

    async def _transmit(self, client: SMTP, data: bytes) -> SMTPResponse:
        """Send the content and terminator, then read the final reply.

        Done by hand rather than with ``client.data()`` because only here can we tell a
        failure before the content went out (safe to retry) from one after it (ambiguous).
        """
        protocol = client.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        protocol.write(_DOT_LINE.sub(b"..", data) + b".\r\n")
        try:
            return await protocol.read_response(timeout=self.timeout)
        except (SMTPServerDisconnected, SMTPTimeoutError, SMTPResponseException, OSError) as exc:
            # Lost, late or garbled (aiosmtplib reports a malformed reply as code -1): the
            # protocol may be mid-reply, so never reuse it.
            client.close()
            raise _TransmittedError(exc) from exc

    async def close(self) -> None:
        for client in list(self._open):
            client.close()
        self._open.clear()


class _TransmittedError(Exception):
    """The message data was written; ``cause`` is what went wrong before the reply."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _utf8_options(
    client: SMTP, sender: str, recipient: str, data: bytes
) -> tuple[list[str], str]:
    if sender.isascii() and recipient.isascii() and data.isascii():
        return [], "ascii"
    # A non-ASCII local part (RFC 6531) needs SMTPUTF8; IDNA already handled the domains.
    if client.is_ehlo_or_helo_needed:
        await client.ehlo()
    if not client.supports_extension("smtputf8"):
        raise SMTPNotSupported("SMTPUTF8 is required for a non-ASCII address")
    return ["SMTPUTF8"], "utf-8"


async def _reset(client: SMTP) -> None:
    """End a refused transaction so the connection can carry the next message."""
    if not client.is_connected:
        return
    try:
        await client.rset()
    except (SMTPException, OSError):
        client.close()


async def _quit(client: SMTP, quit_timeout: float) -> None:
    try:
        if client.is_connected:
            await client.quit(timeout=quit_timeout)
    except (SMTPException, OSError):
        pass  # the batch is decided; a rude goodbye changes nothing
    finally:
        client.close()
