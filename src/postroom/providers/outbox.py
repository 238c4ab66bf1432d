"""The embedded default provider: every message becomes an ``.eml`` file plus an index line.

Nothing leaves the machine; a person browses ``index.jsonl`` (or a future /outbox page) to see
what would have been sent. Writing is idempotent on ``send_id`` so a resend is a no-op.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import hashlib
import itertools
import logging
import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import orjson

from postroom.errors import InvalidMessageError, PermanentProviderError, TransientProviderError
from postroom.messages import RenderedEmail
from postroom.providers.base import SendResult
from postroom.providers.mime import build_mime

__all__ = ["INDEX_NAME", "OutboxProvider", "read_index"]

INDEX_NAME = "index.jsonl"
INLINE_BATCH = 64
"""Batches up to this size are written on the event loop (about 0.3 ms a message)."""
RESEND_INDEX_WINDOW = 10_000
"""How many of the newest index lines a resend looks through for its own line."""
_log = logging.getLogger("postroom.providers.outbox")
_TEMP_NAMES = itertools.count()
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL
_SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\Z")


def _file_stem(send_id: str) -> str:
    # A send id becomes a file name: anything that could escape the folder or clash on a
    # case-insensitive disk is replaced by a stable digest, so resends still find the file.
    if _SAFE_ID.match(send_id):
        return send_id
    return "id-" + hashlib.sha256(send_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]


@functools.lru_cache(maxsize=64)
def _day(date_header: str) -> str:
    # The day comes from the message's own Date header, not the clock, so a resend of the same
    # message after midnight still lands on the same name and is recognised as a duplicate.
    # Cached: a busy second's messages share one Date.
    try:
        moment = parsedate_to_datetime(date_header)
    except (TypeError, ValueError):
        moment = datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d")


class OutboxProvider:
    """Writes ``{directory}/{YYYY-MM-DD}/{send_id}.eml`` and appends to ``index.jsonl``.

    Durability: each file is written to a temporary name, flushed (one ``os.write`` of the whole
    message, no user-space buffer) and hard-linked to its final name, so a reader never sees a
    partial ``.eml`` and a link that already exists means "already delivered". There is no
    per-message ``fsync`` by default: the outbox is a development and demo sink, and an fsync per
    message would cap it at a few hundred messages/s. Pass ``fsync=True`` to fsync every file
    before linking and the folders and index once per batch. A crash between the link and the
    index append leaves a file without an index line; the file is the record, the index a view.
    """

    name = "outbox"
    max_batch_size = 1000

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.fsync = fsync

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        if not batch:
            return []
        if len(batch) <= INLINE_BATCH:
            # A few local writes take less time than the hop to a thread and back (1-3 ms
            # under load, measured): a small batch is written on the loop itself.
            return self._write_batch(list(batch))
        # All blocking file I/O of a larger batch in one thread hop.
        return await asyncio.to_thread(self._write_batch, list(batch))

    async def close(self) -> None:
        return None

    def _write_batch(self, batch: list[RenderedEmail]) -> list[SendResult]:
        results: list[SendResult] = []
        touched: set[Path] = set()
        index = _IndexWriter(self.directory / INDEX_NAME)
        recent: set[str] | None = None  # send ids of recent index lines, read on first need
        try:
            # Locked before the first link, not the first append: a concurrent resend of the
            # same send id must not find the file before its index line is written.
            index.open()
            for email in batch:
                error: PermanentProviderError | TransientProviderError
                relative = f"{_day(email.date)}/{_file_stem(email.send_id)}.eml"
                try:
                    written = self._write_one(email, self.directory / relative, touched)
                except InvalidMessageError as exc:
                    error = PermanentProviderError(f"message cannot be serialised: {exc}")
                    results.append(SendResult(email.send_id, error=error))
                    continue
                except OSError as exc:
                    error = TransientProviderError(f"outbox write failed: {exc}", code=exc.strerror)
                    results.append(SendResult(email.send_id, error=error))
                    continue
                if not written and recent is None:
                    try:
                        recent = _recent_send_ids(self.directory)
                    except OSError:
                        # The file is the record and it is written; with the index unreadable
                        # we cannot tell a missing line from a present one, so add none.
                        _log.warning("outbox index unreadable", exc_info=True)
                        recent, index.failed = set(), True
                if written or (recent is not None and email.send_id not in recent):
                    # Straight after the link, not once per batch, so a worker killed mid-batch
                    # leaves at most one file without its line; the resend that follows finds
                    # the file, sees the line missing, and adds it.
                    index.append(_index_line(email, relative))
                results.append(SendResult(email.send_id, provider_message_id=relative))
        finally:
            index.close(fsync=self.fsync)
        if self.fsync:
            for folder in touched | {self.directory}:
                try:
                    _fsync_dir(folder)
                except OSError:
                    # The messages are written and linked: reporting them failed would send
                    # them again. Only their durability across a power loss is in doubt.
                    _log.warning("outbox folder fsync failed: %s", folder, exc_info=True)
        return results

    def _write_one(self, email: RenderedEmail, final: Path, touched: set[Path]) -> bool:
        """Write ``email`` to ``final``; False when it was already there (a resend)."""
        if os.path.exists(final):
            return False
        data = build_mime(email)
        folder = final.parent
        if folder not in touched:
            folder.mkdir(parents=True, exist_ok=True)
            touched.add(folder)
        # Not ".eml": a worker killed before the link leaves this behind, and it must not pass
        # for a delivered message. Unique per process and write; O_EXCL refuses a leftover.
        temp = f"{folder}/.tmp-{os.getpid()}-{next(_TEMP_NAMES)}.part"
        try:
            fd = os.open(temp, _TEMP_FLAGS, 0o600)
        except FileExistsError:  # left by a killed process that had the same pid
            os.unlink(temp)
            fd = os.open(temp, _TEMP_FLAGS, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                # link() fails if the name exists, unlike rename(): a concurrent send of the
                # same send_id cannot overwrite the file or produce a second index line.
                os.link(temp, final)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(temp)


class _IndexWriter:
    """Appends lines to ``index.jsonl``, opening it on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None
        self.failed = False
        self.torn = False

    def open(self) -> None:
        """Open and lock the index until :meth:`close`. While another batch (thread or
        process) holds it, that batch's links and index lines appear together."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            size = os.fstat(self.fd).st_size
            # A worker killed mid-append tore the last line: do not glue ours onto it.
            self.torn = bool(size) and os.pread(self.fd, 1, size - 1) != b"\n"
        except OSError:
            self.failed = True
            _log.warning("outbox index cannot be opened", exc_info=True)

    def append(self, line: bytes) -> None:
        if self.failed or self.fd is None:
            return
        try:
            if self.torn:
                line, self.torn = b"\n" + line, False
            # O_APPEND and one write per line: concurrent writers never interleave inside one.
            os.write(self.fd, line)
        except OSError:
            # The .eml file is written and linked: the message is delivered. Reporting it as
            # failed would send it again; a missing index line only hides it from the view.
            self.failed = True
            _log.warning("outbox index append failed", exc_info=True)

    def close(self, *, fsync: bool) -> None:
        if self.fd is None:
            return
        try:
            if fsync and not self.failed:
                os.fsync(self.fd)
        finally:
            os.close(self.fd)
            self.fd = None


def _index_line(email: RenderedEmail, relative: str) -> bytes:
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "send_id": email.send_id,
        "message_id": email.message_id,
        "to": email.recipient,
        "subject": email.subject,
        "email_type": email.email_type,
        "file": relative,
    }
    return orjson.dumps(entry) + b"\n"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recent_send_ids(directory: Path) -> set[str]:
    """Send ids of the newest index lines. Only a resend (rare: it follows an ambiguous
    outcome) pays for this, to add the line a worker killed after the link never wrote."""
    return {str(entry.get("send_id")) for entry in read_index(directory, RESEND_INDEX_WINDOW)}


def read_index(directory: Path, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` index entries, newest first. Blocking: call it in a thread.

    Reads the file backwards in blocks so a long-lived outbox costs only what is shown; a
    torn last line (crash during an append) is skipped.
    """
    path = Path(directory) / INDEX_NAME
    if limit <= 0 or not path.exists():
        return []
    entries: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        position = handle.seek(0, os.SEEK_END)
        tail = b""
        while position > 0 and len(entries) < limit:
            step = min(65536, position)
            position -= step
            handle.seek(position)
            chunk = handle.read(step) + tail
            lines = chunk.split(b"\n")
            # The first piece may be the end of a line that starts in an earlier block.
            tail = lines.pop(0) if position > 0 else b""
            for line in reversed(lines):
                if len(entries) < limit:
                    _collect(line, entries)
    return entries


def _collect(line: bytes, entries: list[dict[str, Any]]) -> None:
    if not line.strip():
        return
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return
    if isinstance(entry, dict):
        entries.append(entry)
