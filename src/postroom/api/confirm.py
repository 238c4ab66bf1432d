"""``/confirm/{token}``: double opt-in. A GET shows a page with a button and changes nothing
(link scanners such as Safe Links fetch every URL in a message, and would otherwise confirm
subscriptions nobody asked for); the button's POST confirms. The token is signed with the
secret key, names a subscriber and a list, and works for ``POSTROOM_CONFIRM_TOKEN_MAX_AGE``.
"""

from __future__ import annotations

import html
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from postroom.api.pages import page
from postroom.wiring import Postroom

router = APIRouter(prefix="/confirm", tags=["subscribers"])

_SALT = "postroom-confirm"  # a token of another kind (unsubscribe) never reads as this one


def make_confirm_token(secret_key: str, subscriber_id: str, list_id: str) -> str:
    return str(URLSafeTimedSerializer(secret_key, salt=_SALT).dumps([subscriber_id, list_id]))


def read_confirm_token(secret_key: str, token: str, max_age: float) -> tuple[str, str] | str:
    """(subscriber id, list id), or the reason the token is refused."""
    serializer = URLSafeTimedSerializer(secret_key, salt=_SALT)
    try:
        payload: Any = serializer.loads(token, max_age=int(max_age))
    except SignatureExpired:
        return "This confirmation link has expired. Please subscribe again."
    except BadData:
        return "This confirmation link is not valid."
    if not (
        isinstance(payload, list) and len(payload) == 2 and all(isinstance(p, str) for p in payload)
    ):
        return "This confirmation link is not valid."
    return payload[0], payload[1]


def confirm_url(postroom: Postroom, subscriber_id: str, list_id: str) -> str:
    secret = postroom.settings.secret_key or ""
    token = make_confirm_token(secret, subscriber_id, list_id)
    return f"{postroom.settings.public_url.rstrip('/')}/confirm/{token}"


def _claim(request: Request, token: str) -> tuple[str, str] | str:
    postroom: Postroom = request.app.state.postroom
    settings = postroom.settings
    return read_confirm_token(settings.secret_key or "", token, settings.confirm_token_max_age)


@router.get("/{token}", response_class=HTMLResponse)
async def confirmpage(request: Request, token: str) -> HTMLResponse:
    """Ask for the click that confirms; changes nothing."""
    claim = _claim(request, token)
    if isinstance(claim, str):
        return page("Confirm your subscription", f"<p>{html.escape(claim)}</p>", status=400)
    body = (
        "<p>Please confirm that you want to receive these emails.</p>"
        '<form method="post"><button type="submit">Confirm subscription</button></form>'
    )
    return page("Confirm your subscription", body)


@router.post("/{token}", response_class=HTMLResponse)
async def confirm(request: Request, token: str) -> HTMLResponse:
    """Confirm the subscription (idempotent), recording express consent and the client IP."""
    claim = _claim(request, token)
    if isinstance(claim, str):
        return page("Confirm your subscription", f"<p>{html.escape(claim)}</p>", status=400)
    postroom: Postroom = request.app.state.postroom
    ip = request.client.host if request.client else None
    status = await postroom.subscribers.confirm(claim[0], claim[1], ip)
    if status == "active":
        return page("Subscribed", "<p>Thank you: your subscription is confirmed.</p>")
    if status is None:
        return page("Confirm your subscription", "<p>This subscription no longer exists.</p>", 404)
    return page("Confirm your subscription", "<p>You have unsubscribed from this list.</p>", 409)
