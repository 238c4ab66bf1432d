"""``POST /webhooks/{provider}``: ESP feedback in, verified before anything is written.

No API key: the ESP's signature (or Postmark's Basic credentials) is the authentication. The
body is read up to the size cap, verified as raw bytes, parsed, then ingested (events,
feedback states, suppressions, Mailgun's one-use token: all or nothing, see
``store.feedback``); the answer is a 200 once that has committed. A request that does not
verify gets a 4xx and writes nothing.

:func:`install` puts the route on the app twice: as a FastAPI route, which documents it, and
ahead of every other route as a plain Starlette one, which serves it without FastAPI's
router, dependency solving, response model and per-request exit stacks: about a fifth of a
single-event request's time, measured in process. The endpoint reads and verifies the raw
body itself and builds its own answers, so it needs nothing FastAPI adds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.routing import Route

from postroom import metrics
from postroom.errors import ConfigurationError, WebhookPayloadError, WebhookVerificationError
from postroom.store.feedback import FeedbackStore
from postroom.webhooks import PROVIDERS, build_receiver
from postroom.webhooks.base import WebhookReceiver
from postroom.webhooks.events import NormalizedEvent
from postroom.wiring import Postroom

log = logging.getLogger("postroom.webhooks")

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


def install(app: FastAPI) -> None:
    """Add ``POST /webhooks/{provider}`` to ``app``: documented by ``router``, served by a
    Starlette route placed first (call before the app serves)."""
    app.include_router(router)
    fast = Route("/webhooks/{provider}", _serve, methods=["POST"], include_in_schema=False)
    app.router.routes.insert(0, fast)


async def _serve(request: Request) -> Response:
    return await receive(request.path_params["provider"], request)


# Verification failures by reason. Forged, stale, replayed or foreign requests are 403;
# Postmark's missing or wrong Basic credentials are 401.
_STATUS = {"unauthorized": 401, "malformed": 400, "too_large": 413}


class WebhookAnswer(BaseModel):
    received: int
    stored: int
    duplicates: int


def _problem(status: int, reason: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": [{"field": None, "reason": reason}]}, status, headers=headers)


def _receiver(request: Request, provider: str) -> WebhookReceiver:
    """One receiver per provider for the app's life (SNS certificates stay cached)."""
    receivers: dict[str, WebhookReceiver] | None = getattr(
        request.app.state, "webhook_receivers", None
    )
    if receivers is None:
        receivers = request.app.state.webhook_receivers = {}
    if provider not in receivers:
        settings = request.app.state.postroom.settings
        receivers[provider] = build_receiver(provider, settings)
    return receivers[provider]


def _feedback(request: Request) -> FeedbackStore:
    """One store for the app's life (it counts token claims to purge expired ones)."""
    store: FeedbackStore | None = getattr(request.app.state, "feedback_store", None)
    if store is None:
        postroom: Postroom = request.app.state.postroom
        s = postroom.settings
        store = request.app.state.feedback_store = FeedbackStore(
            postroom.db,
            postroom.suppressions,
            soft_bounce_limit=s.soft_bounce_limit,
            soft_bounce_window=s.soft_bounce_window,
        )
    return store


async def _body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None once it grows past ``limit`` (without reading the rest)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/{provider}",
    response_model=WebhookAnswer,
    responses={400: {}, 401: {}, 403: {}, 404: {}, 413: {}, 502: {}},
)
async def receive(provider: str, request: Request) -> Response:
    """Verify and ingest one ESP webhook request (sendgrid, mailgun, ses or postmark)."""
    if provider not in PROVIDERS:
        return _problem(404, f"no webhook for {provider!r}; use {', '.join(PROVIDERS)}")
    try:
        receiver = _receiver(request, provider)
    except ConfigurationError as exc:
        return _problem(404, f"{provider} webhooks are not configured: {exc}")
    raw_body = await _body(request, receiver.max_body_bytes)
    if raw_body is None:
        return _problem(413, f"body over {receiver.max_body_bytes} bytes")
    # Straight from the ASGI scope (names already lower-case; reversed, so that the first of
    # a repeated header wins, as in dict(request.headers), which looks each name up again).
    raw_headers = reversed(request.scope["headers"])
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}
    try:
        if provider == "ses":  # may fetch a certificate: keep the loop free
            await asyncio.to_thread(receiver.verify, headers, raw_body, time.time())
        else:
            receiver.verify(headers, raw_body, time.time())
        batch = receiver.parse(raw_body)
        token = receiver.replay_token(raw_body)
        result = await _feedback(request).ingest(
            batch,
            replay_token=f"{provider}:{token}" if token else None,
            replay_ttl=receiver.replay_ttl,
        )
    except WebhookVerificationError as exc:
        client = request.client.host if request.client else "?"
        log.warning("refused %s webhook from %s: %s", provider, client, exc.reason)
        extra = (
            {"WWW-Authenticate": 'Basic realm="postroom"'} if exc.reason == "unauthorized" else {}
        )
        return _problem(_STATUS.get(exc.reason, 403), str(exc), **extra)
    except WebhookPayloadError as exc:
        return _problem(400, str(exc))
    for kind, count in Counter(event.type.value for event in batch).items():
        metrics.WEBHOOK_EVENTS.labels(provider, kind).inc(count)
    if not await _confirm_subscriptions(request, batch):
        return _problem(502, "could not confirm the SNS subscription; retry")
    answer = {"received": len(batch), "stored": result.stored, "duplicates": result.duplicates}
    return Response(orjson.dumps(answer), media_type="application/json")


async def _confirm_subscriptions(request: Request, batch: list[NormalizedEvent]) -> bool:
    """GET the SubscribeURL of a verified SubscriptionConfirmation from an allowed topic.

    ``app.state.sns_confirm`` replaces the HTTP call (tests, or an operator's own hook)."""
    urls = [e.subscribe_url for e in batch if e.subscribe_url]
    if not urls:
        return True
    confirm: Callable[[str], None] | None = getattr(request.app.state, "sns_confirm", None)
    if confirm is None:
        from postroom.webhooks.sns import confirm_subscription

        confirm = confirm_subscription
    for url in urls:
        try:
            await asyncio.to_thread(confirm, url)
        except OSError as exc:
            log.warning("SNS subscription confirmation failed: %s", type(exc).__name__)
            return False
        log.info("confirmed an SNS subscription")
    return True
