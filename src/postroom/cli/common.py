"""What every command shares: settings, one-line errors, running a coroutine with Postroom."""

from __future__ import annotations

import asyncio
import os
import sys
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import orjson
from pydantic import ValidationError

from postroom.config import Settings, load_settings
from postroom.errors import PostroomError

# Commands import the service (SQLAlchemy, Alembic, templates) when they run, not at start:
# `--help` and mistakes on the command line answer without that second of imports.
if TYPE_CHECKING:
    from postroom.wiring import Postroom

T = TypeVar("T")


class CommandError(PostroomError):
    """A problem a command reports as it is, worded for the command line."""


def fail(message: str) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with status 1."""
    line = " ".join(message.split())
    print(f"postroom: error: {line}", file=sys.stderr)
    raise SystemExit(1)


def pydantic_reason(message: str) -> str:
    """Pydantic's message without the ``Value error, `` it puts before a validator's own."""
    return message.removeprefix("Value error, ")


def json_object_option(value: str | None, name: str) -> dict[str, Any]:
    """The JSON object given to option ``--name`` ({} when absent), or a one-line error."""
    if not value:
        return {}
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        fail(f"--{name} is not valid JSON: {exc}")
    if not isinstance(parsed, dict):
        fail(f"--{name} must be a JSON object")
    return parsed


def settings_or_exit() -> Settings:
    config_file = os.environ.get("POSTROOM_CONFIG")
    if config_file and not Path(config_file).is_file():
        fail(f"POSTROOM_CONFIG: {config_file} does not exist or is not a file")
    try:
        settings = load_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name, *rest = [str(part) for part in first["loc"]] or ["?"]
        where = f" (item {int(rest[0]) + 1})" if rest and rest[0].isdigit() else ""
        source = f" (or {name} in {config_file})" if config_file else ""
        fail(f"setting POSTROOM_{name.upper()}{where}{source}: {pydantic_reason(first['msg'])}")
    except tomllib.TOMLDecodeError as exc:
        fail(f"POSTROOM_CONFIG: {config_file} is not valid TOML: {exc}")
    except OSError as exc:
        fail(f"POSTROOM_CONFIG: cannot read {config_file}: {exc.strerror or exc}")
    if settings.database_url is None:  # the SQLite file lives in the data dir: make it
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail(f"POSTROOM_DATA_DIR: cannot create {settings.data_dir}: {exc.strerror or exc}")
    return settings


def configure_logging(settings: Settings) -> None:
    """JSON lines on stderr (``POSTROOM_LOG_FORMAT=text`` for people), see ``postroom.logs``."""
    from postroom import logs

    logs.configure(settings.log_level, json=settings.log_format == "json")


def run(coro: Awaitable[T]) -> T:
    """Run ``coro``; a Postroom or OS error becomes one line on stderr and exit status 1."""
    try:
        return asyncio.run(_as_coroutine(coro))
    except PostroomError as exc:
        fail(str(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        fail(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        print("postroom: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def with_postroom(settings: Settings, action: Callable[[Postroom], Awaitable[T]]) -> T:
    from postroom.wiring import open_postroom, prepare_database

    await prepare_database(settings)
    postroom = await open_postroom(settings)
    try:
        return await action(postroom)
    finally:
        await postroom.close()
