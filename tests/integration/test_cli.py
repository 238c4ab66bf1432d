"""The ``postroom`` command as a user runs it: a fresh process per command, settings from the
environment, errors as one line on stderr.

Starting Python and importing Postroom is the cost here (one to two seconds a command), so
commands that do not depend on each other run side by side, and the dead-letter scenario is one
test.
"""

from __future__ import annotations

import base64
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from alembic.script import ScriptDirectory
from cryptography.hazmat.primitives import serialization
from tests.log_scan import CANARY

from postroom.providers.outbox import INDEX_NAME
from postroom.store.migrate import alembic_config

T = TypeVar("T")
Env = dict[str, str]
Result = subprocess.CompletedProcess[str]

TIMEOUT = 60.0
WELCOME = ("send", "--type", "welcome", "--to", CANARY)
JANE = ("--data", '{"creator_name":"Jane"}')


@pytest.fixture(scope="module")
def bytecode_cache(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the commands keep their bytecode: pytest's cache (kept between runs) if enabled."""
    cache = getattr(pytestconfig, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("postroom-cli-bytecode"))
    return tmp_path_factory.mktemp("bytecode")


def postroom_env(bytecode_cache: Path, data_dir: Path, **settings: Any) -> Env:
    """The environment of a user running Postroom on ``data_dir`` with ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    # Without bytecode every command compiles SQLAlchemy and Alembic again (4 s instead of
    # 1.5 s); cache it outside the repository and the virtualenv.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(bytecode_cache)
    env.update(
        POSTROOM_DATA_DIR=str(data_dir),
        POSTROOM_SECRET_KEY="cli-test-secret-cli-test-secret!",
        POSTROOM_API_KEYS="cli-test-key",
        POSTROOM_RETRY_SCHEDULE="0.05",
        POSTROOM_IMMEDIATE_RETRY_DELAY="0.001",
        POSTROOM_SHUTDOWN_GRACE="5",
    )
    env.update({f"POSTROOM_{name.upper()}": str(value) for name, value in settings.items()})
    return env


@pytest.fixture
def make_env(bytecode_cache: Path) -> Callable[..., Env]:
    return functools.partial(postroom_env, bytecode_cache)


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "postroom", *args]


def start(env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command(*args),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> Result:
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def cli(env: Mapping[str, str], *args: str) -> Result:
    return finish(start(env, *args))


def cli_together(runs: Sequence[tuple[Mapping[str, str], Sequence[str]]]) -> list[Result]:
    """Run independent commands side by side; results in the order given."""
    processes: list[subprocess.Popen[str]] = []
    try:
        for env, args in runs:
            processes.append(start(env, *args))
        return [finish(process) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def ok(result: Result) -> str:
    assert result.returncode == 0, f"{result.args[3:]} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def one_line_error(result: Result) -> str:
    """The error message of a command that failed the documented way."""
    assert result.returncode == 1, f"exit {result.returncode}; stderr:\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"want one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("postroom: error: "), lines[0]
    return lines[0].removeprefix("postroom: error: ")


def free_port() -> int:
    """A local port nothing listens on: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def dead_letters(env: Env) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in ok(cli(env, "dlq", "list", "--json")).splitlines()]


def outbox_recipients(data_dir: Path) -> str:
    index = data_dir / "outbox" / INDEX_NAME
    return index.read_text() if index.exists() else ""


@pytest.fixture
def worker() -> Iterator[Callable[[Env, Path], subprocess.Popen[str]]]:
    """Start ``postroom worker`` processes (stderr into a log file); killed if a test fails."""
    started: list[subprocess.Popen[str]] = []

    def start_worker(env: Env, log: Path) -> subprocess.Popen[str]:
        with log.open("a") as stderr:
            process = subprocess.Popen(
                command("worker"),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
            )
        started.append(process)
        return process

    try:
        yield start_worker
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()


def stop_gracefully(process: subprocess.Popen[str], log: Path) -> None:
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        returncode = process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker ignored SIGTERM for 10 s; its log:\n{log.read_text()}")
    assert returncode == 0, f"worker exited {returncode}; its log:\n{log.read_text()}"
    assert time.monotonic() - began < 5, "an idle worker should stop at once"


