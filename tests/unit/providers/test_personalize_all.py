"""``personalize_all``: the copy check gives what ``personalize`` gives, and only when the
copy is reproduced exactly."""

from __future__ import annotations

import dataclasses

from tests.esp_fakes.messages import newsletter, sign_in, subscribers

from postroom.messages import RenderedEmail
from postroom.providers.http_batching import alone, personalize
from postroom.providers.mailing_copies import personalize_all

PREFIX = "%recipient."


def _marker(name: str) -> str:
    return f"{PREFIX}{name}%"


def _same_as_one_by_one(emails: list[RenderedEmail]) -> None:
    fast = personalize_all(emails, _marker, marker_prefix=PREFIX)
    slow = [personalize(e, _marker, marker_prefix=PREFIX) for e in emails]
    assert fast == slow


def test_copies_of_a_mailing_get_the_placeholders_of_personalizing_each() -> None:
    _same_as_one_by_one(newsletter(4))
    _same_as_one_by_one(subscribers(50))


def test_a_copy_differing_anywhere_but_its_values_is_personalized_afresh() -> None:
    emails = subscribers(4)
    emails[1] = dataclasses.replace(emails[1], html=emails[1].html.replace("<p", "<p ", 1))
    emails[2] = dataclasses.replace(emails[2], subject=emails[2].subject + "!")
    headers = {**emails[3].headers, "X-Extra": "1"}
    emails.append(dataclasses.replace(emails[3], send_id="b99999", headers=headers))
    fast = personalize_all(emails, _marker, marker_prefix=PREFIX)
    assert len({item.key for item in fast}) == 4
    _same_as_one_by_one(emails)


def test_short_names_markers_in_values_and_distinct_messages_fall_back() -> None:
    emails = subscribers(3)
    emails[1] = dataclasses.replace(emails[1], recipient_name="Al")
    emails[2] = dataclasses.replace(emails[2], recipient_name="50%recipient.x% Bob")
    _same_as_one_by_one([*emails, sign_in("a@example.com", "s1"), sign_in("b@example.com", "s2")])


def test_a_message_alone_in_its_batch_is_sent_as_it_is() -> None:
    email = newsletter(1)[0]
    assert personalize_all([email], _marker, marker_prefix=PREFIX) == [alone(email)]


def test_copies_with_several_values_in_one_part_share_a_key() -> None:
    emails = [
        dataclasses.replace(e, html=f"{e.html}<p>{e.send_id} for {e.recipient}</p>")
        for e in subscribers(5)
    ]
    fast = personalize_all(emails, _marker, marker_prefix=PREFIX)
    assert len({item.key for item in fast}) == 1
    _same_as_one_by_one(emails)
