"""Content checks: score a message the way content filters do, before it is sent.

Each rule is a small function returning findings with points; the score is their sum and the
verdict compares it with a threshold, like SpamAssassin's ``required_score`` (5.0). Weights are
calibrated against SpamAssassin run offline (``spamassassin -L``) on the corpus in
``tests/fixtures/content_corpus`` so that both agree on ham or spam. Everything here is pure:
no network, no I/O, stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from types import MappingProxyType
from typing import Any, Literal

from postroom.deliverability.html_scan import HtmlScan, scan_html, words
from postroom.deliverability.link_hosts import SHOWN_URL, host_of, shown_host, site_of
from postroom.messages import EmailEvent
from postroom.rendering import Renderer

__all__ = ["Finding", "LintReport", "lint_email_type", "lint_eml", "lint_message"]

Severity = Literal["info", "warning", "error"]
Verdict = Literal["ham", "spam"]
SAMPLE_SEND_ID = "01LINTSAMPLE"
SAMPLE_RECIPIENT = "reader@example.com"
# Gmail clips a message whose HTML is larger than 102 KB and hides the rest (and the footer
# with the unsubscribe link) behind "View entire message".
GMAIL_CLIP_BYTES = 102 * 1024
_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    severity: Severity
    points: float
    message: str


@dataclass(frozen=True, slots=True)
class LintReport:
    score: float
    findings: list[Finding] = field(default_factory=list)

    def verdict(self, threshold: float = 5.0) -> Verdict:
        # ">=" as in SpamAssassin: a score equal to required_score is spam.
        return "spam" if self.score >= threshold else "ham"

    @property
    def errors(self) -> list[Finding]:
        """Findings that must be fixed whatever the score (legal requirements)."""
        return [f for f in self.findings if f.severity == "error"]

    def to_dict(self, threshold: float = 5.0) -> dict[str, Any]:
        """JSON-ready form for the CLI and the HTTP API."""
        return {
            "score": self.score,
            "threshold": threshold,
            "verdict": self.verdict(threshold),
            "findings": [asdict(finding) for finding in self.findings],
        }


# --- the message as the rules see it -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Message:
    subject: str
    html: str
    text: str | None
    marketing: bool
    headers: Mapping[str, str]  # lower-cased names
    scan: HtmlScan
    body: str  # what a reader sees: the HTML's visible text, or the text part if no HTML
    urls: tuple[str, ...]  # every link target and every URL written out in the text


Rule = Callable[[_Message], Iterable[Finding]]
RULES: list[Rule] = []


def _rule(function: Rule) -> Rule:
    RULES.append(function)
    return function


# --- rules ---------------------------------------------------------------------------------

# Phrases content filters weigh as spam evidence (SpamAssassin's body rules, and the lists
# ESPs publish). Weights rise with how rarely the phrase appears in legitimate mail.
_PHRASE_TABLE = """
2.5: viagra, cialis
2.0: 100% free, you have won, you've won, online pharmacy, no prescription, million dollars
2.0: this is not spam, account suspended, lottery
1.5: act now, earn $, extra income, work from home, claim your, cash bonus, lose weight
1.5: double your, wire transfer, investment opportunity, casino, verify your account
1.5: account will be closed, confirm your identity, 100% guaranteed, don't delete
1.2: risk-free, risk free, earn extra, urgent, once in a lifetime, free gift, weight loss
1.2: what are you waiting for
1.0: winner, limited time, no credit card, buy now, order now, miracle, dear friend
1.0: special promotion, 100% satisfied, big savings
0.8: click here, guaranteed, cheap, bitcoin, no hidden fees, exclusive deal
0.5: crypto
0.3: congratulations
"""
# "weight: phrase, phrase, ..." lines, one weight per line, kept as text to stay readable.
_PHRASES = {
    phrase.strip(): float(weight)
    for weight, _, phrases in (line.partition(":") for line in _PHRASE_TABLE.strip().split("\n"))
    for phrase in phrases.split(",")
}


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    # Word boundaries only where the phrase starts or ends with a word character, so "earn $"
    # matches "earn $500" while "winner" does not match "winners" or "prizewinner".
    core = r"\s+".join(re.escape(word) for word in phrase.split())
    start = r"(?<!\w)" if phrase[0].isalnum() else ""
    end = r"(?!\w)" if phrase[-1].isalnum() else ""
    return re.compile(start + core + end, re.IGNORECASE)


_PHRASE_PATTERNS = [(p, w, _phrase_pattern(p)) for p, w in _PHRASES.items()]


@_rule
def spam_phrases(m: _Message) -> Iterable[Finding]:
    # Each phrase counts once; in the subject it counts half again, as filters weigh subjects
    # more (the reader sees them before deciding to open).
    for phrase, weight, pattern in _PHRASE_PATTERNS:
        in_subject = bool(pattern.search(m.subject))
        if in_subject or pattern.search(m.body):
            points = round(weight * 1.5 if in_subject else weight, 2)
            where = "subject" if in_subject else "body"
            yield Finding(
                "spam-phrase", "warning", points, f"spam-trigger phrase {phrase!r} in {where}"
            )


_WORD = re.compile(r"[^\W\d_]{3,}")


@_rule
def shouting_subject(m: _Message) -> Iterable[Finding]:
    # Filters (SpamAssassin SUBJ_ALL_CAPS) and readers both read capitals as shouting.
    words = _WORD.findall(m.subject)
    loud = [w for w in words if w.isupper()]
    if len(words) >= 2 and len(loud) == len(words):
        yield Finding("subject-caps", "warning", 1.5, "the subject is in ALL CAPS")
    elif len(loud) >= 2 and len(loud) * 3 >= len(words):
        yield Finding("subject-caps", "warning", 0.8, f"capitalised words in the subject: {loud}")


@_rule
def shouting_body(m: _Message) -> Iterable[Finding]:
    # A body mostly in capitals is a classic spam trait (SpamAssassin UPPERCASE_50_75).
    letters = [c for c in m.body if c.isalpha()]
    if len(letters) >= 100 and sum(c.isupper() for c in letters) * 2 > len(letters):
        yield Finding("body-caps", "warning", 1.0, "over half of the body text is in capitals")


_SUBJECT_PUNCT = re.compile(r"[!?]{2,}|\${2,}")
_BODY_PUNCT = re.compile(r"!{3,}|\?{3,}|\${3,}|(?:[!?]\s*){4,}")


@_rule
def excessive_punctuation(m: _Message) -> Iterable[Finding]:
    # "!!!", "???" and "$$$" read as hype to filters and readers alike.
    if _SUBJECT_PUNCT.search(m.subject):
        yield Finding("punctuation", "warning", 1.5, "repeated !, ? or $ in the subject")
    runs = len(_BODY_PUNCT.findall(m.body))
    if runs:
        yield Finding(
            "punctuation", "warning", min(0.5 * runs, 1.5), f"{runs} runs of !!!, ??? or $$$"
        )


@_rule
def image_ratio(m: _Message) -> Iterable[Finding]:
    # Spam hides its words in pictures so text filters find nothing. SpamAssassin's
    # HTML_IMAGE_ONLY_04..32 add up to 2.8 points when images come with under 400..3200 bytes
    # of text; we use two of its bands.
    images, chars = len(m.scan.images), len(m.scan.visible_text)
    if images and chars < 400:
        message = f"{images} image(s) and only {chars} characters of text; add text"
        yield Finding("image-ratio", "warning", 2.0, message)
    elif images and chars < max(1600, 400 * images):
        message = f"{images} image(s) with {chars} characters of text; filters want more text"
        yield Finding("image-ratio", "info", 0.8, message)


@_rule
def missing_text_part(m: _Message) -> Iterable[Finding]:
    # HTML-only mail is a spam trait (SpamAssassin MIME_HTML_ONLY) and unreadable in text clients.
    if m.html.strip() and not (m.text or "").strip():
        yield Finding("text-part", "warning", 1.0, "no text/plain part; add one")


@_rule
def missing_alt(m: _Message) -> Iterable[Finding]:
    # Images are blocked by default in many clients: alt text is what readers see instead.
    missing = [i.get("src") or "?" for i in m.scan.images if i.get("alt") is None]
    if missing:
        message = f"{len(missing)} image(s) without alt text: {', '.join(missing[:3])}"
        yield Finding("image-alt", "warning", 0.3, message)


@_rule
def deceptive_links(m: _Message) -> Iterable[Finding]:
    # Link text that shows one domain while the link goes to another is the phishing pattern;
    # filters and Gmail's warnings flag it.
    pairs: list[str] = []
    for link in m.scan.links:
        target = host_of(link.href) if link.href.lower().startswith("http") else None
        shown = shown_host(" ".join(link.text))
        if target and shown and site_of(target) != site_of(shown):
            pairs.append(f"{shown} -> {target}")
    if pairs:
        message = (
            "link text shows a different domain "
            f"than its target: {', '.join(sorted(set(pairs))[:3])}"
        )
        yield Finding("link-mismatch", "warning", 2.5, message)


_SHORTENERS = words(
    "bit.ly tinyurl.com t.co goo.gl ow.ly is.gd buff.ly rebrand.ly cutt.ly shorturl.at "
    "tiny.cc bl.ink rb.gy t.ly v.gd s.id qr.ae adf.ly shorte.st"
)


@_rule
def url_shorteners(m: _Message) -> Iterable[Finding]:
    # Shorteners hide the destination, so spammers use them and filters distrust them.
    hosts = {h for h in (host_of(u) for u in m.urls) if h and h.removeprefix("www.") in _SHORTENERS}
    if hosts:
        message = f"URL shortener(s) {sorted(hosts)}; link to the real destination"
        yield Finding("url-shortener", "warning", 1.5, message)


@_rule
def html_size(m: _Message) -> Iterable[Finding]:
    size = len(m.html.encode())
    if size > GMAIL_CLIP_BYTES:
        message = (
            f"HTML is {size // 1024} KB; Gmail clips "
            "messages over 102 KB and hides the rest, footer included"
        )
        yield Finding("html-size", "warning", 0.5, message)


_UNSUBSCRIBE = re.compile(r"(?i)unsubscri|opt[- ]?out|email preferences|manage (?:your )?subscri")
_STREET = "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Way|Court|Ct|Place|Pl"
# Case-sensitive on purpose: addresses are capitalised, and "2 more posts on the way" is not one.
_ADDRESS = re.compile(
    rf"\b\d{{1,6}}[A-Za-z]?,?\s+(?:[A-Z][\w.'-]*\s+){{1,4}}(?:{_STREET}|Square|Parkway|Highway)\b"
    r"|(?i:\bp\.?\s?o\.?\s+box\s+\d+)"  # PO Box 4471
    r"|\b[A-Z]{2}\s+\d{5}(?:-\d{4})?\b"  # US state and ZIP code: CA 94104
    r"|\b[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}\b"  # UK postcode: N1 7GU
    r"|\b[A-ZÄÖÜ]\w*(?:straße|strasse|str\.|weg|platz|gasse)\s+\d+"  # Torstraße 19
)


@_rule
def marketing_compliance(m: _Message) -> Iterable[Finding]:
    # CAN-SPAM requires a working opt-out and the sender's postal address in commercial mail;
    # Gmail and Yahoo also require the List-Unsubscribe header (one-click, RFC 8058) for bulk.
    if not m.marketing:
        return
    if m.html.strip():
        has_link = any(_UNSUBSCRIBE.search(f"{a.href} {' '.join(a.text)}") for a in m.scan.links)
    else:
        has_link = bool(_UNSUBSCRIBE.search(m.text or "")) and bool(m.urls)
    if not has_link:
        yield Finding("unsubscribe", "error", 1.0, "marketing mail without an unsubscribe link")
    if not _ADDRESS.search(f"{m.scan.visible_text}\n{m.text or ''}"):
        message = "marketing mail without a physical postal address (CAN-SPAM)"
        yield Finding("postal-address", "error", 0.5, message)
    if m.headers and "list-unsubscribe" not in m.headers:
        yield Finding("list-unsubscribe", "warning", 0.5, "no List-Unsubscribe header")
    elif m.headers and "list-unsubscribe-post" not in m.headers:
        message = (
            "List-Unsubscribe without List-Unsubscribe-Post: no one-click unsubscribe (RFC 8058)"
        )
        yield Finding("list-unsubscribe", "warning", 0.2, message)


@_rule
def invalid_html(m: _Message) -> Iterable[Finding]:
    # Clients repair broken markup differently, so the layout breaks somewhere; filters also
    # count unbalanced tags (SpamAssassin HTML_TAG_BALANCE_*).
    problems = m.scan.problems
    if problems:
        message = f"{len(problems)} tag problem(s): {'; '.join(problems[:3])}"
        yield Finding("invalid-html", "warning", 0.5, message)


# --- entry points --------------------------------------------------------------------------


def lint_message(
    subject: str,
    html: str,
    text: str | None,
    *,
    marketing: bool,
    headers: Mapping[str, str] = _NO_HEADERS,
) -> LintReport:
    """Score one message. ``headers`` are checked only when given: empty means unknown."""
    scan = scan_html(html)
    body = scan.visible_text if html.strip() else " ".join((text or "").split())
    urls = [a.href for a in scan.links if a.href.lower().startswith("http")]
    urls += SHOWN_URL.findall(f"{scan.visible_text}\n{text or ''}")
    message = _Message(
        subject=subject,
        html=html,
        text=text,
        marketing=marketing,
        headers={name.lower(): value for name, value in headers.items()},
        scan=scan,
        body=body,
        urls=tuple(urls),
    )
    findings = [finding for rule in RULES for finding in rule(message)]
    return LintReport(round(sum((f.points for f in findings), 0.0), 2), findings)


def _part_text(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_type() != f"text/{subtype}":
        return None
    try:
        content = part.get_content()
    except (LookupError, UnicodeError):  # unknown or wrong charset: read what we can
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None
    return content if isinstance(content, str) else None


def lint_eml(raw: bytes) -> LintReport:
    """Score a whole message (``.eml`` bytes); it is marketing if it has List-Unsubscribe."""
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)  # policy.default always builds EmailMessage
    headers: dict[str, str] = {}
    for name, value in message.items():
        headers.setdefault(name, str(value))
    return lint_message(
        str(message.get("Subject", "")),
        _part_text(message, "html") or "",
        _part_text(message, "plain"),
        marketing="List-Unsubscribe" in message,
        headers=headers,
    )


def lint_email_type(
    renderer: Renderer, email_type_name: str, sample_data: Mapping[str, Any]
) -> LintReport:
    """Render ``email_type_name`` with ``sample_data`` and score the result.

    Raises what rendering raises (TemplateError, UnknownEmailTypeError, InvalidMessageError).
    """
    email_type = renderer.registry.get(email_type_name)
    event = EmailEvent(
        email_type=email_type_name,
        recipient_email=SAMPLE_RECIPIENT,
        recipient_name="Sample Reader",
        template_data=dict(sample_data),
    )
    rendered = renderer.render(event, send_id=SAMPLE_SEND_ID)
    return lint_message(
        rendered.subject,
        rendered.html,
        rendered.text,
        marketing=email_type.marketing,
        headers=rendered.headers,
    )
