"""Fixtures for rendering tests: a renderer over the bundled templates and tmp template folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from postroom.messages import EmailEvent
from postroom.rendering import Renderer, TemplateRegistry, bundled_templates_dir

SECRET = "test-secret-key"
POSTAL = "Postroom Inc., 1 Example Street, Springfield"

SAMPLE_DATA: dict[str, dict[str, Any]] = {
    "new_post_notification": {
        "creator_name": "Jane Doe",
        "post_title": "My Latest Article",
        "post_url": "https://platform.example/post/123",
        "post_excerpt": "Why small newsletters win.",
    },
    "welcome": {
        "creator_name": "Jane Doe",
        "publication_url": "https://jane.platform.example",
    },
    "sign_in_link": {
        "sign_in_url": "https://platform.example/login?t=abc&n=1",
        "expires_minutes": 15,
    },
    "receipt": {
        "creator_name": "Jane Doe",
        "items": [
            {"description": "Monthly subscription", "amount": 5},
            {"description": "Tip", "amount": "2.50"},
        ],
        "total": 7.5,
        "currency": "USD",
        "receipt_url": "https://platform.example/receipts/1",
    },
}


def make_event(email_type: str, data: dict[str, Any] | None = None, **fields: Any) -> EmailEvent:
    return EmailEvent(
        email_type=email_type,
        recipient_email=fields.pop("recipient_email", "reader@example.com"),
        recipient_name=fields.pop("recipient_name", "Reader One"),
        template_data=SAMPLE_DATA.get(email_type, {}) if data is None else data,
        metadata=fields.pop("metadata", {"user_id": "u-1"}),
        **fields,
    )


def make_renderer(registry: TemplateRegistry, **overrides: Any) -> Renderer:
    options: dict[str, Any] = {
        "sender": "Platform <noreply@mail.platform.example>",
        "reply_to": "support@platform.example",
        "public_url": "https://mail.platform.example/",
        "secret_key": SECRET,
        "postal_address": POSTAL,
    }
    options.update(overrides)
    return Renderer(registry, **options)


@pytest.fixture(name="make_event")
def make_event_fixture() -> Callable[..., EmailEvent]:
    return make_event


@pytest.fixture(name="make_renderer")
def make_renderer_fixture() -> Callable[..., Renderer]:
    return make_renderer


@pytest.fixture(name="sample_data")
def sample_data_fixture() -> dict[str, dict[str, Any]]:
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def bundled() -> TemplateRegistry:
    return TemplateRegistry.load(bundled_templates_dir())


@pytest.fixture
def renderer(bundled: TemplateRegistry) -> Renderer:
    return make_renderer(bundled)


@pytest.fixture
def write_type(tmp_path: Path) -> Callable[..., Path]:
    """Write ``<tmp>/<name>/`` with an email.toml, body.html and optional body.txt."""

    def write(
        name: str,
        *,
        subject: str | None = "Hello {{ who }}",
        html: str | None = "<p>Hi {{ who }}</p>",
        text: str | None = None,
        toml: str = "",
    ) -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        settings = toml
        if subject is not None:
            settings = f"subject = {subject!r}\n" + settings
        (folder / "email.toml").write_text(settings, encoding="utf-8")
        if html is not None:
            (folder / "body.html").write_text(html, encoding="utf-8")
        if text is not None:
            (folder / "body.txt").write_text(text, encoding="utf-8")
        return tmp_path

    return write
