"""``postroom dlq``: inspect, replay and purge the dead-letter queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from postroom.cli.common import fail, run, settings_or_exit, with_postroom

if TYPE_CHECKING:
    from postroom.queue.base import DeadLetter
    from postroom.wiring import Postroom

app = typer.Typer(help="Inspect, replay and purge the dead-letter queue.", no_args_is_help=True)


def _console() -> Console:
    """Rich output; into a pipe or a file, as wide as the text so no id or reason is cut."""
    console = Console()
    return console if console.is_terminal else Console(width=100_000)


def _summary(body: bytes) -> tuple[str, str]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "?", "(not JSON)"
    if not isinstance(document, dict):
        return "?", "(not an object)"
    return str(document.get("email_type", "?")), str(document.get("recipient_email", "?"))


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(min=1, help="How many to show.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="How many to skip.")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List dead letters, oldest first."""

    async def action(pr: Postroom) -> list[DeadLetter]:
        return await pr.queue.dlq_list(limit=limit, offset=offset)

    letters = run(with_postroom(settings_or_exit(), action))
    if json_output:
        for letter in letters:
            email_type, recipient = _summary(letter.body)
            line = {
                "id": letter.id,
                "queue": letter.priority.value,
                "email_type": email_type,
                "recipient": recipient,
                "attempt": letter.attempt,
                "reason": letter.reason,
                "dead_at": letter.dead_at.isoformat(),
            }
            print(orjson.dumps(line).decode())
        return
    console = _console()
    if not letters:
        console.print("The dead-letter queue is empty.")
        return
    table = Table()
    table.add_column("id", no_wrap=True)  # the handle for show, replay and purge: never cut
    for heading in ("queue", "type", "recipient", "retries", "dead at"):
        table.add_column(heading)
    table.add_column("reason", overflow="fold")
    for letter in letters:
        email_type, recipient = _summary(letter.body)
        cells = (
            letter.id,
            letter.priority.value,
            email_type,
            recipient,
            str(letter.attempt),
            letter.dead_at.strftime("%Y-%m-%d %H:%M:%S"),
            letter.reason,
        )
        table.add_row(*(Text(cell) for cell in cells))  # Text: brackets are not markup
    console.print(table)


@app.command()
def show(message_id: Annotated[str, typer.Argument(help="The dead letter's id.")]) -> None:
    """Show one dead letter: why it is there, and its document."""

    async def action(pr: Postroom) -> DeadLetter | None:
        return await pr.queue.dlq_get(message_id)

    letter = run(with_postroom(settings_or_exit(), action))
    if letter is None:
        fail(f"no dead letter with id {message_id!r} (see `postroom dlq list`)")
    console = _console()
    for label, value in (
        ("id", letter.id),
        ("queue", letter.priority.value),
        ("retries", str(letter.attempt)),
        ("dead at", letter.dead_at.isoformat()),
        ("reason", letter.reason),
    ):
        console.print(f"[bold]{label:<8}[/] {escape(value)}", highlight=False)
    try:
        body = orjson.dumps(orjson.loads(letter.body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        body = letter.body.decode("utf-8", "replace")
    console.print(body, markup=False, highlight=False)


def _targets(ids: list[str] | None, all_: bool, verb: str) -> list[str] | None:
    if ids and all_:
        fail(f"give message ids or --all to {verb}, not both")
    if not ids and not all_:
        fail(f"give the ids of the dead letters to {verb}, or --all")
    return ids or None


@app.command()
def replay(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Put dead letters back on their queue with a fresh retry budget."""
    targets = _targets(ids, all_, "replay")

    async def action(pr: Postroom) -> int:
        return await pr.queue.dlq_replay(targets)

    count = run(with_postroom(settings_or_exit(), action))
    if ids and count < len(ids):
        fail(f"replayed {count} of {len(ids)}; the others are not in the dead-letter queue")
    print(f"replayed {count} message{'s' if count != 1 else ''}")


@app.command()
def purge(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Purge every dead letter.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters for good."""
    targets = _targets(ids, all_, "purge")
    if targets is None and not yes:
        typer.confirm("Delete every dead letter for good?", abort=True)

    async def action(pr: Postroom) -> int:
        return await pr.queue.dlq_purge(targets)

    count = run(with_postroom(settings_or_exit(), action))
    if ids and count < len(ids):
        fail(f"purged {count} of {len(ids)}; the others are not in the dead-letter queue")
    print(f"purged {count} message{'s' if count != 1 else ''}")
