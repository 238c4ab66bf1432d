"""Admin login: an API key, once, buys a signed session cookie; forms carry a CSRF token.

The cookie holds a fingerprint of the key (an HMAC under the secret key, never the key) and
a random CSRF token, signed and timestamped with itsdangerous. It is HttpOnly (no script reads
it), SameSite=Strict (no other site's page sends it) and Secure behind HTTPS. Each request
checks the fingerprint against the keys configured now, so removing a key ends its sessions.
Every POST must also carry the session's CSRF token and, when the browser says where the form
came from (``Origin``), come from this host.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import Depends, HTTPException, Request, status
from fastapi.responses import RedirectResponse
from itsdangerous import BadSignature, URLSafeTimedSerializer

from postroom.wiring import Postroom

COOKIE = "postroom_admin"
MAX_AGE = 12 * 3600
_SALT = "postroom-admin-session"
_MAX_FORM_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class AdminSession:
    csrf: str


def postroom_of(request: Request) -> Postroom:
    postroom: Postroom = request.app.state.postroom
    return postroom


def _secret(request: Request) -> str:
    secret = postroom_of(request).settings.secret_key
    if not secret:  # open_postroom always fills one in; a bare Settings may not have it
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no secret key configured")
    return secret


def _serializer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_secret(request), salt=_SALT)


def _fingerprint(secret: str, key: str) -> str:
    return hmac.new(secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def key_matches(request: Request, given: str) -> bool:
    """Whether ``given`` is one of the API keys (every key compared, in constant time)."""
    matched = False
    for key in postroom_of(request).settings.api_keys:
        matched |= hmac.compare_digest(given.encode(), key.encode())
    return matched


def start_session(request: Request, response: RedirectResponse, key: str) -> None:
    """Set the session cookie for someone who just gave the valid ``key``."""
    secret = _secret(request)
    value = _serializer(request).dumps(
        {"k": _fingerprint(secret, key), "c": secrets.token_urlsafe(24)}
    )
    response.set_cookie(
        COOKIE,
        value,
        max_age=MAX_AGE,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def end_session(response: RedirectResponse) -> None:
    response.delete_cookie(COOKIE, path="/admin", httponly=True, samesite="strict")


def current_session(request: Request) -> AdminSession | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = _serializer(request).loads(raw, max_age=MAX_AGE)
    except BadSignature:  # also a timed-out signature
        return None
    if not isinstance(data, dict) or not isinstance(data.get("c"), str):
        return None
    secret = _secret(request)
    live = {_fingerprint(secret, key) for key in postroom_of(request).settings.api_keys}
    fingerprint = data.get("k")
    if not isinstance(fingerprint, str) or not any(
        hmac.compare_digest(fingerprint, f) for f in live
    ):
        return None
    return AdminSession(csrf=data["c"])


def require_session(request: Request) -> AdminSession:
    """A page's dependency: the session, or off to the login page (a POST is refused)."""
    session = current_session(request)
    if session is not None:
        return session
    if request.method != "GET":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "log in at /admin/login first")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login = "/admin/login?" + urlencode({"next": target})
    raise HTTPException(status.HTTP_303_SEE_OTHER, headers={"Location": login})


Session = Annotated[AdminSession, Depends(require_session)]


def same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (defence in depth beside
    the SameSite cookie and the token): by ``Sec-Fetch-Site`` where it sends it, else by
    ``Origin``. A request with neither (curl, a test client) is judged by the token alone."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last value of a repeated name wins)."""
    body = await request.body()
    if len(body) > _MAX_FORM_BYTES:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "form too large")
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def checked_form(request: Request, session: AdminSession) -> dict[str, str]:
    """The posted form, once its CSRF token and origin are this session's and this site's."""
    form = await read_form(request)
    token = form.get("csrf", "")
    if not same_origin(request) or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "stale or foreign form: reload the page")
    return form


def safe_next(target: str | None) -> str:
    """Where to go after logging in: only a path inside the dashboard (no open redirect)."""
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return "/admin"
