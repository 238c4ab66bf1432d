"""Loading email types from folders: the bundled set, and clear errors for broken folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.errors import InvalidMessageError, TemplateError, UnknownEmailTypeError
from postroom.messages import Priority
from postroom.rendering import EmailType, TemplateRegistry, bundled_templates_dir

WriteType = Callable[..., Path]


def test_bundled_templates_dir_is_inside_the_package() -> None:
    folder = bundled_templates_dir()
    assert folder.name == "templates"
    assert (folder / "_layouts" / "base.html").is_file()


def test_bundled_types_load_with_their_settings(bundled: TemplateRegistry) -> None:
    assert bundled.names() == [
        "alert",
        "new_post_notification",
        "receipt",
        "reengagement",
        "sign_in_link",
        "subscription_confirmation",
        "welcome",
    ]
    post = bundled.get("new_post_notification")
    assert post.marketing and post.priority is Priority.MARKETING
    assert post.category == "newsletter"
    reengagement = bundled.get("reengagement")
    assert reengagement.marketing and reengagement.priority is Priority.MARKETING
    sign_in = bundled.get("sign_in_link")
    assert sign_in.priority is Priority.CRITICAL and not sign_in.marketing
    assert sign_in.text is not None
    for name in ("welcome", "receipt"):
        assert bundled.get(name).priority is Priority.TRANSACTIONAL
        assert bundled.get(name).text is None
    assert all(email_type.description for email_type in bundled)
    assert "_layouts/base.html" in bundled.sources


def test_unknown_type_raises(bundled: TemplateRegistry) -> None:
    with pytest.raises(UnknownEmailTypeError) as caught:
        bundled.get("nope")
    assert caught.value.field == "email_type"
    assert "nope" not in bundled


def test_defaults_follow_the_marketing_flag(write_type: WriteType) -> None:
    write_type("plain")
    root = write_type(
        "promo", html="<p>{{ who }} {{ unsubscribe_url }}</p>", toml="marketing = true\n"
    )
    registry = TemplateRegistry.load(root)
    assert registry.get("plain").priority is Priority.TRANSACTIONAL
    assert registry.get("plain").category == "transactional"
    assert registry.get("promo").priority is Priority.MARKETING
    assert registry.get("promo").category == "marketing"


def test_underscore_and_hidden_folders_are_not_types(write_type: WriteType) -> None:
    root = write_type("real")
    (root / "_drafts").mkdir()
    (root / ".git").mkdir()
    (root / "README.md").write_text("not a type")
    assert TemplateRegistry.load(root).names() == ["real"]


def test_layouts_can_be_extended_and_included(write_type: WriteType) -> None:
    root = write_type(
        "child", html='{% extends "_layouts/base.html" %}{% block b %}x{% endblock %}'
    )
    (root / "_layouts" / "parts").mkdir(parents=True)
    (root / "_layouts" / "base.html").write_text('{% include "_layouts/parts/f.html" %}')
    (root / "_layouts" / "parts" / "f.html").write_text("footer")
    registry = TemplateRegistry.load(root)
    assert set(registry.sources) >= {"_layouts/base.html", "_layouts/parts/f.html"}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"subject": None}, "'subject' is required"),
        ({"subject": "   "}, "'subject' is required"),
        ({"toml": "priority = 'urgent'\n"}, "unknown priority 'urgent'"),
        ({"toml": "marketing = 'yes'\n"}, "'marketing' must be true or false"),
        ({"toml": "subjct = 'typo'\n"}, "unknown key(s) subjct"),
        ({"toml": "category = 'a b'\n"}, "'category' must be"),
        ({"toml": "= broken toml"}, "is not valid TOML"),
        ({"toml": "required = 'who'\n"}, "'required' must be a list"),
        ({"toml": "required = ['not a name']\n"}, "'required' must be a list"),
        ({"html": None}, "body.html is missing"),
        ({"html": "<p>{% if x %}</p>"}, "body.html, line 1"),
        ({"subject": "{{ x"}, "email.toml (subject)"),
        ({"text": "{% endfor %}"}, "body.txt, line 1"),
        ({"html": '{% extends "_layouts/missing.html" %}'}, "'_layouts/missing.html'"),
    ],
)
def test_broken_type_names_file_and_problem(
    write_type: WriteType, kwargs: dict[str, str | None], expected: str
) -> None:
    root = write_type("broken", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TemplateError) as caught:
        TemplateRegistry.load(root)
    message = str(caught.value)
    assert expected in message
    assert "broken" in message


def test_missing_email_toml(tmp_path: Path) -> None:
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "body.html").write_text("<p>x</p>")
    with pytest.raises(TemplateError, match=r"lonely/email.toml is missing"):
        TemplateRegistry.load(tmp_path)


def test_bad_folder_name(write_type: WriteType) -> None:
    root = write_type("Bad Name")
    with pytest.raises(TemplateError, match="not a valid email type"):
        TemplateRegistry.load(root)


def test_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="does not exist"):
        TemplateRegistry.load(tmp_path / "absent")
    with pytest.raises(TemplateError, match="no email type folders"):
        TemplateRegistry.load(tmp_path)


def test_non_utf8_template(write_type: WriteType) -> None:
    root = write_type("latin")
    (root / "latin" / "body.html").write_bytes(b"<p>caf\xe9</p>")
    with pytest.raises(TemplateError, match="not UTF-8"):
        TemplateRegistry.load(root)


def test_programmatic_registry_is_checked_too() -> None:
    email_type = EmailType(
        name="inline",
        subject="Hi",
        html="{% include '_layouts/nowhere.html' %}",
        text=None,
        category="transactional",
        priority=Priority.TRANSACTIONAL,
        marketing=False,
    )
    with pytest.raises(TemplateError, match="does not exist"):
        TemplateRegistry({"inline": email_type})


def test_required_data_is_checked_by_name(write_type: WriteType) -> None:
    root = write_type("greeting", toml="required = ['who', 'when']\n")
    greeting = TemplateRegistry.load(root).get("greeting")
    assert greeting.required == ("who", "when")
    greeting.check_data({"who": "Ada", "when": "now", "extra": 1})
    with pytest.raises(InvalidMessageError) as caught:
        greeting.check_data({"who": "Ada"})
    assert caught.value.field == "template_data.when"
    assert "greeting" in caught.value.reason
