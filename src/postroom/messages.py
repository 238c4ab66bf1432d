"""The email event: the versioned JSON document producers put on the queue (design §3).

Validation here is the single gate for the API, the CLI and documents published straight onto a
broker. Unknown fields are kept so that newer producers do not break older workers.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.header import decode_header
from enum import StrEnum
from typing import Any

import orjson
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from postroom.errors import HeaderInjectionError, InvalidMessageError

CONTRACT_VERSION = 1


class Priority(StrEnum):
    """Queue classes, most urgent first. Claim order follows this order."""

    CRITICAL = "critical"
    TRANSACTIONAL = "transactional"
    MARKETING = "marketing"

    @property
    def rank(self) -> int:
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.TRANSACTIONAL: 1, Priority.MARKETING: 2}

# Characters that end a header line in some parser: CR, LF, NUL, vertical tab, form feed, NEL and
# the Unicode line/paragraph separators (str.splitlines honours all of these, and so do some MUAs).
_LINE_BREAKS = re.compile("[\r\n\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_PERCENT_BREAK = re.compile(r"%(0[aAdD]|00)")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def check_header_value(value: str, field: str) -> str:
    """Refuse a value that would reach a header if it carries a line break in any encoding.

    Covers raw breaks, percent-encoded ones (``%0d%0a``) and RFC 2047 encoded words that
    decode to a break (``=?utf-8?q?=0D=0A?=``). Returns the value unchanged when it is safe.
    """
    if _LINE_BREAKS.search(value):
        raise HeaderInjectionError("line break or NUL not allowed in a header value", field)
    if _PERCENT_BREAK.search(value) and _LINE_BREAKS.search(urllib.parse.unquote(value)):
        raise HeaderInjectionError("percent-encoded line break in a header value", field)
    if _ENCODED_WORD.search(value):
        for chunk, charset in decode_header(value):
            charset = charset or "latin-1"
            text = chunk if isinstance(chunk, str) else chunk.decode(charset, "replace")
            if _LINE_BREAKS.search(text):
                raise HeaderInjectionError("encoded line break in a header value", field)
    return value


# Plain ASCII addresses, the great majority, are checked here without email_validator, which
# costs ~100 µs an address (a tenth of a send's CPU budget): a dot-atom local part and an LDH
# domain with an alphabetic top-level label. For these email_validator's answer is the
# address with its domain lower-cased (a property test holds the two to that). Anything
# else (quoted or non-ASCII parts, IDNA labels, special-use domains) goes to email_validator.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")
_SPECIAL_USE_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})


def normalized_address(value: str) -> str:
    """``value`` as a valid, normalized address; ValueError with the reason when invalid."""
    plain = _PLAIN_ADDRESS.fullmatch(value)
    if plain is not None:
        local, domain = plain.group(1), plain.group(2).lower()
        if (
            len(local) <= 64
            and len(value) <= 254
            and "--" not in domain
            and domain.rpartition(".")[2] not in _SPECIAL_USE_TLDS
        ):
            return f"{local}@{domain}"
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return str(checked.normalized)


class EmailEvent(BaseModel):
    """One email to one recipient, as a producer describes it."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=False, frozen=True)

    email_type: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    recipient_email: str = Field(max_length=320)
    recipient_name: str | None = Field(default=None, max_length=200)
    template_data: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    priority: Priority | None = None

    @field_validator("recipient_email")
    @classmethod
    def _valid_address(cls, value: str) -> str:
        check_header_value(value, "recipient_email")
        return normalized_address(value)

    @field_validator("recipient_name", "idempotency_key")
    @classmethod
    def _header_safe(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            check_header_value(value, info.field_name)
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_header_safe(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Metadata travels to ESPs as custom args / X- headers: keys and string values must be
        # as safe as any header.
        for key, item in value.items():
            check_header_value(str(key), f"metadata.{key}")
            if isinstance(item, str):
                check_header_value(item, f"metadata.{key}")
        return value

    @property
    def recipient_key(self) -> str:
        """The recipient as the ledger keys it: case-insensitive address."""
        return self.recipient_email.lower()

    def effective_idempotency_key(self) -> str:
        """The explicit key, or one derived from email_type + metadata + recipient."""
        if self.idempotency_key:
            return self.idempotency_key
        basis = orjson.dumps(
            [self.email_type, self.metadata, self.recipient_key], option=orjson.OPT_SORT_KEYS
        )
        return "derived:" + hashlib.sha256(basis).hexdigest()[:40]

    def content_hash(self) -> str:
        """Fingerprint of the document, used to tell a retry from a conflicting reuse of a key."""
        body = self.model_dump(mode="json", exclude={"idempotency_key"})
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def to_json(self) -> bytes:
        # Nothing is dropped, nulls included: unknown fields are kept (design §3), and the
        # document must hash the same when a worker reads it back from the queue.
        return orjson.dumps(self.model_dump(mode="json"))


def parse_event(raw: bytes | str | dict[str, Any], *, max_bytes: int) -> EmailEvent:
    """Parse and validate one document; raise :class:`InvalidMessageError` naming the field."""
    if isinstance(raw, dict):
        size = len(orjson.dumps(raw))
        data: Any = raw
    else:
        size = len(raw.encode() if isinstance(raw, str) else raw)
        if size > max_bytes:
            raise InvalidMessageError(f"document is {size} bytes; the limit is {max_bytes}")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidMessageError(f"not valid JSON: {exc}") from None
    if size > max_bytes:
        raise InvalidMessageError(f"document is {size} bytes; the limit is {max_bytes}")
    if not isinstance(data, dict):
        raise InvalidMessageError("the document must be a JSON object")
    try:
        return EmailEvent.model_validate(data)
    except ValidationError as exc:
        raise invalid_message_from(exc) from None


def invalid_message_from(exc: ValidationError) -> InvalidMessageError:
    """The first validation problem as an :class:`InvalidMessageError` (field + reason)."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, InvalidMessageError):
        return cause
    return InvalidMessageError(str(first["msg"]), field)


@dataclass(frozen=True, slots=True)
class MailingCopy:
    """Marks a message as one copy of a mailing whose copies differ only in named values.

    ``layout(placeholder)`` gives the mailing's subject, HTML, text and headers with each
    per-recipient value replaced by ``placeholder(name)``; ``values`` are this copy's. It is
    exact by construction (the copies were made by filling that layout), so an ESP with batch
    personalization can use it instead of searching each copy for its values. ``mailing`` is
    the same object for every copy of one layout.
    """

    mailing: object
    values: Mapping[str, str]
    layout: Callable[[Callable[[str], str]], tuple[str, str, str, Mapping[str, str]]]


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """One message for one recipient, ready to hand over.

    ``headers`` holds every header except the address and content headers the provider builds
    itself (From, To, Subject, Message-ID, Date, MIME-Version, Content-*); every value in it
    has already passed the header-injection check.
    """

    send_id: str
    message_id: str  # RFC 5322 Message-ID, with angle brackets
    sender: str  # formatted From, e.g. 'Jane <jane@example.com>'
    recipient: str
    recipient_name: str | None
    subject: str
    html: str
    text: str
    date: str  # RFC 5322 date string
    headers: Mapping[str, str] = field(default_factory=dict)
    email_type: str = ""
    category: str = "transactional"
    metadata: Mapping[str, str] = field(default_factory=dict)
    copy: MailingCopy | None = field(default=None, compare=False, repr=False)
    # The values the HTML template printed, as printed (escaped), in document order: an ESP
    # with batch personalization can send messages that differ only in these together.
    printed: tuple[str, ...] = field(default=(), compare=False, repr=False)
