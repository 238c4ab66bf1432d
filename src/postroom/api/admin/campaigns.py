"""``/admin/campaigns``: recent campaigns with their progress, and pause, resume and cancel
(the campaigns repository's own transitions: it refuses a move the state does not allow)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse

from postroom.api.admin.session import Session, checked_form, postroom_of
from postroom.api.admin.templating import render
from postroom.errors import PostroomError
from postroom.store.campaign_records import CampaignState, CampaignStatus
from postroom.store.campaigns import Campaigns

router = APIRouter(prefix="/admin/campaigns")
PAUSABLE = {CampaignState.SCHEDULED, CampaignState.SENDING}
CANCELLABLE = {CampaignState.SCHEDULED, CampaignState.SENDING, CampaignState.PAUSED}


def done(campaign: CampaignStatus) -> int:
    """Recipients with an outcome (the rest are pending)."""
    return campaign.total - campaign.pending


def rate(part: int, whole: int) -> str:
    return f"{part / whole:.2%}" if whole else "—"


@router.get("", response_class=HTMLResponse)
async def campaigns_page(request: Request, session: Session) -> HTMLResponse:
    recent = await Campaigns(postroom_of(request).db).list_recent(50)
    return render(
        request,
        "campaigns.html",
        session=session,
        page="campaigns",
        title="Campaigns",
        campaigns=recent,
        pausable=PAUSABLE,
        cancellable=CANCELLABLE,
        paused=CampaignState.PAUSED,
        done=done,
        rate=rate,
    )


@router.post("/{campaign_id}/{action}")
async def change(
    request: Request, session: Session, campaign_id: str, action: str
) -> RedirectResponse:
    form = await checked_form(request, session)
    reason = form.get("reason", "").strip() or "by an operator on the dashboard"
    campaigns = Campaigns(postroom_of(request).db)
    try:
        if action == "pause":
            changed = await campaigns.pause(campaign_id, reason)
        elif action == "resume":
            changed = await campaigns.resume(campaign_id)
        elif action == "cancel":
            changed = await campaigns.cancel(campaign_id, reason)
        else:
            return _back({"error": f"unknown action {action!r}"})
    except PostroomError as exc:  # not found, or a move its state does not allow
        return _back({"error": f"{campaign_id}: {exc}"})
    return _back({"notice": f"campaign {campaign_id} is {changed.status.value}"})


def _back(query: dict[str, str]) -> RedirectResponse:
    return RedirectResponse(f"/admin/campaigns?{urlencode(query)}", status.HTTP_303_SEE_OTHER)
