"""Group commit for SQLite: concurrent webhook requests share one transaction and one COMMIT.

On SQLite a commit costs ~100-150 µs and a write transaction holds the whole database, so a
transaction per single-event request was most of its cost. Requests that arrive while the
loop is busy are collected, run one after another inside one ``BEGIN IMMEDIATE … COMMIT``,
each in a savepoint of its own, and their callers are answered only after that COMMIT: no
request is acknowledged before its effects are durable, and a request that fails (a replayed
token) rolls back to its savepoint and leaves the others' effects in place. A failed COMMIT
fails every request of the group. Nothing interleaves with a group: the SQLite transaction
runs on the event loop without awaiting (``store.database``).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from postroom.store.database import Database
from postroom.store.sqlite_driver import sqlite_connection

R = TypeVar("R")
T = TypeVar("T")

_SAVEPOINT = "SAVEPOINT feedback_request"
_RELEASE = "RELEASE feedback_request"
_ROLLBACK = "ROLLBACK TO feedback_request"


class GroupCommit(Generic[R, T]):
    """Runs ``work(conn, request)`` for concurrent requests in shared SQLite transactions.

    A group stops growing at ``max_size`` (by ``size(request)``: events, here): 500 events
    hold the database's write lock for some 20-30 ms, which a worker process's send waits out;
    larger groups saved little more."""

    def __init__(
        self,
        db: Database,
        work: Callable[[Connection, R], T],
        *,
        size: Callable[[R], int],
        max_size: int = 500,
    ) -> None:
        self._db = db
        self._work = work
        self._size = size
        self._max_size = max_size
        self._pending: list[tuple[R, asyncio.Future[T]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def run(self, request: R) -> T:
        """``work`` for ``request``, once the transaction it ran in has committed."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((request, done))
        if self._flusher is None:
            # Runs after the callbacks already due, so requests read in the same pass of
            # the loop join this group.
            self._flusher = asyncio.create_task(self._flush())
        return await done

    async def _flush(self) -> None:
        group: list[tuple[R, asyncio.Future[T]]] = []
        try:
            while self._pending:
                group = self._take()
                try:
                    outcomes = await self._db.write(partial(self._run_group, group=group))
                except Exception as exc:  # the group's transaction did not commit
                    for _request, done in group:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for (_request, done), outcome in zip(group, outcomes, strict=True):
                    if done.done():  # the caller went away; its effects stand
                        continue
                    if isinstance(outcome, Exception):
                        done.set_exception(outcome)
                    else:
                        done.set_result(outcome)
        except BaseException:
            # Cancelled (the app is stopping): nothing will run these requests any more.
            for _request, done in [*group, *self._pending]:
                done.cancel()
            self._pending = []
            raise
        finally:
            self._flusher = None

    def _take(self) -> list[tuple[R, asyncio.Future[T]]]:
        taken, total = 0, 0
        for request, _done in self._pending:
            total += self._size(request)
            taken += 1
            if total >= self._max_size:
                break
        group, self._pending = self._pending[:taken], self._pending[taken:]
        return group

    def _run_group(
        self, conn: Connection, *, group: list[tuple[R, asyncio.Future[T]]]
    ) -> list[T | Exception]:
        driver = sqlite_connection(conn)
        assert driver is not None, "group commits are for SQLite"
        outcomes: list[T | Exception] = []
        for request, _done in group:
            driver.execute(_SAVEPOINT)
            try:
                outcome: T | Exception = self._work(conn, request)
            except (OperationalError, sqlite3.OperationalError):
                raise  # a lock conflict: Database reruns the whole group
            except Exception as exc:
                driver.execute(_ROLLBACK)
                outcome = exc
            driver.execute(_RELEASE)
            outcomes.append(outcome)
        return outcomes
