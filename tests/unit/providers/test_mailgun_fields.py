"""The form fields MailgunProvider builds (pure: no network)."""

from __future__ import annotations

import orjson
from tests.esp_fakes.messages import newsletter, sign_in

from postroom.providers.mailgun import MailgunProvider, build_fields


def test_a_single_message_is_sent_literally_without_recipient_variables() -> None:
    provider = MailgunProvider("key", "mg.example")
    email = sign_in()
    fields = dict(build_fields([provider.prepare(email)]))
    assert "recipient-variables" not in fields
    assert fields["to"] == "Ada Reader <ada@example.com>"
    assert fields["h:Message-Id"] == email.message_id
    assert fields["v:postroom_send_id"] == email.send_id
    assert fields["o:tag"] == "sign_in_link"
    assert fields["html"] == email.html and fields["text"] == email.text


def test_a_batch_uses_recipient_variables_in_headers_body_and_custom_variables() -> None:
    provider = MailgunProvider("key", "mg.example")
    emails = newsletter(3)
    pairs = build_fields([provider.prepare(e) for e in emails])
    fields = dict(pairs)
    assert [v for k, v in pairs if k == "to"] == [
        f"Reader {i} <reader{i}@example.com>" for i in range(3)
    ]
    assert fields["h:List-Unsubscribe"].startswith("<%recipient.unsubscribe_0%>")
    assert fields["h:Message-Id"] == "%recipient.message_id%"
    assert fields["v:postroom_send_id"] == "%recipient.send_id%"
    assert "%recipient.unsubscribe_0%" in fields["html"]
    variables = orjson.loads(fields["recipient-variables"])
    assert set(variables) == {e.recipient for e in emails}
    for email in emails:
        assert variables[email.recipient]["send_id"] == email.send_id
        assert variables[email.recipient]["message_id"] == email.message_id


def test_region_and_domain_make_the_url() -> None:
    assert (
        MailgunProvider("k", "mg.example")._url == "https://api.mailgun.net/v3/mg.example/messages"
    )
