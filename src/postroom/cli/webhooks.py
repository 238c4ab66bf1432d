"""``postroom webhooks parse``: verify and normalize a saved ESP webhook request."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

from postroom.cli.common import fail, settings_or_exit

app = typer.Typer(help="ESP webhooks: check saved requests.", no_args_is_help=True)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"{what} {path}: {exc.strerror or exc}")


def _headers(raw: bytes, path: Path) -> dict[str, str]:
    """A JSON object of headers, or ``Name: value`` lines as copied from a request log."""
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        lines = raw.decode("utf-8", "replace").splitlines()
        pairs = [line.partition(":") for line in lines if line.strip()]
        if not all(sep for _name, sep, _value in pairs):
            fail(f"--headers {path}: neither a JSON object nor 'Name: value' lines")
        return {name.strip(): value.strip() for name, _sep, value in pairs}
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        fail(f"--headers {path}: a JSON object of header names to string values")
    return parsed


def _now(value: str | None) -> float:
    if value is None:
        return time.time()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        fail(f"--now {value!r}: seconds since the epoch or an ISO 8601 time")


@app.command()
def parse(
    provider: Annotated[str, typer.Option(help="sendgrid, mailgun, ses or postmark.")],
    body: Annotated[Path, typer.Option(help="The request body, byte for byte.")],
    headers: Annotated[
        Path | None, typer.Option(help="The request headers: a JSON object or 'Name: value' lines.")
    ] = None,
    now: Annotated[
        str | None,
        typer.Option(help="Check the timestamp against this time instead of the clock."),
    ] = None,
) -> None:
    """Verify a saved request with the configured keys and print one JSON object per event.

    Exit status 1, with the reason on one line, when the request does not verify.
    """
    from postroom.errors import ConfigurationError, WebhookPayloadError, WebhookVerificationError
    from postroom.webhooks import PROVIDERS, build_receiver
    from postroom.webhooks.base import verify_and_parse

    if provider not in PROVIDERS:
        fail(f"--provider must be one of {', '.join(PROVIDERS)}")
    raw_body = _read(body, "--body")
    request_headers = _headers(_read(headers, "--headers"), headers) if headers else {}
    try:
        receiver = build_receiver(provider, settings_or_exit())
        events = verify_and_parse(receiver, request_headers, raw_body, _now(now))
    except WebhookVerificationError as exc:
        fail(f"verification failed: {exc}")
    except (WebhookPayloadError, ConfigurationError) as exc:
        fail(str(exc))
    out = sys.stdout.buffer
    for event in events:
        out.write(event.to_json() + b"\n")
    out.flush()


@app.command()
def bench(
    batch: Annotated[
        int, typer.Option(help="Events per POST (SendGrid posts up to ~1,000).")
    ] = 100,
    events: Annotated[int, typer.Option(help="Events to post in all.")] = 30_000,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.")] = 32,
) -> None:
    """Events/s through POST /webhooks on the embedded default: signed SendGrid batches of
    --batch events, or with --batch 1, one Mailgun-style event per POST (HMAC, one-use token).
    The API runs as its own process on a fresh SQLite database; every event is a new one."""
    import asyncio
    import tempfile

    if batch < 1 or events < batch or concurrency < 1:
        raise typer.BadParameter("--batch, --events and --concurrency must be positive")
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as scratch:
        load = _BenchLoad(batch)
        server = load.start_api(Path(scratch))
        try:
            rate, posts = asyncio.run(load.post(events // batch, concurrency))
        finally:
            server.terminate()
            server.wait(timeout=30)
    kind = "SendGrid batches" if batch > 1 else "single Mailgun events"
    print(f"{kind}: {batch} event(s) per POST, {concurrency} in flight")
    print(f"ingested         {rate:,.0f} events/s ({posts:,.0f} POST/s)")


class _BenchLoad:
    """Signed requests for the benchmark, and the API process that receives them."""

    def __init__(self, batch: int) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self.batch = batch
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.mailgun_key = secrets.token_urlsafe(16)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

    def start_api(self, scratch: Path) -> subprocess.Popen[bytes]:
        from cryptography.hazmat.primitives import serialization

        public = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
        env.update(
            POSTROOM_DATA_DIR=str(scratch),
            POSTROOM_API_KEYS=secrets.token_urlsafe(16),
            POSTROOM_SECRET_KEY=secrets.token_urlsafe(32),
            POSTROOM_SENDGRID_WEBHOOK_PUBLIC_KEY=base64.b64encode(public).decode(),
            POSTROOM_MAILGUN_WEBHOOK_SIGNING_KEY=self.mailgun_key,
        )
        command = [sys.executable, "-m", "postroom", "api", "--port", str(self.port)]
        return subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def request(self, n: int) -> tuple[str, dict[str, str], bytes]:
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
                "recipient": f"reader-{n}@example.com",
                "message": {"headers": {"message-id": f"{n}@bench.example"}},
                "delivery-status": {"code": 250, "message": "OK"},
            }
            body = orjson.dumps({"signature": signature, "event-data": data})
            return "mailgun", {"Content-Type": "application/json"}, body
        items = [
            {
                "email": f"reader-{n}-{i}@example.com",
                "event": "delivered",
                "response": "250 OK",
                "sg_event_id": f"event-{n}-{i}",
                "sg_message_id": f"bench{n}.filter0001.{i}",
                "timestamp": int(time.time()),
            }
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

    async def post(self, requests: int, concurrency: int) -> tuple[float, float]:
        """(events/s, POST/s) once the API answers; every answer must be a 200, and the
        answers together must report every event stored."""
        import asyncio

        import aiohttp

        pending = [self.request(n) for n in range(requests)]
        base = f"http://127.0.0.1:{self.port}"
        async with aiohttp.ClientSession() as session:
            for _ in range(300):  # the API migrates its database first
                try:
                    async with session.get(f"{base}/healthz") as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)

            stored = 0

            async def post_all() -> None:
                nonlocal stored
                while pending:
                    provider, headers, body = pending.pop()
                    url = f"{base}/webhooks/{provider}"
                    async with session.post(url, data=body, headers=headers) as answer:
                        if answer.status != 200:
                            fail(f"the API answered {answer.status}: {await answer.text()}")
                        stored += orjson.loads(await answer.read())["stored"]

            started = time.perf_counter()
            await asyncio.gather(*(post_all() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        if stored != requests * self.batch:
            fail(f"the API stored {stored:,} of {requests * self.batch:,} events")
        return requests * self.batch / elapsed, requests / elapsed
