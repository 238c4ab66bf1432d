"""Signed unsubscribe tokens: who asked to stop which email type, from which send.

Tokens never expire: CAN-SPAM requires a link to keep working, and a stale one can only
unsubscribe the address it was minted for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, URLSafeSerializer

from postroom.errors import ConfigurationError, InvalidMessageError

_SALT = "postroom-unsubscribe"


@dataclass(frozen=True, slots=True)
class UnsubscribeClaim:
    """What a verified token says."""

    recipient: str
    email_type: str
    send_id: str


class UnsubscribeTokens:
    """Mints and verifies tokens with one secret key."""

    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ConfigurationError("secret_key is empty; set POSTROOM_SECRET_KEY")
        self._serializer = URLSafeSerializer(secret_key, salt=_SALT)

    def make_token(self, recipient: str, email_type: str, send_id: str) -> str:
        # Single-letter keys keep the token, and so the List-Unsubscribe header, short.
        token = self._serializer.dumps({"r": recipient, "t": email_type, "s": send_id})
        return str(token)

    def read_token(self, token: str) -> UnsubscribeClaim:
        """The claim in ``token``; raise InvalidMessageError if it is forged or malformed."""
        try:
            payload: Any = self._serializer.loads(token)
        except BadData:
            raise InvalidMessageError("invalid or tampered unsubscribe token", "token") from None
        if not isinstance(payload, dict):
            raise InvalidMessageError("malformed unsubscribe token", "token")
        fields = (payload.get("r"), payload.get("t"), payload.get("s"))
        if not all(isinstance(value, str) and value for value in fields):
            raise InvalidMessageError("malformed unsubscribe token", "token")
        recipient, email_type, send_id = (str(value) for value in fields)
        return UnsubscribeClaim(recipient=recipient, email_type=email_type, send_id=send_id)


def make_token(recipient: str, email_type: str, send_id: str, *, secret_key: str) -> str:
    """One-off form of :meth:`UnsubscribeTokens.make_token`."""
    return UnsubscribeTokens(secret_key).make_token(recipient, email_type, send_id)


def read_token(token: str, *, secret_key: str) -> UnsubscribeClaim:
    """One-off form of :meth:`UnsubscribeTokens.read_token`."""
    return UnsubscribeTokens(secret_key).read_token(token)
