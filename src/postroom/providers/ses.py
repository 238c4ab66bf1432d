"""Amazon SES v2 through aiobotocore: one ``SendEmail`` per message, sent concurrently.

The content is our own MIME (``mime.build_mime``: the same bytes the SMTP provider sends, with
List-Unsubscribe, Message-ID and X-Postroom-* headers), so SES adds nothing but its DKIM
signature. ``SendBulkEmail`` is not used: it renders one SES template for every destination,
and our messages arrive rendered per recipient. ``EmailTags`` carry our send id and email
type into every SES event (``mail.tags``); tag values allow only letters, digits, ``_`` and
``-``, so the Message-ID is not a tag (it is ``<send id@sender domain>`` and in the headers).
botocore's own retries are off: a retry after a read timeout could send twice, and the worker
owns retrying. A throttling answer's wait holds every later ``SendEmail`` of the provider, as a
429 does the HTTP adapters' (``http.RateLimitPause``): the calls of one hand-over are concurrent.

=============================================  ============================================
error                                          result
=============================================  ============================================
``TooManyRequestsException`` (429),            RateLimitedError (1 s, or ``Retry-After``)
``Throttling`` "Maximum sending rate exceeded"
``Throttling`` "Daily message quota exceeded"  RateLimitedError (600 s: the rolling 24 h
                                               quota frees slowly)
``LimitExceededException``                     RateLimitedError (60 s; AWS calls it a
                                               resource-count limit: not the message's fault)
``MessageRejected``, ``BadRequestException``,  PermanentProviderError
other 4xx
``MailFromDomainNotVerifiedException``,        PermanentProviderError, logged at ERROR
``AccountSuspendedException``,                 (account or configuration)
``SendingPausedException``, ``NotFoundException``
403 / signature / token / access errors,       PermanentProviderError, logged at ERROR
missing credentials                            (credentials)
5xx, ``InternalFailure``, ``ServiceUnavailable``  TransientProviderError
connection refused, DNS, connect timeout       TransientProviderError
read timeout, connection closed mid-answer     AmbiguousProviderError
=============================================  ============================================
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import os
import re
from collections.abc import Sequence
from email.utils import parseaddr
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from postroom.config import Settings
from postroom.errors import (
    AmbiguousProviderError,
    InvalidMessageError,
    PermanentProviderError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    TransientProviderError,
)
from postroom.messages import RenderedEmail
from postroom.providers.base import SendResult
from postroom.providers.http import RateLimitPause, required, retry_after_seconds
from postroom.providers.mime import build_mime, envelope_address

__all__ = ["MAX_DESTINATIONS", "SesProvider", "classify_client_error", "email_tags"]

MAX_DESTINATIONS = 50
"""SES's per-call destination cap; the worker hands us at most this many messages at once."""
SENDING_RATE_WAIT = 1.0
DAILY_QUOTA_WAIT = 600.0  # AWS: "wait for an interval of up to 10 minutes, and then retry"
LIMIT_EXCEEDED_WAIT = 60.0
_log = logging.getLogger("postroom.providers.ses")
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_CONFIG_CODES = frozenset(
    {
        "MailFromDomainNotVerifiedException",
        "AccountSuspendedException",
        "SendingPausedException",
        "NotFoundException",
    }
)
_AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredTokenException",
        "MissingAuthenticationTokenException",
    }
)


