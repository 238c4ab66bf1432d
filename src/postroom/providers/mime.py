"""A fast RFC 5322/2045 writer: multipart/alternative bytes for one RenderedEmail.

The stdlib ``EmailMessage`` builds only ~350 messages/s (design §8), so this assembles the same
structure from strings: RFC 2047 encoded words, folded headers and quoted-printable or base64 parts.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import secrets
from collections.abc import Mapping
from email.utils import formataddr, getaddresses, parseaddr

from postroom.errors import InvalidMessageError
from postroom.messages import RenderedEmail, check_header_value

__all__ = ["build_mime", "display_address", "envelope_address"]

_MAX_LINE = 78  # RFC 5322 §2.1.1 SHOULD; 998 is the MUST
_HARD_LIMIT = 998
_WORD_BYTES = 45  # 45 bytes -> 60 base64 chars -> a 72-char encoded word (RFC 2047 caps it at 75)
_EW_OVERHEAD = len("=?utf-8?b??=")
_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 ftext: printable ASCII except ':'
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
_PRINTABLE = re.compile(r"[ -~]*\Z")
_SIMPLE_TEXT = re.compile(r"[!-~]+(?: [!-~]+)*\Z")  # single spaces only: folding keeps it intact
_HIGH_BYTES = bytes(range(128, 256))
_ADDRESS_HEADERS = frozenset({"reply-to", "cc", "sender"})
_OWN_HEADERS = frozenset({"from", "to", "subject", "date", "message-id", "mime-version", "bcc"})


def _char_bytes(ch: str) -> int:
    code = ord(ch)
    return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4


def _encoded_words(text: str, first_bytes: int) -> list[str]:
    """Split ``text`` into base64 encoded words on character boundaries (RFC 2047 §5)."""
    chunks: list[str] = []
    start = size = 0
    limit = max(first_bytes, 4)
    for index, ch in enumerate(text):
        width = _char_bytes(ch)
        if size + width > limit and index > start:
            chunks.append(text[start:index])
            start, size, limit = index, 0, _WORD_BYTES
        size += width
    chunks.append(text[start:])
    return [f"=?utf-8?b?{base64.b64encode(c.encode()).decode('ascii')}?=" for c in chunks]


def _first_word_bytes(prefix_len: int) -> int:
    # Room left on the first line after "Name: ", in whole base64 quanta.
    return min(_WORD_BYTES, (_MAX_LINE - prefix_len - _EW_OVERHEAD) // 4 * 3)


def _fold(name: str, tokens: list[str]) -> str:
    """Join whitespace-separated tokens into ``name: ...``, breaking lines before a token."""
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if len(line) + 1 + len(token) > _MAX_LINE and line != f"{name}:" and token:
            lines.append(line)
            line = " " + token
        else:
            line = f"{line} {token}"
    lines.append(line)
    if any(len(item) > _HARD_LIMIT for item in lines):
        raise InvalidMessageError(f"header line longer than {_HARD_LIMIT} characters", name)
    return "\r\n".join(lines)


def _text_header(name: str, value: str) -> str:
    """An unstructured header: plain and folded at spaces when safe, else encoded words."""
    if not value or (_SIMPLE_TEXT.match(value) and "=?" not in value):
        tokens = value.split(" ")
        # Plain only if every word fits a line; a longer one could not be folded.
        if all(len(token) < _MAX_LINE for token in tokens) and (
            len(name) + 2 + len(tokens[0]) <= _MAX_LINE
        ):
            return _fold(name, tokens)
    return _fold(name, _encoded_words(value, _first_word_bytes(len(name) + 2)))


def _raw_header(name: str, value: str) -> str:
    """A structured ASCII header kept as written: only folded, at existing spaces."""
    return _fold(name, value.split(" "))


def envelope_address(address: str) -> str:
    """``address`` with an IDNA-encoded domain; the local part is left alone (SMTPUTF8)."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidMessageError(f"not an address: {address!r}")
    if domain.isascii():
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError as exc:
        raise InvalidMessageError(f"domain cannot be IDNA-encoded: {exc}") from None


def display_address(name: str | None, address: str) -> str:
    """``formataddr((name, address))``, as the ESPs' JSON and form APIs take a recipient; a
    plain ASCII name (most of a newsletter's) is put in directly, at a fifth of its cost, which
    a batch call pays per recipient."""
    if name and name.isascii() and address.isascii() and not _NEEDS_QUOTES.search(name):
        return f"{name} <{address}>"
    return formataddr((name or "", address))


# The characters for which ``formataddr`` quotes or escapes a name (email.utils.specialsre).
_NEEDS_QUOTES = re.compile(r'[][\\()<>@,:;".]')


