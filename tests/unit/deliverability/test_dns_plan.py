"""dns plan: the records per provider, and table/zone/JSON output that round-trips."""

from __future__ import annotations

import base64
import functools
import json

import dns.rdatatype
import dns.zone
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from postroom.deliverability.dns_plan import (
    dkim_txt_value,
    format_json,
    format_table,
    format_zone,
    plan,
)
from postroom.deliverability.dns_records import DnsRecord, parse_spf

PROVIDERS = ["sendgrid", "mailgun", "ses", "postmark", "smtp"]
INCLUDES = {
    "sendgrid": "sendgrid.net",
    "mailgun": "mailgun.org",
    "ses": "amazonses.com",
    "postmark": "spf.mtasv.net",
}


@functools.cache
def _rsa_p(bits: int = 2048) -> str:
    key = rsa.generate_private_key(65537, bits).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def _by(records: list[DnsRecord], name: str, rtype: str) -> list[str]:
    return [r.value for r in records if r.name == name and r.type == rtype]


def _full_plan(provider: str) -> list[DnsRecord]:
    return plan(
        "example.com",
        provider,
        ip="192.0.2.10",
        dkim_public_key=_rsa_p(3072),  # long enough to need three TXT strings
        dmarc_stage="quarantine",
        report_email="dmarc@example.com",
        mta_sts=True,
        tls_rpt=True,
        bimi_logo="https://example.com/logo.svg",
        mta_sts_id="20240101",
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_spf_has_the_esp_include_and_few_lookups(provider: str) -> None:
    records = plan("example.com", provider, ip="192.0.2.10")
    spf = [r for r in records if r.type == "TXT" and r.value.startswith("v=spf1")]
    assert spf
    for record in spf:
        terms, errors = parse_spf(record.value)
        assert errors == []
        includes = [t.value for t in terms if t.name == "include"]
        assert includes == ([INCLUDES[provider]] if provider in INCLUDES else [])
        assert ("+", "ip4", "192.0.2.10") in [(t.qualifier, t.name, t.value) for t in terms]
        assert record.value.endswith(" ~all")
        assert "10" in record.note  # the lookup limit is explained


def test_esps_with_a_bounce_cname_get_no_txt_beside_it() -> None:
    for provider, target in [("sendgrid", "sendgrid.net"), ("postmark", "pm.mtasv.net")]:
        records = plan("example.com", provider)
        assert _by(records, "bounces.example.com", "TXT") == []
        (cname,) = _by(records, "bounces.example.com", "CNAME")
        assert cname.endswith(target)
        assert any("align" in r.note for r in records if r.name == "bounces.example.com")


def test_esps_without_a_bounce_cname_get_spf_and_mx_on_the_return_path() -> None:
    mailgun = plan("example.com", "mailgun", return_path="mg")
    assert _by(mailgun, "mg.example.com", "TXT") == ["v=spf1 include:mailgun.org ~all"]
    assert _by(mailgun, "mg.example.com", "MX") == ["10 mxa.mailgun.org", "10 mxb.mailgun.org"]
    ses = plan("example.com", "ses")
    (mx,) = [r for r in ses if r.type == "MX"]
    assert mx.placeholder and "feedback-smtp" in mx.value
    smtp = plan("example.com", "smtp", ip="2001:db8::25")
    assert _by(smtp, "bounces.example.com", "TXT") == ["v=spf1 ip6:2001:db8::25 ~all"]
    assert _by(smtp, "bounces.example.com", "AAAA") == ["2001:db8::25"]


def test_esp_dkim_cnames_are_marked_placeholders() -> None:
    records = plan("example.com", "sendgrid")
    dkim = {r.name: r for r in records if "_domainkey" in r.name}
    assert set(dkim) == {"s1._domainkey.example.com", "s2._domainkey.example.com"}
    assert dkim["s1._domainkey.example.com"].value == "s1.domainkey.uXXXXXXX.wlXXX.sendgrid.net"
    assert all(r.placeholder and r.type == "CNAME" for r in dkim.values())
    (ses_token,) = [r for r in plan("example.com", "ses") if r.name.startswith("TOKEN1")]
    assert ses_token.value == "TOKEN1.dkim.amazonses.com"


def test_dkim_txt_from_a_public_key_uses_the_selector() -> None:
    p = _rsa_p()
    records = plan("example.com", "smtp", ip="192.0.2.1", dkim_selector="s2024", dkim_public_key=p)
    assert _by(records, "s2024._domainkey.example.com", "TXT") == [f"v=DKIM1; k=rsa; p={p}"]


def test_dkim_value_accepts_pem_base64_and_ed25519() -> None:
    private = rsa.generate_private_key(65537, 2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    from_pem = dkim_txt_value(pem.decode())
    assert from_pem.startswith("v=DKIM1; k=rsa; p=MII")
    assert dkim_txt_value(from_pem.split("p=")[1]) == from_pem
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    expected = f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    assert dkim_txt_value(base64.b64encode(raw).decode()) == expected
    with pytest.raises(ValueError):
        dkim_txt_value("not a key!")


@pytest.mark.parametrize("stage", ["none", "quarantine", "reject"])
def test_dmarc_is_staged_with_reports_and_relaxed_alignment(stage: str) -> None:
    records = plan("example.com", "mailgun", dmarc_stage=stage)
    (dmarc,) = [r for r in records if r.name == "_dmarc.example.com"]
    assert dmarc.value == (
        f"v=DMARC1; p={stage}; rua=mailto:dmarc-reports@example.com; adkim=r; aspf=r"
    )
    assert f"{['none', 'quarantine', 'reject'].index(stage) + 1} of 3" in dmarc.note
    assert "align" in dmarc.note


def test_external_report_address_needs_authorization() -> None:
    records = plan("example.com", "ses", report_email="reports@dmarc-vendor.net")
    (dmarc,) = [r for r in records if r.name == "_dmarc.example.com"]
    assert "example.com._report._dmarc.dmarc-vendor.net" in dmarc.note


def test_optional_records() -> None:
    records = _full_plan("postmark")
    assert _by(records, "_mta-sts.example.com", "TXT") == ["v=STSv1; id=20240101"]
    assert _by(records, "_smtp._tls.example.com", "TXT") == [
        "v=TLSRPTv1; rua=mailto:dmarc@example.com"
    ]
    assert _by(records, "default._bimi.example.com", "TXT") == [
        "v=BIMI1; l=https://example.com/logo.svg; a="
    ]
    bimi_with_none = plan("example.com", "ses", bimi_logo="https://example.com/l.svg")
    assert "Ignored until DMARC" in bimi_with_none[-1].note
    assert plan("example.com", "ses", mta_sts=True)[-1].value.startswith("v=STSv1; id=20")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"provider": "pigeon"}, "unknown provider"),
        ({"provider": "smtp"}, "ip"),
        ({"provider": "sendgrid", "return_path": ""}, "subdomain"),
        ({"provider": "ses", "return_path": "bounces.other.net"}, "must be under"),
        ({"provider": "ses", "dmarc_stage": "strict"}, "dmarc_stage"),
        ({"provider": "ses", "bimi_logo": "http://x.example/l.svg"}, "https"),
        ({"provider": "ses", "mta_sts": True, "mta_sts_id": "bad id"}, "mta_sts_id"),
        ({"provider": "smtp", "ip": "not-an-ip"}, "IP address"),
    ],
)
def test_invalid_input_is_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan("example.com", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_zone_output_loads_in_dnspython_and_round_trips(provider: str) -> None:
    records = _full_plan(provider)
    text = format_zone(records)
    assert text.splitlines()[1] == "$ORIGIN example.com."
    # the plan is records to add to an existing zone, so there is no SOA/NS of its own
    zone = dns.zone.from_text(text, check_origin=False, relativize=False)
    loaded: list[tuple[str, str, str, int]] = []
    for name, node in zone.nodes.items():
        fqdn = name.to_text(omit_final_dot=True)
        for rdataset in node.rdatasets:
            rtype = dns.rdatatype.to_text(rdataset.rdtype)
            for rdata in rdataset:
                if rtype == "TXT":
                    assert all(len(s) <= 255 for s in rdata.strings)
                    value = b"".join(rdata.strings).decode()
                else:
                    value = rdata.to_text().rstrip(".")
                loaded.append((fqdn.lower(), rtype, value, rdataset.ttl))
    expected = [(r.name.lower(), r.type, r.value, r.ttl) for r in records]
    assert sorted(loaded) == sorted(expected)


def test_zone_escapes_quotes_and_splits_long_txt() -> None:
    records = [
        DnsRecord("example.com", "TXT", 'say "hi" \\ bye'),
        DnsRecord("k._domainkey.example.com", "TXT", "p=" + "A" * 300),
    ]
    zone = dns.zone.from_text(format_zone(records), check_origin=False)
    apex = zone.find_rdataset("@", "TXT")
    assert b"".join(next(iter(apex)).strings) == b'say "hi" \\ bye'
    long = next(iter(zone.find_rdataset("k._domainkey", "TXT")))
    assert [len(s) for s in long.strings] == [255, 47]


def test_json_round_trips() -> None:
    records = _full_plan("sendgrid")
    assert [DnsRecord(**item) for item in json.loads(format_json(records))] == records


def test_table_lists_every_record_with_purpose_and_marks_placeholders() -> None:
    records = plan("example.com", "sendgrid")
    table = format_table(records)
    assert table.startswith("NAME")
    for record in records:
        assert record.value in table
        assert record.purpose in table
    assert "s1._domainkey.example.com *" in table
    assert "placeholder" in table.splitlines()[-1]
