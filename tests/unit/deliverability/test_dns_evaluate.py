"""dns check's pure half: grading a RecordSet, no DNS involved."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from postroom.deliverability.dns_check import (
    evaluate,
    exit_status,
    make_resolver,
    selectors_to_probe,
)
from postroom.deliverability.dns_plan import plan
from postroom.deliverability.dns_records import RecordSet

KEY = base64.b64encode(
    rsa.generate_private_key(65537, 2048)
    .public_key()
    .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()


def planned(**kwargs: object) -> RecordSet:
    records = plan("example.com", "ses", dkim_public_key=KEY, dmarc_stage="reject", **kwargs)  # type: ignore[arg-type]
    rs = RecordSet.from_records(records)
    rs.add("amazonses.com", "TXT", "v=spf1 ip4:203.0.113.0/24 -all")
    return rs


def statuses(rs: RecordSet, **kwargs: object) -> list[tuple[str, str]]:
    findings = evaluate(rs, "example.com", provider="ses", **kwargs)  # type: ignore[arg-type]
    return [(f.record, f.status) for f in findings if f.status != "pass"]


def test_the_plan_itself_passes() -> None:
    findings = evaluate(planned(), "example.com", provider="ses")
    assert [f for f in findings if f.status != "pass"] == []
    assert exit_status(findings) == 0


def test_lookup_errors_fail_with_a_fix() -> None:
    rs = planned()
    rs.errors[("_dmarc.example.com", "TXT")] = "SERVFAIL"
    findings = evaluate(rs, "example.com", provider="ses")
    (failure,) = [f for f in findings if f.status == "fail"]
    assert failure.record == "DMARC" and "SERVFAIL" in failure.message and failure.fix
    assert exit_status(findings) == 1


def test_subdomain_falls_back_to_the_organizational_dmarc_record() -> None:
    rs = RecordSet.from_records(plan("news.example.com", "ses", dkim_public_key=KEY))
    rs.answers.pop(("_dmarc.news.example.com", "TXT"))
    rs.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject; rua=mailto:d@example.com")
    rs.add("amazonses.com", "TXT", "v=spf1 -all")
    findings = evaluate(rs, "news.example.com", provider="ses")
    (dmarc,) = [f for f in findings if f.record == "DMARC"]
    assert dmarc.status == "pass" and "_dmarc.example.com" in dmarc.message


def test_two_dmarc_records_and_two_dkim_records_fail() -> None:
    rs = planned()
    rs.add("_dmarc.example.com", "TXT", "v=DMARC1; p=none")
    rs.add("postroom._domainkey.example.com", "TXT", f"v=DKIM1; p={KEY}")
    assert statuses(rs) == [("DKIM", "fail"), ("DMARC", "fail")]


def test_invalid_dmarc_policy_fails() -> None:
    rs = planned()
    rs.answers[("_dmarc.example.com", "TXT")] = ("v=DMARC1; p=maybe; rua=mailto:d@example.com",)
    assert statuses(rs) == [("DMARC", "fail")]


def test_spf_without_all_warns() -> None:
    rs = planned()
    rs.answers[("bounces.example.com", "TXT")] = ("v=spf1 include:amazonses.com",)
    assert statuses(rs) == [("SPF", "warn")]


def test_missing_spf_on_the_from_domain_only_warns() -> None:
    rs = planned()
    rs.answers.pop(("example.com", "TXT"))
    assert statuses(rs) == [("SPF", "warn")]


def test_return_path_cname_to_a_foreign_host_warns() -> None:
    rs = RecordSet.from_records(plan("example.com", "postmark", dkim_public_key=KEY))
    rs.answers[("bounces.example.com", "CNAME")] = ("bounce.elsewhere.example",)
    rs.add("bounce.elsewhere.example", "MX", "10 mx.elsewhere.example")
    rs.add("spf.mtasv.net", "TXT", "v=spf1 -all")
    findings = evaluate(rs, "example.com", provider="postmark")
    (rp,) = [f for f in findings if f.record == "Return-Path"]
    assert rp.status == "warn" and "pm.mtasv.net" in rp.fix


def test_nothing_at_the_return_path_without_a_provider_fails() -> None:
    rs = planned()
    for rtype in ("TXT", "MX"):
        rs.answers.pop(("bounces.example.com", rtype))
    findings = evaluate(rs, "example.com")
    assert [(f.record, f.status) for f in findings if f.status != "pass"] == [
        ("SPF", "fail"),
        ("Return-Path", "fail"),
        ("MX", "warn"),
    ]


def test_selectors_probe_the_esp_ones_first() -> None:
    assert selectors_to_probe("sendgrid", ())[:3] == ("s1", "s2", "postroom")
    assert selectors_to_probe(None, ["a", "b"]) == ("a", "b")


@pytest.mark.parametrize(
    ("nameserver", "host", "port"),
    [
        ("127.0.0.1:5353", "127.0.0.1", 5353),
        ("127.0.0.1", "127.0.0.1", 53),
        ("[::1]:53", "::1", 53),
    ],
)
def test_nameserver_parsing(nameserver: str, host: str, port: int) -> None:
    resolver = make_resolver(nameserver, 2.0)
    assert resolver.nameservers == [host]
    assert resolver.port == port
    assert resolver.lifetime == 2.0
