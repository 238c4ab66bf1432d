"""``/admin/suppressions``: look an address up, page through the list, add and lift entries
(lifting records a reason, as ``DELETE /v1/suppressions/{email}`` does)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse

from postroom.api.admin.session import Session, checked_form, postroom_of
from postroom.api.admin.templating import render
from postroom.messages import normalized_address
from postroom.store.suppressions import ERASED_REASON, Suppression, SuppressionScope

router = APIRouter(prefix="/admin/suppressions")
PAGE = 50
_SCOPES = {s.value for s in SuppressionScope}


@router.get("", response_class=HTMLResponse)
async def suppressions_page(
    request: Request,
    session: Session,
    email: str = "",
    scope_name: Annotated[str, Query(alias="scope")] = "",
    cursor: str | None = None,
) -> HTMLResponse:
    repository = postroom_of(request).suppressions
    email = email.strip()
    scope = SuppressionScope(scope_name) if scope_name in _SCOPES else None
    entries: list[Suppression] = []
    removals: list[dict[str, object]] = []
    next_cursor: str | None = None
    error: str | None = None
    if email:
        entries = [e for e in await repository.get(email) if scope in (None, e.scope)]
        removals = await repository.removals(email)
    else:
        try:
            page = await repository.page(scope=scope, limit=PAGE, cursor=cursor or None)
            entries, next_cursor = page.entries, page.cursor
        except ValueError as exc:
            error = str(exc)
    return render(
        request,
        "suppressions.html",
        session=session,
        page="suppressions",
        title="Suppressions",
        email=email,
        scope=scope.value if scope else "",
        scopes=[s.value for s in SuppressionScope],
        entries=entries,
        removals=removals,
        next_cursor=next_cursor,
        error=error,
    )


@router.post("/add")
async def add(request: Request, session: Session) -> RedirectResponse:
    form = await checked_form(request, session)
    try:
        email = normalized_address(form.get("email", "").strip()).lower()
        scope = SuppressionScope(form.get("scope", SuppressionScope.ALL.value))
    except ValueError as exc:
        return _back({"error": f"not added: {exc}"})
    reason = form.get("reason", "").strip()[:64] or "manual"
    detail = form.get("detail", "").strip()[:1000] or None
    await postroom_of(request).suppressions.add(email, scope, reason, detail)
    return _back({"email": email, "notice": f"{email} is suppressed for {scope.value} mail"})


@router.post("/remove")
async def remove(request: Request, session: Session) -> RedirectResponse:
    form = await checked_form(request, session)
    email = form.get("email", "").strip()
    reason = form.get("reason", "").strip()[:1000]
    if not email or not reason:
        return _back({"email": email, "error": "lifting a suppression needs the address and why"})
    try:
        scope = SuppressionScope(form["scope"]) if form.get("scope") else None
    except ValueError as exc:
        return _back({"email": email, "error": str(exc)})
    repository = postroom_of(request).suppressions
    removed = await repository.remove(email, scope, reason=reason, force=form.get("force") == "1")
    if removed:
        entries = "entry" if removed == 1 else "entries"
        return _back({"email": email, "notice": f"lifted {removed} {entries} of {email}"})
    if any(e.reason == ERASED_REASON for e in await repository.get(email)):
        error = "the address was erased at its owner's request; tick force to lift it anyway"
    else:
        error = f"{email} is not suppressed" + (f" for {scope.value} mail" if scope else "")
    return _back({"email": email, "error": error})


def _back(query: dict[str, str]) -> RedirectResponse:
    return RedirectResponse(f"/admin/suppressions?{urlencode(query)}", status.HTTP_303_SEE_OTHER)
