"""``dns plan``: the SPF, DKIM, DMARC, Return-Path and optional records a domain should publish."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postroom.deliverability.dns_records import (
    DEFAULT_DKIM_SELECTOR,
    DEFAULT_TTL,
    SPF_LOOKUP_LIMIT,
    DnsRecord,
    Provider,
    is_within,
    normalize_name,
    org_domain,
    provider_info,
    return_path_domain,
    txt_chunks,
)

DMARC_STAGES = ("none", "quarantine", "reject")
_DMARC_NOTES = {
    "none": "Stage 1 of 3: p=none only collects reports. After 2-4 weeks of rua reports showing "
    "every legitimate source passing aligned SPF or DKIM, move to p=quarantine.",
    "quarantine": "Stage 2 of 3: failing mail goes to spam. Watch reports for a few weeks "
    "(optionally ramp with pct=25..100), then move to p=reject.",
    "reject": "Stage 3 of 3: failing mail is refused; keep reading the rua reports.",
}
_ALIGNMENT = (
    "DMARC passes when SPF passes for the Return-Path domain or DKIM passes for d=, and that "
    "domain shares the From domain's organizational domain (adkim=r/aspf=r: relaxed alignment, "
    "so a subdomain such as the bounce domain aligns)."
)


def dkim_txt_value(public_key: str) -> str:
    """``v=DKIM1; k=...; p=...`` from a PEM public key or a base64 ``p=`` value (RSA or Ed25519)."""
    text = public_key.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode("ascii"))
    else:
        try:
            der = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("DKIM public key is neither PEM nor base64") from None
        if len(der) == 32:  # RFC 8463: Ed25519 p= is the raw 32-byte key
            return f"v=DKIM1; k=ed25519; p={base64.b64encode(der).decode()}"
        key = serialization.load_der_public_key(der)
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("DKIM keys are RSA or Ed25519")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def _ip_term(ip: str) -> str:
    try:
        net = ipaddress.ip_network(ip.strip(), strict=False)
    except ValueError:
        raise ValueError(f"not an IP address or network: {ip!r}") from None
    return f"ip{net.version}:{net.compressed.removesuffix('/32').removesuffix('/128')}"


def _spf(esp: Provider, ip: str | None) -> str:
    terms = ["v=spf1"]
    if esp.spf_include:
        terms.append(f"include:{esp.spf_include}")
    if ip:
        terms.append(_ip_term(ip))
    return " ".join([*terms, "~all"])


def _spf_note(esp: Provider) -> str:
    lookups = ""
    if esp.spf_include:
        lookups = f"include:{esp.spf_include} costs 1 DNS lookup plus those inside it; "
    return (
        f"One v=spf1 record per name: merge with any existing one. {lookups}keep the total "
        f"<= {SPF_LOOKUP_LIMIT} (postroom dns check counts them). ~all (softfail) lets DMARC "
        "decide instead of rejecting forwarded mail before DMARC runs."
    )


def _return_path(esp: Provider, domain: str, rp: str, spf: str, ip: str | None) -> list[DnsRecord]:
    purpose = "Return-Path (bounce) domain"
    aligned = f"{rp} aligns with {domain} under relaxed SPF alignment; bounces come back here."
    if esp.bounce_cname:
        return [
            DnsRecord(
                rp,
                "CNAME",
                esp.bounce_cname,
                purpose=f"{purpose}: CNAME to {esp.label}",
                note=f"{esp.label} serves SPF and MX for this name through the CNAME, so no TXT "
                f"may sit beside it. {aligned} {esp.placeholder_note}".strip(),
                placeholder="XXX" in esp.bounce_cname,
            )
        ]
    records = [
        DnsRecord(
            rp,
            "TXT",
            spf,
            purpose=f"SPF for the {purpose}",
            note=f"Receivers check SPF against the Return-Path (MAIL FROM) domain. {aligned} "
            + _spf_note(esp),
        ),
    ]
    hosts = esp.bounce_mx or (rp,)
    for host in hosts:
        records.append(
            DnsRecord(
                rp,
                "MX",
                f"10 {host}",
                purpose=f"MX for the {purpose}",
                note=f"Asynchronous bounces reach {esp.label} here."
                + (f" {esp.placeholder_note}" if "us-east-1" in host else "")
                if esp.bounce_mx
                else "Bounces to the Return-Path reach your own server.",
                placeholder="us-east-1" in host,  # the SES region is the user's choice
            )
        )
    if not esp.bounce_mx and ip:
        address = ipaddress.ip_address(ip.strip().split("/")[0])
        records.append(
            DnsRecord(
                rp,
                "A" if address.version == 4 else "AAAA",
                str(address),
                purpose=f"Address for the {purpose} MX host",
            )
        )
    return records


def _dkim(esp: Provider, domain: str, selector: str | None, key: str | None) -> list[DnsRecord]:
    purpose = "DKIM public key"
    if key:
        sel = selector or DEFAULT_DKIM_SELECTOR
        return [
            DnsRecord(
                f"{sel}._domainkey.{domain}",
                "TXT",
                dkim_txt_value(key),
                purpose=purpose,
                note="Mail signed with d=" + domain + f" s={sel} verifies against this key "
                "and aligns with the From domain.",
            )
        ]
    if esp.dkim_cnames:
        return [
            DnsRecord(
                f"{sel}._domainkey.{domain}",
                "CNAME",
                target,
                purpose=f"{purpose} (hosted and rotated by {esp.label})",
                note=esp.placeholder_note,
                placeholder=True,
            )
            for sel, target in esp.dkim_cnames
        ]
    sel = selector or esp.dkim_txt_selector or DEFAULT_DKIM_SELECTOR
    source = f"the key {esp.label} shows" if esp.dkim_txt_selector else "postroom dkim keygen"
    return [
        DnsRecord(
            f"{sel}._domainkey.{domain}",
            "TXT",
            "v=DKIM1; k=rsa; p=PASTE-PUBLIC-KEY",
            purpose=purpose,
            note=f"Replace PASTE-PUBLIC-KEY with {source}. {esp.placeholder_note}".strip(),
            placeholder=True,
        )
    ]


def _dmarc(domain: str, stage: str, report_email: str | None) -> DnsRecord:
    if stage not in DMARC_STAGES:
        raise ValueError(f"dmarc_stage must be one of {', '.join(DMARC_STAGES)}")
    report = report_email or f"dmarc-reports@{domain}"
    if "@" not in report:
        raise ValueError(f"not an email address: {report!r}")
    note = f"{_DMARC_NOTES[stage]} {_ALIGNMENT}"
    report_domain = normalize_name(report.rpartition("@")[2])
    if org_domain(report_domain) != org_domain(domain):
        # RFC 7489 §7.1: an outside report domain must opt in, or reports are not sent
        note += (
            f" {report_domain} must publish {domain}._report._dmarc.{report_domain} TXT v=DMARC1."
        )
    value = f"v=DMARC1; p={stage}; rua=mailto:{report}; adkim=r; aspf=r"
    return DnsRecord(f"_dmarc.{domain}", "TXT", value, purpose="DMARC policy", note=note)


def plan(
    domain: str,
    provider: str,
    *,
    ip: str | None = None,
    dkim_selector: str | None = None,
    dkim_public_key: str | None = None,
    return_path: str = "bounces",
    dmarc_stage: str = "none",
    report_email: str | None = None,
    mta_sts: bool = False,
    tls_rpt: bool = False,
    bimi_logo: str | None = None,
    mta_sts_id: str | None = None,
) -> list[DnsRecord]:
    """The records ``domain`` should publish to send through ``provider`` (see ``PROVIDERS``)."""
    domain = normalize_name(domain)
    if "." not in domain:
        raise ValueError(f"not a domain name: {domain!r}")
    esp = provider_info(provider)
    if esp.name == "smtp" and not ip:
        raise ValueError("provider smtp needs the sending server's address (ip)")
    rp = return_path_domain(domain, return_path)
    if not is_within(rp, domain):
        raise ValueError(f"the Return-Path domain {rp} must be under {domain} to align")
    if rp == domain and esp.bounce_cname:
        raise ValueError(f"{esp.label} needs a Return-Path subdomain (a CNAME cannot be at {rp})")
    spf = _spf(esp, ip)
    records = [
        DnsRecord(domain, "TXT", spf, purpose="SPF for the From domain", note=_spf_note(esp))
    ]
    if rp != domain:
        records += _return_path(esp, domain, rp, spf, ip)
    records += _dkim(esp, domain, dkim_selector, dkim_public_key)
    records.append(_dmarc(domain, dmarc_stage, report_email))
    if mta_sts:
        sts_id = mta_sts_id or datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        if not re.fullmatch(r"[A-Za-z0-9]{1,32}", sts_id):
            raise ValueError("mta_sts_id must be 1-32 letters or digits (RFC 8461 §3.1)")
        records.append(
            DnsRecord(
                f"_mta-sts.{domain}",
                "TXT",
                f"v=STSv1; id={sts_id}",
                purpose="MTA-STS",
                note=f"Serve the policy at https://mta-sts.{domain}/.well-known/mta-sts.txt "
                "and change id whenever the policy changes.",
            )
        )
    if tls_rpt:
        rua = report_email or f"tls-reports@{domain}"
        records.append(
            DnsRecord(
                f"_smtp._tls.{domain}",
                "TXT",
                f"v=TLSRPTv1; rua=mailto:{rua}",
                purpose="TLS-RPT",
                note="Daily reports of TLS failures delivering to you.",
            )
        )
    if bimi_logo:
        if not bimi_logo.startswith("https://"):
            raise ValueError("the BIMI logo must be an https:// URL to an SVG Tiny PS file")
        note = "Gmail and Apple also need a VMC/CMC certificate URL in a=."
        if dmarc_stage == "none":
            note = "Ignored until DMARC is at p=quarantine or p=reject. " + note
        records.append(
            DnsRecord(
                f"default._bimi.{domain}",
                "TXT",
                f"v=BIMI1; l={bimi_logo}; a=",
                purpose="BIMI logo",
                note=note,
            )
        )
    return records


def _relative(name: str, origin: str) -> str:
    if name == origin:
        return "@"
    if is_within(name, origin):
        return name[: -len(origin) - 1]
    return name + "."


def _zone_value(record: DnsRecord) -> str:
    if record.type == "TXT":
        # RFC 1035 §5.1: quote each character-string, escaping quote and backslash
        escape = str.maketrans({'"': '\\"', "\\": "\\\\"})
        return " ".join(f'"{chunk.translate(escape)}"' for chunk in txt_chunks(record.value))
    if record.type == "CNAME":
        return record.value.rstrip(".") + "."
    if record.type == "MX":
        preference, host = record.value.split()
        return f"{preference} {host.rstrip('.')}."
    return record.value


def format_zone(records: Sequence[DnsRecord], origin: str | None = None) -> str:
    """RFC 1035 zone-file lines under ``$ORIGIN`` (default: the shortest record name)."""
    if not records:
        return ""
    origin = normalize_name(origin or min((r.name for r in records), key=lambda n: n.count(".")))
    rows = [(_relative(r.name, origin), r) for r in records]
    width = max(len(name) for name, _ in rows)
    lines = [
        f"; DNS records for {origin} (postroom dns plan)",
        f"$ORIGIN {origin}.",
        f"$TTL {DEFAULT_TTL}",
    ]
    for name, record in rows:
        comment = " ".join(f"{record.purpose}. {record.note}".split())
        lines.append(f"; {'PLACEHOLDER - ' if record.placeholder else ''}{comment}")
        lines.append(f"{name:<{width}} {record.ttl} IN {record.type:<5} {_zone_value(record)}")
    return "\n".join(lines) + "\n"


def format_table(records: Sequence[DnsRecord]) -> str:
    """A plain-text table (name, type, TTL, value) with each record's purpose and notes."""
    header = ("NAME", "TYPE", "TTL", "VALUE")
    rows = [(r.name + " *" * r.placeholder, r.type, str(r.ttl), r.value) for r in records]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    lines = []
    for row in [header, *rows]:
        lines.append(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[3]
        )
    out = [lines[0]]
    for line, record in zip(lines[1:], records, strict=True):
        out += [line, f"    {record.purpose}: {record.note}".rstrip(": ")]
    if any(r.placeholder for r in records):
        out.append("* placeholder: replace the marked values with those your provider assigns")
    return "\n".join(out) + "\n"


def format_json(records: Sequence[DnsRecord]) -> str:
    return json.dumps([r.to_dict() for r in records], indent=2) + "\n"
