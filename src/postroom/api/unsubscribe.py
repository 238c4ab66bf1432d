"""``/unsubscribe/{token}``: RFC 8058 one-click unsubscribe, and a page for people.

A POST unsubscribes at once: mailbox providers send ``List-Unsubscribe=One-Click`` from the
List-Unsubscribe header, and the page's button posts the same form. A GET only shows the page
and changes nothing, because link scanners follow every link in a message. The token (signed
by the renderer's key) says who and which email type; a tampered or foreign token is a 400.
The address is suppressed for marketing mail; transactional mail still goes.
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from postroom.api.pages import page
from postroom.errors import InvalidMessageError
from postroom.rendering.unsubscribe import UnsubscribeClaim
from postroom.store.suppressions import SuppressionScope
from postroom.wiring import Postroom

router = APIRouter(prefix="/unsubscribe", tags=["unsubscribe"])


def _claim(request: Request, token: str) -> UnsubscribeClaim | None:
    postroom: Postroom = request.app.state.postroom
    try:
        return postroom.renderer.tokens.read_token(token)
    except InvalidMessageError:
        return None


def _masked(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


_INVALID = (
    "<p>This unsubscribe link is not valid. Please use the link from the most recent email, "
    "or reply to it and ask to be removed.</p>"
)


@router.get("/{token}", response_class=HTMLResponse)
async def unsubscribepage(request: Request, token: str) -> HTMLResponse:
    """Ask for confirmation; changes nothing (link scanners follow GET links)."""
    claim = _claim(request, token)
    if claim is None:
        return page("Unsubscribe", _INVALID, status=400)
    body = (
        f"<p>Stop marketing email (such as “{html.escape(claim.email_type)}”) to "
        f"<strong>{html.escape(_masked(claim.recipient))}</strong>? Account and security "
        "email will still be sent.</p>"
        '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return page("Unsubscribe", body)


@router.post("/{token}")
async def unsubscribe(request: Request, token: str) -> Response:
    """Unsubscribe at once (RFC 8058 one-click, or the page's button)."""
    claim = _claim(request, token)
    if claim is None:
        return page("Unsubscribe", _INVALID, status=400)
    postroom: Postroom = request.app.state.postroom
    detail = f"one-click: {claim.email_type} (send {claim.send_id})"
    await postroom.suppressions.add(
        claim.recipient, SuppressionScope.MARKETING, "unsubscribe", detail[:500]
    )
    if "text/html" in request.headers.get("accept", ""):
        return page("Unsubscribed", "<p>You will not receive marketing email from us again.</p>")
    return Response(status_code=200)  # mailbox providers want a 2xx and nothing more
