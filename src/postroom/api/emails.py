"""``/v1/emails``: accept email events and report on them."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from postroom.api.auth import require_api_key
from postroom.errors import (
    IdempotencyConflictError,
    InvalidMessageError,
    QueueError,
    TemplateError,
)
from postroom.messages import EmailEvent, check_header_value, parse_event
from postroom.submission import Accepted, check_renderable, submit
from postroom.wiring import Postroom

MAX_BATCH = 1000

router = APIRouter(prefix="/v1/emails", tags=["emails"], dependencies=[Depends(require_api_key)])


class AcceptedEmail(BaseModel):
    id: str
    status: str
    idempotency_key: str
    recipient: str
    duplicate: bool = Field(description="True when this key was accepted before.")


class AcceptedBatch(BaseModel):
    emails: list[AcceptedEmail]


class Attempt(BaseModel):
    attempt: int
    outcome: str
    provider: str | None
    provider_message_id: str | None
    error: str | None
    at: datetime


class EmailStatus(BaseModel):
    id: str
    status: str
    email_type: str
    recipient: str
    priority: str
    idempotency_key: str
    message_id: str | None
    provider: str | None
    provider_message_id: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    attempts: list[Attempt]


def _postroom(request: Request) -> Postroom:
    postroom: Postroom = request.app.state.postroom
    return postroom


def unprocessable(problems: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": problems})


def _request_schema() -> dict[str, Any]:
    one = EmailEvent.model_json_schema()
    defs = one.pop("$defs", {})
    return {
        "$defs": defs,
        "oneOf": [one, {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_BATCH}],
    }


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedEmail | AcceptedBatch,
    responses={
        409: {"description": "Idempotency key reused with a different document"},
        422: {"description": "Invalid document: each problem with its index, field and reason"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _request_schema()}},
        }
    },
)
async def post_emails(
    request: Request,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Any:
    """Accept one email event (design §3) or a list of up to 1,000. Returns 202 once they are
    durably queued; the same idempotency key with the same document returns the first ids."""
    postroom = _postroom(request)
    raw = await request.body()
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return unprocessable([{"field": None, "reason": f"body is not valid JSON: {exc}"}])
    documents = payload if isinstance(payload, list) else [payload]
    if not documents or len(documents) > MAX_BATCH:
        reason = f"send between 1 and {MAX_BATCH} documents"
        return unprocessable([{"field": None, "reason": reason}])
    events, problems = _parse_all(postroom, documents, many=isinstance(payload, list))
    problems += _check(postroom, events, idempotency_key)
    if problems:
        return unprocessable(problems)
    if idempotency_key:
        events = [(i, _keyed(e, idempotency_key, i, len(events))) for i, e in events]
        # The pinned key is part of the document: check the document as it will be queued.
        events, problems = _parse_all(
            postroom, [orjson.loads(e.to_json()) for _, e in events], many=len(events) > 1
        )
        if problems:
            return unprocessable(problems)
    try:
        # _check ran check_renderable on every document already.
        accepted = await submit(postroom, [e for _, e in events], checked=True)
    except IdempotencyConflictError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail={"reason": str(exc), "existing_id": exc.existing_id}
        ) from None
    except InvalidMessageError as exc:
        return unprocessable([{"field": exc.field, "reason": exc.reason}])
    except QueueError as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=f"recorded but not queued ({exc}); send the same request again",
        ) from None
    if isinstance(payload, list):
        return AcceptedBatch(emails=[_view(a) for a in accepted])
    return _view(accepted[0])


def _parse_all(
    postroom: Postroom, documents: list[Any], *, many: bool
) -> tuple[list[tuple[int, EmailEvent]], list[dict[str, Any]]]:
    events: list[tuple[int, EmailEvent]] = []
    problems: list[dict[str, Any]] = []
    for index, document in enumerate(documents):
        where = {"index": index} if many else {}
        if not isinstance(document, dict):
            problems.append({**where, "field": None, "reason": "a document must be a JSON object"})
            continue
        try:
            events.append(
                (index, parse_event(document, max_bytes=postroom.settings.max_document_bytes))
            )
        except InvalidMessageError as exc:
            problems.append({**where, "field": exc.field, "reason": exc.reason})
    return events, problems


def _check(
    postroom: Postroom, events: list[tuple[int, EmailEvent]], idempotency_key: str | None
) -> list[dict[str, Any]]:
    """What the worker could never send: unknown type, unsafe rendered subject, bad key."""
    problems: list[dict[str, Any]] = []
    if idempotency_key is not None:
        try:
            check_header_value(idempotency_key, "Idempotency-Key")
        except InvalidMessageError as exc:
            problems.append({"field": exc.field, "reason": exc.reason})
    many = len(events) > 1
    for index, event in events:
        where = {"index": index} if many else {}
        try:
            check_renderable(postroom, event)
        except InvalidMessageError as exc:
            problems.append({**where, "field": exc.field, "reason": exc.reason})
        except TemplateError as exc:
            problems.append({**where, "field": "template_data", "reason": str(exc)})
    return problems


def _keyed(event: EmailEvent, key: str, index: int, count: int) -> EmailEvent:
    if event.idempotency_key:
        return event
    return event.model_copy(update={"idempotency_key": key if count == 1 else f"{key}:{index}"})


def _view(accepted: Accepted) -> AcceptedEmail:
    return AcceptedEmail(
        id=accepted.id,
        status=accepted.status.value,
        idempotency_key=accepted.idempotency_key,
        recipient=accepted.recipient,
        duplicate=accepted.duplicate,
    )


@router.get("/{send_id}", response_model=EmailStatus)
async def get_email(request: Request, send_id: str) -> EmailStatus:
    """The status of one email and every attempt to hand it over."""
    postroom = _postroom(request)
    record = await postroom.ledger.get(send_id)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no email with id {send_id!r}")
    attempts = await postroom.ledger.attempts(send_id)
    # The view is the ledger row without its content hash, with every attempt spelled out.
    fields = {k: v for k, v in asdict(record).items() if k not in ("content_hash", "attempts")}
    return EmailStatus(
        **fields | {"status": record.status.value},
        attempts=[Attempt(**asdict(a)) for a in attempts],
    )
