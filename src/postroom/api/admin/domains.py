"""``/admin/domains``: SPF, DKIM, DMARC, Return-Path and MX graded for the sending domains.

Results are kept in memory for a few minutes (DNS answers change slowly, and a lookup that
times out offline should not slow every visit); "check again" asks afresh. A failed lookup is
a finding, and anything else that goes wrong is shown as an error, never raised.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.utils import parseaddr

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from postroom.api.admin.session import Session, postroom_of
from postroom.api.admin.templating import render
from postroom.config import Settings
from postroom.deliverability import dns_check
from postroom.deliverability.dns_records import PROVIDERS

router = APIRouter(prefix="/admin/domains")
CACHE_SECONDS = 300.0
LOOKUP_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class DomainResult:
    domain: str
    findings: list[dns_check.Finding]
    error: str | None
    checked_at: float

    @property
    def verdict(self) -> str:
        if self.error:
            return "fail"
        statuses = {f.status for f in self.findings}
        return "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"


def configured_domains(settings: Settings) -> list[str]:
    """The domains this server sends as: the sender's, the DKIM d= and Mailgun's."""
    found = [parseaddr(settings.sender)[1].rpartition("@")[2]]
    found += [settings.dkim_domain or "", settings.mailgun_domain or ""]
    return list(dict.fromkeys(d.strip().lower() for d in found if d and d.strip()))


def _cache(request: Request) -> dict[str, DomainResult]:
    state = request.app.state
    if not hasattr(state, "admin_domain_checks"):
        state.admin_domain_checks = {}
    cache: dict[str, DomainResult] = state.admin_domain_checks
    return cache


async def check_domain(settings: Settings, domain: str) -> DomainResult:
    provider = settings.provider if settings.provider in PROVIDERS else None
    selectors = (settings.dkim_selector,) if settings.dkim_selector else ()
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT * 3):
            findings = await dns_check.check(
                domain,
                provider=provider,
                nameserver=settings.dns_nameserver,
                dkim_selectors=selectors,
                lookup_timeout=LOOKUP_TIMEOUT,
            )
    except Exception as exc:  # bad names, no resolver configuration, timeouts: show them
        return DomainResult(domain, [], f"{type(exc).__name__}: {exc}", time.time())
    return DomainResult(domain, findings, None, time.time())


@router.get("", response_class=HTMLResponse)
async def domains_page(
    request: Request, session: Session, domain: str = "", refresh: bool = False
) -> HTMLResponse:
    settings = postroom_of(request).settings
    wanted = configured_domains(settings)
    extra = domain.strip().lower().rstrip(".")
    if extra and extra not in wanted:
        wanted.append(extra)
    cache = _cache(request)
    now = time.time()
    stale = [
        d for d in wanted if refresh or d not in cache or now - cache[d].checked_at > CACHE_SECONDS
    ]
    for result in await asyncio.gather(*(check_domain(settings, d) for d in stale)):
        cache[result.domain] = result
    return render(
        request,
        "domains.html",
        session=session,
        page="domains",
        title="Domains",
        results=[cache[d] for d in wanted],
        domain=extra,
        provider=settings.provider,
        checked_at=lambda r: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.checked_at)),
    )
