"""``dns check``: look up a domain's mail-authentication records and grade them pass/warn/fail."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dns.asyncresolver
import dns.exception
import dns.resolver

from postroom.deliverability.dns_records import (
    DEFAULT_DKIM_SELECTOR,
    SPF_LOOKUP_LIMIT,
    Provider,
    RecordSet,
    is_spf,
    is_within,
    normalize_name,
    org_domain,
    parse_dkim_key,
    parse_spf,
    parse_tags,
    provider_info,
    return_path_domain,
    spf_includes,
    spf_lookups,
    spf_targets,
)

Status = Literal["pass", "warn", "fail"]
# Selectors cannot be listed through DNS, so without explicit ones we probe the usual names.
COMMON_SELECTORS = (DEFAULT_DKIM_SELECTOR, "default", "s1", "s2", "k1", "smtp", "mail", "dkim")
_MAX_SPF_NAMES = 60  # enough to prove a record exceeds 10 lookups, bounded against include loops
_KEYGEN = "run postroom dkim keygen --selector NEW (RSA 2048) and publish the printed record"
_ALL_FIX = "end the record with ~all (or -all)"


@dataclass(frozen=True)
class Finding:
    """One graded check; ``fix`` says in one line what to change (empty on pass)."""

    record: str  # SPF, DKIM, DMARC, Alignment, Return-Path or MX
    status: Status
    message: str
    fix: str = ""


def exit_status(findings: Sequence[Finding]) -> int:
    """The CLI's exit status: 1 when any finding failed."""
    return int(any(f.status == "fail" for f in findings))


def selectors_to_probe(provider: str | None, dkim_selectors: Sequence[str]) -> tuple[str, ...]:
    if dkim_selectors:
        return tuple(dkim_selectors)
    esp_first = provider_info(provider).probe_selectors if provider else ()
    return tuple(dict.fromkeys((*esp_first, *COMMON_SELECTORS)))


def _lookup_failed(rs: RecordSet, name: str, rtype: str, record: str) -> Finding | None:
    error = rs.error(name, rtype)
    if error is None:
        return None
    fix = "make sure the domain's nameservers answer (SERVFAIL and timeouts fail mail too)"
    return Finding(record, "fail", f"could not look up {rtype} {name}: {error}", fix)


def _spf(rs: RecordSet, name: str, esp: Provider | None, *, main: bool) -> list[Finding]:
    if failed := _lookup_failed(rs, name, "TXT", "SPF"):
        return [failed]
    include = esp.spf_include if esp else None
    example = f"v=spf1 include:{include} ~all" if include else "v=spf1 ip4:SERVER.IP ~all"
    records = [t for t in rs.get(name, "TXT") if is_spf(t)]
    if not records:
        where = "the Return-Path domain" if main else "the From domain"
        msg, fix = f"no SPF record at {name} ({where})", f'publish TXT "{example}" at {name}'
        return [Finding("SPF", "fail" if main else "warn", msg, fix)]
    if len(records) > 1:
        msg = f"{len(records)} v=spf1 records at {name}: receivers return permerror"
        return [Finding("SPF", "fail", msg, "merge them into a single v=spf1 record")]
    text = records[0]
    terms, errors = parse_spf(text)
    out = []
    if errors:
        msg = f"SPF syntax at {name}: {'; '.join(errors)}"
        out.append(Finding("SPF", "fail", msg, f'fix the record, e.g. "{example}"'))
    count, problems = spf_lookups(rs, text, frozenset({name}))
    if count > SPF_LOOKUP_LIMIT:
        msg = f"SPF at {name} needs {count} DNS lookups (limit {SPF_LOOKUP_LIMIT}): permerror"
        fix = "remove unused include:/a/mx terms or replace them with ip4:/ip6: ranges"
        out.append(Finding("SPF", "fail", msg, fix))
    out += [Finding("SPF", "fail", f"SPF at {name}: {p}", "fix or remove it") for p in problems]
    qualifiers = [t.qualifier for t in terms if t.name == "all"]
    if qualifiers[:1] == ["+"]:
        msg = f"+all at {name} authorizes every server on the internet"
        out.append(Finding("SPF", "fail", msg, _ALL_FIX))
    elif qualifiers[:1] == ["?"]:
        out.append(
            Finding("SPF", "warn", f"?all at {name} is neutral: it proves nothing", _ALL_FIX)
        )
    elif not qualifiers and not any(t.name == "redirect" for t in terms):
        msg = f"SPF at {name} has no all term: the default result is neutral"
        out.append(Finding("SPF", "warn", msg, _ALL_FIX))
    # A Return-Path CNAMEd to the ESP carries the ESP's own record; its contents are theirs.
    cname = rs.get(name, "CNAME")
    managed = bool(esp and esp.bounce_suffix and cname and is_within(cname[0], esp.bounce_suffix))
    if esp and include and not managed and not spf_includes(rs, text, include):
        msg = f"SPF at {name} does not include {include}: {esp.label} mail fails SPF"
        fix = f"add include:{include} before the all term"
        out.append(Finding("SPF", "fail" if main else "warn", msg, fix))
    return out or [Finding("SPF", "pass", f"SPF at {name}: {text} ({count} lookups)")]


