"""DNS vocabulary shared by ``dns plan`` and ``dns check``: records, ESPs and record parsing."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_TTL = 3600
DEFAULT_DKIM_SELECTOR = "postroom"
SPF_LOOKUP_LIMIT = 10  # RFC 7208 §4.6.4: more DNS-querying terms than this is a permerror

# Second-level public suffixes common enough to matter; a full Public Suffix List is a dependency
# we do not need for a heuristic that only decides relaxed DMARC alignment.
_MULTI_LABEL_SUFFIXES = frozenset(
    {
        "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "ltd.uk", "plc.uk",
        "com.au", "net.au", "org.au", "edu.au", "gov.au", "co.nz", "org.nz", "net.nz",
        "co.jp", "ne.jp", "or.jp", "co.kr", "co.in", "net.in", "org.in", "co.za", "org.za",
        "com.br", "net.br", "org.br", "com.mx", "com.ar", "com.cn", "net.cn", "org.cn",
        "com.tr", "com.tw", "com.hk", "com.sg", "co.il", "co.id", "com.my", "com.ph",
    }
)  # fmt: skip


@dataclass(frozen=True)
class DnsRecord:
    """One record to publish; ``name`` is fully qualified without the trailing dot."""

    name: str
    type: str
    value: str
    ttl: int = DEFAULT_TTL
    purpose: str = ""
    note: str = ""
    placeholder: bool = False  # the value holds text the ESP assigns; replace before publishing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Provider:
    """What an ESP needs in DNS: its SPF include, bounce host and DKIM records."""

    name: str
    label: str
    spf_include: str | None
    bounce_cname: str | None = None  # Return-Path is a CNAME to this host (ESP serves SPF + MX)
    bounce_suffix: str | None = None  # a correct Return-Path CNAME target ends with this
    bounce_mx: tuple[str, ...] = ()  # otherwise we publish SPF and these MX hosts ourselves
    dkim_cnames: tuple[tuple[str, str], ...] = ()  # (selector, CNAME target)
    dkim_txt_selector: str | None = None  # the ESP shows a TXT key to copy at this selector
    probe_selectors: tuple[str, ...] = ()
    placeholder_note: str = ""


_SG = "uXXXXXXX.wlXXX.sendgrid.net"
PROVIDERS: Mapping[str, Provider] = {
    "sendgrid": Provider(
        "sendgrid",
        "SendGrid",
        "sendgrid.net",
        bounce_cname=_SG,
        bounce_suffix="sendgrid.net",
        dkim_cnames=(("s1", f"s1.domainkey.{_SG}"), ("s2", f"s2.domainkey.{_SG}")),
        probe_selectors=("s1", "s2"),
        placeholder_note="uXXXXXXX/wlXXX: copy the values from SendGrid > Sender Authentication",
    ),
    "mailgun": Provider(
        "mailgun",
        "Mailgun",
        "mailgun.org",
        bounce_mx=("mxa.mailgun.org", "mxb.mailgun.org"),
        dkim_txt_selector="smtp",
        probe_selectors=("smtp", "k1", "krs", "mx", "pic", "mailo"),
        placeholder_note="copy the selector and p= key from Mailgun > Domain settings > DNS",
    ),
    "ses": Provider(
        "ses",
        "Amazon SES",
        "amazonses.com",
        bounce_mx=("feedback-smtp.us-east-1.amazonses.com",),
        dkim_cnames=tuple((f"TOKEN{i}", f"TOKEN{i}.dkim.amazonses.com") for i in (1, 2, 3)),
        placeholder_note="TOKEN1-3: the Easy DKIM tokens SES shows; us-east-1: your SES region",
    ),
    "postmark": Provider(
        "postmark",
        "Postmark",
        "spf.mtasv.net",
        bounce_cname="pm.mtasv.net",
        bounce_suffix="mtasv.net",
        dkim_txt_selector="XXXXXXXXXXXXXXpm",
        placeholder_note="XXXXXXXXXXXXXXpm and p=: copy from Postmark > Sender Signatures",
    ),
    "smtp": Provider("smtp", "own SMTP server", None),
}


def provider_info(name: str) -> Provider:
    try:
        return PROVIDERS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown provider {name!r}; choose one of {', '.join(PROVIDERS)}"
        ) from None


def normalize_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def return_path_domain(domain: str, return_path: str) -> str:
    """``""``/``"@"`` is the domain itself, a dotted name is absolute, a bare label is under it."""
    domain = normalize_name(domain)
    rp = return_path.strip()
    if rp in ("", "@"):
        return domain
    if "." in rp:
        return normalize_name(rp)
    return f"{rp.lower()}.{domain}"


def org_domain(name: str) -> str:
    """Approximate organizational domain (RFC 7489 §3.2): last two labels, three under co.uk etc."""
    labels = normalize_name(name).split(".")
    keep = 3 if ".".join(labels[-2:]) in _MULTI_LABEL_SUFFIXES else 2
    return ".".join(labels[-keep:])


def is_within(name: str, zone: str) -> bool:
    name, zone = normalize_name(name), normalize_name(zone)
    return name == zone or name.endswith("." + zone)


def txt_chunks(value: str, size: int = 255) -> list[str]:
    """Split TXT text into character-strings of at most ``size`` bytes (RFC 1035 §3.3.14)."""
    data = value.encode("ascii")  # record values we generate are ASCII by construction
    return [data[i : i + size].decode("ascii") for i in range(0, len(data), size)] or [""]


def parse_tags(text: str) -> tuple[dict[str, str], list[str]]:
    """Parse a DKIM/DMARC ``tag=value;`` list; return the tags (lower-case names) and errors."""
    tags: dict[str, str] = {}
    errors: list[str] = []
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            errors.append(f"malformed tag {part!r}")
        elif name in tags:
            errors.append(f"duplicate tag {name}=")
        else:
            tags[name] = value.strip()
    return tags, errors


def is_spf(text: str) -> bool:
    return text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")


@dataclass(frozen=True)
class SpfTerm:
    qualifier: str  # "+", "-", "~", "?" for mechanisms; "" for modifiers
    name: str  # lower-case mechanism or modifier name
    value: str  # domain-spec, address or modifier value ("" when absent)
    modifier: bool = False


_MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
_DOMAIN_SPEC = re.compile(r"[\x21-\x7e]+\Z")  # visible ASCII; macros like %{i} are allowed
_CIDR = re.compile(r"(?:/(\d{1,2}))?(?://(\d{1,3}))?\Z")


def _domain_error(spec: str, term: str) -> str | None:
    if not spec or not _DOMAIN_SPEC.match(spec) or ("%" not in spec and "." not in spec):
        return f"{term}: invalid domain {spec!r}"
    return None


def _check_mechanism(name: str, arg: str | None, term: str) -> str | None:
    if name == "all":
        return f"{term}: 'all' takes no argument" if arg is not None else None
    if name in ("ip4", "ip6"):
        if not arg:
            return f"{term}: missing address"
        try:
            net = ipaddress.ip_network(arg, strict=False)
        except ValueError:
            return f"{term}: invalid address {arg!r}"
        return None if net.version == int(name[-1]) else f"{term}: not an IPv{name[-1]} address"
    if name in ("include", "exists"):
        return f"{term}: missing domain" if not arg else _domain_error(arg, term)
    # a, mx, ptr: optional domain, then optional /cidr4 //cidr6 (not for ptr)
    spec = arg or ""
    match = re.search(r"/", spec)
    domain, cidr = (spec[: match.start()], spec[match.start() :]) if match else (spec, "")
    prefix = _CIDR.match(cidr)
    v4, v6 = (int(prefix.group(1) or 0), int(prefix.group(2) or 0)) if prefix else (0, 0)
    if cidr and (name == "ptr" or not prefix or v4 > 32 or v6 > 128):
        return f"{term}: invalid prefix length {cidr!r}"
    if arg is not None and domain:
        return _domain_error(domain, term)
    return None if arg is None or domain or cidr else f"{term}: empty domain"


def parse_spf(text: str) -> tuple[list[SpfTerm], list[str]]:
    """Parse an SPF record (RFC 7208 §4.6.1) into terms and syntax errors."""
    words = text.split()
    if not words or words[0].lower() != "v=spf1":
        return [], ["record does not start with 'v=spf1'"]
    terms: list[SpfTerm] = []
    errors: list[str] = []
    for word in words[1:]:
        modifier = re.fullmatch(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)", word)
        if modifier:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp") and (error := _domain_error(value, word)):
                errors.append(error)
            if name in ("redirect", "exp") and any(t.name == name for t in terms):
                errors.append(f"{name}= appears more than once")
            terms.append(SpfTerm("", name, value, modifier=True))
            continue
        qualifier = word[0] if word[0] in "+-~?" else "+"
        body = word[1:] if word[0] in "+-~?" else word
        name, sep, arg = body.partition(":")
        if "/" in name and not sep:  # "a/24", "mx//64": the prefix hangs off the name
            name, arg, sep = name[: name.index("/")], name[name.index("/") :], ":"
        name = name.lower()
        if name not in _MECHANISMS:
            errors.append(f"unknown mechanism {word!r}")
            continue
        if error := _check_mechanism(name, arg if sep else None, word):
            errors.append(error)
        terms.append(SpfTerm(qualifier, name, arg if sep else ""))
    return terms, errors


def spf_targets(text: str) -> list[str]:
    """Domains an SPF record makes us read next (include: and redirect=), macros skipped."""
    terms, _ = parse_spf(text)
    return [
        normalize_name(t.value)
        for t in terms
        if t.name in ("include", "redirect") and t.value and "%" not in t.value
    ]


@dataclass
class RecordSet:
    """DNS answers keyed by (name, TYPE); TXT strings already joined; failures kept apart."""

    answers: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[DnsRecord]) -> RecordSet:
        rs = cls()
        for record in records:
            rs.add(record.name, record.type, record.value)
        return rs

    def add(self, name: str, rtype: str, *values: str) -> None:
        key = (normalize_name(name), rtype.upper())
        self.answers[key] = self.answers.get(key, ()) + tuple(values)

    def get(self, name: str, rtype: str) -> tuple[str, ...]:
        """Answers for ``name``; like a resolver, follow a CNAME chain for other types."""
        name, rtype = normalize_name(name), rtype.upper()
        for _ in range(8):  # a resolver gives up on long chains too
            if (name, rtype) in self.answers or rtype == "CNAME":
                break
            cname = self.answers.get((name, "CNAME"))
            if not cname:
                break
            name = normalize_name(cname[0])
        return self.answers.get((name, rtype), ())

    def error(self, name: str, rtype: str) -> str | None:
        return self.errors.get((normalize_name(name), rtype.upper()))


def spf_lookups(rs: RecordSet, text: str, seen: frozenset[str]) -> tuple[int, list[str]]:
    """DNS-querying terms of an SPF record and all it includes (RFC 7208 §4.6.4), and problems."""
    terms, _ = parse_spf(text)
    has_all = any(t.name == "all" for t in terms)
    count, problems = 0, []
    for term in terms:
        # RFC 7208 §6.1: redirect= is ignored when the record has an all mechanism
        if term.name not in LOOKUP_TERMS or (term.name == "redirect" and has_all):
            continue
        count += 1
        if term.name not in ("include", "redirect") or "%" in term.value:
            continue
        target = normalize_name(term.value)
        if target in seen:
            problems.append(f"{term.name}:{target} loops back to an earlier record")
            continue
        if (target, "TXT") not in rs.answers:
            continue  # not fetched (beyond the work bound): counted as one lookup only
        found = [t for t in rs.get(target, "TXT") if is_spf(t)]
        if len(found) != 1:
            what = "no SPF record" if not found else f"{len(found)} SPF records"
            problems.append(f"{term.name}:{target} has {what} (permerror)")
            continue
        nested, nested_problems = spf_lookups(rs, found[0], seen | {target})
        count += nested
        problems += nested_problems
    return count, problems


def spf_includes(rs: RecordSet, text: str, include: str, depth: int = 0) -> bool:
    """Whether ``include:`` appears in the record or in a record it includes."""
    targets = spf_targets(text)
    if normalize_name(include) in targets:
        return True
    nested = (t for target in targets for t in rs.get(target, "TXT") if is_spf(t))
    return depth < 5 and any(spf_includes(rs, t, include, depth + 1) for t in nested)


@dataclass(frozen=True)
class DkimKeyInfo:
    """What a DKIM TXT record holds: the algorithm and key size, or why it cannot be used."""

    algorithm: str
    bits: int = 0  # 256 for Ed25519
    error: str = ""


def parse_dkim_key(text: str) -> DkimKeyInfo:
    tags, errors = parse_tags(text)
    algorithm = tags.get("k", "rsa").lower()
    if errors or "p" not in tags or tags.get("v", "DKIM1") != "DKIM1":
        return DkimKeyInfo(algorithm, error="; ".join(errors) or "no v=DKIM1 / p= tag")
    p = "".join(tags["p"].split())
    if not p:
        return DkimKeyInfo(algorithm, error="the key is revoked (empty p=)")
    try:
        der = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        return DkimKeyInfo(algorithm, error="p= is not valid base64")
    if algorithm == "ed25519":  # RFC 8463 §4.2: the raw 32-byte key, not SubjectPublicKeyInfo
        return (
            DkimKeyInfo(algorithm, 256)
            if len(der) == 32
            else DkimKeyInfo(algorithm, error="p= is not a raw Ed25519 key")
        )
    if algorithm != "rsa":
        return DkimKeyInfo(algorithm, error=f"unknown k={algorithm}")
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError):
        return DkimKeyInfo(algorithm, error="p= is not a DER SubjectPublicKeyInfo key")
    if not isinstance(key, rsa.RSAPublicKey):
        return DkimKeyInfo(algorithm, error="k=rsa but p= holds another kind of key")
    return DkimKeyInfo(algorithm, key.key_size)
