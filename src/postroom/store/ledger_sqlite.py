"""The ledger's statements as SQL for the stdlib SQLite driver (see ``store.sqlite_driver``).

They are built from the schema's names and constants only (hence S608 is off for this module);
values are always bound. Each mirrors a Core statement in ``store.ledger`` or
``store.ledger_rows``; the store tests run both dialects through the same repository.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from postroom.store.ledger_records import FINAL, SENDABLE, SendRecord, SendStatus
from postroom.store.schema import sends
from postroom.store.sqlite_driver import loaded_time

RECORD_COLUMNS = [c for c in sends.c if c.name != "document"]
_NAMES = [c.name for c in RECORD_COLUMNS]
_TIMES = {"created_at", "updated_at", "sent_at"}
BY_KEY = f"SELECT {', '.join(_NAMES)} FROM sends WHERE idempotency_key = ? AND recipient = ?"
_INSERTED = [
    "id",
    "idempotency_key",
    "recipient",
    "email_type",
    "priority",
    "status",
    "attempts",
    "document",
    "content_hash",
    "created_at",
    "updated_at",
]  # the keys of ``ledger_rows.new_row``
INSERT = (
    f"INSERT INTO sends ({', '.join(_INSERTED)}) "
    f"VALUES ({', '.join(':' + n for n in _INSERTED)}) ON CONFLICT DO NOTHING"
)
BEGIN_SENDING = (
    "UPDATE sends SET status = 'sending', attempts = attempts + 1, provider = ?, "
    "updated_at = ?, message_id = ? "
    f"WHERE id = ? AND status IN ({', '.join(repr(s.value) for s in SENDABLE)}) RETURNING id"
)
_SET_OUTCOME = (
    "UPDATE sends SET status = :b_status, updated_at = :b_now, last_error = :b_error, "
    "provider = coalesce(:b_provider, provider){} WHERE id = :b_id{}"
)
OUTCOME = _SET_OUTCOME.format("", f" AND status NOT IN ({', '.join(repr(s.value) for s in FINAL)})")
SENT = _SET_OUTCOME.format(", sent_at = :b_now, provider_message_id = :b_provider_message_id", "")
ATTEMPT_NUMBER = "SELECT attempts FROM sends WHERE id = ?"
INSERT_ATTEMPT = (
    "INSERT INTO send_attempts (send_id, attempt, outcome, provider, provider_message_id, "
    "error, at) VALUES (:send_id, :attempt, :outcome, :provider, :provider_message_id, "
    ":error, :at)"
)


def record_from_driver(values: Sequence[Any]) -> SendRecord:
    fields = dict(zip(_NAMES, values, strict=True))
    for name in _TIMES:
        fields[name] = loaded_time(fields[name])
    fields["status"] = SendStatus(fields["status"])
    return SendRecord(**fields)