def classify_client_error(exc: ClientError) -> ProviderError:
    """Map an SES error answer to an error class (see the module table)."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", ""))
    meta = exc.response.get("ResponseMetadata", {})
    status = int(meta.get("HTTPStatusCode", 0) or 0)
    headers = {str(k).title(): str(v) for k, v in meta.get("HTTPHeaders", {}).items()}
    text = f"ses {code or status}: {message}"[:500]
    if code == "TooManyRequestsException" or code.startswith("Throttl") or status == 429:
        wait = DAILY_QUOTA_WAIT if "daily" in message.lower() else SENDING_RATE_WAIT
        return RateLimitedError(
            text, retry_after=retry_after_seconds(headers, default=wait), code=code
        )
    if code == "LimitExceededException":
        return RateLimitedError(text, retry_after=LIMIT_EXCEEDED_WAIT, code=code)
    if code in _AUTH_CODES or status == 403:
        _log.error("ses refused our credentials (%s, HTTP %d): %s", code, status, message)
        return PermanentProviderError(text, code=code)
    if code in _CONFIG_CODES:
        _log.error("ses refused to send for the account or configuration (%s): %s", code, message)
        return PermanentProviderError(text, code=code)
    if status >= 500 or code in ("InternalFailure", "ServiceUnavailable", "InternalServerError"):
        return TransientProviderError(text, code=code)
    if 400 <= status < 500 or code:
        return PermanentProviderError(text, code=code)
    return TransientProviderError(text, code=code or None)


def classify_transport_error(exc: BotoCoreError) -> ProviderError:
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        return TransientProviderError(f"ses: request not sent: {detail}")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        _log.error("ses: no usable AWS credentials: %s", type(exc).__name__)
        return PermanentProviderError(f"ses: {detail}", code="NoCredentials")
    if isinstance(exc, ReadTimeoutError | ConnectionClosedError):
        return AmbiguousProviderError(f"ses: answer lost after the request: {detail}")
    # Any other client-side failure may have happened on either side of the request.
    return AmbiguousProviderError(f"ses: {detail}")


def email_tags(email: RenderedEmail) -> list[dict[str, str]]:
    """Our ids as SES tags; a send id outside the tag alphabet goes as base32 (decodable)."""
    if _TAG_UNSAFE.search(email.send_id):
        encoded = base64.b32encode(email.send_id.encode()).decode("ascii").rstrip("=")
        tags = [{"Name": "postroom_send_id_b32", "Value": encoded[:256]}]
    else:
        tags = [{"Name": "postroom_send_id", "Value": email.send_id[:256]}]
    if email.email_type:
        tags.append(
            {"Name": "postroom_email_type", "Value": _TAG_UNSAFE.sub("-", email.email_type)[:256]}
        )
    return tags


@functools.cache
def _botocore_session() -> Any:
    # One session per process: it caches the parsed service model (~0.3 s to load).
    return get_session()


class SesProvider:
    name = "ses"
    max_batch_size = MAX_DESTINATIONS
    calls_per_message = True  # SendEmail per message: request-rate limits count each

    def __init__(
        self,
        region: str,
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        endpoint_url: str | None = None,
        configuration_set: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self.configuration_set = configuration_set
        self._credentials = {
            "aws_access_key_id": access_key_id,
            "aws_secret_access_key": secret_access_key,
            "aws_session_token": session_token,
        }
        self._config = Config(
            retries={"total_max_attempts": 1},
            connect_timeout=connect_timeout,
            read_timeout=timeout,
            max_pool_connections=MAX_DESTINATIONS,
        )
        self._client: Any = None
        # After a throttling answer no SendEmail goes out until its wait has passed: one slot
        # per pooled connection, so none that passed the check waits in botocore's pool.
        self.pause = RateLimitPause(MAX_DESTINATIONS, "ses")
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> SesProvider:
        region = (
            settings.ses_region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
        )
        secret = settings.ses_secret_access_key
        token = settings.ses_session_token
        if settings.ses_access_key_id and not secret:
            required(secret, "POSTROOM_SES_SECRET_ACCESS_KEY", cls.name)
        return cls(
            required(region, "POSTROOM_SES_REGION", cls.name),
            access_key_id=settings.ses_access_key_id,
            secret_access_key=secret.get_secret_value() if secret else None,
            session_token=token.get_secret_value() if token else None,
            endpoint_url=settings.ses_base_url,
            configuration_set=settings.ses_configuration_set,
            timeout=settings.esp_timeout,
            connect_timeout=settings.esp_connect_timeout,
        )

    async def _ses(self) -> Any:
        async with self._lock:
            if self._client is None:
                session = _botocore_session()
                credentials = {k: v for k, v in self._credentials.items() if v}
                self._client = await self._stack.enter_async_context(
                    session.create_client(
                        "sesv2",
                        region_name=self.region,
                        endpoint_url=self.endpoint_url,
                        config=self._config,
                        **credentials,
                    )
                )
            return self._client

    async def send(self, batch: Sequence[RenderedEmail]) -> list[SendResult]:
        if not batch:
            return []
        try:
            client = await self._ses()
        except BotoCoreError as exc:  # no region, unreadable credentials file …
            _log.error("ses client cannot be created: %s", exc)
            error = PermanentProviderError(f"ses: client cannot be created: {exc}")
            return [SendResult(email.send_id, error=error) for email in batch]
        return list(await asyncio.gather(*(self._send_one(client, email) for email in batch)))

    def request(self, email: RenderedEmail) -> dict[str, Any]:
        """The ``SendEmail`` parameters for one message."""
        params: dict[str, Any] = {
            "FromEmailAddress": envelope_address(parseaddr(email.sender)[1]),
            "Destination": {"ToAddresses": [envelope_address(email.recipient)]},
            "Content": {"Raw": {"Data": build_mime(email)}},
            "EmailTags": email_tags(email),
        }
        if self.configuration_set:
            params["ConfigurationSetName"] = self.configuration_set
        return params

    async def _send_one(self, client: Any, email: RenderedEmail) -> SendResult:
        try:
            params = self.request(email)
        except InvalidMessageError as exc:
            error = PermanentProviderError(f"ses: message cannot be serialised: {exc}")
            return SendResult(email.send_id, error=error)
        try:
            async with self.pause.slot():
                return await self._call(client, email, params)
        except ProviderUnavailableError as exc:  # a long pause ahead: handed back, not sent
            return SendResult(email.send_id, error=exc)

    async def _call(self, client: Any, email: RenderedEmail, params: dict[str, Any]) -> SendResult:
        try:
            answer = await client.send_email(**params)
        except ClientError as exc:
            refused = classify_client_error(exc)
            if isinstance(refused, RateLimitedError):
                self.pause.pause(refused.retry_after)
            return SendResult(email.send_id, error=refused)
        except BotoCoreError as exc:
            return SendResult(email.send_id, error=classify_transport_error(exc))
        return SendResult(email.send_id, provider_message_id=str(answer["MessageId"]))

    async def close(self) -> None:
        async with self._lock:
            self._client = None
            await self._stack.aclose()
            self._stack = contextlib.AsyncExitStack()
