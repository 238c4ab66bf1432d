"""The ids of stored events: ULIDs made without python-ulid's per-id cost."""

from __future__ import annotations

import time

from ulid import ULID

from postroom.store.feedback_events import event_ids


def test_event_ids_are_ulids_of_now_and_distinct() -> None:
    before = time.time()
    ids = event_ids(500)
    after = time.time()
    parsed = [ULID.from_str(i) for i in ids]
    assert [str(u) for u in parsed] == ids  # canonical text: 26 Crockford characters
    assert all(before - 0.001 <= u.timestamp <= after for u in parsed)
    assert len(set(ids)) == 500
    assert event_ids(1)[0] != event_ids(1)[0]
