"""A local authoritative DNS server (dnslib, UDP + TCP on 127.0.0.1) serving a zone for tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

# {"example.com": {"TXT": ["v=spf1 -all"], "MX": ["10 mx.example.com"]}}: TXT values are raw text
# (split into 255-byte strings here); other types are in zone-file syntax.
Records = Mapping[str, Mapping[str, Sequence[str]]]
Zone = str | Records


def _txt(value: str) -> str:
    data = value.encode()
    chunks = [data[i : i + 255].decode() for i in range(0, len(data), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def zone_rrs(zone: Zone) -> list[RR]:
    """Parse a zone-file string, or build resource records from a dict of records."""
    if isinstance(zone, str):
        return list(RR.fromZone(zone))
    lines = []
    for name, by_type in zone.items():
        for rtype, values in by_type.items():
            for value in values:
                data = _txt(value) if rtype.upper() == "TXT" else value
                lines.append(f"{name.rstrip('.')}. 300 IN {rtype.upper()} {data}")
    return list(RR.fromZone("\n".join(lines))) if lines else []


def _key(name: object) -> str:
    return str(name).rstrip(".").lower()


class ZoneResolver(BaseResolver):  # type: ignore[misc]
    """Answers from the zone like an authoritative server, chasing CNAMEs inside it.

    Unlike dnslib's own ZoneResolver it answers NOERROR with no data (not NXDOMAIN) for a name
    that exists without the asked type, and follows CNAME chains, as resolvers expect.
    """

    def __init__(self, rrs: Sequence[RR]) -> None:
        self.records: dict[tuple[str, int], list[RR]] = {}
        for rr in rrs:
            self.records.setdefault((_key(rr.rname), rr.rtype), []).append(rr)
        self.names = {name for name, _ in self.records}

    def _exists(self, name: str) -> bool:
        return any(n == name or n.endswith("." + name) for n in self.names)

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name, qtype = _key(request.q.qname), request.q.qtype
        for _ in range(8):  # bound CNAME chains (and loops)
            cname = self.records.get((name, QTYPE.CNAME))
            if cname and qtype != QTYPE.CNAME:
                reply.add_answer(*cname)
                name = _key(cname[0].rdata.label)
                continue
            reply.add_answer(*self.records.get((name, qtype), []))
            break
        if not reply.rr and not self._exists(name):
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class _Logger(DNSLogger):  # type: ignore[misc]
    """Quiet, but keeps the server's errors so the test can fail on them."""

    def __init__(self) -> None:
        super().__init__(log="-recv,-send,-request,-reply,-truncated,-data", prefix=False)
        self.errors: list[str] = []

    def log_error(self, handler: Any, e: Exception) -> None:
        self.errors.append(repr(e))


def _bind(resolver: ZoneResolver, logger: _Logger) -> tuple[DNSServer, DNSServer, int]:
    """A UDP and a TCP server on one free port (TCP is used after a truncated UDP answer)."""
    for _ in range(20):
        udp = DNSServer(resolver, address="127.0.0.1", port=0, logger=logger)
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(resolver, address="127.0.0.1", port=port, tcp=True, logger=logger)
        except OSError:  # the TCP side of that port is taken: try another port
            udp.server.server_close()
            continue
        return udp, tcp, port
    raise RuntimeError("no free UDP+TCP port on 127.0.0.1")


@contextmanager
def serve_zone(zone: Zone, *more: Zone) -> Iterator[str]:
    """Serve the zones on 127.0.0.1 and yield "127.0.0.1:PORT"; stop the server afterwards.

    Several zones share one server, so a test can serve a domain and, say, the ESP hosts its SPF
    includes and CNAMEs point to.
    """
    logger = _Logger()
    rrs = [rr for z in (zone, *more) for rr in zone_rrs(z)]
    udp, tcp, port = _bind(ZoneResolver(rrs), logger)
    with ExitStack() as stack:
        for server in (udp, tcp):
            # a short poll interval: shutdown() waits up to one interval (0.5 s by default)
            thread = threading.Thread(
                target=server.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            )
            thread.start()
            stack.callback(thread.join)
            stack.callback(server.server.server_close)
            stack.callback(server.server.shutdown)
        yield f"127.0.0.1:{port}"
    assert not logger.errors, f"the test DNS server failed: {logger.errors}"


@pytest.fixture
def dns_server() -> Iterator[Callable[..., str]]:
    """Factory: ``dns_server(zone, *more)`` starts a server and returns "127.0.0.1:PORT"."""
    with ExitStack() as stack:
        yield lambda *zones: stack.enter_context(serve_zone(*zones))


def port_listening(port: int) -> bool:
    """Whether something listens on TCP ``port``: to show a stopped server released it."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
