"""``/v1/campaigns``: send a post to a list, follow it, pause, resume or cancel it.

``POST`` checks the request (``campaigns/requests.py``) and stores the campaign as
``scheduled``; a worker's campaign scheduler starts it at ``send_at`` (default: now, within
a second). The status adds up: ``total`` = sent + failed + suppressed + ambiguous + pending.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from postroom.api.auth import require_api_key
from postroom.campaigns.requests import CampaignRequest
from postroom.errors import InvalidMessageError, NotFoundError
from postroom.store.campaign_records import CampaignState, CampaignStatus
from postroom.store.campaigns import Campaigns
from postroom.wiring import Postroom

router = APIRouter(
    prefix="/v1/campaigns", tags=["campaigns"], dependencies=[Depends(require_api_key)]
)


class Reason(BaseModel):
    reason: str = Field(default="operator", min_length=1, max_length=500)


def _campaigns(request: Request) -> Campaigns:
    postroom: Postroom = request.app.state.postroom
    return postroom.campaigns


def _view(status: CampaignStatus, code: int = 200) -> JSONResponse:
    return JSONResponse(status_code=code, content=jsonable_encoder(status.as_dict()))


def _refused(exc: InvalidMessageError, code: int = 422) -> JSONResponse:
    detail = [{"field": exc.field or "body", "reason": exc.reason}]
    return JSONResponse(status_code=code, content={"detail": detail})


def _missing(exc: NotFoundError) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": str(exc)})


@router.post("", status_code=201)
async def create_campaign(request: Request, body: CampaignRequest) -> JSONResponse:
    """Create a campaign; it starts at ``send_at`` (now when absent)."""
    postroom: Postroom = request.app.state.postroom
    try:
        new = body.checked(postroom.renderer)
        status = await postroom.campaigns.create(new)
    except InvalidMessageError as exc:
        return _refused(exc)
    postroom.wake_workers()
    return _view(status, 201)


@router.get("")
async def list_campaigns(
    request: Request,
    status: CampaignState | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JSONResponse:
    found = await _campaigns(request).list_recent(limit, status)
    return JSONResponse(jsonable_encoder({"campaigns": [c.as_dict() for c in found]}))


@router.get("/{campaign_id}")
async def get_campaign(request: Request, campaign_id: str) -> JSONResponse:
    try:
        return _view(await _campaigns(request).get(campaign_id))
    except NotFoundError as exc:
        return _missing(exc)


async def _act(request: Request, campaign_id: str, action: str, reason: str) -> JSONResponse:
    campaigns = _campaigns(request)
    try:
        if action == "pause":
            status = await campaigns.pause(campaign_id, reason)
        elif action == "resume":
            status = await campaigns.resume(campaign_id)
        else:
            status = await campaigns.cancel(campaign_id, reason)
    except NotFoundError as exc:
        return _missing(exc)
    except InvalidMessageError as exc:
        return _refused(exc, 409)  # the campaign's state does not allow it
    return _view(status)


@router.post("/{campaign_id}/pause")
async def pause_campaign(
    request: Request, campaign_id: str, body: Annotated[Reason | None, Body()] = None
) -> JSONResponse:
    return await _act(request, campaign_id, "pause", (body or Reason()).reason)


@router.post("/{campaign_id}/resume")
async def resume_campaign(request: Request, campaign_id: str) -> JSONResponse:
    return await _act(request, campaign_id, "resume", "")


@router.post("/{campaign_id}/cancel")
async def cancel_campaign(
    request: Request, campaign_id: str, body: Annotated[Reason | None, Body()] = None
) -> JSONResponse:
    return await _act(request, campaign_id, "cancel", (body or Reason()).reason)
