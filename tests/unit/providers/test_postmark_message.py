"""The message objects PostmarkProvider builds, and ErrorCode classes (pure: no network)."""

from __future__ import annotations

import dataclasses

from tests.esp_fakes.messages import newsletter

from postroom.providers.postmark import PostmarkProvider


def test_message_fields() -> None:
    provider = PostmarkProvider("token", message_stream="broadcast")
    email = newsletter(1)[0]
    message = provider.message(email)
    names = [h["Name"] for h in message["Headers"]]
    assert "Reply-To" not in names and message["ReplyTo"] == email.headers["Reply-To"]
    assert "List-Unsubscribe" in names and "Message-ID" in names
    assert message["To"] == f"{email.recipient_name} <{email.recipient}>"
    assert message["MessageStream"] == "broadcast" and message["Tag"] == email.email_type
    assert message["Metadata"] == {
        "postroom_send_id": email.send_id,
        "postroom_message_id": email.message_id,
    }


def test_a_message_id_over_postmarks_80_character_limit_is_left_out_of_metadata() -> None:
    email = dataclasses.replace(newsletter(1)[0], message_id="<" + "x" * 90 + "@news.example>")
    message = PostmarkProvider("token").message(email)
    assert message["Metadata"] == {"postroom_send_id": email.send_id}
