"""The ingest path's statements as SQL for the stdlib SQLite driver (see ``store.sqlite_driver``).

Each mirrors a Core statement of ``feedback.py`` / ``feedback_binding.py`` and runs inside the
caller's transaction, one row per execution: through Core a statement costs ~70 µs before
SQLite does any work, on the driver 2-3 µs, and an ingested event meets three or four of them.
The store tests run both dialects through the same repository.
"""

from __future__ import annotations

from postroom.store.feedback_rules import RANK

CLAIM_ONE_USE_KEY = (
    "INSERT INTO webhook_tokens (key, expires_at) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE webhook_tokens.expires_at < ? RETURNING key"
)
# The ids come as one JSON array: a single execution per batch, and one statement text (so
# one cached prepared statement) whatever the batch's size. SQLite probes the column's index
# once per value.
SENDS_BY_ID = (
    "SELECT id, recipient, message_id, created_at FROM sends "
    "WHERE id IN (SELECT value FROM json_each(?))"
)
SENDS_BY_PROVIDER_ID = (
    "SELECT id, recipient, provider_message_id, created_at FROM sends "
    "WHERE provider_message_id IN (SELECT value FROM json_each(?))"
)
# One id (a single-event request): json_each's setup would cost more than the look-up.
SEND_BY_ID = "SELECT id, recipient, message_id, created_at FROM sends WHERE id = ?"
SEND_BY_PROVIDER_ID = (
    "SELECT id, recipient, provider_message_id, created_at FROM sends WHERE provider_message_id = ?"
)
CAMPAIGN_RECIPIENT = (
    "SELECT campaign_id, position, email FROM campaign_recipients "
    "WHERE campaign_id = ? AND position = ?"
)
# ON CONFLICT DO NOTHING covers both unique keys (content hash and ESP event key); the
# cursor's rowcount says whether the row went in.
INSERT_EVENT = (
    "INSERT INTO events (id, provider, event_type, recipient, send_id, provider_message_id, "
    "dedupe_key, event_key, occurred_at, received_at, payload) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
# The dedupe keys of the events with these ids (a JSON array): which of a request's rows
# went in, when its INSERT skipped some.
DEDUPE_KEYS_OF = "SELECT dedupe_key FROM events WHERE id IN (SELECT value FROM json_each(?))"


def _rank(column: str) -> str:
    """A CASE giving ``column``'s rank in ``feedback_rules.RANK`` (0 for anything else)."""
    whens = " ".join(f"WHEN '{state}' THEN {rank}" for state, rank in RANK.items())
    return f"CASE {column} {whens} ELSE 0 END"


# A send's feedback state, inserted or raised (never lowered) in one statement, so that a
# request's states go in with one executemany. The states are the ranking's constants.
UPSERT_STATE = (
    "INSERT INTO send_feedback (send_id, recipient, send_created_at, state, updated_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (send_id) DO UPDATE "
    "SET state = excluded.state, updated_at = excluded.updated_at "
    "WHERE " + _rank("send_feedback.state") + " < " + _rank("excluded.state")
)
