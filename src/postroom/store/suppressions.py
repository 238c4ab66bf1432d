"""The suppression list: addresses that must not receive mail, checked at send time."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import Connection, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from postroom.store.database import Database
from postroom.store.schema import suppressions
from postroom.store.sqlite_driver import sqlite_connection

# Built once: on SQLite, building a statement costs more than running it.
_BLOCKED = select(suppressions.c.email).where(
    suppressions.c.email.in_(bindparam("emails", expanding=True)),
    suppressions.c.scope.in_(bindparam("scopes", expanding=True)),
)


_SQLITE_BLOCKED = "SELECT 1 FROM suppressions WHERE email = ? AND scope IN (?, ?)"


_INSERT_IGNORING_CONFLICTS = {
    "postgresql": postgresql.insert(suppressions).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(suppressions).on_conflict_do_nothing(),
}


class SuppressionScope(StrEnum):
    ALL = "all"  # hard bounces, invalid addresses: no mail at all
    MARKETING = "marketing"  # complaints, unsubscribes: transactional mail still goes


class Suppressions:
    """Repository of suppressed addresses (keyed by lower-cased address)."""

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
            "email": email.lower(),
            "scope": scope.value,
            "reason": reason,
            "detail": detail,
            "created_at": self._now(),
        }
        conn.execute(_INSERT_IGNORING_CONFLICTS[conn.dialect.name], values)

    async def remove(self, email: str, scope: SuppressionScope | None = None) -> int:
        query = delete(suppressions).where(suppressions.c.email == email.lower())
        if scope is not None:
            query = query.where(suppressions.c.scope == scope.value)
        return await self._db.write(lambda conn: conn.execute(query).rowcount)

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
        wanted = sorted({e.lower() for e in emails})
        if not wanted:
            return set()
        scopes = [SuppressionScope.ALL.value]
        if marketing:
            scopes.append(SuppressionScope.MARKETING.value)
        driver = sqlite_connection(conn)
        if driver is not None:
            both = (scopes * 2)[:2]  # the statement takes two scopes; repeat a single one
            return {e for e in wanted if driver.execute(_SQLITE_BLOCKED, (e, *both)).fetchall()}
        blocked: set[str] = set()
        for start in range(0, len(wanted), 500):
            params = {"emails": wanted[start : start + 500], "scopes": scopes}
            blocked.update(conn.execute(_BLOCKED, params).scalars())
        return blocked
