"""Grouping rendered messages into substitution batches: exact inverse, safe fallbacks."""

from __future__ import annotations

import dataclasses
import re

from tests.esp_fakes.messages import newsletter, render, sign_in, subscribers

from postroom.messages import RenderedEmail
from postroom.providers.http_batching import group_for_batch, personalize

PREFIX = "%recipient."


def _marker(name: str) -> str:
    return f"{PREFIX}{name}%"


def _restore(text: str, values: dict[str, str]) -> str:
    return re.sub(r"%recipient\.([a-z_0-9]+)%", lambda m: values[m.group(1)], text)


def test_copies_of_a_newsletter_share_one_key_and_restore_exactly() -> None:
    items = [personalize(e, _marker, marker_prefix=PREFIX) for e in newsletter(3)]
    assert len({item.key for item in items}) == 1
    for item in items:
        email = item.email
        assert email.headers["List-Unsubscribe"] not in item.html  # it was replaced
        assert _restore(item.html, dict(item.values)) == email.html
        assert _restore(item.text, dict(item.values)) == email.text
        assert _restore(item.subject, dict(item.values)) == email.subject
        for name, value in email.headers.items():
            assert _restore(item.headers[name], dict(item.values)) == value


def test_transactional_messages_of_one_layout_share_a_key_by_their_printed_values() -> None:
    # Sign-in links differ in their links, not in layout. A link with characters that HTML
    # escapes is one value in the HTML and another in the text: such links group together.
    emails = [sign_in("a@example.com", "s00001"), sign_in("b@example.com", "s00002")]
    for n in (3, 4):
        link = f"https://platform.example/login?t=s{n}&n=<{n}>"
        emails.append(render("sign_in_link", f"{n}@example.com", f"s0000{n}", sign_in_url=link))
    items = [personalize(e, _marker, marker_prefix=PREFIX) for e in emails]
    assert items[0].key == items[1].key
    assert items[2].key == items[3].key
    for item in items:
        email = item.email
        assert "platform.example/login" not in item.html  # the link is a substitution
        assert _restore(item.html, dict(item.values)) == email.html
        assert _restore(item.text, dict(item.values)) == email.text
        assert _restore(item.subject, dict(item.values)) == email.subject


def test_different_content_gets_different_keys() -> None:
    a = sign_in("a@example.com", "s1")
    b = dataclasses.replace(sign_in("b@example.com", "s2"), printed=())  # values unknown
    keys = {personalize(e, _marker, marker_prefix=PREFIX).key for e in (a, b)}
    assert len(keys) == 2  # without its printed values, the link is content of its own


def test_printed_values_past_the_substitution_budget_stay_in_the_content() -> None:
    long = "x" * 3_000
    emails = [sign_in(f"{n}@example.com", f"s{n}") for n in range(2)]
    emails = [
        dataclasses.replace(e, printed=(long + str(n), *e.printed)) for n, e in enumerate(emails)
    ]
    for email in emails:
        values = personalize(email, _marker, marker_prefix=PREFIX).values
        assert sum(len(v.encode()) for k, v in values.items() if k.startswith("printed_")) <= 4_000


def test_content_already_holding_the_marker_syntax_travels_alone() -> None:
    email = newsletter(1)[0]
    tricky = dataclasses.replace(email, html=email.html + "<p>50%recipient.x% off</p>")
    item = personalize(tricky, _marker, marker_prefix=PREFIX)
    assert item.key == ("alone", tricky.send_id)
    assert item.html == tricky.html  # untouched


def test_a_value_inside_another_is_replaced_as_part_of_the_longer_one() -> None:
    email = newsletter(1)[0]
    # The send id is inside the Message-ID; both appear in the body.
    body = f"{email.html}<p>{email.message_id} and {email.send_id}</p>"
    item = personalize(dataclasses.replace(email, html=body), _marker, marker_prefix=PREFIX)
    assert f"{_marker('message_id')} and {_marker('send_id')}" in item.html
    assert _restore(item.html, dict(item.values)) == body


def test_a_name_shorter_than_three_characters_is_left_in_place() -> None:
    email = dataclasses.replace(newsletter(1)[0], recipient_name="Al")
    item = personalize(email, _marker, marker_prefix=PREFIX)
    assert _marker("name") not in item.html + item.text + item.subject


def test_groups_respect_the_size_limit_and_never_repeat_an_address() -> None:
    emails = subscribers(5)
    # Same content as the others, to an address already in the first call.
    twin = dataclasses.replace(emails[4], recipient=emails[0].recipient.upper())
    items = [personalize(e, _marker, marker_prefix=PREFIX) for e in [*emails, twin]]
    calls = group_for_batch(items, max_size=3)
    assert [len(call) for call in calls] == [3, 3]
    for call in calls:
        addresses = [item.email.recipient.lower() for item in call]
        assert len(addresses) == len(set(addresses))
    assert [item.email.recipient for item in calls[1]][-1] == "READER0@EXAMPLE.COM"


def test_copies_whose_footer_repeats_the_unsubscribe_token_still_share_a_call() -> None:
    # The preference-centre link carries the unsubscribe link's token: replaced too.
    def copy(i: int) -> RenderedEmail:
        token = f"tok{i}-abcdefghijklmnop"
        html = (
            f"<a href='http://u.example/unsubscribe/{token}'>u</a> "
            f"<a href='http://u.example/preferences/{token}'>p</a>"
        )
        return RenderedEmail(
            send_id=f"S{i}", message_id=f"<S{i}@x.example>", sender="A <a@x.example>",
            recipient=f"r{i}@example.com", recipient_name=None, subject="Hi", html=html,
            text=html, date="Sat, 28 Nov 2026 05:00:00 +0000",
            headers={"List-Unsubscribe": f"<http://u.example/unsubscribe/{token}>"},
        )  # fmt: skip

    first, second = (personalize(copy(i), lambda n: f"%{n}%", marker_prefix="%") for i in (1, 2))
    assert first.key == second.key
    assert "%unsubscribe_token_0%" in first.html
