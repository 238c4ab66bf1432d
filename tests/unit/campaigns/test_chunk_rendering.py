"""A chunk's messages are exactly what rendering each recipient's email event gives, whether
they came from the probed template or were rendered one by one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.unit.rendering.conftest import make_renderer

from postroom.campaigns.personalize import MailingTemplate
from postroom.campaigns.render import ChunkRenderer
from postroom.messages import EmailEvent, Priority
from postroom.rendering.registry import TemplateRegistry, bundled_templates_dir
from postroom.rendering.renderer import Renderer
from postroom.store.campaign_ledger import RecipientOutcome
from postroom.store.campaign_records import (
    AbTest,
    CampaignContent,
    ChunkRecipient,
    Variant,
)

CAMPAIGN = "01KBXQ7Z2N5J8V3W4Y6T9R0P1M"
POST = {"creator_name": "Jane Doe", "post_title": "Slow writing", "post_url": "https://p.example/1"}
NAMES = [
    "Reader One",
    None,
    "José Ñúñez",
    "Tom & Jerry",
    "O'Brien",
    "<b>bold</b>",
    "A  double  space",
    "Averyveryverylongfirstname Andanevenlongerlastname Thirdname",
    "Li",
    "Anne-Marie St. John",
]


def recipients() -> list[ChunkRecipient]:
    return [
        ChunkRecipient(i, f"SUB{i:023d}", f"reader.{i}+news@example.com", name, None)
        for i, name in enumerate(NAMES)
    ]


def expected(renderer: Renderer, content: CampaignContent, r: ChunkRecipient) -> object:
    event = EmailEvent(
        email_type=content.email_type,
        recipient_email=r.email,
        recipient_name=r.name,
        template_data=content.template_data,
        metadata={
            **content.metadata,
            "campaign_id": content.id,
            "list_id": content.list_id,
            "subscriber_id": r.subscriber_id,
        },
        priority=Priority.MARKETING,
    )
    return renderer.render(event, send_id=r.send_id(content.id))


def comparable(email: object) -> object:
    return {k: v for k, v in vars_of(email).items() if k not in ("date", "copy", "printed")}


def vars_of(email: object) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(email, f.name) for f in dataclasses.fields(email)}  # type: ignore[arg-type]


def test_the_bundled_newsletter_is_probed_and_every_copy_matches_its_own_rendering() -> None:
    renderer = make_renderer(TemplateRegistry.load(bundled_templates_dir()))
    content = CampaignContent(CAMPAIGN, "letters", "new_post_notification", POST, {"k": "v"}, None)
    chunk = ChunkRenderer(renderer)
    failed: list[RecipientOutcome] = []
    emails = chunk.render(content, recipients(), None, failed=failed)
    assert failed == []
    assert chunk._templates[(CAMPAIGN, None, True)] is not None  # the fast path was taken
    assert chunk._templates[(CAMPAIGN, None, False)] is not None
    for email, r in zip(emails, recipients(), strict=True):
        assert comparable(email) == comparable(expected(renderer, content, r)), r.name


def test_a_template_that_transforms_the_name_is_rendered_per_recipient(
    write_type: Callable[..., Path],
) -> None:
    folder = write_type(
        "shout",
        subject="Hi {{ recipient_name|upper if recipient_name else 'there' }}",
        html="<p>{{ (recipient_name or '')|upper }}</p><p>{{ unsubscribe_url }} "
        "{{ postal_address }}</p>",
        toml="marketing = true\ncategory = 'newsletter'\n",
    )
    renderer = make_renderer(TemplateRegistry.load(folder))
    content = CampaignContent(CAMPAIGN, "letters", "shout", {}, {}, None)
    chunk = ChunkRenderer(renderer)
    emails = chunk.render(content, recipients(), None, failed=[])
    assert chunk._templates[(CAMPAIGN, None, True)] is None
    assert emails[0].subject == "Hi READER ONE"
    for email, r in zip(emails, recipients(), strict=True):
        assert comparable(email) == comparable(expected(renderer, content, r))


def test_probe_refuses_a_layout_that_depends_on_a_values_length() -> None:
    from tests.fakes import plain_email

    def render(values):  # type: ignore[no-untyped-def]
        pad = "=" * len(values["name"])
        email = plain_email(1, values["email"])
        return type(email)(**{**vars_of(email), "text": f"{values['name']}\n{pad}"}), ""

    assert MailingTemplate.probe(render, CAMPAIGN) is None


@pytest.mark.parametrize("winner", [0, 1])
def test_ab_variants_apply_to_the_probed_copies(winner: int) -> None:
    renderer = make_renderer(TemplateRegistry.load(bundled_templates_dir()))
    ab = AbTest((Variant(subject="A {{ post_title }}"), Variant(from_name="Jane at Platform")))
    content = CampaignContent(CAMPAIGN, "letters", "new_post_notification", POST, {}, ab)
    emails = ChunkRenderer(renderer).render(content, recipients()[:3], winner, failed=[])
    if winner == 0:
        assert {e.subject for e in emails} == {"A Slow writing"}
    else:
        assert {e.sender for e in emails} == {"Jane at Platform <noreply@mail.platform.example>"}


@pytest.mark.parametrize("esp", ["sendgrid", "mailgun"])
def test_batch_calls_built_from_the_layout_give_every_recipient_their_own_copy(esp: str) -> None:
    from postroom.providers import mailgun, sendgrid

    module = sendgrid if esp == "sendgrid" else mailgun
    renderer = make_renderer(TemplateRegistry.load(bundled_templates_dir()))
    content = CampaignContent(CAMPAIGN, "letters", "new_post_notification", POST, {}, None)
    emails = ChunkRenderer(renderer).render(content, recipients(), None, failed=[])
    items = module.personalize_all(emails, module._marker, marker_prefix=module._MARKER_PREFIX)
    from_layout = [i for i in items if i.email.copy is not None]
    assert len(from_layout) == 4  # plain values; the others were rendered one by one
    assert len({i.key for i in from_layout}) == 2  # named and unnamed copies: two calls
    for item in items:

        def fill(text: str, item: object = item) -> str:
            for name, value in item.values.items():  # type: ignore[attr-defined]
                text = text.replace(module._marker(name), value)
            return text

        email = item.email
        assert fill(item.subject) == email.subject
        assert fill(item.html) == email.html
        assert fill(item.text) == email.text
        assert {k: fill(v) for k, v in item.headers.items()} == dict(email.headers)


def test_copies_fill_their_parts_when_read_and_survive_replace() -> None:
    import dataclasses

    renderer = make_renderer(TemplateRegistry.load(bundled_templates_dir()))
    content = CampaignContent(CAMPAIGN, "letters", "new_post_notification", POST, {}, None)
    [email] = ChunkRenderer(renderer).render(content, recipients()[:1], None, failed=[])
    assert email.copy is not None
    assert email.copy.values["token"] in email.html and email.copy.values["token"] in email.text
    changed = dataclasses.replace(email, subject="Another subject")
    assert (changed.subject, changed.html, changed.text) == (
        "Another subject",
        email.html,
        email.text,
    )
    assert changed == dataclasses.replace(email, subject="Another subject")