def _dkim_one(name: str, texts: Sequence[str]) -> Finding:
    if len(texts) > 1:
        msg = f"{len(texts)} TXT records at {name}: verifiers cannot pick one"
        return Finding("DKIM", "fail", msg, "keep exactly one DKIM record per selector")
    key = parse_dkim_key(texts[0])
    if key.error:
        return Finding("DKIM", "fail", f"unusable DKIM record at {name}: {key.error}", _KEYGEN)
    if key.algorithm == "ed25519":
        return Finding("DKIM", "pass", f"DKIM Ed25519 key at {name}")
    if key.bits < 1024:  # RFC 8301 §3.2: verifiers must not accept shorter keys
        msg = f"DKIM key at {name} is RSA {key.bits}: receivers reject keys under 1024 bits"
        return Finding("DKIM", "fail", msg, _KEYGEN)
    if key.bits < 2048:
        msg = f"DKIM key at {name} is RSA {key.bits}: weak, mailbox providers expect 2048"
        return Finding("DKIM", "warn", msg, _KEYGEN)
    return Finding("DKIM", "pass", f"DKIM RSA {key.bits} key at {name}")


def _dkim(
    rs: RecordSet, domain: str, selectors: Sequence[str], explicit: bool
) -> tuple[list[Finding], bool]:
    """Findings, and whether some usable key exists (so DKIM can carry DMARC)."""
    out: list[Finding] = []
    for selector in selectors:
        name = f"{selector}._domainkey.{domain}"
        if failed := _lookup_failed(rs, name, "TXT", "DKIM"):
            out.append(failed)
        elif texts := rs.get(name, "TXT"):
            out.append(_dkim_one(name, texts))
        elif explicit:
            fix = f"publish the record from postroom dkim keygen (or the ESP's CNAME) at {name}"
            out.append(Finding("DKIM", "fail", f"no DKIM key at {name}", fix))
    usable = any(f.status != "fail" for f in out)
    if not out:
        msg = f"no DKIM key at the usual selectors of {domain} ({', '.join(selectors)})"
        fix = "publish a DKIM key, or pass the selector your ESP assigned (--selector)"
        out.append(Finding("DKIM", "fail", msg, fix))
    return out, usable


def _dmarc_records(rs: RecordSet, name: str) -> list[str]:
    return [t for t in rs.get(name, "TXT") if t.replace(" ", "").lower().startswith("v=dmarc1")]


