"""build_mime: parsed back by the stdlib (strict policy), every header and part matches."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import re
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formataddr
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.errors import HeaderInjectionError, InvalidMessageError
from postroom.messages import RenderedEmail
from postroom.providers.mime import build_mime, display_address, envelope_address

BREAKS = "\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
header_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=BREAKS),
    max_size=200,
).filter(lambda value: "=?" not in value and "%0" not in value)
body_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=2000)


def make_email(**overrides: Any) -> RenderedEmail:
    fields: dict[str, Any] = {
        "send_id": "01HZX0SEND",
        "message_id": "<01HZX0SEND@postroom.example>",
        "sender": "Postroom <noreply@postroom.example>",
        "recipient": "user@example.com",
        "recipient_name": "John Doe",
        "subject": "New post: My Latest Article",
        "html": "<p>Jane Doe published <a href='https://platform.com/post/123'>a post</a></p>\n",
        "text": "Jane Doe published a post\nhttps://platform.com/post/123\n",
        "date": "Mon, 01 Jan 2024 12:00:00 +0000",
        "headers": {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
        "email_type": "new_post_notification",
    }
    fields.update(overrides)
    return RenderedEmail(**fields)


def parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=email.policy.strict).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def canonical(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def bodies(message: EmailMessage) -> tuple[str, str]:
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert plain is not None and html is not None
    return canonical(plain.get_content()), canonical(html.get_content())


def raw_header(raw: bytes, name: str) -> str:
    """The unfolded raw value of ``name``, before any decoding."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8")
    match = re.search(rf"^{name}: ?(.*?)\r\n(?! )", head + "\r\n", re.MULTILINE | re.DOTALL)
    assert match, name
    return match.group(1).replace("\r\n", "")


def rfc2047_display_name(raw: bytes) -> str:
    """Decode the To display name as RFC 2047 §6.2 says: whitespace between encoded words
    is dropped. (CPython's policy parser keeps it inside phrases, so it is checked only for
    names that fit one encoded word.)"""
    value = raw_header(raw, "To")
    phrase = value.rsplit(" <", 1)[0]
    if phrase.startswith('"'):
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    return str(make_header(decode_header(phrase)))


def assert_line_limits(raw: bytes) -> None:
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR"
    head, body = raw.split(b"\r\n\r\n", 1)
    for line in body.split(b"\r\n"):
        assert len(line) <= 76 or line.startswith(b"--=_"), line
    for line in head.split(b"\r\n"):
        assert len(line) <= 78, line


def test_round_trip_every_header_and_both_parts() -> None:
    original = make_email(
        headers={"List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "X-Tag": "a"}
    )
    raw = build_mime(original, extra_headers={"X-Campaign": "c-1"})
    message = parse(raw)
    assert message["From"] == "Postroom <noreply@postroom.example>"
    assert message["To"].addresses[0].display_name == "John Doe"
    assert message["To"].addresses[0].addr_spec == "user@example.com"
    assert message["Subject"] == original.subject
    assert message["Date"] == original.date
    assert message["Message-ID"] == original.message_id
    assert message["MIME-Version"] == "1.0"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["X-Tag"] == "a"
    assert message["X-Campaign"] == "c-1"
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert all(part.get_content_charset() == "utf-8" for part in parts)
    assert bodies(message) == (original.text, original.html)
    assert_line_limits(raw)


def test_non_ascii_name_subject_and_sender() -> None:
    original = make_email(
        sender="Zoë Ångström <zoe@example.com>",
        recipient_name="Jürgen Müller-Lüdenscheidt",
        subject="Nouveau post de Zoë : « Mon dernier article » — à lire absolument, vraiment",
    )
    raw = build_mime(original)
    message = parse(raw)
    assert message["From"].addresses[0].display_name == "Zoë Ångström"
    assert message["To"].addresses[0].display_name == original.recipient_name
    assert message["Subject"] == original.subject
    assert raw.isascii()
    assert_line_limits(raw)


def test_specials_in_name_are_quoted() -> None:
    raw = build_mime(make_email(recipient_name='Doe, "Johnny" \\ Jr.'))
    assert raw_header(raw, "To") == '"Doe, \\"Johnny\\" \\\\ Jr." <user@example.com>'
    assert parse(raw)["To"].addresses[0].display_name == 'Doe, "Johnny" \\ Jr.'


def test_literal_encoded_word_in_subject_is_not_decoded() -> None:
    subject = "price =?utf-8?b?SGk=?= is literal"
    assert parse(build_mime(make_email(subject=subject)))["Subject"] == subject


def test_no_name_gives_bare_address() -> None:
    raw = build_mime(make_email(recipient_name=None))
    assert raw_header(raw, "To") == "<user@example.com>"


def test_idna_domain_in_header() -> None:
    raw = build_mime(make_email(recipient="user@exämple.com"))
    assert parse(raw)["To"].addresses[0].domain == "xn--exmple-cua.com"
    assert envelope_address("a@bücher.de") == "a@xn--bcher-kva.de"


def test_long_lines_are_wrapped_and_restored() -> None:
    text = (
        "word " * 400 + "\n" + "x" * 3000 + "\n\n  trailing spaces   \n\tTab line\t\n.\nFrom here\n"
    )
    html = "<p>" + "é" * 500 + "</p>"
    raw = build_mime(make_email(text=text, html=html, subject="long " * 40))
    assert_line_limits(raw)
    message = parse(raw)
    assert bodies(message) == (text, html)
    assert message["Subject"] == "long " * 40


def test_mostly_non_ascii_body_uses_base64() -> None:
    text = "Новый пост от автора: читайте сейчас.\n" * 20
    raw = build_mime(make_email(text=text))
    plain = parse(raw).get_body(("plain",))
    assert plain is not None and plain["Content-Transfer-Encoding"] == "base64"
    assert canonical(plain.get_content()) == text
    payload = plain.get_payload()
    assert base64.b64decode(payload).decode() == text.replace("\n", "\r\n")
    assert_line_limits(raw)


def test_crlf_and_bare_cr_bodies_become_canonical_crlf() -> None:
    raw = build_mime(make_email(text="a\r\nb\rc\n"))
    assert bodies(parse(raw))[0] == "a\nb\nc\n"


def test_boundary_is_random() -> None:
    one, two = (parse(build_mime(make_email())).get_boundary() for _ in range(2))
    assert one != two


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "Hello\r\nBcc: victim@example.com"),
        ("subject", "Hello\nBcc: victim@example.com"),
        ("subject", "=?utf-8?q?Hi=0D=0ABcc:_x@example.com?="),
        ("recipient_name", "John\u2028Bcc: x@example.com"),
        ("recipient_name", "John%0d%0aBcc: x@example.com"),
        ("sender", "Evil <evil@example.com>\r\nBcc: x@example.com"),
        ("date", "Mon, 01 Jan 2024 12:00:00 +0000\r\nX: y"),
        ("message_id", "<a@b>\nX: y"),
        ("recipient", "user@example.com\r\nBcc: x@example.com"),
    ],
)
def test_injection_in_built_headers_is_refused(field: str, value: str) -> None:
    with pytest.raises(HeaderInjectionError):
        build_mime(make_email(**{field: value}))


