"""API-key authentication: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request, status


def require_api_key(request: Request) -> None:
    keys: list[str] = request.app.state.postroom.settings.api_keys
    given = request.headers.get("x-api-key")
    if given is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    # Compare against every key so the time taken does not reveal which prefix matched.
    matched = False
    for key in keys:
        matched |= given is not None and hmac.compare_digest(given.encode(), key.encode())
    if not matched:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid API key (send 'Authorization: Bearer <key>')",
            headers={"WWW-Authenticate": "Bearer"},
        )
