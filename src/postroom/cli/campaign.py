"""``postroom campaign``: send a post to a list; status, list, pause, resume, cancel.

``send`` creates the campaign and, when it is due now, starts it at once (snapshot and chunk
jobs on the queue), so workers (``postroom serve`` or ``postroom worker``) pick it up at
their next claim. ``--wait`` follows it to the end with a progress bar.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from fastapi.encoders import jsonable_encoder
from pydantic import ValidationError

from postroom.cli.common import (
    fail,
    json_object_option,
    pydantic_reason,
    run,
    settings_or_exit,
    with_postroom,
)
from postroom.errors import InvalidMessageError

if TYPE_CHECKING:
    from rich.console import Console

    from postroom.store.campaign_records import CampaignStatus
    from postroom.wiring import Postroom

app = typer.Typer(help="Send campaigns to a list and follow them.", no_args_is_help=True)

_FINAL = ("finished", "cancelled")


def _print(status: CampaignStatus) -> None:
    print(orjson.dumps(jsonable_encoder(status.as_dict()), option=orjson.OPT_INDENT_2).decode())


@app.command()
def send(
    list_id: Annotated[str, typer.Option("--list", help="The list to send to.")],
    email_type: Annotated[str, typer.Option("--type", help="A marketing email type.")],
    data: Annotated[str | None, typer.Option(help="Template data, a JSON object.")] = None,
    metadata: Annotated[str | None, typer.Option(help="Metadata, a JSON object.")] = None,
    send_at: Annotated[
        str | None, typer.Option(help="ISO 8601 time with a zone; default now.")
    ] = None,
    spread: Annotated[
        float, typer.Option(help="Seconds to spread the sending over (warm-up, domains).")
    ] = 0.0,
    ab_test: Annotated[
        str | None,
        typer.Option(
            "--ab-test",
            help='JSON: {"variants": [{"subject": "..."}, ...], "share": 0.2, '
            '"wait_seconds": 14400, "metric": "opens", "default": 0}',
        ),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow it with a progress bar.")] = False,
) -> None:
    """Create a campaign (and start it when due); prints its status as JSON."""
    from postroom.campaigns.requests import CampaignRequest

    try:
        request = CampaignRequest(
            list_id=list_id,
            email_type=email_type,
            template_data=json_object_option(data, "data"),
            metadata=json_object_option(metadata, "metadata"),
            send_at=datetime.fromisoformat(send_at) if send_at else None,
            spread_seconds=spread,
            ab_test=json_object_option(ab_test, "ab-test") or None,
        )
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            fail(f"{where}: {pydantic_reason(first['msg'])}")
        fail(f"--send-at: {exc}")

    async def action(pr: Postroom) -> CampaignStatus:
        from postroom.campaigns.assembly import build_scheduler

        try:
            status = await pr.campaigns.create(request.checked(pr.renderer))
        except InvalidMessageError as exc:
            fail(f"{exc.field or 'campaign'}: {exc.reason}")
        await build_scheduler(pr.settings, pr.db, pr.queue).tick()
        if wait:
            return await _follow(pr, status.id)
        return await pr.campaigns.get(status.id)

    _print(run(with_postroom(settings_or_exit(), action)))


@app.command()
def status(campaign_id: str) -> None:
    """A campaign's status and counts as JSON."""

    async def action(pr: Postroom) -> CampaignStatus:
        return await pr.campaigns.get(campaign_id)

    _print(run(with_postroom(settings_or_exit(), action)))


@app.command("list")
def list_(limit: Annotated[int, typer.Option(min=1, max=200)] = 20) -> None:
    """Recent campaigns, newest first: id, status, sent/total."""

    async def action(pr: Postroom) -> list[CampaignStatus]:
        return await pr.campaigns.list_recent(limit)

    for c in run(with_postroom(settings_or_exit(), action)):
        print(f"{c.id}\t{c.status.value}\t{c.sent}/{c.total}\t{c.list_id}\t{c.email_type}")


def _act(campaign_id: str, action_name: str, reason: str) -> None:
    async def action(pr: Postroom) -> CampaignStatus:
        campaigns = pr.campaigns
        try:
            if action_name == "pause":
                return await campaigns.pause(campaign_id, reason)
            if action_name == "resume":
                return await campaigns.resume(campaign_id)
            return await campaigns.cancel(campaign_id, reason)
        except InvalidMessageError as exc:
            fail(f"cannot {action_name} campaign {campaign_id}: {exc.reason}")

    _print(run(with_postroom(settings_or_exit(), action)))


@app.command()
def pause(campaign_id: str, reason: Annotated[str, typer.Option(help="Why.")] = "operator") -> None:
    """Stop sending; chunks already with the provider finish, the rest wait for resume."""
    _act(campaign_id, "pause", reason)


@app.command()
def resume(campaign_id: str) -> None:
    """Send the rest of a paused campaign."""
    _act(campaign_id, "resume", "")


@app.command()
def cancel(
    campaign_id: str, reason: Annotated[str, typer.Option(help="Why.")] = "operator"
) -> None:
    """Send nothing more of this campaign."""
    _act(campaign_id, "cancel", reason)


async def _follow(pr: Postroom, campaign_id: str) -> CampaignStatus:
    """A progress bar (done / total, rate, ETA) until the campaign finishes or is cancelled."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f}/s"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[state]}"),
    )
    status = await pr.campaigns.get(campaign_id)
    with Progress(*columns, console=_stderr_console()) as progress:
        task = progress.add_task("campaign", total=None, rate=0.0, state=status.status.value)
        while True:
            status = await pr.campaigns.get(campaign_id)
            done = status.total - status.pending
            progress.update(
                task,
                total=status.total or None,
                completed=done,
                rate=progress.tasks[0].speed or 0.0,
                state=status.status.value,
            )
            if status.status.value in _FINAL:
                return status
            await asyncio.sleep(0.5)


def _stderr_console() -> Console:
    from rich.console import Console

    return Console(file=sys.stderr)
