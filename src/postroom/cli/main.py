"""``postroom``: run the service, send mail, operate the queues."""

from __future__ import annotations

import asyncio
import re
import signal
from typing import TYPE_CHECKING, Annotated, Any

import typer

from postroom.cli import (
    alerts,
    bench,
    campaign,
    dkim,
    dlq,
    dns,
    lint,
    stats,
    subscribers,
    sunset,
    suppressions,
    webhooks,
)
from postroom.cli.common import (
    CommandError,
    configure_logging,
    fail,
    json_object_option,
    pydantic_reason,
    run,
    settings_or_exit,
    with_postroom,
)
from postroom.config import Settings
from postroom.errors import InvalidMessageError, TemplateError, UnknownEmailTypeError
from postroom.messages import Priority, parse_event

if TYPE_CHECKING:
    from postroom.submission import Accepted
    from postroom.wiring import Postroom

app = typer.Typer(
    help="Postroom: email delivery for creator publishing platforms.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dlq.app, name="dlq")
app.add_typer(bench.app, name="bench")
app.add_typer(dkim.app, name="dkim")
app.add_typer(dns.app, name="dns")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(subscribers.app, name="subscribers")
app.add_typer(suppressions.app, name="suppressions")
app.add_typer(alerts.app, name="alerts")
app.add_typer(campaign.app, name="campaign")
app.command(name="lint")(lint.lint)
app.command(name="stats")(stats.stats)
app.command(name="sunset")(sunset.sunset)


def _serve(settings: Settings, *, run_worker: bool, host: str | None, port: int | None) -> None:
    import uvicorn

    from postroom.api.app import create_app
    from postroom.wiring import with_generated_secrets
    from postroom.worker.runner import Worker

    configure_logging(settings)
    settings = with_generated_secrets(settings)
    bind_host, bind_port = host or settings.host, port or settings.port
    key_file = settings.data_dir / "api-key"
    print(f"Postroom on http://{bind_host}:{bind_port}  (OpenAPI: /docs)")
    if key_file.exists():
        print(f"API key: {key_file.resolve()}")
    if settings.provider == "outbox":
        print(f"Outbox:  {(settings.data_dir / 'outbox').resolve()}")
    application = create_app(settings, run_worker=run_worker)
    Worker.settle_heap()  # the imported code, at least, is never garbage
    uvicorn.run(
        application,
        host=bind_host,
        port=bind_port,
        log_level="warning",
        access_log=False,
        log_config=None,  # uvicorn's records go through our JSON logging
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Run the API and a worker in one process (the embedded default)."""
    _serve(settings_or_exit(), run_worker=True, host=host, port=port)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Run the HTTP API only (run workers separately)."""
    _serve(settings_or_exit(), run_worker=False, host=host, port=port)


@app.command()
def worker(
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve this worker's Prometheus metrics on this port (0.0.0.0)."),
    ] = None,
) -> None:
    """Run a worker until SIGTERM or SIGINT; in-flight mail is finished or released."""
    from postroom.wiring import build_worker

    settings = settings_or_exit()
    configure_logging(settings)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port)

    async def main(pr: Postroom) -> None:
        from postroom.alerts.monitor import run_alerts

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        worker = build_worker(pr)
        worker.settle_heap()
        alerts_task = asyncio.create_task(run_alerts(pr, stop))
        try:
            await worker.run(stop)
        finally:
            stop.set()
            await alerts_task

    run(with_postroom(settings, main))


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    from postroom.store import migrate as migrations

    url = settings_or_exit().resolved_database_url

    def upgrade() -> str | None:
        migrations.upgrade(url)
        current, _head = migrations.pending_revision(url)
        return current

    print(f"database at revision {run(asyncio.to_thread(upgrade))}")


@app.command()
def send(
    email_type: Annotated[str, typer.Option("--type", help="A registered email type.")],
    to: Annotated[str, typer.Option(help="Recipient address.")],
    name: Annotated[str | None, typer.Option(help="Recipient name.")] = None,
    data: Annotated[str | None, typer.Option(help="template_data as JSON.")] = None,
    metadata: Annotated[str | None, typer.Option(help="metadata as JSON.")] = None,
    key: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
    priority: Annotated[Priority | None, typer.Option(help="Override the type's class.")] = None,
) -> None:
    """Queue one email (a worker or `serve` sends it) and print its id."""
    settings = settings_or_exit()
    document: dict[str, Any] = {
        "email_type": email_type,
        "recipient_email": to,
        "template_data": json_object_option(data, "data"),
        "metadata": json_object_option(metadata, "metadata"),
    }
    for field, value in (("recipient_name", name), ("idempotency_key", key)):
        if value is not None:
            document[field] = value
    if priority is not None:
        document["priority"] = priority.value
    try:
        event = parse_event(document, max_bytes=settings.max_document_bytes)
    except InvalidMessageError as exc:
        fail(_invalid(exc))

    from postroom.submission import submit

    async def action(pr: Postroom) -> list[Accepted]:
        try:
            return await submit(pr, [event])
        except UnknownEmailTypeError as exc:
            known = ", ".join(pr.registry.names())
            message = f"--type: unknown email type {exc.email_type!r}; known: {known}"
            raise CommandError(message) from exc
        except InvalidMessageError as exc:
            raise CommandError(_invalid(exc)) from exc
        except TemplateError as exc:
            raise CommandError(_template_problem(str(exc))) from exc

    accepted = run(with_postroom(settings, action))[0]
    state = "already accepted" if accepted.duplicate else "queued"
    print(f"{accepted.id} {state} ({accepted.status.value})")


_OPTIONS = {
    "email_type": "--type",
    "recipient_email": "--to",
    "recipient_name": "--name",
    "template_data": "--data",
    "metadata": "--metadata",
    "idempotency_key": "--key",
    "priority": "--priority",
}


def _invalid(exc: InvalidMessageError) -> str:
    """The problem in terms of the command's options rather than the document's fields."""
    if not exc.field:
        return pydantic_reason(exc.reason)
    top, _, rest = exc.field.partition(".")
    option = _OPTIONS.get(top, top)
    where = f" ({rest})" if rest else ""
    return f"{option}{where}: {pydantic_reason(exc.reason)}"


_UNDEFINED = re.compile(r"'([^']+)' is undefined")


def _template_problem(message: str) -> str:
    match = _UNDEFINED.search(message)
    if match is None:
        return message
    name = match.group(1)
    return f'{message}; give it in --data, e.g. --data \'{{"{name}": "..."}}\''


@bench.app.command(name="esp")
def bench_esp(
    esp: Annotated[str, typer.Option(help="sendgrid or mailgun.")] = "sendgrid",
    mode: Annotated[
        str,
        typer.Option(help="batch (newsletter copies, 1,000 a call) or single (distinct messages)."),
    ] = "batch",
    recipients: Annotated[
        int | None, typer.Option(help="Default: 100,000 in batch mode, 10,000 in single.")
    ] = None,
) -> None:
    """Recipients/s handed to a local fake ESP through the adapter, and CPU per recipient."""
    from postroom.bench.esp import ESPS, MODES, run_esp_bench

    if esp not in ESPS or mode not in MODES:
        raise typer.BadParameter(f"--esp must be one of {ESPS}, --mode one of {MODES}")
    count = recipients or (100_000 if mode == "batch" else 10_000)
    if count < 1:
        raise typer.BadParameter("--recipients must be positive")
    for line in run_esp_bench(esp, mode, count).lines():
        print(line)


def main() -> None:
    app()
