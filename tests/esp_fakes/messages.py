"""Rendered messages for the ESP tests, made by the real renderer over the bundled templates,
so the adapters see what the worker hands them (List-Unsubscribe, Message-ID, X-Postroom-*)."""

from __future__ import annotations

import functools
from typing import Any

from postroom.bench.esp import subscriber_copies
from postroom.messages import EmailEvent, RenderedEmail
from postroom.rendering import Renderer, TemplateRegistry, bundled_templates_dir

SENDER = "Jane Doe <jane@news.example>"
POST = {
    "creator_name": "Jane Doe",
    "post_title": "Why slow writing wins",
    "post_url": "https://platform.example/jane/slow-writing",
}
SIGN_IN = {"sign_in_url": "https://platform.example/login?t=abc&n=1", "expires_minutes": 15}


@functools.cache
def renderer() -> Renderer:
    return Renderer(
        TemplateRegistry.load(bundled_templates_dir()),
        sender=SENDER,
        reply_to="Jane replies <reply@news.example>",
        public_url="https://mail.example",
        secret_key="test-secret-key-test-secret-key!",
        postal_address="Postroom Inc., 1 Example Street, Springfield",
        unsubscribe_mailto="unsubscribe@news.example",
    )


def render(
    email_type: str, recipient: str, send_id: str, name: str | None = None, **data: Any
) -> RenderedEmail:
    template_data = {"new_post_notification": POST, "sign_in_link": SIGN_IN}.get(email_type, {})
    event = EmailEvent(
        email_type=email_type,
        recipient_email=recipient,
        recipient_name=name,
        template_data={**template_data, **data},
    )
    return renderer().render(event, send_id=send_id)


def newsletter(count: int, prefix: str = "n") -> list[RenderedEmail]:
    """``count`` copies of one new-post notification, one per subscriber."""
    return [
        render("new_post_notification", f"reader{i}@example.com", f"{prefix}{i:05d}", f"Reader {i}")
        for i in range(count)
    ]


def sign_in(recipient: str = "ada@example.com", send_id: str = "s00001") -> RenderedEmail:
    return render(
        "sign_in_link",
        recipient,
        send_id,
        "Ada Reader",
        sign_in_url=f"https://platform.example/login?t={send_id}",
    )


def sign_ins(links: list[str]) -> list[RenderedEmail]:
    """One sign-in link per entry of ``links``, each to its own reader: one layout."""
    return [
        render("sign_in_link", f"r{n}@example.com", f"s{n:05d}", f"Reader {n}", sign_in_url=link)
        for n, link in enumerate(links)
    ]


def subscribers(count: int, prefix: str = "b") -> list[RenderedEmail]:
    """Like :func:`newsletter` but cloned from one rendering (fast for thousands): each copy
    has its own address, send id, Message-ID and unsubscribe URL in headers and bodies."""
    base = render("new_post_notification", "reader0@example.com", f"{prefix}00000", "Reader 0")
    return subscriber_copies(base, count, lambda i: f"{prefix}{i:05d}")