def _dmarc(rs: RecordSet, domain: str) -> tuple[list[Finding], dict[str, str]]:
    name = f"_dmarc.{domain}"
    if failed := _lookup_failed(rs, name, "TXT", "DMARC"):
        return [failed], {}
    records = _dmarc_records(rs, name)
    if not records and org_domain(domain) != domain:  # RFC 7489 §6.6.3: the org's policy applies
        name = f"_dmarc.{org_domain(domain)}"
        records = _dmarc_records(rs, name)
    fix = f'publish TXT "v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}" at _dmarc.{domain}'
    if not records:
        return [Finding("DMARC", "fail", f"no DMARC record at _dmarc.{domain}", fix)], {}
    if len(records) > 1:
        msg = f"{len(records)} DMARC records at {name}: receivers ignore them all"
        return [Finding("DMARC", "fail", msg, "keep exactly one v=DMARC1 record")], {}
    tags, errors = parse_tags(records[0])
    policy = tags.get("p", "").lower()
    out = []
    if errors or policy not in ("none", "quarantine", "reject"):
        detail = "; ".join(errors) or f"p={policy or '(missing)'}"
        out.append(Finding("DMARC", "fail", f"invalid DMARC record at {name}: {detail}", fix))
    elif policy == "none":
        msg = f"DMARC at {name} is p=none: monitoring only, spoofed mail is still delivered"
        fix = "once reports show your mail passing aligned, move to p=quarantine, then p=reject"
        out.append(Finding("DMARC", "warn", msg, fix))
    if not any(uri.strip().lower().startswith("mailto:") for uri in tags.get("rua", "").split(",")):
        msg = f"DMARC at {name} has no rua=: you receive no aggregate reports"
        out.append(Finding("DMARC", "warn", msg, f"add rua=mailto:dmarc-reports@{domain}"))
    return out or [Finding("DMARC", "pass", f"DMARC at {name}: p={policy}")], tags


def _alignment(domain: str, rp: str, tags: dict[str, str], dkim_usable: bool) -> Finding:
    """SPF alignment of the Return-Path with From (RFC 7489 §3.1.2); DKIM d= is the From domain."""
    strict = tags.get("aspf", "r").lower() == "s"
    same_org = org_domain(rp) == org_domain(domain)
    mode = "strict" if strict else "relaxed"
    if rp == domain or (same_org and not strict):
        return Finding("Alignment", "pass", f"Return-Path {rp} aligns with From {domain} ({mode})")
    if strict and same_org:
        fix = f"set aspf=r in _dmarc.{domain}"
    else:
        fix = f"use a Return-Path under {org_domain(domain)}, e.g. bounces.{domain}"
    msg = f"Return-Path {rp} does not align with From {domain} ({mode} SPF alignment)"
    if dkim_usable:
        return Finding("Alignment", "warn", msg + ": DMARC rests on DKIM alone", fix)
    return Finding("Alignment", "fail", msg + " and no DKIM key aligns: DMARC fails", fix)


def _return_path(rs: RecordSet, rp: str, esp: Provider | None) -> list[Finding]:
    out = []
    cname = rs.get(rp, "CNAME")
    if failed := _lookup_failed(rs, rp, "CNAME", "Return-Path"):
        out.append(failed)
    elif esp and esp.bounce_cname:
        fix = f"publish {rp} CNAME {esp.bounce_cname} (the host {esp.label} assigned)"
        if not cname:
            out.append(Finding("Return-Path", "fail", f"no CNAME at {rp}", fix))
        elif "XXX" in cname[0]:
            out.append(Finding("Return-Path", "fail", f"{rp} points to a placeholder", fix))
        elif not is_within(cname[0], esp.bounce_suffix or esp.bounce_cname):
            msg = f"{rp} points to {cname[0]}, not a {esp.label} host"
            out.append(Finding("Return-Path", "warn", msg, fix))
    elif not (cname or rs.get(rp, "TXT") or rs.get(rp, "MX")):
        fix = f"publish the Return-Path records from postroom dns plan at {rp}"
        out.append(Finding("Return-Path", "fail", f"nothing is published at {rp}", fix))
    if not out:
        target = f"CNAME {cname[0]}" if cname else "SPF and MX published directly"
        out.append(Finding("Return-Path", "pass", f"Return-Path {rp}: {target}"))
    if failed := _lookup_failed(rs, rp, "MX", "MX"):
        return [*out, failed]
    if mx := rs.get(rp, "MX"):
        return [*out, Finding("MX", "pass", f"MX for {rp}: {', '.join(mx)}")]
    msg = f"no MX for {rp}: bounces to the Return-Path cannot be delivered"
    return [*out, Finding("MX", "warn", msg, f"publish MX records for {rp} (or its ESP CNAME)")]


