"""SmtpProvider against a real aiosmtpd sink (plain, STARTTLS, TLS, AUTH) and tiny fake servers."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from postroom.config import SmtpSecurity
from postroom.errors import (
    AmbiguousProviderError,
    PermanentProviderError,
    RateLimitedError,
    TransientProviderError,
)
from postroom.messages import RenderedEmail
from postroom.providers.smtp import RATE_LIMIT_RETRY_AFTER, SmtpProvider

# The AUTH tests run AUTH without TLS on purpose (auth_require_tls=False, as the brief asks, so
# the LOGIN/PLAIN exchange is visible); aiosmtpd warns about exactly that configuration.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


def make_email(
    send_id: str = "S1", recipient: str = "user@example.com", **kw: Any
) -> RenderedEmail:
    fields: dict[str, Any] = {
        "send_id": send_id,
        "message_id": f"<{send_id}@postroom.example>",
        "sender": "Postroom <noreply@postroom.example>",
        "recipient": recipient,
        "recipient_name": "Zoë Doe",
        "subject": f"Hello {send_id}",
        "html": "<p>Hi Zoë</p>\n",
        "text": "Hi Zoë\n.a line that starts with a dot\n.\n",
        "date": "Mon, 01 Jan 2024 12:00:00 +0000",
    }
    fields.update(kw)
    return RenderedEmail(**fields)


@dataclass
class Sink:
    """aiosmtpd handler: records envelopes; RCPT replies can be scripted per address."""

    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str = "250 2.0.0 Ok: queued as QUEUE123"
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return self.data_reply


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


StartSink = Callable[..., tuple[Sink, int]]


@pytest.fixture
def start_sink() -> Iterator[StartSink]:
    controllers: list[Controller] = []

    def start(sink: Sink | None = None, **smtp_kwargs: Any) -> tuple[Sink, int]:
        sink = sink or Sink()
        port = free_port()
        controller = Controller(sink, hostname="127.0.0.1", port=port, **smtp_kwargs)
        controller.start()
        controllers.append(controller)
        return sink, port

    yield start
    for controller in controllers:
        controller.stop()


def provider(port: int, security: SmtpSecurity = SmtpSecurity.NONE, **kw: Any) -> SmtpProvider:
    kw.setdefault("timeout", 5.0)
    return SmtpProvider("127.0.0.1", port, security, **kw)


def parse(content: bytes) -> EmailMessage:
    message = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def assert_delivered(sink: Sink, original: RenderedEmail) -> None:
    [(mail_from, rcpt_tos, content)] = sink.received
    assert mail_from == "noreply@postroom.example"
    assert rcpt_tos == [original.recipient]
    message = parse(content)
    assert message["Message-ID"] == original.message_id
    assert message["To"].addresses[0].display_name == "Zoë Doe"
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n") == original.text
    assert html.get_content().replace("\r\n", "\n") == original.html


async def test_plain_delivery(start_sink: StartSink) -> None:
    sink, port = start_sink()
    original = make_email()
    [result] = await provider(port).send([original])
    assert result.ok, result.error
    assert result.provider_message_id == "QUEUE123"
    assert_delivered(sink, original)


async def test_message_id_when_reply_has_no_queue_id(start_sink: StartSink) -> None:
    _, port = start_sink(Sink(data_reply="250 OK"))
    [result] = await provider(port).send([make_email()])
    assert result.provider_message_id == "<S1@postroom.example>"


async def test_starttls(
    start_sink: StartSink, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    sink, port = start_sink(tls_context=server_tls, require_starttls=True)
    original = make_email()
    [result] = await provider(port, SmtpSecurity.STARTTLS, tls_context=client_tls).send([original])
    assert result.ok, result.error
    assert_delivered(sink, original)


async def test_implicit_tls(
    start_sink: StartSink, server_tls: ssl.SSLContext, client_tls: ssl.SSLContext
) -> None:
    sink, port = start_sink(ssl_context=server_tls)
    original = make_email()
    [result] = await provider(port, SmtpSecurity.TLS, tls_context=client_tls).send([original])
    assert result.ok, result.error
    assert_delivered(sink, original)


async def test_untrusted_certificate_is_transient(
    start_sink: StartSink, server_tls: ssl.SSLContext
) -> None:
    _, port = start_sink(ssl_context=server_tls)
    untrusting = ssl.create_default_context()  # does not know the test CA
    [result] = await provider(port, SmtpSecurity.TLS, tls_context=untrusting).send([make_email()])
    assert isinstance(result.error, TransientProviderError)


def authenticator(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (b"user", b"secret")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd replies 535


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
async def test_auth_success(start_sink: StartSink, mechanism: str) -> None:
    other = {"LOGIN": "PLAIN", "PLAIN": "LOGIN"}[mechanism]
    sink, port = start_sink(
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
        auth_exclude_mechanism=[other],
    )
    original = make_email()
    [result] = await provider(port, username="user", password="secret").send([original])
    assert result.ok, result.error
    assert_delivered(sink, original)


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
async def test_auth_failure_is_permanent_for_the_whole_batch(
    start_sink: StartSink, mechanism: str, caplog: pytest.LogCaptureFixture
) -> None:
    other = {"LOGIN": "PLAIN", "PLAIN": "LOGIN"}[mechanism]
    sink, port = start_sink(
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,
        auth_exclude_mechanism=[other],
    )
    batch = [make_email("S1"), make_email("S2")]
    results = await provider(port, username="user", password="wrong").send(batch)
    assert [r.send_id for r in results] == ["S1", "S2"]
    for result in results:
        assert isinstance(result.error, PermanentProviderError)
        assert not result.error.suppress
        assert result.error.code is not None and result.error.code.startswith("535")
    assert sink.received == []
    assert any(
        r.levelname == "ERROR" and r.name == "postroom.providers.smtp" for r in caplog.records
    )


async def test_auth_required_but_not_given_is_permanent(start_sink: StartSink) -> None:
    _, port = start_sink(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    [result] = await provider(port).send([make_email()])
    assert isinstance(result.error, PermanentProviderError)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("450 4.7.1 Greylisted, come back later", RateLimitedError),
        ("451 4.3.0 Temporary local problem", TransientProviderError),
        ("550 5.1.1 No such user here", PermanentProviderError),
    ],
)
async def test_rcpt_replies(start_sink: StartSink, reply: str, expected: type) -> None:
    sink, port = start_sink(Sink(rcpt_replies={"user@example.com": reply}))
    [result] = await provider(port).send([make_email()])
    assert type(result.error) is expected
    if isinstance(result.error, RateLimitedError):
        assert result.error.retry_after == RATE_LIMIT_RETRY_AFTER
    if isinstance(result.error, PermanentProviderError):
        assert result.error.suppress is True
    assert sink.received == []


async def test_batch_middle_rejected_gives_ok_error_ok(start_sink: StartSink) -> None:
    sink, port = start_sink(Sink(rcpt_replies={"bad@example.com": "550 5.1.1 No such user"}))
    batch = [make_email("S1"), make_email("S2", recipient="bad@example.com"), make_email("S3")]
    results = await provider(port).send(batch)
    assert [r.send_id for r in results] == ["S1", "S2", "S3"]
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, PermanentProviderError) and results[1].error.suppress
    assert [rcpt for _, rcpt, _ in sink.received] == [["user@example.com"], ["user@example.com"]]


async def test_connection_refused_is_transient_for_every_message() -> None:
    results = await provider(free_port()).send([make_email("S1"), make_email("S2")])
    assert [type(r.error) for r in results] == [TransientProviderError] * 2


# --- a scripted server for failures aiosmtpd cannot produce ------------------------------------


@dataclass
class Script:
    """What the fake server does at DATA: 'drop-after-content', 'silent-after-content',
    'drop-at-data' (before 354), or 'accept'. One script entry per connection."""

    modes: list[str]
    connections: int = 0
    messages: list[bytes] = field(default_factory=list)


async def fake_session(
    script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    mode = script.modes[min(script.connections, len(script.modes) - 1)]
    script.connections += 1
    writer.write(b"220 fake ESMTP\r\n")
    try:
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-fake\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                if mode == "drop-at-data":
                    break
                writer.write(b"354 go ahead\r\n")
                content = await reader.readuntil(b"\r\n.\r\n")
                script.messages.append(content)
                if mode == "drop-after-content":
                    break
                if mode == "garbled-after-content":
                    writer.write(b"garbage\r\n")
                    await writer.drain()
                    await reader.read()  # no reply; wait until the client gives up
                    break
                if mode == "silent-after-content":
                    await reader.read()  # no reply; wait until the client gives up
                    break
                writer.write(b"250 2.0.0 Ok: queued as FAKE1\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                break
            else:
                writer.write(b"250 OK\r\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def fake_server() -> AsyncIterator[Callable[[Script], Any]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> int:
        server = await asyncio.start_server(lambda r, w: fake_session(script, r, w), "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_drop_after_data_content_is_ambiguous(fake_server: Any) -> None:
    script = Script(["drop-after-content"])
    [result] = await provider(await fake_server(script)).send([make_email()])
    assert isinstance(result.error, AmbiguousProviderError)
    assert len(script.messages) == 1  # the server did receive the whole message


async def test_timeout_after_data_content_is_ambiguous(fake_server: Any) -> None:
    script = Script(["silent-after-content"])
    [result] = await provider(await fake_server(script), timeout=0.5).send([make_email()])
    assert isinstance(result.error, AmbiguousProviderError)


async def test_garbled_reply_after_data_content_is_ambiguous(fake_server: Any) -> None:
    script = Script(["garbled-after-content"])
    [result] = await provider(await fake_server(script)).send([make_email()])
    assert isinstance(result.error, AmbiguousProviderError)


async def test_drop_before_354_is_transient(fake_server: Any) -> None:
    script = Script(["drop-at-data"])
    [result] = await provider(await fake_server(script)).send([make_email()])
    assert type(result.error) is TransientProviderError
    assert script.messages == []


async def test_reconnects_after_a_drop_and_goes_on(fake_server: Any) -> None:
    script = Script(["drop-after-content", "accept"])
    batch = [make_email("S1"), make_email("S2"), make_email("S3")]
    results = await provider(await fake_server(script)).send(batch)
    assert isinstance(results[0].error, AmbiguousProviderError)
    assert [r.provider_message_id for r in results[1:]] == ["FAKE1", "FAKE1"]
    assert script.connections == 2


async def test_remaining_messages_fail_when_reconnect_fails(fake_server: Any) -> None:
    script = Script(["drop-after-content"])
    port = await fake_server(script)
    smtp = provider(port)
    original_client = smtp._client
    calls = 0

    def client_then_refuse() -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            smtp.port = free_port()  # nothing listens there any more
        return original_client()

    smtp._client = client_then_refuse  # type: ignore[method-assign]
    results = await smtp.send([make_email("S1"), make_email("S2"), make_email("S3")])
    assert isinstance(results[0].error, AmbiguousProviderError)
    assert [type(r.error) for r in results[1:]] == [TransientProviderError] * 2
    await smtp.close()


async def test_close_is_idempotent() -> None:
    smtp = provider(free_port())
    await smtp.close()
    await smtp.close()


async def test_control_character_in_address_fails_only_that_message(start_sink: StartSink) -> None:
    sink, port = start_sink()
    batch = [make_email("S1", recipient="bad\x01@example.com"), make_email("S2")]
    results = await provider(port).send(batch)
    assert isinstance(results[0].error, PermanentProviderError)
    assert results[1].ok
    assert len(sink.received) == 1