def wait_for(condition: Callable[[], T | None], what: str, log: Path, timeout: float = 30) -> T:
    """The first result of ``condition`` that is not None."""
    deadline = time.monotonic() + timeout
    while (result := condition()) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout} s; worker log:\n{log.read_text()}")
        time.sleep(0.1)
    return result


def test_help_lists_every_command(make_env: Callable[..., Env], tmp_path: Path) -> None:
    out = ok(cli(make_env(tmp_path), "--help"))
    for name in ("serve", "api", "worker", "migrate", "send", "dlq", "bench"):
        assert name in out


def test_dkim_keygen_writes_a_private_key_and_prints_the_record(
    make_env: Callable[..., Env], tmp_path: Path
) -> None:
    env = make_env(tmp_path)
    key = tmp_path / "dkim.pem"
    args = ("dkim", "keygen", "--selector", "pr1", "--domain", "news.example.com")
    out = ok(cli(env, *args, "--out", str(key)))
    assert key.stat().st_mode & 0o777 == 0o600
    record = next(line for line in out.splitlines() if line.startswith("publish:"))
    assert "pr1._domainkey.news.example.com" in record and "v=DKIM1; k=rsa; p=" in record
    public = serialization.load_der_public_key(base64.b64decode(record.split("p=")[1][:-1]))
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert public.public_numbers() == private.public_key().public_numbers()  # type: ignore[union-attr]
    assert "--force" in one_line_error(cli(env, *args, "--out", str(key)))


def test_migrate_then_send_twice(make_env: Callable[..., Env], tmp_path: Path) -> None:
    env = make_env(tmp_path / "data")

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    for _ in range(2):  # a fresh data dir, then one already at the head revision
        assert ok(cli(env, "migrate")).strip() == f"database at revision {head}"

    first = ok(cli(env, *WELCOME, *JANE)).split()
    assert first[1:] == ["queued", "(queued)"]
    message_id = first[0]
    assert len(message_id) == 26  # a ULID

    again = ok(cli(env, *WELCOME, *JANE)).strip()
    assert again == f"{message_id} already accepted (queued)"


# Each case: extra settings, arguments, what the one-line message must contain.
COMMAND_ERRORS: dict[str, tuple[dict[str, str], tuple[str, ...], tuple[str, ...]]] = {
    "bad address": (
        {},
        ("send", "--type", "welcome", "--to", "not-an-address", *JANE),
        ("--to", "@"),
    ),
    "unknown type": (
        {},
        ("send", "--type", "nope", "--to", CANARY, *JANE),
        ("--type", "'nope'", "welcome"),
    ),
    "data not JSON": ({}, (*WELCOME, "--data", "{creator_name: Jane}"), ("--data", "JSON")),
    "data not an object": ({}, (*WELCOME, "--data", '["Jane"]'), ("--data", "JSON object")),
    "missing template variable": ({}, WELCOME, ("creator_name", "--data")),
    "bad setting": (
        {"worker_concurrency": "zero"},
        (*WELCOME, *JANE),
        ("POSTROOM_WORKER_CONCURRENCY", "integer"),
    ),
    "unsupported queue": ({"queue_url": "kafka://x"}, (*WELCOME, *JANE), ("POSTROOM_QUEUE_URL",)),
    "missing config file": (
        {"config": "/nonexistent/postroom.toml"},
        ("migrate",),
        ("POSTROOM_CONFIG", "/nonexistent/postroom.toml"),
    ),
    "show unknown dead letter": ({}, ("dlq", "show", "NOPE"), ("'NOPE'", "dlq list")),
    "replay without ids": ({}, ("dlq", "replay"), ("ids", "--all")),
    "purge unknown id": ({}, ("dlq", "purge", "NOPE"), ("purged 0 of 1",)),
    "database unreachable": (
        {"database_url": "postgresql://nobody@127.0.0.1:1/postroom"},
        ("dlq", "list"),
        ("cannot use the database", "127.0.0.1:1", "refused"),
    ),
}


