"""The web dashboard at ``/admin``: server-rendered pages behind an API-key login.

One small module per page; ``session`` holds the login and CSRF rules, ``charts`` draws SVG,
``templating`` renders Jinja2 templates from ``templates/`` with the security headers.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

from postroom.api.admin import alerts, campaigns, dlq, domains, login, overview, suppressions
from postroom.api.admin.templating import static_file

router = APIRouter(include_in_schema=False)
for _page in (login, overview, campaigns, dlq, suppressions, domains, alerts):
    router.include_router(_page.router)


@router.get("/admin/static/{name}")
async def static(name: str) -> FileResponse:
    path = static_file(name)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND)
    return FileResponse(path, headers={"Cache-Control": "max-age=3600"})
