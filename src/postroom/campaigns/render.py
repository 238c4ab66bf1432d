"""Rendering a chunk: one message per recipient, personalized (name, unsubscribe and
preference links, tracking ids), with the recipient's A/B variant applied.

Each recipient's message is byte for byte what rendering an ordinary email event of the
campaign's type for them gives (what ``POST /v1/emails`` would send); most are made from a
probed template of the campaign (``campaigns/personalize.py``) rather than rendered one by
one. The provider's batch call then shares the common content (``providers/http_batching``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from email.utils import formataddr, parseaddr
from typing import Any

from postroom.campaigns.personalize import MailingTemplate
from postroom.errors import InvalidMessageError, PostroomError
from postroom.messages import EmailEvent, Priority, RenderedEmail, check_header_value
from postroom.rendering.renderer import Renderer
from postroom.store.campaign_ledger import RecipientOutcome
from postroom.store.campaign_records import (
    CampaignContent,
    ChunkRecipient,
    RecipientState,
    Variant,
)


class ChunkRenderer:
    def __init__(self, renderer: Renderer) -> None:
        self._renderer = renderer
        # (campaign, variant) -> its probed template, or None where it must render each copy.
        self._templates: dict[tuple[str, int | None, bool], MailingTemplate | None] = {}
        self._marketing = {t.name for t in renderer.registry if t.marketing}

    def render(
        self,
        content: CampaignContent,
        recipients: list[ChunkRecipient],
        ab_winner: int | None,
        *,
        failed: list[RecipientOutcome],
    ) -> list[RenderedEmail]:
        """The messages of ``recipients``; one that cannot be rendered is appended to
        ``failed`` instead (its data or template is at fault: retrying cannot help)."""
        emails: list[RenderedEmail] = []
        metadata = {
            **content.metadata,
            "campaign_id": content.id,
            "list_id": content.list_id,
        }
        for recipient in recipients:
            variant = self._variant(content, recipient, ab_winner)
            template = self._template(content, variant, recipient.name is not None, metadata)
            if template is not None and template.accepts(recipient.email, recipient.name):
                emails.append(self._fill(template, content, recipient))
                continue
            try:
                event = EmailEvent(
                    email_type=content.email_type,
                    recipient_email=recipient.email,
                    recipient_name=recipient.name,
                    template_data=content.template_data,
                    metadata={**metadata, "subscriber_id": recipient.subscriber_id},
                    priority=Priority.MARKETING,
                )
                email = self._renderer.render(event, send_id=recipient.send_id(content.id))
                if variant is not None and content.ab_test is not None:
                    email = self._apply(content.ab_test.variants[variant], email, event)
            except (PostroomError, ValueError) as exc:
                failed.append(
                    RecipientOutcome(recipient.position, RecipientState.FAILED, error=str(exc))
                )
                continue
            emails.append(email)
        return emails

    def _template(
        self,
        content: CampaignContent,
        variant: int | None,
        named: bool,
        metadata: dict[str, Any],
    ) -> MailingTemplate | None:
        key = (content.id, variant, named)
        if key in self._templates:
            return self._templates[key]
        if len(self._templates) > 256:
            self._templates.clear()

        def render(values: Mapping[str, str]) -> tuple[RenderedEmail, str]:
            event = EmailEvent(
                email_type=content.email_type,
                recipient_email=values["email"],
                recipient_name=values["name"] if named else None,
                template_data=content.template_data,
                metadata={**metadata, "subscriber_id": values["subscriber_id"]},
                priority=Priority.MARKETING,
            )
            email = self._renderer.render(event, send_id=values["send_id"])
            if variant is not None and content.ab_test is not None:
                email = self._apply(content.ab_test.variants[variant], email, event)
            return email, self._token(content, values["email"], values["send_id"])

        try:
            template = MailingTemplate.probe(render, content.id, named=named)
        except (PostroomError, ValueError):
            template = None  # each recipient's own rendering reports what is wrong
        self._templates[key] = template
        return template

    def _token(self, content: CampaignContent, email: str, send_id: str) -> str:
        if content.email_type not in self._marketing:
            return ""
        return self._renderer.tokens.make_token(email, content.email_type, send_id, content.list_id)

    def _fill(
        self, template: MailingTemplate, content: CampaignContent, recipient: ChunkRecipient
    ) -> RenderedEmail:
        send_id = recipient.send_id(content.id)
        values = {
            "email": recipient.email,
            "name": recipient.name or "",
            "subscriber_id": recipient.subscriber_id,
            "send_id": send_id,
            "token": self._token(content, recipient.email, send_id),
        }
        metadata = {**template.model.metadata, "subscriber_id": recipient.subscriber_id}
        return template.fill(
            send_id=send_id,
            message_id=self._renderer.message_id(send_id),
            values=values,
            metadata=metadata,
        )

    @staticmethod
    def _variant(
        content: CampaignContent, recipient: ChunkRecipient, ab_winner: int | None
    ) -> int | None:
        ab = content.ab_test
        if ab is None:
            return None
        index = recipient.variant if recipient.variant is not None else ab_winner
        return ab.default if index is None else index

    def _apply(self, variant: Variant, email: RenderedEmail, event: EmailEvent) -> RenderedEmail:
        subject, sender = email.subject, email.sender
        if variant.subject is not None:
            subject = self._renderer.render_subject_variant(variant.subject, event)
        if variant.from_name is not None:
            name = check_header_value(variant.from_name, "from_name")
            _, address = parseaddr(email.sender)
            if not address:
                raise InvalidMessageError("the sender has no address", "sender")
            sender = formataddr((name, address))
        return dataclasses.replace(email, subject=subject, sender=sender)
