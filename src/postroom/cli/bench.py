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
        str, typer.Option(help="outbox (files on disk) or memory (an ESP that answers at once).")
    ] = "outbox",
) -> None:
    """Enqueue→provider latency (p50/p99) at a fixed rate on the embedded default."""
    from postroom.bench.transactional import run_transactional

    if rate <= 0 or duration <= 0:
        raise typer.BadParameter("--rate and --duration must be positive")
    if sink not in ("outbox", "memory"):
        raise typer.BadParameter("--sink must be outbox or memory")
    for line in run_transactional(rate, duration, sink=sink).lines():
        print(line)
