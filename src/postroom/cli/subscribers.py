"""``postroom subscribers``: import a CSV into a list, export or erase what is held about an
address (GDPR)."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from postroom.cli.common import CommandError, fail, run, settings_or_exit, with_postroom
from postroom.store.consent import Consent, ConsentKind

if TYPE_CHECKING:
    from postroom.store.subscribers import NewSubscriber
    from postroom.wiring import Postroom

app = typer.Typer(help="Import, export and erase subscribers.", no_args_is_help=True)

BATCH = 1000  # rows per transaction: amortises a commit; on SQLite it holds the write lock
# for about 0.1 s a batch here, which mail being sent meanwhile waits out


def read_rows(
    path: Path, consent_kind: ConsentKind, source: str, now: datetime
) -> Iterator[tuple[int, NewSubscriber | str]]:
    """(line number, subscriber or the reason the row is refused) for each data row of the
    CSV, read as it goes: a file of millions of rows is never held in memory."""
    from postroom.messages import normalized_address
    from postroom.store.subscribers import NewSubscriber

    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.DictReader(handle)
        columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
        if "email" not in columns:
            raise CommandError(f"{path}: the first line must name the columns, one of them 'email'")
        for row in reader:
            line = reader.line_num
            value = (row.get(columns["email"]) or "").strip()
            name = (row.get(columns.get("name", ""), "") or "").strip() or None
            at_text = (row.get(columns.get("consented_at", ""), "") or "").strip()
            ip = (row.get(columns.get("ip", ""), "") or "").strip() or None
            if not value:
                yield line, "no address"
                continue
            try:
                email = normalized_address(value).lower()
            except ValueError as exc:
                yield line, f"invalid address {value!r}: {exc}"
                continue
            if name is not None and len(name) > 200:
                yield line, "name longer than 200 characters"
                continue
            at = now
            if at_text:
                try:
                    at = datetime.fromisoformat(at_text)
                except ValueError:
                    yield line, f"consented_at {at_text!r} is not an ISO 8601 date or time"
                    continue
                at = at if at.tzinfo else at.replace(tzinfo=UTC)
                if at > now:
                    yield line, f"consented_at {at_text!r} is in the future"
                    continue
            consent = Consent(consent_kind, source, at, ip)
            yield line, NewSubscriber(email, name, consent, dated=bool(at_text))


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV with a header: email[,name,consented_at,ip].")],
    list_id: Annotated[str, typer.Option("--list", help="The list to subscribe everyone to.")],
    consent: Annotated[
        ConsentKind, typer.Option(help="express (they asked) or implied (e.g. a purchase).")
    ] = ConsentKind.EXPRESS,
    source: Annotated[str, typer.Option(help="Where the consent came from.")] = "csv import",
) -> None:
    """Subscribe a CSV's addresses to a list, 1,000 rows a transaction. Bad rows are reported
    (line and reason) and skipped; importing the same file again changes nothing."""
    if not file.is_file():
        fail(f"{file}: no such file")

    async def action(pr: Postroom) -> Counter[str]:
        if await pr.subscribers.get_list(list_id) is None:
            raise CommandError(f"--list: no list with id {list_id!r} (create it with the API)")
        counts: Counter[str] = Counter()
        batch: list[tuple[int, NewSubscriber]] = []

        async def flush() -> None:
            results = await pr.subscribers.subscribe(list_id, [entry for _, entry in batch])
            for (line, _), result in zip(batch, results, strict=True):
                counts[result.outcome] += 1
                if result.outcome == "skipped":
                    print(f"line {line}: skipped: {result.reason}", file=sys.stderr)
            batch.clear()

        for line, item in read_rows(file, consent, source, datetime.now(UTC)):
            if isinstance(item, str):
                counts["bad"] += 1
                print(f"line {line}: {item}", file=sys.stderr)
                continue
            batch.append((line, item))
            if len(batch) >= BATCH:
                await flush()
        if batch:
            await flush()
        return counts

    counts = run(with_postroom(settings_or_exit(), action))
    parts = ("created", "updated", "unchanged", "skipped", "bad")
    print(f"{sum(counts.values())} rows: " + ", ".join(f"{counts[p]} {p}" for p in parts))


@app.command()
def export(email: Annotated[str, typer.Argument(help="The address.")]) -> None:
    """Print everything held about an address as JSON (GDPR access request)."""

    async def action(pr: Postroom) -> dict[str, object]:
        return await pr.personal_data.export(email)

    held = run(with_postroom(settings_or_exit(), action))
    sys.stdout.write(orjson.dumps(held, option=orjson.OPT_INDENT_2).decode() + "\n")


@app.command()
def erase(
    email: Annotated[str, typer.Argument(help="The address.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase everything held about an address (GDPR); only a hash stays, suppressed, so it is
    never mailed again."""
    if not yes and not typer.confirm(f"Erase everything held about {email}?"):
        fail("not erased")

    async def action(pr: Postroom) -> dict[str, int]:
        return (await pr.personal_data.erase(email)).counts

    counts = run(with_postroom(settings_or_exit(), action))
    removed = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
    print(f"erased {email}: {removed or 'nothing was held'}; its hash stays suppressed")
