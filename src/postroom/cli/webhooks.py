"""``postroom webhooks parse``: verify and normalize a saved ESP webhook request."""

from __future__ import annotations

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
    bound: Annotated[
        bool,
        typer.Option(help="Put a send per event in the ledger first, and name it in the event."),
    ] = False,
    database: Annotated[
        str | None,
        typer.Option(
            help="Database URL (default: a fresh SQLite file); the benchmark's rows from an "
            "earlier run on it are removed first."
        ),
    ] = None,
) -> None:
    """Events/s through POST /webhooks on the embedded default: signed SendGrid batches of
    --batch events, or with --batch 1, one Mailgun-style event per POST (HMAC, one-use token).
    The API runs as its own process on a fresh SQLite database (or --database); every event
    is a new one."""
    import tempfile

    from postroom.bench.webhooks import run

    if batch < 1 or events < batch or concurrency < 1:
        raise typer.BadParameter("--batch, --events and --concurrency must be positive")
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as scratch:
        try:
            rate = run(
                batch, events, concurrency, Path(scratch), bound=bound, database_url=database
            )
        except RuntimeError as exc:
            fail(str(exc))
    kind = "SendGrid batches" if batch > 1 else "single Mailgun events"
    about = "each bound to a send" if bound else "bound to no send"
    where = "PostgreSQL" if database and database.startswith("postgresql") else "SQLite"
    print(f"{kind}: {batch} event(s) per POST, {about}, {concurrency} in flight, {where}")
    print(
        f"ingested         {rate.events_per_second:,.0f} events/s "
        f"({rate.posts_per_second:,.0f} POST/s)"
    )
