"""SmtpProvider with a DKIM signer → a real aiosmtpd sink; the received bytes are verified against
the public key served by a local DNS server (tests/dns_server.py), by dkimpy and OpenDKIM."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dkim
import dns.resolver
import pytest
from aiosmtpd.controller import Controller
from dnslib.server import DNSLogger, DNSServer
from tests.dns_server import ZoneResolver, serve_zone, zone_rrs

from postroom.config import SmtpSecurity
from postroom.deliverability.dkim import DkimKey, DkimSigner, generate_key
from postroom.messages import RenderedEmail
from postroom.providers.smtp import SmtpProvider

DOMAIN = "example.com"
SELECTOR = "selector"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- the local DNS server (tests/dns_server.py) ------------------------------------------------

StartDns = Callable[[dict[str, str]], int]


def txt_zone(records: dict[str, str]) -> dict[str, dict[str, list[str]]]:
    return {name: {"TXT": [value]} for name, value in records.items()}


@pytest.fixture
def start_dns() -> Iterator[StartDns]:
    """Factory: serve TXT ``records`` on 127.0.0.1 and return the port."""
    with ExitStack() as stack:

        def start(records: dict[str, str]) -> int:
            address = stack.enter_context(serve_zone(txt_zone(records)))
            return int(address.rsplit(":", 1)[1])

        yield start


def dnspython_dnsfunc(port: int) -> Callable[..., bytes | None]:
    """dkimpy's DNS hook, answered by the local server through dnspython."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.lifetime = 5.0

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode(), "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        return b"".join(answer[0].strings)

    return dnsfunc


# --- an SMTP sink -------------------------------------------------------------------------------


@dataclass
class Sink:
    received: list[bytes] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.received.append(envelope.content)
        return "250 2.0.0 Ok: queued as Q1"


@pytest.fixture
def sink_port() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, enable_SMTPUTF8=True)
    controller.start()
    yield sink, port
    controller.stop()


