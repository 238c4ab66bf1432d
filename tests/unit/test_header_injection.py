"""Header injection: every value that reaches a header refuses line breaks in every encoding.

The corpus covers raw CR/LF/NUL and the other characters some parser treats as a line end,
percent-encoding, RFC 2047 encoded words (Q and B) and mixed forms. Each payload is tried in
every field that reaches a header: at the message contract (API and queue), in a rendered
subject, and at the last line of defence in the MIME writer.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import pytest

from postroom.errors import HeaderInjectionError, InvalidMessageError
from postroom.messages import RenderedEmail, check_header_value, parse_event
from postroom.providers.mime import build_mime
from postroom.rendering.registry import TemplateRegistry, bundled_templates_dir
from postroom.rendering.renderer import Renderer

INJECTED = "Bcc: victim@evil.example"
CORPUS = [
    f"Eve\r\n{INJECTED}",
    f"Eve\n{INJECTED}",
    f"Eve\r{INJECTED}",
    "Eve\r\n\r\n<html>body</html>",
    f"Eve\x00{INJECTED}",
    f"Eve\x0b{INJECTED}",
    f"Eve\x0c{INJECTED}",
    f"Eve\x85{INJECTED}",
    f"Eve\u2028{INJECTED}",
    f"Eve\u2029{INJECTED}",
    f"Eve%0d%0a{INJECTED}",
    f"Eve%0A{INJECTED}",
    f"Eve%0D{INJECTED}",
    f"Eve%00{INJECTED}",
    "=?utf-8?q?Eve=0D=0ABcc:_victim@evil.example?=",
    "=?UTF-8?Q?Eve=0ABcc:_victim@evil.example?=",
    "=?utf-8?b?" + base64.b64encode(f"Eve\r\n{INJECTED}".encode()).decode() + "?=",
    "=?iso-8859-1?q?Eve=0D?=",
    f"Eve\r\n\t{INJECTED}",  # looks like folding, still a new line
]
SAFE = ["Eve Example", "Zoë O'Brien", "100% sure", "=?not an encoded word", "Ünïcødé ✓"]

BASE: dict[str, Any] = {
    "email_type": "new_post_notification",
    "recipient_email": "reader@example.com",
    "template_data": {"creator_name": "Jane", "post_title": "Hello", "post_url": "https://e.x/"},
}


@pytest.mark.parametrize("payload", CORPUS)
def test_check_header_value_refuses(payload: str) -> None:
    with pytest.raises(HeaderInjectionError):
        check_header_value(payload, "field")


@pytest.mark.parametrize("payload", SAFE)
def test_check_header_value_accepts_ordinary_values(payload: str) -> None:
    assert check_header_value(payload, "field") == payload


@pytest.mark.parametrize("payload", CORPUS)
@pytest.mark.parametrize(
    ("field", "document"),
    [
        ("recipient_name", lambda p: {**BASE, "recipient_name": p}),
        ("recipient_email", lambda p: {**BASE, "recipient_email": f"a{p}@example.com"}),
        ("idempotency_key", lambda p: {**BASE, "idempotency_key": p}),
        ("metadata.user", lambda p: {**BASE, "metadata": {"user": p}}),
        ("metadata", lambda p: {**BASE, "metadata": {p: "x"}}),
    ],
)
def test_contract_refuses_injection_in_every_header_field(
    payload: str, field: str, document: Any
) -> None:
    with pytest.raises(InvalidMessageError) as caught:
        parse_event(document(payload), max_bytes=100_000)
    assert (caught.value.field or "").startswith(field.split(".")[0])


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(
        TemplateRegistry.load(bundled_templates_dir()),
        sender="Platform <news@platform.example>",
        reply_to=None,
        public_url="https://platform.example",
        secret_key="k" * 32,
        postal_address="1 Example Street",
    )


@pytest.mark.parametrize("payload", CORPUS)
def test_rendered_subject_refuses_injection_from_template_data(
    renderer: Renderer, payload: str
) -> None:
    event = parse_event(
        {**BASE, "template_data": {**BASE["template_data"], "post_title": payload}},
        max_bytes=100_000,
    )
    with pytest.raises(HeaderInjectionError):
        renderer.check_subject(event)
    with pytest.raises(HeaderInjectionError):
        renderer.render(event, send_id="01TESTSEND")


@pytest.mark.parametrize("payload", CORPUS)
@pytest.mark.parametrize("field", ["subject", "recipient_name", "sender", "header"])
def test_mime_writer_refuses_injection_as_last_defence(
    renderer: Renderer, payload: str, field: str
) -> None:
    clean = renderer.render(parse_event(BASE, max_bytes=100_000), send_id="01TESTSEND")
    build_mime(clean)  # the clean message passes
    changes: dict[str, Any] = (
        {"headers": {**clean.headers, "X-Campaign": payload}}
        if field == "header"
        else {field: payload}
    )
    poisoned: RenderedEmail = replace(clean, **changes)
    with pytest.raises(HeaderInjectionError):
        build_mime(poisoned)
