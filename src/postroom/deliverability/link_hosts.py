"""Where a link goes and where its text says it goes, for the content checks
(``deliverability/content.py``): hosts read from URLs and from link text, and the site they
belong to."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from postroom.deliverability.html_scan import words

SHOWN_URL = re.compile(r"(?i)(?:https?://|www\.)[^\s<>\"']+")
_SHOWN_HOST = re.compile(r"(?i)^(?:[a-z0-9-]+\.)+([a-z]{2,63})(?:[/:?#]\S*)?$")
_NOT_TLDS = words("pdf html htm php jpg jpeg png gif zip doc docx txt csv")
_TWO_LEVEL = words("co com org net ac gov edu ne or")


def host_of(url: str) -> str | None:
    if not url.lower().startswith(("http://", "https://")):
        url = "http://" + url
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def site_of(host: str) -> str:
    """The registrable part of a host, near enough without the public suffix list."""
    labels = host.lower().removeprefix("www.").split(".")
    keep = 3 if len(labels) >= 3 and labels[-2] in _TWO_LEVEL and len(labels[-1]) == 2 else 2
    return ".".join(labels[-keep:])


def shown_host(text: str) -> str | None:
    """The host a link's text shows, if it reads as a URL or a bare domain."""
    text = text.strip()
    found = SHOWN_URL.search(text)
    if found:
        return host_of(found.group())
    bare = _SHOWN_HOST.match(text)
    if bare and bare.group(1).lower() not in _NOT_TLDS:
        return host_of(text)
    return None
