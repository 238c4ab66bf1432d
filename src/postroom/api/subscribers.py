"""``/v1/subscribers`` and ``/v1/lists``: the audience, its consent, and GDPR requests.

Problems answer 422 with ``{"field", "reason"}`` entries like ``/v1/emails``; ``field`` is the
body's own field name (``email``, ``list_ids``, ``consent.kind``).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, field_validator

from postroom.api.auth import require_api_key
from postroom.api.confirm import confirm_url
from postroom.errors import IdempotencyConflictError, InvalidMessageError, PostroomError
from postroom.messages import normalized_address, parse_event
from postroom.store.consent import Consent, ConsentKind
from postroom.store.subscribers import Subscribed, SubscriptionStatus
from postroom.wiring import Postroom

router = APIRouter(tags=["subscribers"], dependencies=[Depends(require_api_key)])


class ConsentIn(BaseModel):
    kind: Literal["express", "implied"] = "express"
    source: str = Field(default="api", min_length=1, max_length=200)
    ip: str | None = Field(default=None, max_length=64)
    at: datetime | None = Field(default=None, description="When it was given; default: now.")


class SubscriberIn(BaseModel):
    email: str = Field(max_length=320)
    name: str | None = Field(default=None, max_length=200)
    list_ids: list[str] = Field(default_factory=list, max_length=100)
    consent: ConsentIn = Field(default_factory=ConsentIn)
    double_opt_in: bool | None = Field(
        default=None, description="Pending until confirmed; default: POSTROOM_DOUBLE_OPT_IN."
    )
    confirmation_data: dict[str, Any] = Field(
        default_factory=dict, description="Extra template data for the confirmation email."
    )

    @field_validator("email")
    @classmethod
    def _address(cls, value: str) -> str:
        return normalized_address(value).lower()


class ListIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    creator: str = Field(min_length=1, max_length=200)
    id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


def _postroom(request: Request) -> Postroom:
    postroom: Postroom = request.app.state.postroom
    return postroom


def _unprocessable(field: str | None, reason: str) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": [{"field": field, "reason": reason}]})


def _problems(exc: ValidationError) -> JSONResponse:
    problems = [
        {
            "field": ".".join(str(p) for p in e["loc"]) or None,
            "reason": str(e["msg"]).removeprefix("Value error, "),
        }
        for e in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": problems})


@router.post("/v1/subscribers", responses={422: {"description": "A field is invalid"}})
async def post_subscriber(
    request: Request, payload: Annotated[dict[str, Any], Body()]
) -> JSONResponse:
    """Create or update a subscriber, and subscribe it to ``list_ids`` with its consent.
    With double opt-in the subscriptions stay ``pending`` and a confirmation email with a
    signed link is queued (once per subscriber and list)."""
    postroom = _postroom(request)
    try:
        body = SubscriberIn.model_validate(payload)
    except ValidationError as exc:
        return _problems(exc)
    pending = postroom.settings.double_opt_in if body.double_opt_in is None else body.double_opt_in
    if pending and postroom.settings.confirmation_email_type not in postroom.registry.names():
        kind = postroom.settings.confirmation_email_type
        return _unprocessable("double_opt_in", f"the confirmation email type {kind!r} is missing")
    consent = Consent(
        ConsentKind(body.consent.kind),
        body.consent.source,
        _aware(body.consent.at) if body.consent.at else datetime.now(UTC),
        body.consent.ip,  # the caller is the platform's server: its address says nothing
    )
    try:
        done = await postroom.subscribers.upsert(
            body.email, body.name, body.list_ids, consent, pending=pending
        )
    except InvalidMessageError as exc:
        return _unprocessable(exc.field, exc.reason)
    found = await postroom.subscribers.get(body.email)
    assert found is not None
    pending_since = {s.list_id: s.updated_at for s in found[1]}
    queued = await _send_confirmations(postroom, body, done, pending_since)
    view = _subscriber_view(*found)
    view["results"] = [
        {"list_id": lid, "outcome": r.outcome, "reason": r.reason}
        for lid, r in zip(body.list_ids, done, strict=True)
    ]
    view["confirmation_emails"] = queued
    return JSONResponse(jsonable_encoder(view))


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def _send_confirmations(
    postroom: Postroom,
    body: SubscriberIn,
    done: list[Subscribed],
    pending_since: dict[str, datetime],
) -> list[str]:
    """Queue the confirm link for each subscription left pending; returns the send ids."""
    from postroom.submission import submit

    ids: list[str] = []
    for list_id, result in zip(body.list_ids, done, strict=True):
        if result.status is not SubscriptionStatus.PENDING:
            continue
        listed = await postroom.subscribers.get_list(list_id)
        assert listed is not None
        document: dict[str, Any] = {
            "email_type": postroom.settings.confirmation_email_type,
            "recipient_email": body.email,
            "template_data": {
                "creator_name": listed.creator,
                "list_name": listed.name,
                **body.confirmation_data,
                "confirm_url": confirm_url(postroom, result.subscriber_id, list_id),
            },
            # One confirmation per pending subscription, however often the form is posted;
            # a subscription made pending again (unsubscribed, then asked again) gets another.
            "idempotency_key": (
                f"confirm:{list_id}:{result.subscriber_id}:{pending_since[list_id].timestamp():.6f}"
            ),
        }
        if body.name:
            document["recipient_name"] = body.name
        try:
            event = parse_event(document, max_bytes=postroom.settings.max_document_bytes)
            accepted = await submit(postroom, [event])
        except IdempotencyConflictError as exc:
            # Posted again after the confirmation was queued: its link was signed at another
            # moment, so the document differs, but this subscription has its email already.
            ids.append(exc.existing_id)
            continue
        except PostroomError as exc:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_ENTITY,
                detail=[{"field": "confirmation_data", "reason": str(exc)}],
            ) from None
        ids.append(accepted[0].id)
    return ids


def _subscriber_view(subscriber: Any, subs: list[Any]) -> dict[str, Any]:
    view = asdict(subscriber)
    view["subscriptions"] = [asdict(s) for s in subs]
    return view


@router.get("/v1/subscribers/{email}")
async def get_subscriber(request: Request, email: str) -> JSONResponse:
    """One subscriber with its subscriptions (status, consent and its expiry)."""
    found = await _postroom(request).subscribers.get(email)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no subscriber with that address")
    return JSONResponse(jsonable_encoder(_subscriber_view(*found)))


@router.get("/v1/subscribers/{email}/export")
async def export_subscriber(request: Request, email: str) -> JSONResponse:
    """Everything held about the address (GDPR access and portability), whether or not it is
    a subscriber: subscriptions, consent, sends, events, suppressions."""
    held = await _postroom(request).personal_data.export(email)
    return JSONResponse(jsonable_encoder(held))


@router.delete("/v1/subscribers/{email}")
async def erase_subscriber(request: Request, email: str) -> JSONResponse:
    """Erase everything held about the address (GDPR erasure); only a hash stays, in the
    suppression list, so the address is never mailed again."""
    erased = await _postroom(request).personal_data.erase(email)
    return JSONResponse({"erased": True, "removed": erased.counts})


@router.post("/v1/lists", status_code=status.HTTP_201_CREATED)
async def post_list(request: Request, payload: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """Create a creator's list; ``id`` is generated unless given."""
    try:
        body = ListIn.model_validate(payload)
    except ValidationError as exc:
        return _problems(exc)
    try:
        record = await _postroom(request).subscribers.create_list(body.name, body.creator, body.id)
    except InvalidMessageError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=[{"field": exc.field, "reason": exc.reason}]
        ) from None
    view = asdict(record) | {"counts": {s.value: 0 for s in SubscriptionStatus}}
    return JSONResponse(jsonable_encoder(view), status_code=201)


@router.get("/v1/lists/{list_id}")
async def get_list(request: Request, list_id: str) -> JSONResponse:
    """A list with its subscription counts by status."""
    record = await _postroom(request).subscribers.get_list(list_id)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no list with id {list_id!r}")
    return JSONResponse(jsonable_encoder(asdict(record)))
