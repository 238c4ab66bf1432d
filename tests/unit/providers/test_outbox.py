"""OutboxProvider: one .eml per send_id, an index line per delivery, resends are no-ops."""

from __future__ import annotations

import asyncio
import email
import email.policy
from pathlib import Path
from typing import Any

import orjson
import pytest

from postroom.errors import PermanentProviderError
from postroom.messages import RenderedEmail
from postroom.providers.outbox import INDEX_NAME, OutboxProvider, read_index


def make_email(send_id: str = "01HZX0SEND", **overrides: Any) -> RenderedEmail:
    fields: dict[str, Any] = {
        "send_id": send_id,
        "message_id": f"<{send_id}@postroom.example>",
        "sender": "Postroom <noreply@postroom.example>",
        "recipient": f"{send_id.lower()}@example.com",
        "recipient_name": "John Doe",
        "subject": f"Hello {send_id}",
        "html": "<p>Hi</p>",
        "text": "Hi\n",
        "date": "Mon, 01 Jan 2024 12:00:00 +0000",
        "email_type": "welcome",
    }
    fields.update(overrides)
    return RenderedEmail(**fields)


def index_lines(directory: Path) -> list[dict[str, Any]]:
    path = directory / INDEX_NAME
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def eml_files(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.eml"))


async def test_send_writes_eml_and_index(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path)
    [result] = await provider.send([make_email("S1")])
    assert result.ok and result.send_id == "S1"
    assert result.provider_message_id == "2024-01-01/S1.eml"
    path = tmp_path / "2024-01-01" / "S1.eml"
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Hello S1"
    assert message["Message-ID"] == "<S1@postroom.example>"
    [entry] = index_lines(tmp_path)
    assert entry["send_id"] == "S1"
    assert entry["message_id"] == "<S1@postroom.example>"
    assert entry["to"] == "s1@example.com"
    assert entry["subject"] == "Hello S1"
    assert entry["email_type"] == "welcome"
    assert entry["file"] == "2024-01-01/S1.eml"
    assert entry["time"].endswith("+00:00")
    assert not list(tmp_path.rglob(".tmp-*")), "temporary files left behind"


async def test_resend_is_idempotent_and_writes_nothing(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path)
    [first] = await provider.send([make_email("S1")])
    path = tmp_path / first.provider_message_id  # type: ignore[operator]
    before = (path.read_bytes(), path.stat().st_mtime_ns, (tmp_path / INDEX_NAME).read_bytes())
    [again] = await provider.send([make_email("S1", subject="changed")])
    assert again.ok and again.provider_message_id == first.provider_message_id
    after = (path.read_bytes(), path.stat().st_mtime_ns, (tmp_path / INDEX_NAME).read_bytes())
    assert after == before
    assert len(eml_files(tmp_path)) == 1


async def test_batch_order_is_kept(tmp_path: Path) -> None:
    ids = ["S5", "S1", "S4", "S2", "S3"]
    results = await OutboxProvider(tmp_path).send([make_email(i) for i in ids])
    assert [r.send_id for r in results] == ids
    assert [r.provider_message_id for r in results] == [f"2024-01-01/{i}.eml" for i in ids]
    assert [entry["send_id"] for entry in index_lines(tmp_path)] == ids


async def test_concurrent_sends_of_one_send_id_produce_one_file(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path)
    batches = await asyncio.gather(*(provider.send([make_email("S1")]) for _ in range(20)))
    assert {batch[0].provider_message_id for batch in batches} == {"2024-01-01/S1.eml"}
    assert all(batch[0].ok for batch in batches)
    assert len(eml_files(tmp_path)) == 1
    assert len(index_lines(tmp_path)) == 1
    assert not list(tmp_path.rglob(".tmp-*"))


async def test_duplicate_within_one_batch_is_written_once(tmp_path: Path) -> None:
    results = await OutboxProvider(tmp_path).send([make_email("S1"), make_email("S1")])
    assert [r.ok for r in results] == [True, True]
    assert len(index_lines(tmp_path)) == 1


async def test_bad_message_fails_alone(tmp_path: Path) -> None:
    batch = [make_email("S1"), make_email("S2", subject="x\r\nBcc: a@b.c"), make_email("S3")]
    results = await OutboxProvider(tmp_path).send(batch)
    assert [r.ok for r in results] == [True, False, True]
    assert isinstance(results[1].error, PermanentProviderError)
    assert [entry["send_id"] for entry in index_lines(tmp_path)] == ["S1", "S3"]


async def test_unsafe_send_id_stays_inside_the_directory(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    [result] = await OutboxProvider(outbox).send([make_email("../../etc/evil")])
    assert result.ok and result.provider_message_id is not None
    assert (outbox / result.provider_message_id).resolve().is_relative_to(outbox.resolve())
    [again] = await OutboxProvider(outbox).send([make_email("../../etc/evil")])
    assert again.provider_message_id == result.provider_message_id
    assert len(eml_files(tmp_path)) == 1


@pytest.mark.parametrize(
    ("date", "day"),
    [
        ("Mon, 01 Jan 2024 23:30:00 -0500", "2024-01-02"),  # the day is taken in UTC
        ("Sun, 31 Dec 2023 23:59:59 +0000", "2023-12-31"),
    ],
)
async def test_day_folder_comes_from_the_date_header(tmp_path: Path, date: str, day: str) -> None:
    [result] = await OutboxProvider(tmp_path).send([make_email("S1", date=date)])
    assert result.provider_message_id == f"{day}/S1.eml"


async def test_unparseable_date_falls_back_to_today(tmp_path: Path) -> None:
    [result] = await OutboxProvider(tmp_path).send([make_email("S1", date="not a date")])
    assert result.ok and result.provider_message_id is not None
    assert (tmp_path / result.provider_message_id).exists()


async def test_fsync_mode_writes_the_same(tmp_path: Path) -> None:
    results = await OutboxProvider(tmp_path, fsync=True).send([make_email("S1"), make_email("S2")])
    assert all(r.ok for r in results)
    assert len(index_lines(tmp_path)) == 2


async def test_empty_batch(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path)
    assert await provider.send([]) == []
    await provider.close()
    await provider.close()


async def test_read_index_newest_first_with_limit(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path)
    for number in range(10):
        await provider.send([make_email(f"S{number}")])
    entries = read_index(tmp_path, 3)
    assert [entry["send_id"] for entry in entries] == ["S9", "S8", "S7"]
    assert len(read_index(tmp_path, 100)) == 10
    assert read_index(tmp_path, 0) == []
    assert read_index(tmp_path / "missing", 5) == []


async def test_read_index_spans_blocks_and_skips_a_torn_line(tmp_path: Path) -> None:
    batch = [make_email(f"S{number:05d}", subject="s" * 100) for number in range(1500)]
    await OutboxProvider(tmp_path).send(batch)
    assert (tmp_path / INDEX_NAME).stat().st_size > 3 * 65536
    with (tmp_path / INDEX_NAME).open("ab") as handle:
        handle.write(b'{"send_id": "torn", "subj')  # a crash in the middle of an append
    entries = read_index(tmp_path, 1500)
    assert [entry["send_id"] for entry in entries] == [f"S{n:05d}" for n in reversed(range(1500))]
    await OutboxProvider(tmp_path).send([make_email("AFTER")])
    assert read_index(tmp_path, 2)[0]["send_id"] == "AFTER"


async def test_resend_restores_an_index_line_lost_to_a_crash(tmp_path: Path) -> None:
    # A worker killed between linking the file and appending its line leaves the file
    # unindexed; the (ambiguous) resend that follows must add the line, exactly once.
    outbox = OutboxProvider(tmp_path)
    await outbox.send([make_email("01HZX0KEEP"), make_email("01HZX0LOST")])
    lines = (tmp_path / INDEX_NAME).read_bytes().splitlines(keepends=True)
    (tmp_path / INDEX_NAME).write_bytes(b"".join(line for line in lines if b"0LOST" not in line))
    assert [e["send_id"] for e in index_lines(tmp_path)] == ["01HZX0KEEP"]

    [result] = await outbox.send([make_email("01HZX0LOST")])
    await outbox.send([make_email("01HZX0LOST"), make_email("01HZX0KEEP")])

    assert result.ok
    assert sorted(e["send_id"] for e in index_lines(tmp_path)) == ["01HZX0KEEP", "01HZX0LOST"]
    assert len(eml_files(tmp_path)) == 2
