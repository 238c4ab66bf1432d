"""``postroom stats``: delivery analytics as a table."""

from __future__ import annotations

import shutil
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from postroom.cli.common import fail, run, settings_or_exit, with_postroom
from postroom.store.stats import DIMENSIONS, Stats, StatsRow
from postroom.wiring import Postroom

_COLUMNS = [
    ("sent", "sent"),
    ("delivered", "delivered"),
    ("bounced_hard", "hard"),
    ("bounced_soft", "soft"),
    ("complained", "complaints"),
    ("opened_human", "opens"),
    ("opened_machine", "machine"),
    ("clicked", "clicks"),
    ("unsubscribed", "unsubs"),
]
_RATES = [
    ("delivery_rate", "deliv %"),
    ("hard_bounce_rate", "bounce %"),
    ("complaint_rate", "compl %"),
    ("open_rate", "open %"),
    ("click_rate", "click %"),
]


def stats(
    days: Annotated[int, typer.Option(help="Sends of the last N days.")] = 30,
    by: Annotated[
        str, typer.Option(help=f"Group by, comma-separated: {', '.join(DIMENSIONS)}.")
    ] = "email_type",
) -> None:
    """Delivery analytics: counts and rates per email type, recipient domain and day."""
    dimensions = [part.strip() for part in by.split(",") if part.strip()]
    unknown = [d for d in dimensions if d not in DIMENSIONS]
    if unknown:
        fail(f"--by: unknown dimension {', '.join(unknown)}; use {', '.join(DIMENSIONS)}")
    if "campaign" in dimensions and len(dimensions) > 1:
        fail("--by: campaign cannot be combined with other dimensions")
    if days < 1:
        fail("--days: must be at least 1")

    async def summary(pr: Postroom) -> list[StatsRow]:
        return await Stats(pr.db).summary(days=days, group_by=dimensions)

    rows = run(with_postroom(settings_or_exit(), summary))
    table = Table(title=f"Sends of the last {days} days")
    for name in dimensions:
        table.add_column(name, no_wrap=True)
    for _key, title in [*_COLUMNS, *_RATES]:
        table.add_column(title, justify="right")
    for row in rows:
        values = row.as_dict()
        rates = [_percent(values[key]) for key, _ in _RATES]
        table.add_row(
            *(row.key[d] for d in dimensions), *(f"{values[k]:,}" for k, _ in _COLUMNS), *rates
        )
    # Sixteen columns: as wide as the terminal, or roomy when the output goes to a file.
    Console(width=shutil.get_terminal_size((200, 24)).columns).print(table)


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}"
