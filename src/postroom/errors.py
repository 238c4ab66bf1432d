"""Every error Postroom raises, in one tree.

    PostroomError
    ├── ConfigurationError          settings that cannot work (bad URL, missing credential)
    ├── InvalidMessageError         an email event that breaks the contract (design §3)
    │   └── HeaderInjectionError    CR/LF/NUL or an encoded newline in a header value
    ├── UnknownEmailTypeError       email_type names no registered template
    ├── NotFoundError               a named campaign or list that does not exist
    ├── TemplateError               a template that cannot load or render
    ├── IdempotencyConflictError    same idempotency key, different document
    ├── QueueError                  the queue backend failed; the operation may be retried
    ├── ProviderError               an ESP or SMTP call failed; the subclass says what to do
    │   ├── TransientProviderError  try again soon (5xx, connection refused, timeout before send)
    │   │   ├── RateLimitedError    try again after ``retry_after`` seconds
    │   │   └── ProviderUnavailableError  not offered (circuit open, warm-up cap spent): wait
    │   ├── PermanentProviderError  never retry this message (validation, auth, 5.x.x)
    │   └── AmbiguousProviderError  the request may have been accepted (lost response)
    └── WebhookError                an ESP webhook request we will not act on
        ├── WebhookVerificationError  not proven to come from the ESP (``reason`` says why)
        └── WebhookPayloadError     authentic, but not a payload we understand

Transient, permanent and ambiguous are types rather than flags so that every seam maps its
low-level failures into this tree in one place and the worker decides by ``isinstance``.
"""

from __future__ import annotations


class PostroomError(Exception):
    """Base of every error raised by Postroom."""


class ConfigurationError(PostroomError):
    """Settings that cannot work; the message says which setting and what to do."""


class InvalidMessageError(PostroomError):
    """An email event that does not satisfy the message contract.

    ``field`` names the offending field (dotted path) when one can be named.
    """

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


class HeaderInjectionError(InvalidMessageError):
    """A value that would reach a header carries a line break or NUL in some encoding."""


class UnknownEmailTypeError(InvalidMessageError):
    """The ``email_type`` of an event names no registered template."""

    def __init__(self, email_type: str) -> None:
        super().__init__(f"unknown email_type {email_type!r}", field="email_type")
        self.email_type = email_type


class NotFoundError(PostroomError):
    """A named thing (a campaign, a list) that does not exist."""


class TemplateError(PostroomError):
    """A template that cannot be loaded, or that failed to render with the given data."""


class IdempotencyConflictError(PostroomError):
    """An idempotency key was reused with a different document."""

    def __init__(self, idempotency_key: str, existing_id: str) -> None:
        super().__init__(
            f"idempotency key {idempotency_key!r} was already used with a different document"
        )
        self.idempotency_key = idempotency_key
        self.existing_id = existing_id


class QueueError(PostroomError):
    """The queue backend could not complete an operation."""


class ProviderError(PostroomError):
    """An ESP or SMTP call failed. Raise or return one of the subclasses, never this one."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientProviderError(ProviderError):
    """Safe to retry: the provider did not accept the message."""


class RateLimitedError(TransientProviderError):
    """The provider asked us to slow down; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ProviderUnavailableError(TransientProviderError):
    """The message was not offered: the provider's circuit is open, or today's warm-up cap is
    spent, and no other provider is configured. It waits ``retry_after`` seconds without
    spending a retry attempt."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message, code="circuit_open")
        self.retry_after = retry_after


class PermanentProviderError(ProviderError):
    """Retrying cannot help. ``suppress`` says the address itself is bad (e.g. 5.1.1)."""

    def __init__(self, message: str, *, code: str | None = None, suppress: bool = False) -> None:
        super().__init__(message, code=code)
        self.suppress = suppress


class AmbiguousProviderError(ProviderError):
    """The request reached the provider but its answer was lost: it may have been sent."""


class WebhookError(PostroomError):
    """An ESP webhook request that Postroom will not act on."""


class WebhookVerificationError(WebhookError):
    """The request is not proven to come from the ESP. ``reason`` is a short class:
    ``signature``, ``unauthorized``, ``stale``, ``replay``, ``certificate``, ``topic``,
    ``too_large`` or ``malformed``. Messages never contain a secret."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class WebhookPayloadError(WebhookError):
    """The request verified but its body is not a payload this ESP's parser understands."""
