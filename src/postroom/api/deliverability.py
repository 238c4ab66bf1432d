"""``/v1/domains/{domain}/check`` and ``/v1/lint``: deliverability checks for dashboards and CI."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from postroom.api.auth import require_api_key
from postroom.deliverability import content, dns_check
from postroom.errors import PostroomError
from postroom.wiring import Postroom

router = APIRouter(prefix="/v1", tags=["deliverability"], dependencies=[Depends(require_api_key)])


class DnsFinding(BaseModel):
    record: str
    status: str
    message: str
    fix: str | None


class DomainCheck(BaseModel):
    domain: str
    ok: bool = Field(description="False when any finding fails.")
    findings: list[DnsFinding]


@router.get("/domains/{domain}/check", response_model=DomainCheck)
async def check_domain(
    request: Request,
    domain: str,
    provider: str | None = None,
    selector: Annotated[list[str] | None, Query()] = None,
    return_path: str = "bounces",
) -> DomainCheck:
    """Look up SPF, DKIM, DMARC, Return-Path and bounce MX for ``domain`` and grade each."""
    try:
        findings = await dns_check.check(
            domain,
            provider=provider,
            nameserver=request.app.state.postroom.settings.dns_nameserver,
            dkim_selectors=tuple(selector or ()),
            return_path=return_path,
        )
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    return DomainCheck(
        domain=domain,
        ok=dns_check.exit_status(findings) == 0,
        findings=[
            DnsFinding(record=f.record, status=f.status, message=f.message, fix=f.fix or None)
            for f in findings
        ],
    )


class LintRequest(BaseModel):
    """Either a rendered message (subject, html, …) or an email type with sample data."""

    subject: str | None = None
    html: str | None = None
    text: str | None = None
    marketing: bool = False
    email_type: str | None = None
    template_data: dict[str, Any] = Field(default_factory=dict)
    threshold: float = 5.0


@router.post("/lint")
async def lint(request: Request, body: LintRequest) -> dict[str, Any]:
    """Score content for spam signals: findings with severity and points, and a verdict."""
    postroom: Postroom = request.app.state.postroom
    if body.email_type is not None:
        try:
            report = content.lint_email_type(postroom.renderer, body.email_type, body.template_data)
        except PostroomError as exc:
            raise HTTPException(422, detail=str(exc)) from None
    elif body.subject is not None and body.html is not None:
        report = content.lint_message(body.subject, body.html, body.text, marketing=body.marketing)
    else:
        detail = "give email_type (with template_data), or subject and html"
        raise HTTPException(422, detail=detail)
    return report.to_dict(body.threshold)
