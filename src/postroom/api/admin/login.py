"""``/admin/login`` and ``/admin/logout``."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from postroom.api.admin.session import (
    Session,
    checked_form,
    current_session,
    end_session,
    key_matches,
    read_form,
    safe_next,
    same_origin,
    start_session,
)
from postroom.api.admin.templating import render

router = APIRouter(prefix="/admin")


@router.get("/login", response_class=HTMLResponse, name="admin_login_form")
async def login_form(request: Request, next: str = "/admin") -> Response:
    if current_session(request) is not None:
        return RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    return render(request, "login.html", session=None, page="login", title="Log in", next=next)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await read_form(request)
    target = safe_next(form.get("next"))
    if not same_origin(request) or not key_matches(request, form.get("key", "")):
        return render(
            request,
            "login.html",
            session=None,
            page="login",
            title="Log in",
            next=target,
            error="That is not one of this server's API keys.",
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    response = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
    start_session(request, response, form["key"])
    return response


@router.post("/logout")
async def logout(request: Request, session: Session) -> RedirectResponse:
    await checked_form(request, session)
    response = RedirectResponse("/admin/login", status.HTTP_303_SEE_OTHER)
    end_session(response)
    return response
