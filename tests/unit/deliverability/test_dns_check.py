"""dns check against a local DNS server: a plan-generated zone passes, and each fault is found."""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from tests.dns_server import Zone, port_listening, serve_zone

from postroom.deliverability.dns_check import Finding, check, exit_status, make_resolver
from postroom.deliverability.dns_plan import format_zone, plan
from postroom.deliverability.dns_records import DnsRecord

DOMAIN = "example.com"
SG_HOST = "u1234567.wl123.sendgrid.net"
# What the ESPs themselves publish, served by the same local server (documentation addresses).
ESP_ZONE: Zone = {
    "sendgrid.net": {"TXT": ["v=spf1 ip4:192.0.2.0/25 ~all"]},
    SG_HOST: {"TXT": ["v=spf1 include:sendgrid.net ~all"], "MX": ["10 mx.sendgrid.net"]},
    "mailgun.org": {"TXT": ["v=spf1 include:_spf.mailgun.org ~all"]},
    "_spf.mailgun.org": {"TXT": ["v=spf1 ip4:198.51.100.0/24 ~all"]},
    "amazonses.com": {"TXT": ["v=spf1 ip4:203.0.113.0/24 -all"]},
    "spf.mtasv.net": {"TXT": ["v=spf1 ip4:192.0.2.128/25 ~all"]},
    "pm.mtasv.net": {"TXT": ["v=spf1 include:spf.mtasv.net ~all"], "MX": ["10 mx.mtasv.net"]},
}


@functools.cache
def rsa_p(bits: int) -> str:
    if bits < 1024:  # cryptography refuses to generate these; any odd modulus loads
        key = rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | 0xF00D1).public_key()
    else:
        key = rsa.generate_private_key(65537, bits).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def good_records(provider: str = "mailgun", **kwargs: object) -> list[DnsRecord]:
    options: dict[str, object] = {
        "ip": "192.0.2.10" if provider == "smtp" else None,
        "dkim_public_key": rsa_p(2048),
        "dmarc_stage": "reject",
    } | kwargs
    return plan(DOMAIN, provider, **options)  # type: ignore[arg-type]


def zone_text(records: list[DnsRecord]) -> str:
    return format_zone(records).replace("uXXXXXXX.wlXXX", "u1234567.wl123")


@pytest.fixture
def run_check() -> Iterator[Callable[..., list[Finding]]]:
    """Serve a zone (plus the ESPs' records) and run dns check through it."""

    async def run(zone: str | list[DnsRecord], *extra: Zone, **kwargs: object) -> list[Finding]:
        text = zone if isinstance(zone, str) else zone_text(zone)
        with serve_zone(text, ESP_ZONE, *extra) as nameserver:
            options: dict[str, object] = {"provider": "mailgun", "dkim_selectors": ["postroom"]}
            return await check(DOMAIN, nameserver=nameserver, **(options | kwargs))  # type: ignore[arg-type]

    yield run  # type: ignore[misc]


def problems(findings: list[Finding]) -> list[tuple[str, str]]:
    return [(f.record, f.status) for f in findings if f.status != "pass"]


def the(findings: list[Finding], record: str, status: str) -> Finding:
    (finding,) = [f for f in findings if f.record == record and f.status == status]
    assert finding.fix and "\n" not in finding.fix
    return finding


def without(records: list[DnsRecord], name: str, rtype: str) -> list[DnsRecord]:
    return [r for r in records if not (r.name == name and r.type == rtype)]


def replaced(records: list[DnsRecord], name: str, rtype: str, value: str) -> list[DnsRecord]:
    return [replace(r, value=value) if (r.name, r.type) == (name, rtype) else r for r in records]


BOUNCES = f"bounces.{DOMAIN}"
DKIM_NAME = f"postroom._domainkey.{DOMAIN}"


@pytest.mark.parametrize("provider", ["sendgrid", "mailgun", "ses", "postmark", "smtp"])
async def test_a_planned_zone_passes_every_check(provider: str, run_check: Callable) -> None:
    findings = await run_check(good_records(provider), provider=provider)
    assert problems(findings) == [], findings
    assert {f.record for f in findings} == {
        "SPF",
        "DKIM",
        "DMARC",
        "Alignment",
        "Return-Path",
        "MX",
    }
    assert exit_status(findings) == 0


async def test_esp_dkim_cnames_resolve_to_the_esp_key(run_check: Callable) -> None:
    records = good_records("sendgrid", dkim_public_key=None)
    esp_keys = {
        f"{s}.domainkey.{SG_HOST}": {"TXT": [f"v=DKIM1; k=rsa; p={rsa_p(2048)}"]}
        for s in ("s1", "s2")
    }
    findings = await run_check(records, esp_keys, provider="sendgrid", dkim_selectors=())
    assert problems(findings) == []
    assert len([f for f in findings if f.record == "DKIM"]) == 2


