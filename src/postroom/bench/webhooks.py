"""Events/s through ``POST /webhooks`` (``postroom webhooks bench``): the API in a process of
its own on a fresh SQLite database, fed signed requests whose events are all new.

With ``batch`` > 1 each request is a signed SendGrid batch (ECDSA P-256), with 1 a signed
Mailgun event (HMAC, a one-use token), so every request goes the real way: verify, parse,
ingest, commit, answer. By default the events name no send of ours (stored, bound to
nothing); with ``bound`` the ledger first gets one send per event and every event carries
its send id, so each also moves that send's feedback state, as real traffic does. The
answers must all be 200 and together report every event stored (else RuntimeError, as the
other benchmarks fail).

The load comes from a bare HTTP/1.1 client (pre-built requests on keep-alive connections,
answers read by their Content-Length): on two cores the client shares the machine with the
API, and aiohttp's client took ~110 µs of CPU a request, nearly half of what the API spent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class WebhookRate:
    events_per_second: float
    posts_per_second: float


def run(
    batch: int,
    events: int,
    concurrency: int,
    scratch: Path,
    *,
    bound: bool = False,
    database_url: str | None = None,
) -> WebhookRate:
    """Start the API on ``scratch`` (or on ``database_url``, whose rows from an earlier run
    are removed first), post ``events`` in requests of ``batch``, stop it."""
    url = database_url or f"sqlite:///{scratch / 'postroom.db'}"
    load = BenchLoad(batch, bound=bound)
    _prepare(url, fresh=database_url is None)
    if bound:
        load.add_sends(url, events // batch)
    server = load.start_api(scratch, url)
    try:
        rate = asyncio.run(load.post(events // batch, concurrency))
    finally:
        server.terminate()
        server.wait(timeout=30)
    if bound:  # every event moved its send's state
        states = _scalar(
            url,
            "SELECT count(*) FROM send_feedback WHERE state = 'delivered' "
            "AND send_id LIKE 'BENCH%'",
        )
        if states != events // batch * batch:
            raise RuntimeError(f"{states:,} sends of {events // batch * batch:,} were delivered")
    return rate


def _prepare(url: str, *, fresh: bool) -> None:
    """Migrate the database; on a given one, remove what an earlier run left (its sends,
    states, events and tokens all carry the benchmark's marks)."""
    from postroom.store.migrate import upgrade

    upgrade(url)
    if fresh:
        return
    _execute(
        url,
        "DELETE FROM events WHERE recipient LIKE 'reader-%@example.com'",
        "DELETE FROM send_feedback WHERE send_id LIKE 'BENCH%'",
        "DELETE FROM sends WHERE id LIKE 'BENCH%'",
        "DELETE FROM webhook_tokens WHERE key LIKE 'mailgun:token-%'",
    )


def _engine(url: str) -> Any:
    from sqlalchemy import create_engine

    from postroom.store.database import sync_url

    return create_engine(sync_url(url))


def _execute(url: str, *statements: str, rows: list[dict[str, Any]] | None = None) -> None:
    from sqlalchemy import text

    engine = _engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement), rows) if rows else conn.execute(text(statement))
    finally:
        engine.dispose()


def _scalar(url: str, query: str) -> int:
    from sqlalchemy import text

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


