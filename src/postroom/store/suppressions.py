"""The suppression list: addresses that must not receive mail, checked at send time.

Entries are keyed by :func:`address_hash` of the lower-cased address, not by the address: an
address erased at its owner's request (GDPR) keeps its entry with the address itself gone,
and the worker's check is still one primary-key lookup per address, the same for every entry.

The hash is SHA-256 over a fixed, Postroom-specific prefix, not an HMAC with the secret key.
The suppression list must outlive every key: a keyed hash would silently stop matching (and
so mail erased people again) the day the key is rotated, lost, or differs between two hosts,
and the migration that introduced it could not have computed it without the key. The prefix
keeps the value out of the plain ``sha256(email)`` that ad-tech "hashed email" lists use, so
an erased entry cannot be joined with them; someone holding the database who already knows
an address can still confirm it is on the list, which is what a suppression list is for.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, select, text, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from postroom.store.database import Database
from postroom.store.schema import suppression_removals, suppressions
from postroom.store.sqlite_driver import sqlite_connection

_HASH_PREFIX = b"postroom-suppression-v1\x00"  # migration 0004 holds a copy: change neither

ERASED_REASON = "erased"
"""The reason of an erased address's entries; removing them needs ``force``."""

# Built once: on SQLite, building a statement costs more than running it.
# The hashes (hex digits) travel as one comma-joined string: a text array parameter would
# have the driver quote-check each of a chunk's thousand elements.
_PG_BLOCKED = text(
    "SELECT address_hash FROM suppressions "
    "WHERE address_hash = ANY(string_to_array(:hashes, ',')) AND scope = ANY(:scopes)"
)
_SQLITE_BLOCKED = "SELECT 1 FROM suppressions WHERE address_hash = ? AND scope IN (?, ?)"
_SQLITE_BLOCKED_MANY = (
    "SELECT DISTINCT address_hash FROM suppressions WHERE scope IN (?, ?) AND address_hash IN ({})"
)
_ONE_BY_ONE = 16  # up to this many addresses, one primary-key lookup each is cheapest


_INSERT_IGNORING_CONFLICTS = {
    "postgresql": postgresql.insert(suppressions).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(suppressions).on_conflict_do_nothing(),
}


def address_hash(email: str) -> str:
    """The suppression key of ``email`` (case-insensitive), 64 hex digits."""
    return hashlib.sha256(_HASH_PREFIX + email.lower().encode()).hexdigest()


class SuppressionScope(StrEnum):
    ALL = "all"  # hard bounces, invalid addresses: no mail at all
    MARKETING = "marketing"  # complaints, unsubscribes: transactional mail still goes


@dataclass(frozen=True, slots=True)
class Suppression:
    """One entry; ``email`` is None when the address was erased."""

    address_hash: str
    scope: SuppressionScope
    email: str | None
    reason: str
    detail: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SuppressionPage:
    entries: list[Suppression]
    cursor: str | None  # give it back for the next page; None on the last


