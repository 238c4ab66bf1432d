"""The dashboard's Jinja2 environment (autoescaped, strict) and the response every page sends."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from postroom.api.admin.session import AdminSession

_HERE = Path(__file__).parent

# Everything the dashboard loads comes from this host: no CDN, no inline script or style.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make forms post Origin: null
    "Cache-Control": "no-store",
}

NAV = (
    ("overview", "/admin", "Overview"),
    ("campaigns", "/admin/campaigns", "Campaigns"),
    ("dlq", "/admin/dlq", "Dead letters"),
    ("suppressions", "/admin/suppressions", "Suppressions"),
    ("domains", "/admin/domains", "Domains"),
    ("alerts", "/admin/alerts", "Alerts"),
)


def when(value: datetime | None) -> str:
    """A timestamp as operators read it: UTC, to the second."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["thousands"] = lambda n: f"{n:,}"
    return env


def render(
    request: Request,
    template: str,
    *,
    session: AdminSession | None,
    page: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    body = (
        environment()
        .get_template(template)
        .render(
            nav=NAV if session is not None else (),
            page=page,
            csrf=session.csrf if session is not None else "",
            notice=request.query_params.get("notice", ""),
            error=context.pop("error", None) or request.query_params.get("error", ""),
            **context,
        )
    )
    return HTMLResponse(body, status_code=status_code, headers=SECURITY_HEADERS)


def static_file(name: str) -> Path | None:
    """A file of the dashboard's static folder by bare name, or None (no path traversal)."""
    path = _HERE / "static" / name
    if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        return None
    return path