class BenchLoad:
    """Signed requests for the benchmark, and the API process that receives them."""

    def __init__(self, batch: int, *, bound: bool = False) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.batch = batch
        self.bound = bound
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.mailgun_key = secrets.token_urlsafe(16)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def start_api(self, scratch: Path, database_url: str) -> subprocess.Popen[bytes]:
        from cryptography.hazmat.primitives import serialization

        public = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
        env.update(
            POSTROOM_DATA_DIR=str(scratch),
            POSTROOM_DATABASE_URL=database_url,
            POSTROOM_API_KEYS=secrets.token_urlsafe(16),
            POSTROOM_SECRET_KEY=secrets.token_urlsafe(32),
            POSTROOM_SENDGRID_WEBHOOK_PUBLIC_KEY=base64.b64encode(public).decode(),
            POSTROOM_MAILGUN_WEBHOOK_SIGNING_KEY=self.mailgun_key,
        )
        command = [sys.executable, "-m", "postroom", "api", "--port", str(self.port)]
        return subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def add_sends(self, database_url: str, requests: int) -> None:
        """Put one sent email in the ledger per event (the database is migrated)."""
        from datetime import UTC, datetime

        from postroom.store.database import is_sqlite
        from postroom.store.sqlite_driver import stored_time

        clock = datetime.now(UTC)
        # SQLite's times as the store writes them there
        now = stored_time(clock) if is_sqlite(database_url) else clock
        rows = [
            {"id": _send_id(n, i), "key": f"bench-{n}-{i}", "to": _recipient(n, i), "now": now}
            | {"doc": b"{}"}
            for n in range(requests)
            for i in range(self.batch)
        ]
        _execute(
            database_url,
            "INSERT INTO sends (id, idempotency_key, recipient, email_type, priority, status, "
            "attempts, document, content_hash, created_at, updated_at) "
            "VALUES (:id, :key, :to, 'welcome', 'transactional', 'sent', 1, :doc, "
            "'0000000000000000000000000000000000000000000000000000000000000000', :now, :now)",
            rows=rows,
        )

    def request(self, n: int) -> tuple[str, dict[str, str], bytes]:
        """(provider, headers, body) of the ``n``-th request."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        stamp = str(int(time.time()))
        if self.batch == 1:
            token = f"token-{n}"
            digest = hmac.new(self.mailgun_key.encode(), (stamp + token).encode(), hashlib.sha256)
            signature = {"timestamp": stamp, "token": token, "signature": digest.hexdigest()}
            data = {
                "event": "delivered",
                "id": f"event-{n}",
                "timestamp": time.time(),
                "recipient": _recipient(n, 0),
                "message": {"headers": {"message-id": f"{n}@bench.example"}},
                "delivery-status": {"code": 250, "message": "OK"},
            }
            if self.bound:
                data["user-variables"] = {"postroom_send_id": _send_id(n, 0)}
            body = orjson.dumps({"signature": signature, "event-data": data})
            return "mailgun", {"Content-Type": "application/json"}, body
        items = [
            {
                "email": _recipient(n, i),
                "event": "delivered",
                "response": "250 OK",
                "sg_event_id": f"event-{n}-{i}",
                "sg_message_id": f"bench{n}.filter0001.{i}",
                "timestamp": int(time.time()),
            }
            | ({"postroom_send_id": _send_id(n, i)} if self.bound else {})
            for i in range(self.batch)
        ]
        body = orjson.dumps(items) + b"\r\n"
        signed = self.key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        headers = {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signed).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        }
        return "sendgrid", headers, body

    async def post(self, requests: int, concurrency: int) -> WebhookRate:
        """Post ``requests`` requests, ``concurrency`` at a time, once the API answers."""
        pending = [self._wire(n) for n in range(requests)]
        await self._wait_for_api()
        started = time.perf_counter()
        stored = await asyncio.gather(*(self._post_all(pending) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        if sum(stored) != requests * self.batch:
            raise RuntimeError(
                f"the API stored {sum(stored):,} of {requests * self.batch:,} events"
            )
        return WebhookRate(requests * self.batch / elapsed, requests / elapsed)

    def _wire(self, n: int) -> bytes:
        """The ``n``-th request as sent: an HTTP/1.1 POST on a keep-alive connection."""
        provider, headers, body = self.request(n)
        lines = [f"POST /webhooks/{provider} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _wait_for_api(self) -> None:
        """Until ``GET /healthz`` answers 200 (the API migrates its database first)."""
        health = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode()
        for _ in range(300):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            try:
                writer.write(health)
                status, _body = await _answer(reader)
            except (OSError, asyncio.IncompleteReadError):
                status = 0
            finally:
                writer.close()
            if status == 200:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the API did not answer GET /healthz within 30 s")

    async def _post_all(self, pending: list[bytes]) -> int:
        """Post requests from ``pending`` one after another on one connection; the events
        the answers report stored."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        stored = 0
        try:
            while pending:
                writer.write(pending.pop())
                status, answer = await _answer(reader)
                if status != 200:
                    raise RuntimeError(
                        f"the API answered {status}: {answer.decode(errors='replace')}"
                    )
                stored += int(orjson.loads(answer)["stored"])
        finally:
            writer.close()
        return stored


def _send_id(n: int, i: int) -> str:
    """The ledger id of event ``i`` of request ``n`` (26 characters, as a ULID)."""
    return f"BENCH{n:011d}{i:010d}"


def _recipient(n: int, i: int) -> str:
    return f"reader-{n}-{i}@example.com"


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, body) of the next answer; the API always sends a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head[:-4].split(b"\r\n")
    length = 0
    for line in header_lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return int(status_line.split()[1]), await reader.readexactly(length)
