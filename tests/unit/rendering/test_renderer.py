"""Rendering events: subjects, inlined HTML, text parts, headers, and the sandbox's limits."""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from postroom.errors import (
    ConfigurationError,
    HeaderInjectionError,
    TemplateError,
    UnknownEmailTypeError,
)
from postroom.messages import EmailEvent
from postroom.rendering import Renderer, TemplateRegistry, UnsubscribeTokens

SECRET = "test-secret-key"
MakeEvent = Callable[..., EmailEvent]
MakeRenderer = Callable[..., Renderer]
WriteType = Callable[..., Path]

EXPECTED_SUBJECTS = {
    "new_post_notification": "Jane Doe published: My Latest Article",
    "welcome": "Welcome to Jane Doe",
    "sign_in_link": "Your sign-in link for Postroom",
    "receipt": "Your receipt from Jane Doe",
}
MAIN_LINKS = {
    "new_post_notification": "https://platform.example/post/123",
    "welcome": "https://jane.platform.example",
    "sign_in_link": "https://platform.example/login?t=abc&n=1",
    "receipt": "https://platform.example/receipts/1",
}


@pytest.mark.parametrize("email_type", sorted(EXPECTED_SUBJECTS))
def test_bundled_types_render(renderer: Renderer, make_event: MakeEvent, email_type: str) -> None:
    out = renderer.render(make_event(email_type), send_id="01SEND")
    assert out.subject == EXPECTED_SUBJECTS[email_type]
    assert out.email_type == email_type
    assert 'style="' in out.html  # the <style> classes were inlined
    assert "<style>" not in out.html or "@media" in out.html  # only at-rules stay in <style>
    assert out.text.strip()
    assert MAIN_LINKS[email_type] in out.text
    assert MAIN_LINKS[email_type].replace("&", "&amp;") in out.html
    assert out.recipient == "reader@example.com"
    assert out.recipient_name == "Reader One"
    assert out.metadata == {"user_id": "u-1"}


def test_receipt_shows_line_items_and_total(renderer: Renderer, make_event: MakeEvent) -> None:
    out = renderer.render(make_event("receipt"), send_id="s1")
    for fragment in ("Monthly subscription", "5.00 USD", "2.50 USD", "7.50 USD"):
        assert fragment in out.html
        assert fragment in out.text


def test_html_is_autoescaped_but_subject_and_text_are_not(
    renderer: Renderer, make_event: MakeEvent, sample_data: dict[str, dict[str, Any]]
) -> None:
    data = dict(sample_data["new_post_notification"], post_title="<script>alert(1)</script>")
    out = renderer.render(make_event("new_post_notification", data), send_id="s1")
    assert "<script>" not in out.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out.html
    assert out.subject == "Jane Doe published: <script>alert(1)</script>"
    text = renderer.render(make_event("sign_in_link"), send_id="s1").text
    assert "login?t=abc&n=1" in text  # body.txt is not HTML-escaped


def test_missing_variable_is_a_template_error(renderer: Renderer, make_event: MakeEvent) -> None:
    event = make_event("new_post_notification", {"creator_name": "Jane", "post_title": "T"})
    with pytest.raises(TemplateError) as caught:
        renderer.render(event, send_id="s1")
    message = str(caught.value)
    assert "'new_post_notification'" in message
    assert "'post_url' is undefined" in message
    assert "\n" not in message


def test_error_points_at_the_template_line(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    registry = TemplateRegistry.load(write_type("lines", html="<p>\n{{ who }}\n{{ missing }}</p>"))
    with pytest.raises(TemplateError, match=r"lines/body.html line 3\): 'missing' is undefined"):
        make_renderer(registry).render(make_event("lines", {"who": "x"}), send_id="s1")


@pytest.mark.parametrize(
    "html",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ who.__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ items.append(4) }}",  # immutable sandbox: no mutating data
        "{{ self.__init__.__globals__ }}",
    ],
)
def test_sandbox_refuses_unsafe_access(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent, html: str
) -> None:
    registry = TemplateRegistry.load(write_type("evil", html=html))
    event = make_event("evil", {"who": "x", "items": [1, 2, 3]})
    with pytest.raises(TemplateError, match=r"template 'evil' .*unsafe"):
        make_renderer(registry).render(event, send_id="s1")


