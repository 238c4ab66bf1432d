"""``/v1/suppressions``: read, add to and lift the suppression list.

Listing pages by keyset (``cursor`` from the previous page). Lifting an entry takes a reason,
which is recorded with the entry's own; an entry left by a GDPR erasure is lifted only with
``force=true`` (its owner asked never to be mailed again).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field, ValidationError, field_validator

from postroom.api.auth import require_api_key
from postroom.messages import normalized_address
from postroom.store.suppressions import ERASED_REASON, Suppression, SuppressionScope
from postroom.wiring import Postroom

router = APIRouter(
    prefix="/v1/suppressions", tags=["suppressions"], dependencies=[Depends(require_api_key)]
)


class SuppressionIn(BaseModel):
    email: str = Field(max_length=320)
    scope: SuppressionScope = SuppressionScope.ALL
    reason: str = Field(default="manual", min_length=1, max_length=64)
    detail: str | None = Field(default=None, max_length=1000)

    @field_validator("email")
    @classmethod
    def _address(cls, value: str) -> str:
        return normalized_address(value).lower()


def _postroom(request: Request) -> Postroom:
    postroom: Postroom = request.app.state.postroom
    return postroom


def view(entry: Suppression) -> dict[str, Any]:
    return {
        "email": entry.email,  # null when the address was erased
        "address_hash": entry.address_hash,
        "scope": entry.scope.value,
        "reason": entry.reason,
        "detail": entry.detail,
        "created_at": entry.created_at,
    }


@router.get("")
async def list_suppressions(
    request: Request,
    email: Annotated[str | None, Query(max_length=320)] = None,
    scope: SuppressionScope | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> JSONResponse:
    """One address's entries (``email``), or a page of the list in key order."""
    suppressions = _postroom(request).suppressions
    if email is not None:
        entries = [e for e in await suppressions.get(email) if scope in (None, e.scope)]
        return JSONResponse(jsonable_encoder({"suppressions": [view(e) for e in entries]}))
    try:
        page = await suppressions.page(scope=scope, limit=limit, cursor=cursor)
    except ValueError as exc:
        return JSONResponse(
            status_code=422, content={"detail": [{"field": "cursor", "reason": str(exc)}]}
        )
    body = {"suppressions": [view(e) for e in page.entries], "next_cursor": page.cursor}
    return JSONResponse(jsonable_encoder(body))


@router.get("/export", response_class=StreamingResponse)
async def export_suppressions(
    request: Request, scope: SuppressionScope | None = None
) -> StreamingResponse:
    """The whole list as CSV (``email`` empty for erased addresses), streamed a page of 1,000
    entries at a time: each page is its own short read, so a long download never holds a
    transaction open."""
    suppressions = _postroom(request).suppressions

    async def rows() -> AsyncIterator[str]:
        yield _csv_line(EXPORT_COLUMNS)
        cursor = None
        while True:
            page = await suppressions.page(scope=scope, limit=1000, cursor=cursor)
            yield "".join(_csv_line(_export_row(e)) for e in page.entries)
            if page.cursor is None:
                return
            cursor = page.cursor

    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="suppressions.csv"'},
    )


EXPORT_COLUMNS = ("email", "address_hash", "scope", "reason", "detail", "created_at")


def _export_row(entry: Suppression) -> tuple[str, ...]:
    return (
        entry.email or "",
        entry.address_hash,
        entry.scope.value,
        entry.reason,
        entry.detail or "",
        entry.created_at.isoformat(),
    )


def _csv_line(values: tuple[str, ...]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()


@router.post("", status_code=status.HTTP_201_CREATED)
async def add_suppression(
    request: Request, payload: Annotated[dict[str, Any], Body()]
) -> JSONResponse:
    """Suppress an address for ``all`` mail or ``marketing`` only; an existing entry keeps
    its first reason."""
    try:
        body = SuppressionIn.model_validate(payload)
    except ValidationError as exc:
        problems = [
            {
                "field": ".".join(str(p) for p in e["loc"]) or None,
                "reason": str(e["msg"]).removeprefix("Value error, "),
            }
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": problems})
    suppressions = _postroom(request).suppressions
    await suppressions.add(body.email, body.scope, body.reason, body.detail)
    entries = [e for e in await suppressions.get(body.email) if e.scope is body.scope]
    return JSONResponse(jsonable_encoder(view(entries[0])), status_code=201)


@router.delete("/{email}")
async def remove_suppression(
    request: Request,
    email: str,
    reason: Annotated[str, Query(min_length=1, max_length=1000)],
    scope: SuppressionScope | None = None,
    force: bool = False,
) -> JSONResponse:
    """Lift an address's suppression (one scope, or every scope), recording ``reason``."""
    suppressions = _postroom(request).suppressions
    removed = await suppressions.remove(email, scope, reason=reason, force=force)
    if removed == 0:
        held = await suppressions.get(email)
        if any(e.reason == ERASED_REASON for e in held):
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                detail="the address was erased at its owner's request; lift with force=true",
            )
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="the address is not suppressed")
    return JSONResponse({"removed": removed, "reason": reason})
