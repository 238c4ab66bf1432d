"""Binding webhook events to what we sent: a ledger send or a campaign recipient.

An event binds only when an id it carries names something we sent *to the event's
recipient*; otherwise it is stored unbound and changes nothing.

- A ledger send is named by our send id (ESP custom args), our Message-ID
  ``<send-id@domain>``, or the ESP's message id stored on the send.
- A campaign recipient is named by the send id ``<campaign id>.<position>`` (custom args, or
  the Message-ID ``<campaign-id.position@domain>``), never by the ESP's message id: the
  campaign ledger has no index on it. The recipient must match the row's address
  case-insensitively (an erased row, whose address is gone, binds nothing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, bindparam, select, tuple_

from postroom.store import feedback_sqlite as sqlite_sql
from postroom.store.schema import campaign_recipients, sends
from postroom.store.sqlite_driver import sqlite_connection
from postroom.webhooks.events import NormalizedEvent

# A campaign send id: a ULID (Crockford base32, as python-ulid writes it) and a position.
_CAMPAIGN_SEND_ID = re.compile(r"([0-9A-HJKMNP-TV-Z]{26})\.(\d{1,9})")

_SENDS_BY_ID = select(sends.c.id, sends.c.recipient, sends.c.message_id, sends.c.created_at).where(
    sends.c.id.in_(bindparam("ids", expanding=True))
)
_SENDS_BY_PROVIDER_ID = select(
    sends.c.id, sends.c.recipient, sends.c.provider_message_id, sends.c.created_at
).where(sends.c.provider_message_id.in_(bindparam("ids", expanding=True)))
_CAMPAIGN_RECIPIENTS = select(
    campaign_recipients.c.campaign_id, campaign_recipients.c.position, campaign_recipients.c.email
).where(
    tuple_(campaign_recipients.c.campaign_id, campaign_recipients.c.position).in_(
        bindparam("keys", expanding=True)
    )
)


@dataclass(frozen=True, slots=True)
class BoundSend:
    """What an event is about: a ledger send (``campaign_id`` None) or a campaign recipient
    (``id`` is ``<campaign id>.<position>``). A ledger send's creation time is ``created_at``
    on PostgreSQL and ``stored_created_at``, SQLite's text of it, on SQLite (which only
    copies it into ``send_feedback``, so parsing it would be wasted)."""

    id: str
    recipient: str  # lower-cased for campaign recipients; as the ledger holds it for sends
    created_at: datetime | None = None
    campaign_id: str | None = None
    position: int = 0
    stored_created_at: str | None = None


class _SendRow(NamedTuple):
    id: str
    recipient: str
    message_id: str | None
    created_at: datetime | None
    stored_created_at: str | None = None


def send_id_in(message_id: str | None) -> str | None:
    """Our Message-ID is ``<send-id@sender-domain>``: the send id is its local part."""
    if not message_id:
        return None
    local = message_id.strip().strip("<>").partition("@")[0]
    return local or None


def campaign_key(send_id: str | None) -> tuple[str, int] | None:
    """(campaign id, position) when ``send_id`` is a campaign recipient's send id."""
    if not send_id:
        return None
    match = _CAMPAIGN_SEND_ID.fullmatch(send_id)
    return (match.group(1), int(match.group(2))) if match else None


def bind(conn: Connection, batch: Sequence[NormalizedEvent]) -> dict[int, BoundSend]:
    """Index in ``batch`` → what it is about, for the events that bind (see the module)."""
    bound = _bind_campaigns(conn, batch)
    rest = [(i, e) for i, e in enumerate(batch) if i not in bound]
    if rest:
        bound.update(_bind_sends(conn, rest))
    return bound


def _our_ids(event: NormalizedEvent) -> list[str]:
    return [i for i in (event.postroom_send_id, send_id_in(event.postroom_message_id)) if i]


