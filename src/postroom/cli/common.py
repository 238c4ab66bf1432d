"""What every command shares: settings, one-line errors, running a coroutine with Postroom."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from pydantic import ValidationError

from postroom.config import Settings, load_settings
from postroom.errors import PostroomError
from postroom.wiring import Postroom, open_postroom, prepare_database

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    print(f"postroom: error: {message}", file=sys.stderr)
    raise SystemExit(1)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        fail(f"setting POSTROOM_{field.upper()}: {first['msg']}")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def run(coro: Awaitable[T]) -> T:
    """Run ``coro``; a Postroom error becomes one line on stderr and exit status 1."""
    try:
        return asyncio.run(_as_coroutine(coro))
    except PostroomError as exc:
        fail(str(exc))


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def with_postroom(settings: Settings, action: Callable[[Postroom], Awaitable[T]]) -> T:
    await prepare_database(settings)
    postroom = await open_postroom(settings)
    try:
        return await action(postroom)
    finally:
        await postroom.close()
