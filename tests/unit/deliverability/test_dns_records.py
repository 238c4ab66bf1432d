"""Parsing helpers shared by dns plan and dns check: SPF terms, tags, names, DKIM keys."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postroom.deliverability.dns_records import (
    DnsRecord,
    RecordSet,
    org_domain,
    parse_dkim_key,
    parse_spf,
    parse_tags,
    provider_info,
    return_path_domain,
    spf_includes,
    spf_lookups,
    txt_chunks,
)


@pytest.mark.parametrize(
    "record",
    [
        "v=spf1 -all",
        "v=spf1 include:sendgrid.net ip4:192.0.2.1 ip4:198.51.100.0/24 ~all",
        "v=spf1 a mx a:mail.example.com/24 mx//64 ip6:2001:db8::/32 ?all",
        "v=spf1 exists:%{i}._spf.example.com redirect=_spf.example.com",
        "V=SPF1 +A -ALL",
        "v=spf1 ptr include:_spf.google.com exp=explain.example.com unknown-mod=x ~all",
    ],
)
def test_valid_spf_records_parse_without_errors(record: str) -> None:
    terms, errors = parse_spf(record)
    assert errors == []
    assert terms


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ("spf1 -all", "v=spf1"),
        ("v=spf1 ip4:999.1.1.1 ~all", "invalid address"),
        ("v=spf1 ip4:2001:db8::1 ~all", "not an IPv4"),
        ("v=spf1 include: ~all", "missing domain"),
        ("v=spf1 include:nodots ~all", "invalid domain"),
        ("v=spf1 frobnicate ~all", "unknown mechanism"),
        ("v=spf1 all:example.com", "takes no argument"),
        ("v=spf1 a/99 ~all", "invalid prefix length"),
        ("v=spf1 redirect=a.example.com redirect=b.example.com", "more than once"),
    ],
)
def test_invalid_spf_records_report_the_error(record: str, error: str) -> None:
    _, errors = parse_spf(record)
    assert any(error in e for e in errors), errors


def test_spf_qualifiers_and_values() -> None:
    terms, _ = parse_spf("v=spf1 include:Example.NET ~all")
    assert [(t.qualifier, t.name, t.value) for t in terms] == [
        ("+", "include", "Example.NET"),
        ("~", "all", ""),
    ]


def test_lookup_count_follows_includes_and_reports_loops_and_missing_records() -> None:
    rs = RecordSet()
    rs.add("a.example", "TXT", "v=spf1 include:b.example mx ~all")
    rs.add("b.example", "TXT", "v=spf1 a ptr include:a.example")
    rs.add("c.example", "TXT")  # looked up, no record
    count, problems = spf_lookups(rs, "v=spf1 include:a.example include:c.example", frozenset())
    # include:a, include:b, mx, a, ptr, include:a (loop), include:c
    assert count == 7
    assert any("loops" in p for p in problems)
    assert any("c.example has no SPF record" in p for p in problems)
    assert spf_includes(rs, "v=spf1 include:a.example", "b.example")
    assert not spf_includes(rs, "v=spf1 include:a.example", "sendgrid.net")


def test_redirect_is_ignored_beside_all() -> None:
    count, _ = spf_lookups(RecordSet(), "v=spf1 redirect=x.example -all", frozenset())
    assert count == 0


def test_tags_parse_and_duplicates_are_errors() -> None:
    tags, errors = parse_tags("v=DMARC1; p=reject ; rua=mailto:a@b.example;")
    assert tags == {"v": "DMARC1", "p": "reject", "rua": "mailto:a@b.example"}
    assert errors == []
    _, errors = parse_tags("v=DKIM1; p=abc; p=def; junk")
    assert len(errors) == 2


@pytest.mark.parametrize(
    ("name", "org"),
    [
        ("example.com", "example.com"),
        ("bounces.Example.COM.", "example.com"),
        ("a.b.example.co.uk", "example.co.uk"),
        ("mail.shop.com.au", "shop.com.au"),
    ],
)
def test_org_domain(name: str, org: str) -> None:
    assert org_domain(name) == org


@pytest.mark.parametrize(
    ("return_path", "expected"),
    [
        ("bounces", "bounces.example.com"),
        ("", "example.com"),
        ("@", "example.com"),
        ("em.other.net.", "em.other.net"),
    ],
)
def test_return_path_domain(return_path: str, expected: str) -> None:
    assert return_path_domain("Example.com", return_path) == expected


def test_txt_chunks_are_at_most_255_bytes() -> None:
    value = "p=" + "A" * 600
    chunks = txt_chunks(value)
    assert [len(c) for c in chunks] == [255, 255, 92]
    assert "".join(chunks) == value


def test_record_set_follows_cnames_like_a_resolver() -> None:
    rs = RecordSet.from_records(
        [
            DnsRecord("bounces.example.com", "CNAME", "u1.wl.sendgrid.net"),
            DnsRecord("u1.wl.sendgrid.net", "MX", "10 mx.sendgrid.net"),
        ]
    )
    assert rs.get("bounces.example.com.", "MX") == ("10 mx.sendgrid.net",)
    assert rs.get("bounces.example.com", "CNAME") == ("u1.wl.sendgrid.net",)


def test_unknown_provider_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        provider_info("pigeon")


def _p(der: bytes) -> str:
    return base64.b64encode(der).decode()


def test_dkim_key_sizes_and_algorithms() -> None:
    key = rsa.generate_private_key(65537, 1024).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert parse_dkim_key(f"v=DKIM1; k=rsa; p={_p(der)}").bits == 1024
    assert parse_dkim_key(f"p={_p(der[:40])}").error  # truncated DER
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    assert parse_dkim_key(f"v=DKIM1; k=ed25519; p={_p(raw)}").error == ""
    assert parse_dkim_key(f"k=ed25519; p={_p(raw + b'x')}").error
    assert "revoked" in parse_dkim_key("v=DKIM1; p=").error
    assert "base64" in parse_dkim_key("v=DKIM1; p=!!notbase64!!").error
    assert "unknown k=" in parse_dkim_key(f"k=dsa; p={_p(der)}").error
