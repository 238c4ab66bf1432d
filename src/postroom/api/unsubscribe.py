"""``/unsubscribe/{token}``: RFC 8058 one-click unsubscribe, and a page for people.

A POST unsubscribes at once: mailbox providers send ``List-Unsubscribe=One-Click`` from the
List-Unsubscribe header, and the page's button posts the same form. A GET only shows the page
(with a link to the preference centre) and changes nothing, because link scanners follow
every link in a message. The token (signed by the renderer's key, or a previous one) says who,
which email type and, for campaign mail, which list; a tampered or foreign token is a 400.

A token naming a list unsubscribes from that list only: the subscriber's other lists keep
coming. A token without one (mail sent to no list) suppresses the address for all marketing
mail. Transactional mail still goes either way.
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


def read_claim(request: Request, token: str) -> UnsubscribeClaim | None:
    """The token's claim, or None when it is forged, foreign or malformed."""
    postroom: Postroom = request.app.state.postroom
    try:
        return postroom.renderer.tokens.read_token(token)
    except InvalidMessageError:
        return None


def masked(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def preference_link(request: Request, token: str) -> str:
    postroom: Postroom = request.app.state.postroom
    url = f"{postroom.settings.public_url.rstrip('/')}/preferences/{token}"
    return f'<p><a href="{html.escape(url)}">Choose which newsletters you get</a></p>'


INVALID = (
    "<p>This unsubscribe link is not valid. Please use the link from the most recent email, "
    "or reply to it and ask to be removed.</p>"
)


async def _list_name(request: Request, claim: UnsubscribeClaim) -> str | None:
    """The name of the claim's list, when the address is subscribed to it."""
    if claim.list_id is None:
        return None
    postroom: Postroom = request.app.state.postroom
    held = await postroom.subscribers.choices(claim.recipient)
    names = {c.list_id: c.name for c in held.lists} if held else {}
    return names.get(claim.list_id)


@router.get("/{token}", response_class=HTMLResponse)
async def unsubscribepage(request: Request, token: str) -> HTMLResponse:
    """Ask for confirmation; changes nothing (link scanners follow GET links)."""
    claim = read_claim(request, token)
    if claim is None:
        return page("Unsubscribe", INVALID, status=400)
    who = f"<strong>{html.escape(masked(claim.recipient))}</strong>"
    name = await _list_name(request, claim)
    if claim.list_id is not None:
        what = f"“{html.escape(name)}”" if name else "this newsletter"
        question = f"<p>Stop emails from {what} to {who}? Your other subscriptions stay.</p>"
    else:
        question = (
            f"<p>Stop marketing email (such as “{html.escape(claim.email_type)}”) to {who}? "
            "Account and security email will still be sent.</p>"
        )
    body = (
        question + '<form method="post"><input type="hidden" name="List-Unsubscribe" '
        'value="One-Click"><button type="submit">Unsubscribe</button></form>'
    )
    return page("Unsubscribe", body + preference_link(request, token))


@router.post("/{token}")
async def unsubscribe(request: Request, token: str) -> Response:
    """Unsubscribe at once (RFC 8058 one-click, or the page's button)."""
    claim = read_claim(request, token)
    if claim is None:
        return page("Unsubscribe", INVALID, status=400)
    postroom: Postroom = request.app.state.postroom
    if claim.list_id is not None:
        # Idempotent: a second click (or the provider's retry) finds it unsubscribed already.
        await postroom.subscribers.unsubscribe(claim.recipient, claim.list_id)
        done = "<p>You will not receive email from this newsletter again.</p>"
    else:
        detail = f"one-click: {claim.email_type} (send {claim.send_id})"
        await postroom.suppressions.add(
            claim.recipient, SuppressionScope.MARKETING, "unsubscribe", detail[:500]
        )
        done = "<p>You will not receive marketing email from us again.</p>"
    if "text/html" in request.headers.get("accept", ""):
        return page("Unsubscribed", done + preference_link(request, token))
    return Response(status_code=200)  # mailbox providers want a 2xx and nothing more
