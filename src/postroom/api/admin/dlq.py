"""``/admin/dlq``: dead letters, with show, replay and purge (the queue backend's DLQ API,
as ``postroom dlq`` uses it)."""

from __future__ import annotations

from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse

from postroom.api.admin.session import Session, checked_form, postroom_of
from postroom.api.admin.templating import render

router = APIRouter(prefix="/admin/dlq")
PAGE = 50


def summary(body: bytes) -> tuple[str, str]:
    """(email type, recipient) of a dead letter's document, as far as it can be read."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "?", "(not JSON)"
    if not isinstance(document, dict):
        return "?", "(not an object)"
    return str(document.get("email_type", "?")), str(document.get("recipient_email", "?"))


@router.get("", response_class=HTMLResponse)
async def list_dead_letters(request: Request, session: Session, offset: int = 0) -> HTMLResponse:
    offset = max(0, offset)
    error = None
    try:
        letters = await postroom_of(request).queue.dlq_list(limit=PAGE + 1, offset=offset)
    except Exception as exc:  # a broker that does not answer: say so, keep the page
        letters, error = [], f"the queue did not answer: {exc or type(exc).__name__}"
    rows = [(letter, *summary(letter.body)) for letter in letters[:PAGE]]
    return render(
        request,
        "dlq.html",
        session=session,
        page="dlq",
        title="Dead letters",
        rows=rows,
        offset=offset,
        next_offset=offset + PAGE if len(letters) > PAGE else None,
        previous_offset=max(0, offset - PAGE) if offset else None,
        error=error,
    )


@router.get("/{message_id}", response_class=HTMLResponse)
async def show_dead_letter(request: Request, session: Session, message_id: str) -> HTMLResponse:
    letter = await postroom_of(request).queue.dlq_get(message_id)
    if letter is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such dead letter")
    try:
        document = orjson.dumps(orjson.loads(letter.body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        document = letter.body.decode("utf-8", "replace")
    email_type, recipient = summary(letter.body)
    return render(
        request,
        "dlq_show.html",
        session=session,
        page="dlq",
        title="Dead letter",
        letter=letter,
        email_type=email_type,
        recipient=recipient,
        document=document,
    )


@router.post("/replay")
async def replay(request: Request, session: Session) -> RedirectResponse:
    """Put one dead letter (``id``) or all of them (``all=1``) back on its queue."""
    form = await checked_form(request, session)
    targets = _targets(form)
    count = await postroom_of(request).queue.dlq_replay(targets)
    return _back(_outcome("replayed", count, targets))


@router.post("/purge")
async def purge(request: Request, session: Session) -> RedirectResponse:
    """Delete one dead letter (``id``) or all of them (``all=1`` with ``confirm=purge``)."""
    form = await checked_form(request, session)
    targets = _targets(form)
    if targets is None and form.get("confirm") != "purge":
        return _back({"error": "type purge in the box to delete every dead letter"})
    count = await postroom_of(request).queue.dlq_purge(targets)
    return _back(_outcome("purged", count, targets))


def _targets(form: dict[str, str]) -> list[str] | None:
    if form.get("all") == "1":
        return None
    message_id = form.get("id", "").strip()
    if not message_id:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "give a dead letter's id")
    return [message_id]


def _outcome(verb: str, count: int, targets: list[str] | None) -> dict[str, str]:
    if targets is not None and count == 0:
        return {"error": f"{targets[0]} is no longer in the dead-letter queue"}
    return {"notice": f"{verb} {count} message{'' if count == 1 else 's'}"}


def _back(query: dict[str, str]) -> RedirectResponse:
    return RedirectResponse(f"/admin/dlq?{urlencode(query)}", status.HTTP_303_SEE_OTHER)
