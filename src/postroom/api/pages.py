"""The small HTML pages a subscriber's browser sees (unsubscribe, confirm): one plain layout."""

from __future__ import annotations

import html

from fastapi.responses import HTMLResponse

_LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem">
<h1 style="font-size: 1.4rem">{title}</h1>
{body}
</body></html>
"""


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """``title`` is escaped here; ``body`` is HTML the caller has escaped."""
    return HTMLResponse(_LAYOUT.format(title=html.escape(title), body=body), status_code=status)
