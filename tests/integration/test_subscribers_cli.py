"""``postroom subscribers`` and ``postroom suppressions`` on SQLite and PostgreSQL, run in
process with settings from the environment: a CSV import with bad rows, imported twice; the
GDPR export and erasure; the suppression list's add, list, remove and CSV export."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from postroom.cli.main import app
from postroom.config import Settings
from postroom.wiring import open_postroom, prepare_database


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return {
        "POSTROOM_DATA_DIR": str(settings.data_dir),
        "POSTROOM_DATABASE_URL": settings.resolved_database_url,
        "POSTROOM_SECRET_KEY": str(settings.secret_key),
        "POSTROOM_API_KEYS": "test-key",
    }


def make_list(settings: Settings, list_id: str) -> None:
    async def create() -> None:
        await prepare_database(settings)
        pr = await open_postroom(settings)
        try:
            await pr.subscribers.create_list("Essays", "Jane", list_id)
        finally:
            await pr.close()

    asyncio.run(create())


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_import_reports_bad_rows_and_is_idempotent(
    settings: Settings, env: dict[str, str], tmp_path: Path
) -> None:
    make_list(settings, "jane")
    lines = ["Email,Name,consented_at,ip"]
    lines += [f"reader{i}@example.com,Reader {i},,192.0.2.{i % 250}" for i in range(2500)]
    lines[101] = "not-an-address,Bad,,"  # line 102 of the file
    lines += [",no address,,", "late@example.com,,2999-01-01,", "when@example.com,,soon,"]
    lines += ["READER7@example.com,Reader 7,,"]  # a repeat, in another case
    file = tmp_path / "people.csv"
    file.write_text("\n".join(lines) + "\n")

    code, out, err = invoke(
        env,
        "subscribers",
        "import",
        str(file),
        "--list",
        "jane",
        "--consent",
        "implied",
        "--source",
        "shop",
    )
    assert code == 0, err
    assert out.strip() == "2504 rows: 2499 created, 0 updated, 1 unchanged, 0 skipped, 4 bad"
    reported = err.strip().splitlines()
    assert reported[0].startswith("line 102: invalid address 'not-an-address'")
    assert [r.split(":")[0] for r in reported] == [
        "line 102",
        "line 2502",
        "line 2503",
        "line 2504",
    ]
    assert "future" in reported[2] and "ISO 8601" in reported[3]

    code, out, _ = invoke(
        env,
        "subscribers",
        "import",
        str(file),
        "--list",
        "jane",
        "--consent",
        "implied",
        "--source",
        "shop",
    )
    assert code == 0
    assert out.strip() == "2504 rows: 0 created, 0 updated, 2500 unchanged, 0 skipped, 4 bad"

    code, out, err = invoke(env, "subscribers", "export", "reader5@example.com")
    assert code == 0, err
    held = orjson.loads(out)
    assert held["subscriber"]["name"] == "Reader 5"
    assert [(c["kind"], c["source"], c["ip"]) for c in held["consent_records"]] == [
        ("implied", "shop", "192.0.2.5")
    ]
    code, _, err = invoke(env, "subscribers", "import", str(file), "--list", "nope")
    assert code == 1 and err.strip() == (
        "postroom: error: --list: no list with id 'nope' (create it with the API)"
    )

    code, out, _ = invoke(env, "subscribers", "erase", "reader5@example.com", "--yes")
    assert code == 0 and "1 subscriptions" in out and "hash stays suppressed" in out
    code, out, _ = invoke(env, "subscribers", "export", "reader5@example.com")
    assert orjson.loads(out)["subscriber"] is None


def test_suppressions_cli(settings: Settings, env: dict[str, str]) -> None:
    for i in range(3):
        code, out, err = invoke(
            env, "suppressions", "add", f"S{i}@example.com", "--reason", "manual"
        )
        assert code == 0, err
    invoke(env, "suppressions", "add", "s0@example.com", "--scope", "marketing", "--reason", "x")
    code, _, err = invoke(env, "suppressions", "add", "nope", "--reason", "x")
    assert code == 1 and err.startswith("postroom: error: EMAIL: invalid address 'nope'")

    code, out, err = invoke(env, "suppressions", "list", "--limit", "3")
    assert code == 0 and len(out.strip().splitlines()) == 3 and "more: --cursor" in err
    cursor = err.split("--cursor ")[1].strip()
    code, out, err = invoke(env, "suppressions", "list", "--limit", "3", "--cursor", cursor)
    assert len(out.strip().splitlines()) == 1 and "more" not in err

    code, out, _ = invoke(env, "suppressions", "remove", "s1@example.com", "--reason", "typo")
    assert code == 0 and "1 entry removed" in out
    code, _, err = invoke(env, "suppressions", "remove", "s1@example.com", "--reason", "typo")
    assert code == 1 and "is not suppressed" in err

    code, out, err = invoke(env, "suppressions", "export")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and err.strip() == "3 entries"
    assert sorted((r["email"], r["scope"]) for r in rows) == [
        ("s0@example.com", "all"),
        ("s0@example.com", "marketing"),
        ("s2@example.com", "all"),
    ]
