"""``/admin/alerts``: what the alert engine fired, open ones first (read from ``alerts``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from postroom.api.admin.session import Session, postroom_of
from postroom.api.admin.templating import render
from postroom.store.dashboard import Dashboard

router = APIRouter(prefix="/admin/alerts")


@router.get("", response_class=HTMLResponse)
async def alerts_page(request: Request, session: Session) -> HTMLResponse:
    recent = await Dashboard(postroom_of(request).db).alerts(limit=200)
    return render(
        request,
        "alerts.html",
        session=session,
        page="alerts",
        title="Alerts",
        open_alerts=[a for a in recent if a.resolved_at is None],
        resolved=[a for a in recent if a.resolved_at is not None],
    )
