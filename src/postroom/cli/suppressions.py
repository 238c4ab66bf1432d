"""``postroom suppressions``: list, add, remove (with a reason) and export the suppression
list."""

from __future__ import annotations

import csv
import sys
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from postroom.cli.common import fail, run, settings_or_exit, with_postroom
from postroom.store.suppressions import ERASED_REASON, SuppressionScope

if TYPE_CHECKING:
    from postroom.store.suppressions import Suppression, SuppressionPage
    from postroom.wiring import Postroom

app = typer.Typer(help="List, add, remove and export suppressed addresses.", no_args_is_help=True)

COLUMNS = ("email", "address_hash", "scope", "reason", "detail", "created_at")


def _row(entry: Suppression) -> list[str]:
    return [
        entry.email or "",  # erased: only the hash is held
        entry.address_hash,
        entry.scope.value,
        entry.reason,
        entry.detail or "",
        entry.created_at.isoformat(),
    ]


@app.command("list")
def list_(
    scope: Annotated[SuppressionScope | None, typer.Option(help="all or marketing.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Entries per page.")] = 100,
    cursor: Annotated[str | None, typer.Option(help="From a previous page.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """A page of the list in key order; the next page's --cursor is printed on stderr."""

    async def action(pr: Postroom) -> SuppressionPage:
        try:
            return await pr.suppressions.page(scope=scope, limit=limit, cursor=cursor)
        except ValueError as exc:
            fail(f"--cursor: {exc}")

    page = run(with_postroom(settings_or_exit(), action))
    for entry in page.entries:
        if json_output:
            print(orjson.dumps(dict(zip(COLUMNS, _row(entry), strict=True))).decode())
        else:
            print("\t".join(_row(entry)[:5]).rstrip())
    if page.cursor:
        print(f"more: --cursor {page.cursor}", file=sys.stderr)


@app.command()
def add(
    email: Annotated[str, typer.Argument(help="The address.")],
    reason: Annotated[str, typer.Option(help="Why (kept with the entry).")],
    scope: Annotated[SuppressionScope, typer.Option(help="all or marketing.")] = (
        SuppressionScope.ALL
    ),
    detail: Annotated[str | None, typer.Option(help="Free text.")] = None,
) -> None:
    """Suppress an address; an existing entry keeps its first reason."""
    from postroom.messages import normalized_address

    try:
        address = normalized_address(email).lower()
    except ValueError as exc:
        fail(f"EMAIL: invalid address {email!r}: {exc}")

    async def action(pr: Postroom) -> None:
        await pr.suppressions.add(address, scope, reason, detail)

    run(with_postroom(settings_or_exit(), action))
    print(f"{address} suppressed ({scope.value})")


@app.command()
def remove(
    email: Annotated[str, typer.Argument(help="The address.")],
    reason: Annotated[str, typer.Option(help="Why it may be mailed again (recorded).")],
    scope: Annotated[SuppressionScope | None, typer.Option(help="Default: every scope.")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also lift an erased address's entry.")
    ] = False,
) -> None:
    """Lift an address's suppression, recording the reason."""

    async def action(pr: Postroom) -> tuple[int, bool]:
        removed = await pr.suppressions.remove(email, scope, reason=reason, force=force)
        erased = any(e.reason == ERASED_REASON for e in await pr.suppressions.get(email))
        return removed, erased

    removed, erased = run(with_postroom(settings_or_exit(), action))
    if removed == 0:
        if erased:
            fail(f"{email} was erased at its owner's request; lift it only with --force")
        fail(f"{email} is not suppressed")
    print(f"{email}: {removed} entr{'y' if removed == 1 else 'ies'} removed")


@app.command()
def export(
    scope: Annotated[SuppressionScope | None, typer.Option(help="all or marketing.")] = None,
) -> None:
    """The whole list as CSV on stdout, a page at a time (erased entries have no email)."""

    async def action(pr: Postroom) -> int:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(COLUMNS)
        count, cursor = 0, None
        while True:
            page = await pr.suppressions.page(scope=scope, limit=1000, cursor=cursor)
            writer.writerows(_row(entry) for entry in page.entries)
            count += len(page.entries)
            if page.cursor is None:
                return count
            cursor = page.cursor

    count = run(with_postroom(settings_or_exit(), action))
    print(f"{count} entries", file=sys.stderr)
