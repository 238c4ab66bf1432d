"""Delivery analytics: what happened to the mail sent, by email type, recipient domain and day.

Counts are cohorts of sends: each send counts on the day it was sent, and the feedback events
bound to it (webhooks) count with it, each kind at most once per send ("unique" opens and
clicks). Opens are split into human and machine-flagged (Apple Mail Privacy Protection,
image proxies, the ESP's own flag). Rates follow the industry's conventions: delivery and
bounces per sent, complaints, opens, clicks and unsubscribes per delivered.

Two grouped queries, one over ``sends`` and one over ``events`` joined to them, both served
by the indexes on ``sends(status, updated_at)`` and ``events(send_id)``; the cost grows with the
sends in the window, not with the whole ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, String, and_, case, cast, func, literal, select

from postroom.store.database import Database
from postroom.store.schema import campaign_recipients, campaigns, events, sends

DIMENSIONS = ("email_type", "domain", "day", "campaign")
"""``campaign`` stands alone: a campaign's recipients are counted in its own rows."""
_COUNTED = ("delivered", "bounced_hard", "bounced_soft", "complained", "clicked", "unsubscribed")
_MACHINE_FLAG = '%"machine_open":true%'


@dataclass
class StatsRow:
    """One group's counts; ``key`` holds the grouped dimensions' values."""

    key: dict[str, str]
    sent: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    @property
    def rates(self) -> dict[str, float | None]:
        delivered = self.count("delivered")

        def per(n: int, base: int) -> float | None:
            return round(n / base, 4) if base else None

        return {
            "delivery_rate": per(delivered, self.sent),
            "hard_bounce_rate": per(self.count("bounced_hard"), self.sent),
            "soft_bounce_rate": per(self.count("bounced_soft"), self.sent),
            "complaint_rate": per(self.count("complained"), delivered),
            "open_rate": per(self.count("opened_human"), delivered),
            "click_rate": per(self.count("clicked"), delivered),
            "unsubscribe_rate": per(self.count("unsubscribed"), delivered),
        }

    def as_dict(self) -> dict[str, Any]:
        names = [*_COUNTED, "opened_human", "opened_machine"]
        return {
            **self.key,
            "sent": self.sent,
            **{name: self.count(name) for name in names},
            **self.rates,
        }


class Stats:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def summary(
        self,
        *,
        days: int = 30,
        group_by: Sequence[str] = ("email_type",),
        now: datetime | None = None,
    ) -> list[StatsRow]:
        """Rows for sends of the last ``days`` days, grouped by ``group_by`` (a subset of
        :data:`DIMENSIONS`; empty means one row for everything)."""
        unknown = [d for d in group_by if d not in DIMENSIONS]
        if unknown:
            raise ValueError(f"cannot group by {', '.join(unknown)}; use {', '.join(DIMENSIONS)}")
        if "campaign" in group_by and len(group_by) > 1:
            raise ValueError("campaign cannot be combined with other dimensions")
        since = (now or datetime.now(UTC)) - timedelta(days=days)
        if "campaign" in group_by:
            return await self._db.read(lambda conn: _campaign_summary(conn, since))
        return await self._db.read(lambda conn: _summary(conn, since, list(group_by)))


def _dimensions(conn: Connection, group_by: list[str]) -> list[ColumnElement[Any]]:
    sqlite = conn.dialect.name == "sqlite"
    columns: dict[str, ColumnElement[Any]] = {
        "email_type": sends.c.email_type,
        "domain": (
            func.substr(sends.c.recipient, func.instr(sends.c.recipient, "@") + 1)
            if sqlite
            else func.split_part(sends.c.recipient, "@", 2)
        ),
        "day": func.date(sends.c.sent_at) if sqlite else cast(func.date(sends.c.sent_at), String),
    }
    return [columns[name].label(name) for name in group_by]


def _summary(conn: Connection, since: datetime, group_by: list[str]) -> list[StatsRow]:
    keys = _dimensions(conn, group_by)
    # updated_at >= since is implied (a row is updated when it is sent) and lets the
    # (status, updated_at) index narrow the scan to the window.
    in_window = and_(
        sends.c.status == "sent", sends.c.updated_at >= since, sends.c.sent_at >= since
    )
    rows: dict[tuple[str, ...], StatsRow] = {}

    def row(values: Sequence[Any]) -> StatsRow:
        key = tuple(str(v) for v in values)
        if key not in rows:
            rows[key] = StatsRow(key=dict(zip(group_by, key, strict=True)))
        return rows[key]

    for found in conn.execute(select(*keys, func.count()).where(in_window).group_by(*keys)):
        row(found[:-1]).sent = int(found[-1])

    opened = events.c.event_type == "opened"
    kind = case(
        (and_(opened, _payload_text(conn).like(_MACHINE_FLAG)), literal("opened_machine")),
        (opened, literal("opened_human")),
        else_=events.c.event_type,
    ).label("kind")
    query = (
        select(*keys, kind, func.count(func.distinct(events.c.send_id)))
        .select_from(events.join(sends, sends.c.id == events.c.send_id))
        .where(in_window, events.c.event_type.in_([*_COUNTED, "opened"]))
        .group_by(*keys, kind)
    )
    for found in conn.execute(query):
        counts = row(found[:-2]).counts
        counts[str(found[-2])] = int(found[-1])
    return [rows[key] for key in sorted(rows)]


def _campaign_summary(conn: Connection, since: datetime) -> list[StatsRow]:
    """One row per campaign started in the window, from its counters (kept once per recipient
    by the feedback processor) and its recipients' first human opens and clicks. Machine
    opens are not kept per campaign recipient: ``opened_machine`` is 0 here."""
    r = campaign_recipients.c
    found = conn.execute(
        select(campaigns).where(campaigns.c.started_at >= since).order_by(campaigns.c.started_at)
    ).all()
    rows = []
    for campaign in found:
        sent, opened, clicked = conn.execute(
            select(
                func.count().filter(r.status == "sent"), func.count(r.opened_at),
                func.count(r.clicked_at),
            ).where(r.campaign_id == campaign.id)
        ).one()  # fmt: skip
        counts = {name: int(getattr(campaign, name)) for name in _CAMPAIGN_COUNTERS}
        counts.update(opened_human=int(opened), clicked=int(clicked))
        key = {"campaign": campaign.id, "email_type": campaign.email_type}
        rows.append(StatsRow(key=key, sent=int(sent), counts=counts))
    return rows


_CAMPAIGN_COUNTERS = ("delivered", "bounced_hard", "bounced_soft", "complained", "unsubscribed")


def _payload_text(conn: Connection) -> ColumnElement[str]:
    if conn.dialect.name == "sqlite":
        return cast(events.c.payload, String)
    return func.convert_from(events.c.payload, literal("UTF8"))
