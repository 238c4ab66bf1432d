"""Postroom's content checks against SpamAssassin (Debian ``spamassassin``, offline ``-L``).

(a) Every bundled template, rendered and built with ``build_mime``, scores below 2.0.
(b) On a corpus written for this test (tests/fixtures/content_corpus, half clean creator-platform
mail, half spam), Postroom's ham/spam verdict matches SpamAssassin's on at least 18 of 20.

SpamAssassin starts slowly (about 2 s of CPU to load its rules), so messages are scored in
batches (``--mbox``: rules load once per batch), one batch per CPU, in parallel. Offline, no
network rules (DNSBL, URIBL, Razor) run and Bayes is untrained.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import require_service
from tests.unit.deliverability.test_content import TEMPLATE_SAMPLES, make_renderer

from postroom.deliverability.content import lint_eml
from postroom.messages import EmailEvent, RenderedEmail
from postroom.providers.mime import build_mime

CORPUS = Path(__file__).parent.parent / "fixtures" / "content_corpus"
REQUIRED = 5.0  # SpamAssassin's default required_score
TEMPLATE_LIMIT = 2.0
DATE = "Mon, 04 Mar 2024 10:00:00 +0000"
DEFAULT_SENDER = "Inkwell <hello@mail.inkwell.example>"
ONE_CLICK = {
    "List-Unsubscribe": "<https://inkwell.example/unsubscribe/tok123>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}
_STATUS = re.compile(
    r"^X-Spam-Status: (?:Yes|No), score=(-?\d+(?:\.\d+)?) required=\S+(.*?)(?=^\S)",
    re.MULTILINE | re.DOTALL,
)
_MESSAGE_ID = re.compile(r"^Message-ID:\s*(<[^>\s]+>)", re.MULTILINE | re.IGNORECASE)
_SEPARATOR = b"From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n"


@dataclass(frozen=True)
class Scored:
    score: float
    tests: str


@pytest.fixture(scope="module")
def spamassassin() -> str:
    path = shutil.which("spamassassin")
    require_service(path is not None, "spamassassin (Debian package 'spamassassin')")
    assert path is not None
    return path


def run_batch(executable: str, messages: list[bytes]) -> dict[str, Scored]:
    """Score ``messages`` in one ``spamassassin --mbox`` run, so its rules load only once."""
    mbox = b"".join(
        _SEPARATOR + raw.replace(b"\r\n", b"\n").replace(b"\nFrom ", b"\n>From ") + b"\n"
        for raw in messages
    )
    result = subprocess.run(
        [executable, "-L", "-t", "--mbox"], input=mbox, capture_output=True, timeout=300
    )
    scored: dict[str, Scored] = {}
    # SpamAssassin may print the messages in another order: match them up by Message-ID.
    for chunk in result.stdout.decode("utf-8", "replace").split(_SEPARATOR.decode())[1:]:
        message_id = _MESSAGE_ID.search(chunk)
        status = _STATUS.search(chunk)
        assert message_id and status, f"unexpected spamassassin output: {chunk[:500]}"
        tests = " ".join(status.group(2).replace("tests=", "").split()).split(" autolearn=")[0]
        scored[message_id.group(1)] = Scored(float(status.group(1)), tests)
    return scored


def score_all(executable: str, messages: list[bytes]) -> list[Scored]:
    """Scores in the order of ``messages``: one batch per CPU, the batches in parallel."""
    batches = max(1, min(len(messages), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=batches) as pool:
        results = pool.map(lambda i: run_batch(executable, messages[i::batches]), range(batches))
        scored = {key: value for result in results for key, value in result.items()}
    ids = [_MESSAGE_ID.search(raw.decode("utf-8", "replace")) for raw in messages]
    missing = [m.group(1) for m in ids if m and m.group(1) not in scored]
    assert all(ids) and not missing, f"spamassassin did not score {missing}"
    return [scored[m.group(1)] for m in ids if m]


def corpus() -> list[tuple[str, dict[str, Any]]]:
    return [(path.stem, json.loads(path.read_text())) for path in sorted(CORPUS.glob("*.json"))]


def build(name: str, doc: dict[str, Any]) -> bytes:
    """The corpus document as a whole message, with the headers real mail carries."""
    sender: str = doc.get("sender", DEFAULT_SENDER)
    headers: dict[str, str] = dict(doc.get("headers", {}))
    if doc["marketing"]:
        headers.update(ONE_CLICK)
    message_id = f"<{name}@{sender.rsplit('@', 1)[1].rstrip('>')}>"
    if doc["text"]:
        email = RenderedEmail(
            send_id=name,
            message_id=message_id,
            sender=sender,
            recipient="reader@example.com",
            recipient_name="Reader One",
            subject=doc["subject"],
            html=doc["html"],
            text=doc["text"],
            date=DATE,
            headers=headers,
        )
        return build_mime(email)
    # build_mime always writes a text part; HTML-only mail (common in spam) needs stdlib email.
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = sender
    message["To"] = "Reader One <reader@example.com>"
    message["Subject"] = doc["subject"]
    message["Date"] = DATE
    message["Message-ID"] = message_id
    for key, value in headers.items():
        message[key] = value
    message.set_content(doc["html"], subtype="html")
    return message.as_bytes()


def test_corpus_is_balanced_and_written_for_the_test() -> None:
    docs = corpus()
    assert len(docs) >= 20
    labels = [doc["label"] for _, doc in docs]
    assert labels.count("ham") == labels.count("spam")
    assert all(doc["origin"].startswith("written for the test") for _, doc in docs)


def test_bundled_templates_score_below_two(spamassassin: str) -> None:
    renderer = make_renderer()
    messages = []
    for name, data in sorted(TEMPLATE_SAMPLES.items()):
        event = EmailEvent(
            email_type=name,
            recipient_email="reader@example.com",
            recipient_name="Reader One",
            template_data=data,
        )
        messages.append(build_mime(renderer.render(event, send_id=f"01SATEST{name.upper()}")))
    for raw in messages:
        for header in (b"\r\nFrom: ", b"\r\nTo: ", b"\r\nDate: ", b"\r\nMessage-ID: "):
            assert header in b"\r\n" + raw
    scores = dict(zip(sorted(TEMPLATE_SAMPLES), score_all(spamassassin, messages), strict=True))
    too_high = {name: s for name, s in scores.items() if s.score >= TEMPLATE_LIMIT}
    assert not too_high, f"templates scoring {TEMPLATE_LIMIT} or more: {too_high}"


def test_verdicts_agree_with_spamassassin(spamassassin: str) -> None:
    docs = corpus()
    messages = [build(name, doc) for name, doc in docs]
    scores = score_all(spamassassin, messages)
    disagreements = []
    for (name, _), raw, scored in zip(docs, messages, scores, strict=True):
        ours = lint_eml(raw)
        theirs = "spam" if scored.score >= REQUIRED else "ham"
        if ours.verdict(REQUIRED) != theirs:
            disagreements.append(
                f"{name}: SpamAssassin {scored.score} ({theirs}; {scored.tests}) vs Postroom "
                f"{ours.score} ({ours.verdict(REQUIRED)}; {[f.rule for f in ours.findings]})"
            )
    agree = len(docs) - len(disagreements)
    assert agree >= len(docs) - 2, f"verdicts agree on {agree} of {len(docs)}:\n" + "\n".join(
        disagreements
    )
