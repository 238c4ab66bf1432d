"""A late outcome never undoes a final one: a worker that outlived its lease cannot turn a
send another worker completed into failed."""

from __future__ import annotations

from postroom.config import Settings
from postroom.messages import parse_event
from postroom.store.database import open_database
from postroom.store.ledger import Ledger, NewSend, Outcome, SendStatus
from postroom.wiring import prepare_database


async def test_a_late_failure_does_not_overwrite_sent(settings: Settings) -> None:
    await prepare_database(settings)
    db = open_database(settings.resolved_database_url)
    ledger = Ledger(db)
    try:
        event = parse_event(
            {
                "email_type": "welcome",
                "recipient_email": "a@example.com",
                "template_data": {"creator_name": "J"},
                "idempotency_key": "k1",
            },
            max_bytes=100_000,
        )
        [(record, _)] = await ledger.create_many([NewSend.for_event(event, "transactional")])
        assert await ledger.begin_sending([(record.id, f"<{record.id}@x>")], "esp") == {record.id}
        await ledger.record([Outcome(record.id, SendStatus.SENT, "esp", "esp-1")])
        await ledger.record([Outcome(record.id, SendStatus.FAILED, "esp", error="late 500")])
        await ledger.record([Outcome(record.id, SendStatus.RETRY_SCHEDULED, "esp", error="late")])
        final = await ledger.get(record.id)
        assert final is not None
        assert final.status is SendStatus.SENT and final.provider_message_id == "esp-1"
        outcomes = [a.outcome for a in await ledger.attempts(record.id)]
        assert outcomes == ["sent", "failed", "retry_scheduled"]  # the audit keeps every report
    finally:
        await db.dispose()
