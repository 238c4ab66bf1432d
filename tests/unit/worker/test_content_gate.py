"""The opt-in content gate: mail scoring at or above POSTROOM_LINT_MAX_SCORE is not sent."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import RunningWorker, make_settings
from tests.fakes import FakeProvider

from postroom.messages import parse_event
from postroom.store.ledger import SendStatus
from postroom.submission import submit
from postroom.wiring import open_postroom, prepare_database


def post(title: str, to: str) -> object:
    return parse_event(
        {
            "email_type": "new_post_notification",
            "recipient_email": to,
            "template_data": {
                "creator_name": "Jane",
                "post_title": title,
                "post_url": "https://platform.example/p/1",
                "post_excerpt": "Act now! 100% free cash bonus, no credit card, limited time!!!"
                if "FREE" in title
                else "Notes on a slow week of writing.",
            },
        },
        max_bytes=100_000,
    )


async def test_spammy_mail_is_refused_and_clean_mail_sent(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, lint_max_score=5.0)
    await prepare_database(settings)
    provider = FakeProvider()
    postroom = await open_postroom(settings, provider=provider)
    running = RunningWorker(postroom)
    try:
        clean, spammy = await submit(
            postroom,
            [post("A slow week", "a@example.com"), post("FREE CASH!!! ACT NOW", "b@example.com")],  # type: ignore[list-item]
        )

        async def settled() -> bool:
            rows = [await postroom.ledger.get(i) for i in (clean.id, spammy.id)]
            return all(
                r is not None and r.status in (SendStatus.SENT, SendStatus.FAILED) for r in rows
            )

        await running.until(settled)
        assert [e.recipient for e in provider.delivered] == ["a@example.com"]
        refused = await postroom.ledger.get(spammy.id)
        assert refused is not None and refused.status is SendStatus.FAILED
        assert refused.last_error is not None and "content scored" in refused.last_error
        [letter] = await postroom.queue.dlq_list()
        assert "the limit is 5.0" in letter.reason
    finally:
        await running.shutdown()
        await postroom.close()
