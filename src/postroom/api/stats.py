"""``GET /v1/stats``: delivery analytics by email type, recipient domain and day."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from postroom.api.auth import require_api_key
from postroom.store.stats import DIMENSIONS, Stats
from postroom.wiring import Postroom

router = APIRouter(prefix="/v1/stats", tags=["analytics"], dependencies=[Depends(require_api_key)])


@router.get("")
async def stats(
    request: Request,
    days: Annotated[int, Query(ge=1, le=3660, description="Sends of the last N days.")] = 30,
    group_by: Annotated[
        str, Query(description=f"Comma-separated, of {', '.join(DIMENSIONS)}; empty: one row.")
    ] = "email_type",
) -> Any:
    """Sent, delivered, bounces, complaints, unique human and machine opens, unique clicks and
    unsubscribes, with their rates, for the sends of the window (each send counts on the day
    it was sent, with the feedback about it)."""
    dimensions = [part.strip() for part in group_by.split(",") if part.strip()]
    unknown = [d for d in dimensions if d not in DIMENSIONS]
    if unknown:
        reason = f"unknown dimension {', '.join(unknown)}; use {', '.join(DIMENSIONS)}"
        return JSONResponse(
            status_code=422, content={"detail": [{"field": "group_by", "reason": reason}]}
        )
    pr: Postroom = request.app.state.postroom
    try:
        rows = await Stats(pr.db).summary(days=days, group_by=dimensions)
    except ValueError as exc:
        return JSONResponse(
            status_code=422, content={"detail": [{"field": "group_by", "reason": str(exc)}]}
        )
    return {"days": days, "group_by": dimensions, "rows": [row.as_dict() for row in rows]}