def evaluate(
    records: RecordSet,
    domain: str,
    *,
    provider: str | None = None,
    dkim_selectors: Sequence[str] = (),
    return_path: str = "bounces",
) -> list[Finding]:
    """Grade already-fetched DNS answers for ``domain`` (pure; :func:`collect` fetches them)."""
    domain = normalize_name(domain)
    esp = provider_info(provider) if provider else None
    rp = return_path_domain(domain, return_path)
    findings = _spf(records, rp, esp, main=True)
    if rp != domain:  # the From domain's own SPF matters for mail sent with it as MAIL FROM
        findings += _spf(records, domain, esp, main=False)
    selectors = selectors_to_probe(provider, dkim_selectors)
    dkim, dkim_usable = _dkim(records, domain, selectors, explicit=bool(dkim_selectors))
    dmarc, tags = _dmarc(records, domain)
    alignment = _alignment(domain, rp, tags, dkim_usable)
    return [*findings, *dkim, *dmarc, alignment, *_return_path(records, rp, esp)]


def make_resolver(
    nameserver: str | None = None, timeout: float = 5.0
) -> dns.asyncresolver.Resolver:
    """The system resolver, or only ``HOST:PORT`` (``[v6]:PORT``; port 53 when omitted)."""
    if nameserver is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        host, port = nameserver, "53"
        if nameserver.startswith("[") or nameserver.count(":") == 1:
            host, _, port = nameserver.rpartition(":")
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [host.strip("[]")]
        resolver.port = int(port)
    resolver.timeout = resolver.lifetime = timeout
    return resolver


async def _fetch(
    resolver: dns.asyncresolver.Resolver, rs: RecordSet, name: str, rtype: str
) -> None:
    try:
        answer = await resolver.resolve(name, rtype, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        rs.add(name, rtype)  # fetched and empty, which evaluate tells apart from not fetched
        return
    except dns.exception.DNSException as exc:
        rs.errors[(normalize_name(name), rtype)] = str(exc) or type(exc).__name__
        return
    values = []
    for rdata in answer.rrset or ():
        if rtype == "TXT":  # RFC 7208 §3.3: a record's strings join without spaces
            values.append(b"".join(rdata.strings).decode("utf-8", "replace"))
        elif rtype == "MX":
            values.append(f"{rdata.preference} {rdata.exchange.to_text(omit_final_dot=True)}")
        else:
            values.append(rdata.to_text().rstrip("."))
    rs.add(name, rtype, *values)


async def collect(
    resolver: dns.asyncresolver.Resolver,
    domain: str,
    *,
    provider: str | None = None,
    dkim_selectors: Sequence[str] = (),
    return_path: str = "bounces",
) -> RecordSet:
    """Fetch everything :func:`evaluate` reads, following SPF includes breadth-first."""
    domain = normalize_name(domain)
    rp = return_path_domain(domain, return_path)
    queries = {(domain, "TXT"), (rp, "TXT"), (rp, "CNAME"), (rp, "MX")}
    queries |= {(f"_dmarc.{domain}", "TXT"), (f"_dmarc.{org_domain(domain)}", "TXT")}
    for selector in selectors_to_probe(provider, dkim_selectors):
        queries.add((f"{selector}._domainkey.{domain}", "TXT"))
    rs = RecordSet()
    await asyncio.gather(*(_fetch(resolver, rs, name, rtype) for name, rtype in queries))
    fetched = {domain, rp}
    frontier = set(fetched)
    while frontier and len(fetched) < _MAX_SPF_NAMES:
        spf = [text for name in frontier for text in rs.get(name, "TXT") if is_spf(text)]
        targets = {target for text in spf for target in spf_targets(text)} - fetched
        frontier = set(sorted(targets)[: _MAX_SPF_NAMES - len(fetched)])
        await asyncio.gather(*(_fetch(resolver, rs, name, "TXT") for name in frontier))
        fetched |= frontier
    return rs


async def check(
    domain: str,
    *,
    provider: str | None = None,
    nameserver: str | None = None,
    dkim_selectors: Sequence[str] = (),
    return_path: str = "bounces",
    lookup_timeout: float = 5.0,
) -> list[Finding]:
    """Look ``domain`` up (only through ``nameserver`` "HOST:PORT" when given) and grade it."""
    if provider:
        provider_info(provider)  # an unknown provider fails before any query
    resolver = make_resolver(nameserver, lookup_timeout)
    records = await collect(
        resolver, domain, provider=provider, dkim_selectors=dkim_selectors, return_path=return_path
    )
    return evaluate(
        records, domain, provider=provider, dkim_selectors=dkim_selectors, return_path=return_path
    )