def make_email(send_id: str = "S1", recipient: str = "user@example.org") -> RenderedEmail:
    return RenderedEmail(
        send_id=send_id,
        message_id=f"<{send_id}@postroom.example>",
        sender="Postroom <noreply@example.com>",
        recipient=recipient,
        recipient_name="Zoë Doe",
        subject=f"A new post for you {send_id}",
        html="<p>Hi Zoë</p>\n",
        # Lines starting with a dot are dot-stuffed on the wire and must verify after unstuffing.
        text="Hi Zoë\n.a line that starts with a dot\n.\nBye\n",
        date="Mon, 01 Jan 2024 12:00:00 +0000",
        headers={
            "List-Unsubscribe": f"<https://example.com/unsubscribe/{send_id}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        category="marketing",
    )


@pytest.fixture(scope="module")
def rsa_key() -> DkimKey:
    return generate_key(SELECTOR)


async def send_signed(port: int, key: DkimKey, emails: list[RenderedEmail]) -> None:
    signer = DkimSigner(key.selector, DOMAIN, key.private_pem)
    provider = SmtpProvider("127.0.0.1", port, SmtpSecurity.NONE, timeout=5.0, signer=signer)
    results = await provider.send(emails)
    assert all(result.ok for result in results), [r.error for r in results]


async def test_signed_mail_verifies_against_local_dns(
    sink_port: tuple[Sink, int], start_dns: StartDns, rsa_key: DkimKey
) -> None:
    sink, port = sink_port
    dns_port = start_dns({rsa_key.dns_name(DOMAIN): rsa_key.dns_value()})
    dnsfunc = dnspython_dnsfunc(dns_port)
    assert dnsfunc(f"{SELECTOR}._domainkey.{DOMAIN}.".encode()) == rsa_key.dns_value().encode()

    await send_signed(port, rsa_key, [make_email("S1"), make_email("S2"), make_email("S3")])

    assert len(sink.received) == 3
    for content in sink.received:
        assert content.startswith(b"DKIM-Signature: ")
        assert b"\r\n..a line" not in content  # the sink got the unstuffed message
        assert dkim.verify(content, dnsfunc=dnsfunc)


async def test_tampered_mail_fails(
    sink_port: tuple[Sink, int], start_dns: StartDns, rsa_key: DkimKey
) -> None:
    sink, port = sink_port
    dnsfunc = dnspython_dnsfunc(start_dns({rsa_key.dns_name(DOMAIN): rsa_key.dns_value()}))
    await send_signed(port, rsa_key, [make_email()])
    [content] = sink.received
    assert dkim.verify(content, dnsfunc=dnsfunc)
    one_byte = [
        (b"\r\nBye\r\n", b"\r\nBya\r\n"),  # body (quoted-printable text part)
        (b"Subject: A new post", b"Subject: A new posT"),
        (b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"List-Unsubscribe-Post: X"),
    ]
    for old, new in one_byte:
        assert content.count(old) == 1, old
        assert not dkim.verify(content.replace(old, new), dnsfunc=dnsfunc), old


async def test_no_key_in_dns_fails(sink_port: tuple[Sink, int], start_dns: StartDns) -> None:
    sink, port = sink_port
    key = generate_key(SELECTOR, bits=1024)
    dnsfunc = dnspython_dnsfunc(start_dns({}))
    await send_signed(port, key, [make_email()])
    assert not dkim.verify(sink.received[0], dnsfunc=dnsfunc)


async def test_smtputf8_recipient_is_signed(
    sink_port: tuple[Sink, int], start_dns: StartDns, rsa_key: DkimKey
) -> None:
    sink, port = sink_port
    dnsfunc = dnspython_dnsfunc(start_dns({rsa_key.dns_name(DOMAIN): rsa_key.dns_value()}))
    await send_signed(port, rsa_key, [make_email(recipient="zoë@bücher.example")])
    [content] = sink.received
    assert "zoë@xn--bcher-kva.example".encode() in content  # raw UTF-8 in the To field
    assert dkim.verify(content, dnsfunc=dnsfunc)


async def test_unsigned_provider_is_unchanged(sink_port: tuple[Sink, int]) -> None:
    sink, port = sink_port
    provider = SmtpProvider("127.0.0.1", port, SmtpSecurity.NONE, timeout=5.0)
    [result] = await provider.send([make_email()])
    assert result.ok
    assert b"DKIM-Signature" not in sink.received[0]


# --- independent check: OpenDKIM ----------------------------------------------------------------


@pytest.fixture
def opendkim_verify(tmp_path: Path) -> Callable[[bytes, DkimKey], bool]:
    """Run ``opendkim-testmsg`` (libopendkim) against a local DNS server.

    libopendkim resolves through the system resolver, which only talks to port 53 of the
    servers in /etc/resolv.conf. So the DNS server listens on port 53 of a random loopback
    address, and opendkim-testmsg runs in a private mount namespace where /etc/resolv.conf is a
    bind mount naming that address: the host's resolver configuration is never touched.
    (tests/dns_server.py serves on a free port only, hence a server of its resolver here.)
    """
    if shutil.which("opendkim-testmsg") is None:
        pytest.skip("opendkim-testmsg not installed (Debian opendkim-tools)")
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to point opendkim-testmsg at the local DNS server")
    address = f"127.{secrets.randbelow(200) + 50}.{secrets.randbelow(250) + 1}.53"
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {address}\noptions timeout:2 attempts:1\n")
    mount = f"mount --bind {resolv} /etc/resolv.conf"
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", mount], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot bind-mount resolv.conf in a namespace: {probe.stderr!r}")

    def verify(message: bytes, key: DkimKey) -> bool:
        resolver = ZoneResolver(zone_rrs(txt_zone({key.dns_name(DOMAIN): key.dns_value()})))
        quiet = DNSLogger(log="-recv,-send,-request,-reply,-truncated,-data", prefix=False)
        try:
            server = DNSServer(resolver, address=address, port=53, logger=quiet)
        except OSError as exc:
            pytest.skip(f"cannot listen on {address}:53: {exc}")
        server.start_thread()
        try:
            run = subprocess.run(
                ["unshare", "--mount", "sh", "-c", f"{mount} && exec opendkim-testmsg"],
                input=message,
                capture_output=True,
                timeout=30,
            )
        finally:
            server.stop()
            server.server.server_close()
        # Silent exit 0 means a valid signature; a bad one prints "dkim_eom(): Bad signature".
        return run.returncode == 0 and not run.stdout and not run.stderr

    return verify


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
async def test_opendkim_agrees(
    sink_port: tuple[Sink, int],
    opendkim_verify: Callable[[bytes, DkimKey], bool],
    algorithm: str,
) -> None:
    sink, port = sink_port
    key = generate_key(SELECTOR, algorithm=algorithm)  # type: ignore[arg-type]
    await send_signed(port, key, [make_email()])
    [content] = sink.received
    assert opendkim_verify(content, key)
    assert not opendkim_verify(content.replace(b"\r\nBye\r\n", b"\r\nBya\r\n"), key)
    assert not opendkim_verify(content.replace(b"A new post", b"A new posT"), key)
