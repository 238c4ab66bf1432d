"""Content checks: each rule fires on a crafted message and stays quiet on a clean one."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import pytest

from postroom.deliverability.content import (
    Finding,
    LintReport,
    lint_email_type,
    lint_eml,
    lint_message,
)
from postroom.errors import UnknownEmailTypeError
from postroom.messages import RenderedEmail
from postroom.providers.mime import build_mime
from postroom.rendering import Renderer, TemplateRegistry, bundled_templates_dir

POSTAL = "Inkwell Media Inc., 548 Market Street, Suite 300, San Francisco, CA 94104"

# Realistic sample data for every bundled email type; the SpamAssassin test renders these too.
# The bundled types' own [sample] data: what they are checked with at startup.
TEMPLATE_SAMPLES: dict[str, dict[str, Any]] = {
    t.name: dict(t.sample) for t in TemplateRegistry.load(bundled_templates_dir())
}


def make_renderer() -> Renderer:
    return Renderer(
        TemplateRegistry.load(bundled_templates_dir()),
        sender="Inkwell <hello@mail.inkwell.example>",
        reply_to="support@inkwell.example",
        public_url="https://inkwell.example",
        secret_key="content-check-secret-key-0123456",
        postal_address=POSTAL,
        unsubscribe_mailto="unsubscribe@mail.inkwell.example",
    )


PARAGRAPH = (
    "<p>Maya Lin just published a new essay about slow travel: two weeks on regional trains "
    "through northern Italy, with notes on where to stay, what to eat, and how to plan a route "
    "that leaves room for getting lost. It is the longest piece she has written this year.</p>"
)
CLEAN_HTML = (
    "<html><body><h1>A new essay from Maya Lin</h1>"
    + PARAGRAPH * 6
    + '<p><a href="https://mayalin.inkwell.example/p/slow-travel">Read the essay</a></p>'
    "</body></html>"
)
CLEAN_TEXT = "Maya Lin just published a new essay about slow travel.\n"
CLEAN_SUBJECT = "Maya Lin published: Two weeks on regional trains"
FOOTER = (
    '<p><a href="https://inkwell.example/unsubscribe/tok">Unsubscribe</a> from these emails.</p>'
    f"<p>{POSTAL}</p>"
)
ONE_CLICK = {
    "List-Unsubscribe": "<https://inkwell.example/unsubscribe/tok>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def lint(**changes: Any) -> LintReport:
    fields: dict[str, Any] = {
        "subject": CLEAN_SUBJECT,
        "html": CLEAN_HTML,
        "text": CLEAN_TEXT,
        "marketing": False,
    }
    fields.update(changes)
    return lint_message(**fields)


def rules(report: LintReport) -> set[str]:
    return {finding.rule for finding in report.findings}


def page(inner: str) -> str:
    return f"<html><body>{inner}</body></html>"


def test_clean_message_has_no_findings() -> None:
    report = lint()
    assert report.findings == []
    assert report.score == 0.0
    assert report.verdict() == "ham"


# Each case: the rule, changes that make it fire, and the closest clean counterpart.
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("spam-phrase", {"subject": "Act NOW: a new essay"}, {"subject": "React: a new essay"}),
    (
        "spam-phrase",
        {"html": page("<p>Earn $500 a day from your sofa.</p>" + PARAGRAPH)},
        {"html": page("<p>Learn 500 words of Italian.</p>" + PARAGRAPH)},
    ),
    (
        "spam-phrase",
        {"html": page("<p>You are our lucky WINNER.</p>" + PARAGRAPH)},
        {"html": page("<p>Last year's prize winners wrote back.</p>" + PARAGRAPH)},
    ),
    ("subject-caps", {"subject": "NEW ESSAY FROM MAYA LIN"}, {"subject": "New essay from Maya"}),
    (
        "subject-caps",
        {"subject": "FREE essay for YOU TODAY"},
        {"subject": "Our AI FAQ, updated for 2024"},
    ),
    (
        "body-caps",
        {"html": page("<p>" + "THIS ESSAY WILL CHANGE YOUR LIFE FOREVER. " * 5 + "</p>")},
        {"html": page("<p>" + "This essay might change how you travel. " * 5 + "</p>")},
    ),
    ("punctuation", {"subject": "Read this now!!"}, {"subject": "Read this now!"}),
    (
        "punctuation",
        {"html": page("<p>Amazing!!! Unbelievable??? Save $$$</p>" + PARAGRAPH)},
        {"html": page("<p>Amazing! Is it? Save money.</p>" + PARAGRAPH)},
    ),
    (
        "image-ratio",
        {"html": page('<img src="a.jpg" alt="a"><img src="b.jpg" alt="b"><p>Hi</p>')},
        {"html": CLEAN_HTML.replace("<h1>", '<img src="a.jpg" alt="Trains"><h1>')},
    ),
    ("text-part", {"text": None}, {"text": CLEAN_TEXT}),
    ("text-part", {"text": "  \n"}, {"text": "Plain words.\n"}),
    (
        "image-alt",
        {"html": CLEAN_HTML.replace("<h1>", '<img src="https://cdn.example/a.jpg"><h1>')},
        {"html": CLEAN_HTML.replace("<h1>", '<img src="https://cdn.example/a.jpg" alt=""><h1>')},
    ),
    (
        "link-mismatch",
        {"html": page('<a href="http://198.51.100.7/login">https://www.paypal.com/signin</a>')},
        {"html": page('<a href="https://www.paypal.com/signin">https://paypal.com/signin</a>')},
    ),
    (
        "link-mismatch",
        {"html": page('<a href="https://evil.example/x">inkwell.example/account</a>')},
        {"html": page('<a href="https://click.inkwell.example/r/1">inkwell.example/p/1</a>')},
    ),
    (
        "url-shortener",
        {"html": page('<p><a href="https://bit.ly/3xYz">Read the essay</a></p>' + PARAGRAPH)},
        {
            "html": page(
                '<p><a href="https://inkwell.example/p/1">Read the essay</a></p>' + PARAGRAPH
            )
        },
    ),
    (
        "url-shortener",
        {"html": "", "text": "Read it here: https://tinyurl.com/slow-travel\n"},
        {"html": "", "text": "Read it here: https://inkwell.example/p/slow-travel\n"},
    ),
    (
        "html-size",
        {"html": page("<p>" + "x" * (103 * 1024) + "</p>")},
        {"html": page("<p>" + "x" * (100 * 1024) + "</p>")},
    ),
    (
        "invalid-html",
        {"html": page("<div><p>Unbalanced</span></div>")},
        {"html": page("<div><p>Balanced</p></div>")},
    ),
    ("invalid-html", {"html": page("<div><b>Never closed</div>")}, {"html": page("<div>x</div>")}),
]


@pytest.mark.parametrize(("rule", "positive", "negative"), CASES)
def test_rule_fires_on_positive_and_not_on_clean_counterpart(
    rule: str, positive: dict[str, Any], negative: dict[str, Any]
) -> None:
    assert rule in rules(lint(**positive))
    assert rule not in rules(lint(**negative))


def test_optional_end_tags_and_void_elements_are_valid_html() -> None:
    html = page("<table><tr><td>One<td>Two</table><ul><li>a<li>b</ul><p>x<br>y<img src=a alt=''>")
    assert "invalid-html" not in rules(lint(html=html))


def test_phrase_in_subject_weighs_more_than_in_body() -> None:
    in_subject = lint(subject="Limited time: a new essay")
    in_body = lint(html=page("<p>For a limited time only.</p>" + PARAGRAPH))
    assert in_subject.score > in_body.score > 0


def test_marketing_mail_needs_unsubscribe_link_and_postal_address() -> None:
    report = lint(marketing=True)
    assert {f.rule for f in report.errors} == {"unsubscribe", "postal-address"}
    compliant = lint(marketing=True, html=CLEAN_HTML.replace("</body>", FOOTER + "</body>"))
    assert compliant.errors == []
    assert lint(marketing=False).errors == []


@pytest.mark.parametrize(
    "address",
    [
        POSTAL,
        "Inkwell, PO Box 4471, Portland, OR 97208",
        "Inkwell Ltd, 20 Wenlock Road, London N1 7GU",
        "Inkwell GmbH, Torstraße 19, 10119 Berlin",
    ],
)
def test_postal_address_formats_are_recognised(address: str) -> None:
    html = CLEAN_HTML.replace("</body>", f"<p>{address}</p></body>")
    assert "postal-address" not in rules(lint(marketing=True, html=html))


@pytest.mark.parametrize(
    "not_address", ["2 more posts are on the way", "Issue 100 of 50000 readers", "in 12345 steps"]
)
def test_ordinary_sentences_are_not_postal_addresses(not_address: str) -> None:
    html = CLEAN_HTML.replace("</body>", f"<p>{not_address}</p></body>")
    assert "postal-address" in rules(lint(marketing=True, html=html))


def test_unsubscribe_in_a_text_only_marketing_message() -> None:
    text = f"News.\n\nUnsubscribe: https://inkwell.example/unsubscribe/tok\n{POSTAL}\n"
    assert lint(marketing=True, html="", text=text).errors == []
    assert "unsubscribe" in rules(lint(marketing=True, html="", text="News.\n" + POSTAL))


def test_list_unsubscribe_headers_are_checked_only_when_given() -> None:
    html = CLEAN_HTML.replace("</body>", FOOTER + "</body>")
    assert "list-unsubscribe" not in rules(lint(marketing=True, html=html))
    assert "list-unsubscribe" not in rules(lint(marketing=True, html=html, headers=ONE_CLICK))
    no_header = lint(marketing=True, html=html, headers={"Reply-To": "a@inkwell.example"})
    assert "list-unsubscribe" in rules(no_header)
    no_post = {"List-Unsubscribe": ONE_CLICK["List-Unsubscribe"]}
    assert "list-unsubscribe" in rules(lint(marketing=True, html=html, headers=no_post))


def test_verdict_uses_the_threshold_like_spamassassin() -> None:
    report = LintReport(5.0, [Finding("x", "warning", 5.0, "x")])
    assert report.verdict() == "spam"  # equal to the required score is spam
    assert report.verdict(threshold=5.1) == "ham"
    assert report.to_dict()["verdict"] == "spam"
    assert report.to_dict()["findings"][0]["rule"] == "x"


def test_obvious_spam_is_spam() -> None:
    report = lint(
        subject="CONGRATULATIONS!!! YOU ARE A WINNER",
        html=page(
            '<p>Act now to claim your cash bonus. 100% free, risk-free.</p><a href="https://'
            'bit.ly/x"><img src="https://img.example/prize.gif"></a>'
        ),
        text=None,
    )
    assert report.verdict() == "spam"


def rendered(html: str, text: str, headers: dict[str, str]) -> bytes:
    email = RenderedEmail(
        send_id="01LINTTEST",
        message_id="<01LINTTEST@mail.inkwell.example>",
        sender="Inkwell <hello@mail.inkwell.example>",
        recipient="reader@example.com",
        recipient_name="Reader One",
        subject=CLEAN_SUBJECT,
        html=html,
        text=text,
        date="Mon, 04 Mar 2024 10:00:00 +0000",
        headers=headers,
    )
    return build_mime(email)


def test_lint_eml_detects_marketing_by_list_unsubscribe() -> None:
    assert lint_eml(rendered(CLEAN_HTML, CLEAN_TEXT, {})).findings == []
    marketing = lint_eml(rendered(CLEAN_HTML, CLEAN_TEXT, ONE_CLICK))
    assert {f.rule for f in marketing.errors} == {"unsubscribe", "postal-address"}
    footer = CLEAN_HTML.replace("</body>", FOOTER + "</body>")
    assert lint_eml(rendered(footer, CLEAN_TEXT + POSTAL, ONE_CLICK)).findings == []


def test_lint_eml_flags_an_html_only_message() -> None:
    message = EmailMessage()
    message["From"] = "promo@example.com"
    message["To"] = "reader@example.com"
    message["Subject"] = "Hello"
    message.set_content(CLEAN_HTML, subtype="html")
    assert rules(lint_eml(message.as_bytes())) == {"text-part"}


@pytest.mark.parametrize("email_type", sorted(TEMPLATE_SAMPLES))
def test_bundled_templates_lint_clean(email_type: str) -> None:
    report = lint_email_type(make_renderer(), email_type, TEMPLATE_SAMPLES[email_type])
    assert report.errors == [], report.findings
    assert report.score < 5.0
    assert report.verdict() == "ham"


def test_lint_email_type_refuses_an_unknown_type() -> None:
    with pytest.raises(UnknownEmailTypeError):
        lint_email_type(make_renderer(), "no_such_type", {})
