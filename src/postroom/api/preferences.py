"""``/preferences/{token}``: the preference centre, reached from marketing mail.

The token is the unsubscribe token of the mail it came from (who; the list does not narrow
what is shown). A GET shows the address's lists with a checkbox each and changes nothing
(link scanners). The form's POST keeps the ticked lists and unsubscribes the others;
re-ticking a list re-subscribes only where the subscriber had left it themself
(``store/subscriber_choices.py``). "Unsubscribe from everything" suppresses the address for
all marketing mail; ticking a list later lifts that suppression only if it was their own
unsubscribe, never a complaint.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from postroom.api.pages import page
from postroom.api.unsubscribe import INVALID, masked, read_claim
from postroom.store.subscribers import ListChoice, SubscriberChoices, SubscriptionStatus
from postroom.store.suppressions import SuppressionScope
from postroom.wiring import Postroom

router = APIRouter(prefix="/preferences", tags=["unsubscribe"])

TITLE = "Email preferences"
MAX_FORM_BYTES = 64 * 1024  # a few hundred list ids; the route is public
UNSUBSCRIBE_REASON = "unsubscribe"  # the suppression reason of the subscriber's own request
_EVERYTHING = "everything"


@router.get("/{token}", response_class=HTMLResponse)
async def preferencespage(request: Request, token: str) -> HTMLResponse:
    """The address's lists with their current status; changes nothing."""
    claim = read_claim(request, token)
    if claim is None:
        return page(TITLE, INVALID, status=400)
    return await _form(request, claim.recipient, notice="")


@router.post("/{token}", response_class=HTMLResponse)
async def save_preferences(request: Request, token: str) -> HTMLResponse:
    """Apply the form: keep the ticked lists, or unsubscribe from everything."""
    claim = read_claim(request, token)
    if claim is None:
        return page(TITLE, INVALID, status=400)
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return page(TITLE, "<p>This form is too large.</p>", status=413)
    form = parse_qs(body.decode("utf-8", "replace"))
    postroom: Postroom = request.app.state.postroom
    email = claim.recipient
    if form.get("action", [""])[0] == _EVERYTHING:
        detail = f"preference centre: everything ({claim.email_type}, send {claim.send_id})"
        await postroom.suppressions.add(
            email, SuppressionScope.MARKETING, UNSUBSCRIBE_REASON, detail[:500]
        )
        await postroom.subscribers.apply_choices(email, ())
        notice = "<p><strong>You will not receive marketing email from us again.</strong></p>"
        return await _form(request, email, notice=notice)
    ip = request.client.host if request.client else None
    after = await postroom.subscribers.apply_choices(email, set(form.get("list", [])), ip)
    if after is not None and after.active_list_ids:
        await _lift_own_unsubscribe(postroom, email)
    return await _form(request, email, notice="<p><strong>Your choices are saved.</strong></p>")


async def _lift_own_unsubscribe(postroom: Postroom, email: str) -> None:
    """Keeping a list after "unsubscribe from everything" (or a one-click unsubscribe) means
    the subscriber wants it after all; a complaint's suppression stays."""
    for entry in await postroom.suppressions.get(email):
        if entry.scope is SuppressionScope.MARKETING and entry.reason == UNSUBSCRIBE_REASON:
            await postroom.suppressions.remove(
                email, SuppressionScope.MARKETING, reason="re-subscribed in the preference centre"
            )


async def _form(request: Request, email: str, *, notice: str) -> HTMLResponse:
    postroom: Postroom = request.app.state.postroom
    held = await postroom.subscribers.choices(email)
    blocked = [
        e for e in await postroom.suppressions.get(email) if e.scope is SuppressionScope.MARKETING
    ]
    parts = [notice, f"<p>Newsletters sent to <strong>{html.escape(masked(email))}</strong>.</p>"]
    if blocked and blocked[0].reason == UNSUBSCRIBE_REASON:
        parts.append(
            "<p>You have unsubscribed from all marketing email. Tick a newsletter and save "
            "to receive it again.</p>"
        )
    elif blocked:
        parts.append("<p>This address receives no marketing email.</p>")
    rows = [_row(held, choice) for choice in held.lists] if held else []
    if not rows:
        parts.append("<p>This address is not subscribed to any newsletter.</p>")
    parts.append(
        '<form method="post">'
        + "".join(rows)
        + ('<p><button type="submit" name="action" value="save">Save my choices</button></p>')
        + f'<p><button type="submit" name="action" value="{_EVERYTHING}">'
        "Unsubscribe from everything</button></p></form>"
        "<p>Account and security email will still be sent.</p>"
    )
    return page(TITLE, "".join(parts))


def _row(held: SubscriberChoices, choice: ListChoice) -> str:
    name = html.escape(choice.name)
    value = html.escape(choice.list_id, quote=True)
    if choice.status is SubscriptionStatus.PENDING:
        return (
            f'<p><label><input type="checkbox" disabled> {name}</label> '
            "(waiting for you to confirm it: see the email we sent)</p>"
        )
    if choice.status is SubscriptionStatus.ACTIVE or held.revivable(choice):
        ticked = " checked" if choice.status is SubscriptionStatus.ACTIVE else ""
        return (
            f'<p><label><input type="checkbox" name="list" value="{value}"{ticked}> '
            f"{name}</label></p>"
        )
    return f'<p><label><input type="checkbox" disabled> {name}</label> (unsubscribed)</p>'