class Suppressions:
    """Repository of suppressed addresses (keyed by a hash of the lower-cased address)."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] | None = None):
        self._db = db
        self._now = clock or (lambda: datetime.now(UTC))

    async def add(
        self, email: str, scope: SuppressionScope, reason: str, detail: str | None = None
    ) -> None:
        """Suppress ``email`` for ``scope``; an existing entry keeps its first reason."""
        await self._db.write(lambda conn: self.add_within(conn, email, scope, reason, detail))

    def add_within(
        self,
        conn: Connection,
        email: str,
        scope: SuppressionScope,
        reason: str,
        detail: str | None = None,
    ) -> None:
        """:meth:`add` inside a transaction the caller holds (the worker's settlement)."""
        values = {
            "address_hash": address_hash(email),
            "email": email.lower(),
            "scope": scope.value,
            "reason": reason,
            "detail": detail,
            "created_at": self._now(),
        }
        conn.execute(_INSERT_IGNORING_CONFLICTS[conn.dialect.name], values)

    def erase_within(self, conn: Connection, email: str, detail: str | None = None) -> None:
        """Forget ``email`` but keep it from ever being mailed: its entries and removal records
        lose the address, and a scope-``all`` entry keyed by its hash stays."""
        key = address_hash(email)
        conn.execute(
            suppressions.update().where(suppressions.c.address_hash == key).values(email=None)
        )
        conn.execute(
            suppression_removals.update()
            .where(suppression_removals.c.address_hash == key)
            .values(email=None)
        )
        conn.execute(
            delete(suppressions).where(
                suppressions.c.address_hash == key,
                suppressions.c.scope == SuppressionScope.ALL.value,
            )
        )
        values = {
            "address_hash": key,
            "email": None,
            "scope": SuppressionScope.ALL.value,
            "reason": ERASED_REASON,
            "detail": detail,
            "created_at": self._now(),
        }
        conn.execute(insert(suppressions), values)

    async def remove(
        self,
        email: str,
        scope: SuppressionScope | None = None,
        *,
        reason: str = "removed",
        force: bool = False,
    ) -> int:
        """Lift ``email``'s suppression (one scope, or all), recording why; the number of
        entries removed. An erased address's entry stays unless ``force``: its owner asked
        never to be mailed."""
        key = address_hash(email)

        def work(conn: Connection) -> int:
            query = select(suppressions).where(suppressions.c.address_hash == key)
            if scope is not None:
                query = query.where(suppressions.c.scope == scope.value)
            rows = [r for r in conn.execute(query) if force or r.reason != ERASED_REASON]
            now = self._now()
            for row in rows:
                conn.execute(
                    delete(suppressions).where(
                        suppressions.c.address_hash == key, suppressions.c.scope == row.scope
                    )
                )
                conn.execute(
                    insert(suppression_removals),
                    {
                        "address_hash": key,
                        "email": row.email,
                        "scope": row.scope,
                        "suppressed_reason": row.reason,
                        "reason": reason,
                        "removed_at": now,
                    },
                )
            return len(rows)

        return await self._db.write(work)

    async def get(self, email: str) -> list[Suppression]:
        """Every entry of ``email`` (an erased one included)."""
        key = address_hash(email)
        query = select(suppressions).where(suppressions.c.address_hash == key)
        return await self._db.read(lambda conn: [_entry(r) for r in conn.execute(query)])

    async def removals(self, email: str) -> list[dict[str, object]]:
        """The recorded removals of ``email``'s entries, oldest first."""
        query = (
            select(suppression_removals)
            .where(suppression_removals.c.address_hash == address_hash(email))
            .order_by(suppression_removals.c.id)
        )
        return await self._db.read(
            lambda conn: [
                {
                    "scope": r.scope,
                    "suppressed_reason": r.suppressed_reason,
                    "reason": r.reason,
                    "removed_at": r.removed_at,
                }
                for r in conn.execute(query)
            ]
        )

    async def page(
        self, *, scope: SuppressionScope | None = None, limit: int = 100, cursor: str | None = None
    ) -> SuppressionPage:
        """Entries in key order, ``limit`` at a time: keyset paging on the primary key, so a
        page costs the same deep in a million-entry list as at its start."""
        query = select(suppressions).order_by(suppressions.c.address_hash, suppressions.c.scope)
        if scope is not None:
            query = query.where(suppressions.c.scope == scope.value)
        if cursor is not None:
            after_hash, after_scope = _read_cursor(cursor)
            query = query.where(
                tuple_(suppressions.c.address_hash, suppressions.c.scope)
                > tuple_(bindparam("h", after_hash), bindparam("s", after_scope))
            )
        rows = await self._db.read(
            lambda conn: [_entry(r) for r in conn.execute(query.limit(limit + 1))]
        )
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more else None
        return SuppressionPage(
            rows, _make_cursor(last.address_hash, last.scope) if last is not None else None
        )

    async def blocked(self, emails: Iterable[str], *, marketing: bool) -> set[str]:
        """The lower-cased addresses among ``emails`` that this kind of mail must skip."""
        wanted = list(emails)
        return await self._db.read(
            lambda conn: self.blocked_within(conn, wanted, marketing=marketing)
        )

    def blocked_within(
        self, conn: Connection, emails: Iterable[str], *, marketing: bool
    ) -> set[str]:
        """:meth:`blocked` inside a transaction the caller holds (the worker's bind)."""
        by_hash = {address_hash(e): e.lower() for e in emails}
        if not by_hash:
            return set()
        scopes = [SuppressionScope.ALL.value]
        if marketing:
            scopes.append(SuppressionScope.MARKETING.value)
        driver = sqlite_connection(conn)
        if driver is not None:
            both = (scopes * 2)[:2]  # the statement takes two scopes; repeat a single one
            if len(by_hash) > _ONE_BY_ONE:
                return _blocked_in_lists(driver, by_hash, both)
            return {
                email
                for key, email in sorted(by_hash.items())
                if driver.execute(_SQLITE_BLOCKED, (key, *both)).fetchall()
            }
        # PostgreSQL: two parameters however many addresses; an expanding IN would bind (and
        # SQLAlchemy compile) one parameter per address of a thousand-recipient chunk.
        params = {"hashes": ",".join(sorted(by_hash)), "scopes": scopes}
        return {by_hash[k] for k in conn.execute(_PG_BLOCKED, params).scalars()}


def _blocked_in_lists(
    driver: sqlite3.Connection, by_hash: dict[str, str], scopes: list[str]
) -> set[str]:
    """A campaign chunk's thousand addresses in a few IN lists rather than a thousand
    lookups (~3 µs each on the driver)."""
    keys = sorted(by_hash)
    blocked: set[str] = set()
    for start in range(0, len(keys), 500):
        part = keys[start : start + 500]
        statement = _SQLITE_BLOCKED_MANY.format(", ".join("?" * len(part)))
        blocked.update(by_hash[key] for (key,) in driver.execute(statement, (*scopes, *part)))
    return blocked


def _entry(row: Row[Any]) -> Suppression:
    return Suppression(
        address_hash=row.address_hash,
        scope=SuppressionScope(row.scope),
        email=row.email,
        reason=row.reason,
        detail=row.detail,
        created_at=row.created_at,
    )


def _make_cursor(key: str, scope: SuppressionScope) -> str:
    return base64.urlsafe_b64encode(f"{key}:{scope.value}".encode()).decode().rstrip("=")


def _read_cursor(cursor: str) -> tuple[str, str]:
    """The (hash, scope) a cursor names; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor this list returned") from exc
    key, sep, scope = raw.partition(":")
    if not sep or len(key) != 64 or scope not in {s.value for s in SuppressionScope}:
        raise ValueError("not a cursor this list returned")
    return key, scope
