"""What a creator asks for when sending a campaign, checked before anything is stored.

The API and the CLI both take a :class:`CampaignRequest`; ``checked`` refuses, with the field
at fault, what could never be sent: an unknown or non-marketing email type (campaign mail
carries the unsubscribe link and postal address), template data the type's template needs
and lacks, a subject or A/B variant that does not render header-safe.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from postroom.errors import InvalidMessageError, PostroomError
from postroom.messages import EmailEvent, check_header_value
from postroom.rendering.renderer import Renderer
from postroom.store.campaign_records import AbMetric, AbTest, NewCampaign, Variant
from postroom.store.campaign_rows import check

# A stand-in recipient for checking that the subject and variants render.
_CHECK_RECIPIENT = "subscriber@example.com"


class VariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str | None = Field(default=None, min_length=1, max_length=500)
    from_name: str | None = Field(default=None, min_length=1, max_length=100)


class AbTestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variants: list[VariantIn] = Field(min_length=2, max_length=4)
    share: float = Field(default=0.2, gt=0, le=1)
    wait_seconds: float = Field(default=4 * 3600.0, ge=0, le=7 * 86400.0)
    metric: AbMetric = AbMetric.OPENS
    default: int = Field(default=0, ge=0, le=3)
    alpha: float = Field(default=0.05, gt=0, lt=0.5)


class CampaignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    list_id: str = Field(min_length=1, max_length=64)
    email_type: str = Field(min_length=1, max_length=100)
    template_data: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    send_at: datetime | None = None
    spread_seconds: float = Field(default=0.0, ge=0, le=7 * 86400.0)
    ab_test: AbTestIn | None = None

    def checked(self, renderer: Renderer) -> NewCampaign:
        """The campaign to create; InvalidMessageError (with the field) if it cannot go out."""
        email_type = renderer.registry.get(self.email_type)
        if not email_type.marketing:
            raise InvalidMessageError(
                f"{self.email_type!r} is not a marketing email type; campaigns send "
                "marketing mail (unsubscribe link, postal address)",
                "email_type",
            )
        email_type.check_data(self.template_data)
        send_at = self.send_at
        if send_at is not None and send_at.tzinfo is None:
            raise InvalidMessageError("give a time zone, e.g. 2026-12-01T09:00:00Z", "send_at")
        new = NewCampaign(
            list_id=self.list_id,
            email_type=self.email_type,
            template_data=self.template_data,
            metadata=self.metadata,
            send_at=send_at.astimezone(UTC) if send_at else None,
            spread_seconds=self.spread_seconds,
            ab_test=self._ab_test(),
        )
        check(new)  # the store's own rules (variants, share, default), with the field at fault
        self._check_renders(renderer, new.ab_test)
        return new

    def _ab_test(self) -> AbTest | None:
        ab = self.ab_test
        if ab is None:
            return None
        return AbTest(
            variants=tuple(Variant(v.subject, v.from_name) for v in ab.variants),
            share=ab.share,
            wait_seconds=ab.wait_seconds,
            metric=ab.metric,
            default=ab.default,
            alpha=ab.alpha,
        )

    def _check_renders(self, renderer: Renderer, ab_test: AbTest | None) -> None:
        try:
            event = EmailEvent(
                email_type=self.email_type,
                recipient_email=_CHECK_RECIPIENT,
                recipient_name="Subscriber",
                template_data=self.template_data,
                metadata={**self.metadata, "list_id": self.list_id},
            )
        except ValueError as exc:
            raise InvalidMessageError(str(exc), "metadata") from None
        try:
            renderer.check_subject(event)
        except PostroomError as exc:
            raise InvalidMessageError(str(exc), "template_data") from None
        for index, variant in enumerate(ab_test.variants if ab_test else ()):
            try:
                if variant.subject is not None:
                    # The variant's own text is data here, not template: no line breaks.
                    check_header_value(variant.subject, "subject")
                    renderer.render_subject_variant(variant.subject, event)
                if variant.from_name is not None:
                    check_header_value(variant.from_name, "from_name")
            except (PostroomError, ValueError) as exc:
                raise InvalidMessageError(str(exc), f"ab_test.variants.{index}") from None
