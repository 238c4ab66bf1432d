"""``postroom bench``: measure the figures the README quotes."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Benchmarks that print the figures quoted in the README.", no_args_is_help=True
)