def _address_header(name: str, display: str | None, address: str) -> str:
    addr = f"<{envelope_address(address)}>"
    if not display:
        return _fold(name, [addr])
    if "=?" not in display and len(name) + len(display) + 4 < _MAX_LINE:
        if _ATOMS.match(display):
            return _fold(name, [display, addr])
        if _PRINTABLE.match(display):
            quoted = display.replace("\\", "\\\\").replace('"', '\\"')
            return _fold(name, [f'"{quoted}"', addr])
    return _fold(name, [*_encoded_words(display, _first_word_bytes(len(name) + 2)), addr])


@functools.lru_cache(maxsize=256)
def _from_header(sender: str) -> str:
    # Senders repeat across a whole campaign: parse and encode each once.
    display, address = parseaddr(sender)
    if "@" not in address:
        raise InvalidMessageError(f"sender is not an address: {sender!r}", "sender")
    return _address_header("From", display, address)


def _addresses_header(name: str, value: str) -> str:
    if value.isascii():
        return _raw_header(name, value)
    parts = [_address_header(name, d, a).split(":", 1)[1] for d, a in getaddresses([value])]
    return name + ":" + ",".join(parts)


def _body(text: str) -> tuple[str, bytes]:
    """Canonical CRLF text as quoted-printable, or base64 when mostly non-ASCII (smaller)."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    high = len(data) - len(data.translate(None, _HIGH_BYTES))
    if high * 3 > len(data):
        # QP spends 3 bytes per non-ASCII byte, base64 4/3: past a third, base64 wins.
        encoded = base64.encodebytes(data.replace(b"\n", b"\r\n"))
        return "base64", encoded.replace(b"\n", b"\r\n")
    # b2a_qp caps lines at 76 and encodes trailing whitespace; without '\r' in its input it
    # writes bare '\n' breaks, which become CRLF here.
    encoded = binascii.b2a_qp(data, quotetabs=False, istext=True, header=False)
    return "quoted-printable", encoded.replace(b"\n", b"\r\n")


def _part(content_type: str, text: str) -> bytes:
    encoding, body = _body(text)
    head = (
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    )
    return head.encode("ascii") + body


def _check_extra(name: str, value: str) -> None:
    if not _FIELD_NAME.match(name):
        raise InvalidMessageError(f"invalid header name {name!r}", "headers")
    lowered = name.lower()
    if lowered in _OWN_HEADERS or lowered.startswith("content-"):
        raise InvalidMessageError(f"header {name} is written by the provider", "headers")
    check_header_value(value, f"headers.{name}")


def build_mime(email: RenderedEmail, *, extra_headers: Mapping[str, str] | None = None) -> bytes:
    """Serialise ``email`` as a multipart/alternative message with CRLF line endings.

    Bodies are normalised to CRLF line breaks (the canonical form of text, RFC 2045 §6.8).
    Raises :class:`~postroom.errors.HeaderInjectionError` for a header value carrying a line
    break and :class:`~postroom.errors.InvalidMessageError` for anything else unrepresentable.
    """
    # Last line of defence: the renderer checked these already, but a provider must never
    # trust that a value reaching a header is safe.
    check_header_value(email.sender, "sender")
    check_header_value(email.recipient, "recipient")
    if email.recipient_name is not None:
        check_header_value(email.recipient_name, "recipient_name")
    check_header_value(email.subject, "subject")
    check_header_value(email.date, "date")
    check_header_value(email.message_id, "message_id")
    extra = [*email.headers.items(), *(extra_headers or {}).items()]
    for name, value in extra:
        _check_extra(name, value)
    boundary = "=_" + secrets.token_hex(16)  # '=_' never occurs in QP or base64 output
    try:
        lines = [
            _from_header(email.sender),
            _address_header("To", email.recipient_name, email.recipient),
            _text_header("Subject", email.subject),
            _raw_header("Date", email.date),
            _raw_header("Message-ID", email.message_id),
            "MIME-Version: 1.0",
        ]
        for name, value in extra:
            if name.lower() in _ADDRESS_HEADERS:
                lines.append(_addresses_header(name, value))
            elif value.isascii():
                lines.append(_raw_header(name, value))
            else:
                lines.append(_text_header(name, value))
        lines.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"')
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        text_part = _part("text/plain", email.text)
        html_part = _part("text/html", email.html)
    except UnicodeEncodeError as exc:
        raise InvalidMessageError(f"text is not valid Unicode: {exc.reason}") from None
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    return b"".join(
        (
            head,
            delimiter[2:],
            text_part,
            delimiter,
            html_part,
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
    )
