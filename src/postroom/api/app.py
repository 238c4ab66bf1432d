"""The FastAPI application: routes, error shapes, and the process's lifecycle.

``create_app(settings, run_worker=True)`` is ``postroom serve``: API and worker share one
process, and an accepted email wakes the worker instead of waiting for its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import postroom
from postroom import metrics
from postroom.alerts.monitor import run_alerts
from postroom.api import (
    admin,
    campaigns,
    confirm,
    deliverability,
    emails,
    preferences,
    stats,
    subscribers,
    suppressions,
    unsubscribe,
    webhooks,
)
from postroom.config import Settings
from postroom.queue.base import ReportsBacklog
from postroom.wiring import Postroom, build_worker, open_postroom, prepare_database

MAX_REQUEST_BYTES = 16 * 1024 * 1024


def create_app(settings: Settings, *, run_worker: bool = False) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await prepare_database(settings)
        postroom_ = await open_postroom(settings)
        app.state.postroom = postroom_
        stop = asyncio.Event()
        worker_task = alerts_task = None
        if run_worker:
            worker_task = asyncio.create_task(build_worker(postroom_).run(stop))
            alerts_task = asyncio.create_task(run_alerts(postroom_, stop))
        try:
            yield
        finally:
            stop.set()
            if worker_task is not None:
                await worker_task
            if alerts_task is not None:
                await alerts_task
            await postroom_.close()

    app = FastAPI(
        title="Postroom",
        version=postroom.__version__,
        summary="Email delivery for creator publishing platforms.",
        lifespan=lifespan,
    )
    app.include_router(emails.router)
    app.include_router(deliverability.router)
    webhooks.install(app)
    app.include_router(unsubscribe.router)
    app.include_router(preferences.router)
    app.include_router(subscribers.router)
    app.include_router(suppressions.router)
    app.include_router(confirm.router)
    app.include_router(stats.router)
    app.include_router(campaigns.router)
    app.include_router(admin.router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(BodyLimit)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics_endpoint(request: Request) -> Response:
        """Prometheus metrics: every process's counters (multiprocess mode) and the queue's
        depth, oldest message and dead letters, read now."""
        pr: Postroom = request.app.state.postroom
        depth = await pr.queue.depth()
        backlog = await pr.queue.backlog() if isinstance(pr.queue, ReportsBacklog) else None
        families = metrics.queue_families(
            {p.value: n for p, n in depth.items()},
            {p.value: age for p, age in backlog.oldest_age.items()} if backlog else None,
            backlog.dead_letters if backlog else None,
        )
        return Response(metrics.exposition(families), media_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> Response:
        """The database and the queue answer."""
        pr: Postroom = request.app.state.postroom
        try:
            await pr.db.ping()
            depth = await pr.queue.depth()
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        return JSONResponse(
            {"status": "ready", "queue_depth": {k.value: v for k, v in depth.items()}}
        )

    return app


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with one ``{"field", "reason"}`` entry per problem, like the email routes."""
    assert isinstance(exc, RequestValidationError)
    problems = [
        {
            "field": ".".join(str(part) for part in error.get("loc", ())) or None,
            "reason": str(error.get("msg")),
        }
        for error in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": problems})


class _BodyTooLargeError(Exception):
    """Raised out of ``receive`` to stop the application reading an oversized body."""


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with a 413, by the declared length or, for
    a chunked body, as it streams in. Plain ASGI: Starlette's ``BaseHTTPMiddleware`` costs a
    task and a stream per request, which showed in every request's time."""

    def __init__(self, app: ASGIApp, limit: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _BodyTooLargeError
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _BodyTooLargeError:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = f"request body over {self.limit} bytes"
        response = JSONResponse(
            status_code=413, content={"detail": [{"field": None, "reason": reason}]}
        )
        await response(scope, receive, send)