async def test_ed25519_key_passes(run_check: Callable) -> None:
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    records = good_records(dkim_public_key=base64.b64encode(raw).decode())
    findings = await run_check(records)
    assert problems(findings) == []
    (dkim,) = [f for f in findings if f.record == "DKIM"]
    assert "Ed25519" in dkim.message


async def test_missing_spf(run_check: Callable) -> None:
    findings = await run_check(without(good_records(), BOUNCES, "TXT"))
    assert problems(findings) == [("SPF", "fail")]
    assert (
        'publish TXT "v=spf1 include:mailgun.org ~all" at bounces'
        in the(findings, "SPF", "fail").fix
    )
    assert exit_status(findings) == 1


async def test_two_spf_records(run_check: Callable) -> None:
    records = [*good_records(), DnsRecord(BOUNCES, "TXT", "v=spf1 include:sendgrid.net ~all")]
    findings = await run_check(records)
    assert problems(findings) == [("SPF", "fail")]
    assert "2 v=spf1 records" in the(findings, "SPF", "fail").message
    assert "merge" in the(findings, "SPF", "fail").fix


async def test_bad_spf_syntax(run_check: Callable) -> None:
    bad = "v=spf1 include:mailgun.org ip4:999.0.0.1 ~all"
    findings = await run_check(replaced(good_records(), BOUNCES, "TXT", bad))
    assert problems(findings) == [("SPF", "fail")]
    assert "invalid address" in the(findings, "SPF", "fail").message


async def test_more_than_ten_lookups_through_nested_includes(run_check: Callable) -> None:
    nested: Zone = {
        "l1.example.net": {"TXT": ["v=spf1 a mx include:l2.example.net ~all"]},
        "l2.example.net": {"TXT": ["v=spf1 a mx include:l3.example.net ~all"]},
        "l3.example.net": {"TXT": ["v=spf1 a mx ptr exists:%{i}.x.example.net ~all"]},
    }
    spf = "v=spf1 include:mailgun.org include:l1.example.net ~all"
    findings = await run_check(replaced(good_records(), BOUNCES, "TXT", spf), nested)
    assert problems(findings) == [("SPF", "fail")]
    failure = the(findings, "SPF", "fail")
    assert "needs 13 DNS lookups (limit 10)" in failure.message
    assert "ip4:" in failure.fix


async def test_plus_all(run_check: Callable) -> None:
    findings = await run_check(
        replaced(good_records(), BOUNCES, "TXT", "v=spf1 include:mailgun.org +all")
    )
    assert problems(findings) == [("SPF", "fail")]
    assert "~all" in the(findings, "SPF", "fail").fix


async def test_question_all_is_a_warning(run_check: Callable) -> None:
    findings = await run_check(
        replaced(good_records(), BOUNCES, "TXT", "v=spf1 include:mailgun.org ?all")
    )
    assert problems(findings) == [("SPF", "warn")]


async def test_missing_esp_include(run_check: Callable) -> None:
    findings = await run_check(
        replaced(good_records(), BOUNCES, "TXT", "v=spf1 ip4:192.0.2.1 ~all")
    )
    assert problems(findings) == [("SPF", "fail")]
    assert the(findings, "SPF", "fail").fix == "add include:mailgun.org before the all term"


async def test_include_without_spf_record(run_check: Callable) -> None:
    spf = "v=spf1 include:mailgun.org include:nothing.example.net ~all"
    findings = await run_check(replaced(good_records(), BOUNCES, "TXT", spf))
    assert problems(findings) == [("SPF", "fail")]
    assert "nothing.example.net has no SPF record" in the(findings, "SPF", "fail").message


async def test_missing_dkim(run_check: Callable) -> None:
    findings = await run_check(without(good_records(), DKIM_NAME, "TXT"))
    assert problems(findings) == [("DKIM", "fail")]
    assert "postroom dkim keygen" in the(findings, "DKIM", "fail").fix


async def test_no_dkim_at_any_probed_selector(run_check: Callable) -> None:
    findings = await run_check(without(good_records(), DKIM_NAME, "TXT"), dkim_selectors=())
    assert problems(findings) == [("DKIM", "fail")]
    assert "--selector" in the(findings, "DKIM", "fail").fix


@pytest.mark.parametrize(
    "value", ["v=DKIM1; k=rsa; p=%%not-base64%%", "v=DKIM1; k=rsa; p=AAAAAAAA"]
)
async def test_unparseable_dkim_key(value: str, run_check: Callable) -> None:
    findings = await run_check(replaced(good_records(), DKIM_NAME, "TXT", value))
    assert problems(findings) == [("DKIM", "fail")]
    assert "unusable DKIM record" in the(findings, "DKIM", "fail").message


