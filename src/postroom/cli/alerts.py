"""``postroom alerts list|check``: the alert history, and one evaluation on demand."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from postroom.alerts.history import Alert, AlertHistory, Changes
from postroom.alerts.monitor import build_monitor
from postroom.alerts.rules import Severity
from postroom.cli.common import configure_logging, run, settings_or_exit, with_postroom
from postroom.wiring import Postroom

app = typer.Typer(help="Alerts: what fired, and an evaluation now.", no_args_is_help=True)


@app.command(name="list")
def list_alerts(
    all_: Annotated[bool, typer.Option("--all", help="Resolved alerts too.")] = False,
    limit: Annotated[int, typer.Option(help="Newest N.")] = 100,
) -> None:
    """Open alerts (or all), newest first."""

    async def action(pr: Postroom) -> list[Alert]:
        return await AlertHistory(pr.db).list(include_resolved=all_, limit=limit)

    alerts = run(with_postroom(settings_or_exit(), action))
    _print(alerts, "Alerts" if all_ else "Open alerts")


@app.command()
def check() -> None:
    """Evaluate every rule once: record, pause campaigns, notify the sinks, print the open
    alerts. Exit status 1 while a critical alert is open (for cron and scripts). The DLQ rule
    needs two evaluations to see growth, so it is judged by the running monitor only."""
    settings = settings_or_exit()
    configure_logging(settings)

    async def action(pr: Postroom) -> tuple[Changes, list[Alert]]:
        monitor = build_monitor(pr)
        try:
            changes = await monitor.check()
        finally:
            await monitor.close()
        return changes, await AlertHistory(pr.db).list()

    changes, open_alerts = run(with_postroom(settings, action))
    print(f"fired {len(changes.fired)}, resolved {len(changes.resolved)}")
    _print(open_alerts, "Open alerts")
    if any(a.severity is Severity.CRITICAL for a in open_alerts):
        raise typer.Exit(1)


def _print(alerts: Sequence[Alert], title: str) -> None:
    if not alerts:
        print(f"{title}: none")
        return
    table = Table(title=title)
    for name in ("fired", "severity", "rule", "subject", "message", "resolved"):
        table.add_column(name, no_wrap=name != "message")
    for alert in alerts:
        table.add_row(
            alert.fired_at.strftime("%Y-%m-%d %H:%M:%S"),
            alert.severity.value,
            alert.rule,
            alert.subject,
            alert.message,
            alert.resolved_at.strftime("%Y-%m-%d %H:%M:%S") if alert.resolved_at else "",
        )
    Console(width=shutil.get_terminal_size((160, 24)).columns).print(table)