def test_injection_in_extra_headers_is_refused() -> None:
    with pytest.raises(HeaderInjectionError):
        build_mime(make_email(headers={"X-Tag": "a\r\nBcc: x@example.com"}))
    with pytest.raises(HeaderInjectionError):
        build_mime(make_email(), extra_headers={"X-Tag": "a\x00b"})


@pytest.mark.parametrize("name", ["Bad Name", "X-Colon:", "", "Content-Type", "Bcc", "subject"])
def test_invalid_or_reserved_header_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidMessageError):
        build_mime(make_email(headers={name: "x"}))


def test_sender_without_address_is_refused() -> None:
    with pytest.raises(InvalidMessageError):
        build_mime(make_email(sender="nobody"))


def test_non_ascii_unstructured_extra_header_is_encoded() -> None:
    raw = build_mime(make_email(headers={"X-Creator": "Zoë"}))
    assert parse(raw)["X-Creator"] == "Zoë"


def test_non_ascii_reply_to_is_an_address_header() -> None:
    raw = build_mime(make_email(headers={"Reply-To": "Zoë <zoe@example.com>"}))
    address = parse(raw)["Reply-To"].addresses[0]
    assert (address.display_name, address.addr_spec) == ("Zoë", "zoe@example.com")


@settings(max_examples=300, deadline=None)
@given(subject=header_text)
def test_property_subject_round_trips(subject: str) -> None:
    raw = build_mime(make_email(subject=subject))
    assert_line_limits(raw)
    assert str(parse(raw)["Subject"]) == subject
    # And once more with the lenient default policy a mail client would use.
    assert email.message_from_bytes(raw, policy=email.policy.default)["Subject"] == subject


@settings(max_examples=300, deadline=None)
@given(name=header_text)
def test_property_display_name_round_trips(name: str) -> None:
    raw = build_mime(make_email(recipient_name=name))
    assert_line_limits(raw)
    message = parse(raw)
    address = message["To"].addresses[0]
    assert address.addr_spec == "user@example.com"
    if not name:
        return
    assert rfc2047_display_name(raw) == name
    if raw_header(raw, "To").count("=?utf-8?") <= 1:
        # CPython reads whitespace runs in a phrase as one space, even inside an encoded word
        # (and counts characters like U+001F as whitespace): compare word by word.
        assert address.display_name.split() == name.split()


@settings(max_examples=200, deadline=None)
@given(text=body_text, html=body_text)
def test_property_bodies_round_trip(text: str, html: str) -> None:
    raw = build_mime(make_email(text=text, html=html))
    assert_line_limits(raw)
    assert bodies(parse(raw)) == (canonical(text), canonical(html))


def test_dataclass_is_not_mutated() -> None:
    original = make_email()
    copy = dataclasses.replace(original)
    build_mime(original)
    assert original == copy


DISPLAY_NAMES = [
    None,
    "",
    "Ada Reader",
    "Ada R. Reader",  # a dot: quoted
    'Ada "the reader"',
    "Back\\slash",
    "Reader, Ada",
    "Zoë Reader",  # non-ASCII: encoded
    "[bracketed] (comment) <angle> @at :colon; semi",
    "   spaced   ",
]


@pytest.mark.parametrize("name", DISPLAY_NAMES)
def test_a_display_address_is_what_formataddr_gives(name: str | None) -> None:
    assert display_address(name, "ada@example.com") == formataddr((name or "", "ada@example.com"))


def test_a_non_ascii_address_is_refused_as_formataddr_refuses_it() -> None:
    with pytest.raises(UnicodeEncodeError):
        display_address("Ada", "adà@example.com")
