"""``postroom bench``: measure the figures the README quotes."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Benchmarks that print the figures quoted in the README.", no_args_is_help=True
)


@app.command()
def transactional(
    rate: Annotated[float, typer.Option(help="Emails per second to submit.")] = 1000.0,
    duration: Annotated[float, typer.Option(help="Seconds to keep submitting.")] = 10.0,
    sink: Annotated[
        str,
        typer.Option(
            help="outbox (files on disk), sendgrid (the adapter over HTTP to a local fake "
            "SendGrid) or memory (a provider that accepts at once)."
        ),
    ] = "outbox",
    workers: Annotated[int, typer.Option(help="Worker processes sharing the queue.")] = 1,
) -> None:
    """Enqueue→provider latency (p50/p99) at a fixed rate on the embedded default."""
    from postroom.bench.transactional import SINKS, run_transactional

    if rate <= 0 or duration <= 0:
        raise typer.BadParameter("--rate and --duration must be positive")
    if sink not in SINKS:
        raise typer.BadParameter(f"--sink must be one of {', '.join(SINKS)}")
    if workers < 1:
        raise typer.BadParameter("--workers must be at least 1")
    for line in run_transactional(rate, duration, sink=sink, workers=workers).lines():
        print(line)


@app.command()
def queue(
    backlog: Annotated[int, typer.Option(help="Jobs waiting in the queue.")] = 1_000_000,
    batch: Annotated[int, typer.Option(help="Messages per claim in the batched run.")] = 100,
    seconds: Annotated[float, typer.Option(help="Seconds per measured run.")] = 5.0,
    database: Annotated[
        str | None, typer.Option(help="Database URL (default: a fresh SQLite file).")
    ] = None,
) -> None:
    """Claim-and-ack rate of the SQL queue on a large backlog (one by one and batched)."""
    import asyncio
    import tempfile

    from postroom.queue.bench import bench_claims

    if backlog < 1 or batch < 1 or seconds <= 0:
        raise typer.BadParameter("--backlog, --batch and --seconds must be positive")
    with tempfile.TemporaryDirectory(prefix="postroom-bench-") as scratch:
        url = database or f"sqlite:///{scratch}/queue.db"
        figures = asyncio.run(bench_claims(url, backlog, batch, seconds=seconds))
    print(f"backlog          {figures['backlog']:,} jobs")
    print(f"enqueue          {figures['enqueue_per_s']:,} jobs/s")
    print(f"claim+ack        {figures['single_claim_ack_per_s']:,} messages/s one at a time")
    print(
        f"claim+ack        {figures['batched_claim_ack_per_s']:,} messages/s "
        f"{figures['batch']} at a time"
    )


@app.command()
def queues(
    queue_url: Annotated[
        str, typer.Option("--queue", help="sql:// (default), amqp://… or sqs://…")
    ] = "sql://",
    database: Annotated[
        str | None, typer.Option(help="Database URL (default: a fresh SQLite file).")
    ] = None,
    workers: Annotated[str, typer.Option(help="Worker process counts, comma-separated.")] = "1,2,4",
    messages: Annotated[int, typer.Option(help="Messages per run.")] = 20_000,
    batch: Annotated[int, typer.Option(help="Messages per claim.")] = 100,
) -> None:
    """Messages/s claimed and acked through a queue backend by 1, 2, 4 … worker processes."""
    from postroom.bench.queues import run_queues

    try:
        counts = [int(part) for part in workers.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("--workers takes numbers, e.g. 1,2,4") from None
    if not counts or min(counts) < 1 or messages < 1 or batch < 1:
        raise typer.BadParameter("--workers, --messages and --batch must be positive")
    for run in run_queues(queue_url, database, counts, messages, batch):
        print(run.line())


@app.command()
def fanout(
    recipients: Annotated[int, typer.Option(min=1, help="Synthetic subscribers.")] = 100_000,
    esp: Annotated[str, typer.Option(help="Fake ESP: mailgun or sendgrid.")] = "mailgun",
    queue_url: Annotated[
        str, typer.Option("--queue", help="sql:// (default), amqp://… or sqs://…")
    ] = "sql://",
    database: Annotated[
        str | None, typer.Option(help="Database URL (default: a fresh SQLite file).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
) -> None:
    """A real campaign to N synthetic subscribers through worker processes to a local fake
    ESP: snapshot time, hand-off time, recipients/s, CPU and peak RSS per process."""
    from postroom.bench.fanout import run_fanout

    if esp not in ("mailgun", "sendgrid"):
        raise typer.BadParameter("--esp takes mailgun or sendgrid")
    for line in run_fanout(recipients, esp, queue_url, database, workers).lines():
        print(line)