def _bind_campaigns(conn: Connection, batch: Sequence[NormalizedEvent]) -> dict[int, BoundSend]:
    wanted: dict[int, list[tuple[str, int]]] = {}
    for index, event in enumerate(batch):
        keys = [k for k in map(campaign_key, _our_ids(event)) if k]
        if keys:
            wanted[index] = keys
    if not wanted:
        return {}
    keys = sorted({k for ks in wanted.values() for k in ks})
    driver = sqlite_connection(conn)
    if driver is not None:
        rows = [r for k in keys for r in driver.execute(sqlite_sql.CAMPAIGN_RECIPIENT, k)]
    else:
        rows = [tuple(r) for r in conn.execute(_CAMPAIGN_RECIPIENTS, {"keys": keys})]
    emails = {(r[0], int(r[1])): r[2] for r in rows}
    bound: dict[int, BoundSend] = {}
    for index, candidates in wanted.items():
        recipient = batch[index].recipient
        matches = {
            k: email.lower()
            for k in candidates
            if (email := emails.get(k)) and (recipient is None or email.lower() == recipient)
        }
        if len(matches) == 1:
            [((campaign_id, position), email)] = matches.items()
            bound[index] = BoundSend(
                f"{campaign_id}.{position}", email, campaign_id=campaign_id, position=position
            )
    return bound


def _bind_sends(
    conn: Connection, batch: Sequence[tuple[int, NormalizedEvent]]
) -> dict[int, BoundSend]:
    """Our ids first; the ESP's message ids are looked up only for the events our ids did
    not bind (our adapters send our id, so that is usually none)."""
    our_ids = sorted({i for _index, e in batch for i in _our_ids(e)})
    by_id = {r.id: r for r in _sends_by(conn, our_ids, by_provider_id=False)}
    bound: dict[int, BoundSend] = {}
    ours: dict[int, list[_SendRow]] = {}
    for index, event in batch:
        candidates = ours[index] = [by_id[i] for i in (event.postroom_send_id,) if i in by_id]
        from_message_id = send_id_in(event.postroom_message_id)
        if from_message_id in by_id:
            row = by_id[from_message_id]
            if row.message_id in (None, event.postroom_message_id):
                candidates.append(row)
        send = _matching(candidates, event.recipient)
        if send is not None:
            bound[index] = send
    rest = [(index, event) for index, event in batch if index not in bound]
    esp_ids = sorted({i for _index, e in rest for i in e.lookup_ids})
    by_esp_id: dict[str, list[_SendRow]] = {}
    for row in _sends_by(conn, esp_ids, by_provider_id=True):
        assert row.message_id is not None  # the provider's message id, here
        by_esp_id.setdefault(row.message_id, []).append(row)
    for index, event in rest:
        esp = [row for i in event.lookup_ids for row in by_esp_id.get(i, [])]
        send = _matching(ours[index] + esp, event.recipient)
        if send is not None:
            bound[index] = send
    return bound


def _sends_by(conn: Connection, ids: list[str], *, by_provider_id: bool) -> list[_SendRow]:
    """Sends by our send id or by the ESP's message id; a row's ``message_id`` is our
    Message-ID in the first case and the ESP's message id in the second."""
    if not ids:
        return []
    driver = sqlite_connection(conn)
    if driver is None:
        statement = _SENDS_BY_PROVIDER_ID if by_provider_id else _SENDS_BY_ID
        return [_SendRow(*r) for r in conn.execute(statement, {"ids": ids})]
    if len(ids) == 1:
        sql = sqlite_sql.SEND_BY_PROVIDER_ID if by_provider_id else sqlite_sql.SEND_BY_ID
        values: tuple[str | bytes] = (ids[0],)
    else:
        sql = sqlite_sql.SENDS_BY_PROVIDER_ID if by_provider_id else sqlite_sql.SENDS_BY_ID
        values = (orjson.dumps(ids),)
    return [
        _SendRow(send_id, recipient, message_id, None, created_at)
        for send_id, recipient, message_id, created_at in driver.execute(sql, values)
    ]


def _matching(candidates: list[Any], recipient: str | None) -> BoundSend | None:
    if recipient is not None:
        matches = {r.id: r for r in candidates if r.recipient == recipient}
    else:
        # No recipient in the event (a Postmark variant): only an id naming exactly one
        # send binds it, and the send says who it went to.
        matches = {r.id: r for r in candidates}
    if len(matches) != 1:
        return None
    row = next(iter(matches.values()))
    return BoundSend(row.id, row.recipient, row.created_at, stored_created_at=row.stored_created_at)