@pytest.fixture(scope="module")
def command_errors(
    bytecode_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Result]:
    """Every case of COMMAND_ERRORS, run side by side, each in its own data dir."""
    runs = [
        (postroom_env(bytecode_cache, tmp_path_factory.mktemp("errors"), **settings), args)
        for settings, args, _ in COMMAND_ERRORS.values()
    ]
    return dict(zip(COMMAND_ERRORS, cli_together(runs), strict=True))


@pytest.mark.parametrize("case", COMMAND_ERRORS)
def test_errors_are_one_line_saying_what_to_fix(
    command_errors: dict[str, Result], case: str
) -> None:
    message = one_line_error(command_errors[case])
    for fragment in COMMAND_ERRORS[case][2]:
        assert fragment in message


def test_dead_letters_list_show_replay_purge(
    make_env: Callable[..., Env],
    worker: Callable[[Env, Path], subprocess.Popen[str]],
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    nothing_listens = make_env(
        data_dir, provider="smtp", smtp_port=free_port(), immediate_retries=0
    )
    outbox = make_env(data_dir)

    # Two emails no server will take: the worker gives up and dead-letters both.
    replayed_to, purged_to = "replay@example.com", "purge@example.com"
    ok(cli(nothing_listens, "send", "--type", "welcome", "--to", replayed_to, *JANE))
    log = tmp_path / "smtp-worker.log"
    smtp_worker = worker(nothing_listens, log)
    ok(cli(nothing_listens, "send", "--type", "welcome", "--to", purged_to, *JANE))

    def both_dead() -> list[dict[str, Any]] | None:
        letters = dead_letters(outbox)
        return letters if len(letters) == 2 else None

    letters = {
        letter["recipient"]: letter for letter in wait_for(both_dead, "two dead letters", log)
    }
    stop_gracefully(smtp_worker, log)
    assert set(letters) == {replayed_to, purged_to}
    for letter in letters.values():
        assert letter["email_type"] == "welcome"
        assert letter["queue"] == "transactional"
        assert "SMTP connection failed" in letter["reason"]
    replay_id, purge_id = letters[replayed_to]["id"], letters[purged_to]["id"]
    log = tmp_path / "outbox-worker.log"
    outbox_worker = worker(outbox, log)  # idle until the replay; starting takes a while

    table, shown = cli_together([(outbox, ("dlq", "list")), (outbox, ("dlq", "show", replay_id))])
    rows = [line for line in ok(table).splitlines() if replay_id in line or purge_id in line]
    assert len(rows) == 2, table.stdout  # not piped through a terminal: one line a row, uncut
    for row in rows:
        assert "SMTP connection failed" in row
        assert "Connect call failed" in row
    show = ok(shown)
    assert f"id       {replay_id}" in show
    assert "reason   gave up after" in show
    assert "SMTP connection failed" in show
    document = orjson.loads(show[show.index("{") :])
    assert document["recipient_email"] == replayed_to
    assert document["template_data"] == {"creator_name": "Jane"}

    # Replayed with a provider that works, it is delivered and leaves the DLQ.
    assert ok(cli(outbox, "dlq", "replay", replay_id)).strip() == "replayed 1 message"
    wait_for(
        lambda: True if replayed_to in outbox_recipients(data_dir) else None,
        "delivery to the outbox",
        log,
    )
    stop_gracefully(outbox_worker, log)
    assert purged_to not in outbox_recipients(data_dir)

    # Purging everything asks first; with nobody to answer, nothing is deleted.
    remaining, unconfirmed = cli_together(
        [(outbox, ("dlq", "list", "--json")), (outbox, ("dlq", "purge", "--all"))]
    )
    assert [orjson.loads(line)["id"] for line in ok(remaining).splitlines()] == [purge_id]
    assert unconfirmed.returncode != 0
    assert "Aborted" in unconfirmed.stderr
    assert ok(cli(outbox, "dlq", "purge", "--all", "--yes")).strip() == "purged 1 message"
    assert ok(cli(outbox, "dlq", "list")).strip() == "The dead-letter queue is empty."