def test_jinja_globals_serve_every_template_and_data_overrides_them(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    html = (
        "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}"
        "<p>{{ ns.n }} {{ dict(a=1)['a'] }} {{ joiner }}</p>"
    )
    registry = TemplateRegistry.load(write_type("globals", html=html))
    renderer = make_renderer(registry)
    plain = renderer.render(make_event("globals", {"who": "x", "joiner": "-"}), send_id="s1")
    assert "<p>3 1 -</p>" in plain.html
    # The same compiled template, rendered again, still sees the built-in names.
    again = renderer.render(make_event("globals", {"who": "y", "joiner": "+"}), send_id="s2")
    assert "<p>3 1 +</p>" in again.html


def test_runtime_exception_becomes_template_error(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    registry = TemplateRegistry.load(write_type("boom", html="{{ 1 // zero }}"))
    with pytest.raises(TemplateError, match="ZeroDivisionError"):
        make_renderer(registry).render(make_event("boom", {"zero": 0, "who": "x"}), send_id="s1")


def test_remote_stylesheets_are_not_fetched(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        port = server.getsockname()[1]
        html = (
            f'<html><head><link rel="stylesheet" href="http://127.0.0.1:{port}/x.css">'
            '<link rel="stylesheet" href="http://127.0.0.1:9/y.css">'
            "<style>.a { color: red; }</style></head>"
            '<body><p class="a">{{ who }}</p></body></html>'
        )
        registry = TemplateRegistry.load(write_type("remote", html=html))
        out = make_renderer(registry).render(make_event("remote", {"who": "x"}), send_id="s1")
        assert 'style="color: red;"' in out.html
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected


def test_marketing_headers_carry_a_verifiable_token(
    make_renderer: MakeRenderer, bundled: TemplateRegistry, make_event: MakeEvent
) -> None:
    renderer = make_renderer(bundled, unsubscribe_mailto="mailto:unsub@platform.example")
    out = renderer.render(make_event("new_post_notification"), send_id="01SEND")
    header = out.headers["List-Unsubscribe"]
    prefix = "<https://mail.platform.example/unsubscribe/"
    assert header.startswith(prefix)
    url, mailto = header.split(", ")
    assert mailto == "<mailto:unsub@platform.example?subject=unsubscribe>"
    token = url[len(prefix) : -1]
    claim = UnsubscribeTokens(SECRET).read_token(token)
    assert (claim.recipient, claim.email_type, claim.send_id) == (
        "reader@example.com",
        "new_post_notification",
        "01SEND",
    )
    assert renderer.tokens.read_token(token) == claim
    assert out.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert out.headers["X-Postroom-Send-Id"] == "01SEND"
    assert out.headers["X-Postroom-Email-Type"] == "new_post_notification"
    assert out.category == "newsletter"
    # CAN-SPAM footer: the same link and the postal address in both parts.
    assert url[1:-1] in out.html and url[1:-1] in out.text
    assert "Postroom Inc., 1 Example Street, Springfield" in out.html


def test_transactional_mail_has_no_list_unsubscribe(
    renderer: Renderer, make_event: MakeEvent
) -> None:
    out = renderer.render(make_event("receipt"), send_id="s1")
    assert "List-Unsubscribe" not in out.headers
    assert "List-Unsubscribe-Post" not in out.headers
    assert "/unsubscribe/" not in out.html
    assert out.headers["Reply-To"] == "support@platform.example"


def test_reply_to_is_optional(
    make_renderer: MakeRenderer, bundled: TemplateRegistry, make_event: MakeEvent
) -> None:
    out = make_renderer(bundled, reply_to=None).render(make_event("welcome"), send_id="s1")
    assert "Reply-To" not in out.headers


def test_template_data_cannot_override_the_unsubscribe_link(
    renderer: Renderer, make_event: MakeEvent, sample_data: dict[str, dict[str, Any]]
) -> None:
    data = dict(sample_data["new_post_notification"], unsubscribe_url="https://evil.example/")
    out = renderer.render(make_event("new_post_notification", data), send_id="s1")
    assert "evil.example" not in out.html


def test_message_id_is_stable_per_send(renderer: Renderer, make_event: MakeEvent) -> None:
    event = make_event("welcome")
    first = renderer.render(event, send_id="01AAA")
    again = renderer.render(event, send_id="01AAA")
    other = renderer.render(event, send_id="01BBB")
    assert first.message_id == again.message_id == "<01AAA@mail.platform.example>"
    assert other.message_id != first.message_id
    assert first.sender == "Platform <noreply@mail.platform.example>"


def test_date_header(renderer: Renderer, make_event: MakeEvent) -> None:
    moment = datetime(2025, 3, 3, 12, 30, tzinfo=UTC)
    out = renderer.render(make_event("welcome"), send_id="s1", now=moment)
    assert out.date == "Mon, 03 Mar 2025 12:30:00 +0000"
    naive = renderer.render(make_event("welcome"), send_id="s1", now=moment.replace(tzinfo=None))
    assert naive.date == out.date
    assert parsedate_to_datetime(renderer.render(make_event("welcome"), send_id="s1").date)


def test_metadata_values_are_stringified(renderer: Renderer, make_event: MakeEvent) -> None:
    event = make_event("welcome", metadata={"user_id": "u-1", "count": 3, "flag": True})
    out = renderer.render(event, send_id="s1")
    assert out.metadata == {"user_id": "u-1", "count": "3", "flag": "true"}


def test_subject_injection_from_data_is_refused(
    renderer: Renderer, make_event: MakeEvent, sample_data: dict[str, dict[str, Any]]
) -> None:
    for title in ("Hi\r\nBcc: victim@example.com", "Hi%0d%0aBcc: x", "Hi\u2028Bcc: x"):
        data = dict(sample_data["new_post_notification"], post_title=title)
        event = make_event("new_post_notification", data)
        with pytest.raises(HeaderInjectionError):
            renderer.render(event, send_id="s1")
        with pytest.raises(HeaderInjectionError):
            renderer.check_subject(event)


def test_subject_whitespace_from_the_template_is_collapsed(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    root = write_type("multi", subject=None, toml='subject = """\n  Hello\n   {{ who }}  \n"""\n')
    out = make_renderer(TemplateRegistry.load(root)).render(
        make_event("multi", {"who": "Ann"}), send_id="s1"
    )
    assert out.subject == "Hello Ann"


def test_empty_subject_is_refused(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    root = write_type("empty", subject="{{ who }}")
    with pytest.raises(TemplateError, match="subject rendered empty"):
        make_renderer(TemplateRegistry.load(root)).check_subject(make_event("empty", {"who": " "}))


def test_check_subject(renderer: Renderer, make_event: MakeEvent) -> None:
    renderer.check_subject(make_event("new_post_notification"))
    with pytest.raises(TemplateError, match="'creator_name' is undefined"):
        renderer.check_subject(make_event("welcome", {}))
    with pytest.raises(UnknownEmailTypeError):
        renderer.check_subject(make_event("no_such_type", {}))


def test_output_size_is_capped(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    html = "{% for i in range(100000) %}<p>{{ who }} {{ i }}</p>{% endfor %}"
    registry = TemplateRegistry.load(write_type("huge", html=html))
    with pytest.raises(TemplateError, match="exceeds 5000 bytes"):
        make_renderer(registry, max_output_bytes=5000).render(
            make_event("huge", {"who": "x"}), send_id="s1"
        )


def test_total_output_size_is_capped(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    registry = TemplateRegistry.load(write_type("sum", html="<p>{{ who }}</p>", text="{{ who }}"))
    event = make_event("sum", {"who": "é" * 200})
    out = make_renderer(registry).render(event, send_id="s1")
    total = sum(len(part.encode()) for part in (out.subject, out.html, out.text))
    # Every part alone fits; together, counted in UTF-8 bytes, they do not.
    with pytest.raises(TemplateError, match=rf"output is {total} bytes; the limit is {total - 1}"):
        make_renderer(registry, max_output_bytes=total - 1).render(event, send_id="s1")


def test_marketing_template_must_show_the_unsubscribe_link(
    write_type: WriteType, make_renderer: MakeRenderer, make_event: MakeEvent
) -> None:
    root = write_type("promo", html="<p>{{ who }}</p>", toml="marketing = true\n")
    with pytest.raises(TemplateError, match="unsubscribe_url"):
        make_renderer(TemplateRegistry.load(root)).render(
            make_event("promo", {"who": "x"}), send_id="s1"
        )


def test_unknown_type_and_bad_send_id(renderer: Renderer, make_event: MakeEvent) -> None:
    with pytest.raises(UnknownEmailTypeError):
        renderer.render(make_event("no_such_type", {}), send_id="s1")
    with pytest.raises(ValueError, match="Message-ID"):
        renderer.render(make_event("welcome"), send_id="bad id>")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("sender", "not an address", "sender"),
        ("sender", "Name <user@>", "sender"),
        ("sender", "a@b.example\r\nBcc: x", "sender"),
        ("reply_to", "nobody", "reply_to"),
        ("public_url", "mail.example.com", "public_url"),
        ("unsubscribe_mailto", "not-an-address", "unsubscribe_mailto"),
        ("postal_address", "  ", "postal_address"),
        ("secret_key", "", "secret_key"),
    ],
)
def test_bad_configuration(
    make_renderer: MakeRenderer, bundled: TemplateRegistry, option: str, value: str, message: str
) -> None:
    with pytest.raises((ConfigurationError, HeaderInjectionError), match=message):
        make_renderer(bundled, **{option: value})