@pytest.mark.parametrize(("bits", "status"), [(512, "fail"), (1024, "warn")])
async def test_short_rsa_keys(bits: int, status: str, run_check: Callable) -> None:
    findings = await run_check(good_records(dkim_public_key=rsa_p(bits)))
    assert problems(findings) == [("DKIM", status)]
    finding = the(findings, "DKIM", status)
    assert f"RSA {bits}" in finding.message
    assert "keygen" in finding.fix


async def test_missing_dmarc(run_check: Callable) -> None:
    findings = await run_check(without(good_records(), f"_dmarc.{DOMAIN}", "TXT"))
    assert problems(findings) == [("DMARC", "fail")]
    assert the(findings, "DMARC", "fail").fix.startswith('publish TXT "v=DMARC1; p=none')


async def test_dmarc_p_none_warns_to_move_on(run_check: Callable) -> None:
    findings = await run_check(good_records(dmarc_stage="none"))
    assert problems(findings) == [("DMARC", "warn")]
    assert "p=quarantine" in the(findings, "DMARC", "warn").fix


async def test_dmarc_without_rua(run_check: Callable) -> None:
    value = "v=DMARC1; p=reject; adkim=r; aspf=r"
    findings = await run_check(replaced(good_records(), f"_dmarc.{DOMAIN}", "TXT", value))
    assert problems(findings) == [("DMARC", "warn")]
    assert "rua=mailto:" in the(findings, "DMARC", "warn").fix


async def test_misaligned_return_path(run_check: Callable) -> None:
    # the bounce domain is fully set up, but under another organizational domain
    other: Zone = {
        "bounces.other.net": {
            "TXT": ["v=spf1 include:mailgun.org ~all"],
            "MX": ["10 mxa.mailgun.org"],
        }
    }
    findings = await run_check(good_records(), other, return_path="bounces.other.net")
    assert problems(findings) == [("Alignment", "warn")]
    assert "bounces.example.com" in the(findings, "Alignment", "warn").fix
    no_dkim = without(good_records(), DKIM_NAME, "TXT")
    findings = await run_check(no_dkim, other, return_path="bounces.other.net")
    assert problems(findings) == [("DKIM", "fail"), ("Alignment", "fail")]


async def test_strict_spf_alignment_with_a_bounce_subdomain(run_check: Callable) -> None:
    value = f"v=DMARC1; p=reject; rua=mailto:d@{DOMAIN}; aspf=s"
    findings = await run_check(replaced(good_records(), f"_dmarc.{DOMAIN}", "TXT", value))
    assert problems(findings) == [("Alignment", "warn")]
    assert "aspf=r" in the(findings, "Alignment", "warn").fix


async def test_missing_return_path_cname(run_check: Callable) -> None:
    findings = await run_check(
        without(good_records("sendgrid"), BOUNCES, "CNAME"), provider="sendgrid"
    )
    # without the CNAME the bounce domain has neither SPF nor MX either
    assert problems(findings) == [("SPF", "fail"), ("Return-Path", "fail"), ("MX", "warn")]
    assert the(findings, "Return-Path", "fail").fix.startswith(f"publish {BOUNCES} CNAME")


async def test_return_path_cname_still_a_placeholder(run_check: Callable) -> None:
    records = good_records("sendgrid")
    findings = await run_check(format_zone(records), provider="sendgrid")  # XXX not replaced
    assert ("Return-Path", "fail") in problems(findings)
    assert "placeholder" in the(findings, "Return-Path", "fail").message


async def test_no_mx_on_the_bounce_domain(run_check: Callable) -> None:
    findings = await run_check(without(good_records(), BOUNCES, "MX"))
    assert problems(findings) == [("MX", "warn")]
    assert the(findings, "MX", "warn").fix.startswith(f"publish MX records for {BOUNCES}")


async def test_unreachable_nameserver_fails_every_lookup() -> None:
    with serve_zone({}) as nameserver:
        port = nameserver.rsplit(":", 1)[1]
    # the server is gone: nothing answers on that port any more
    findings = await check(DOMAIN, nameserver=f"127.0.0.1:{port}", lookup_timeout=0.3)
    assert findings and all(f.status == "fail" for f in findings if f.record != "Alignment")
    assert "could not look up" in findings[0].message


def test_the_fixture_serves_records_and_stops() -> None:
    async def lookup(nameserver: str) -> list[str]:
        resolver = make_resolver(nameserver, 1.0)
        answer = await resolver.resolve("alias.example.org", "TXT")
        return [b"".join(r.strings).decode() for r in answer]

    zone = '$ORIGIN example.org.\nalias 60 IN CNAME target\ntarget 60 IN TXT "hello"\n'
    with serve_zone(zone) as nameserver:
        assert asyncio.run(lookup(nameserver)) == ["hello"]
        port = int(nameserver.rsplit(":", 1)[1])
    assert not port_listening(port)  # probing while it runs would log an empty TCP request
