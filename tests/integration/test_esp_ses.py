"""SesProvider against moto in server mode (what arrives) and against a fake SES endpoint that
answers SES's error shapes (one test per row of the table in ``providers/ses.py``; transport
rows: ``test_esp_http_transport.py``)."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from tests.esp_fakes.messages import newsletter, sign_in
from tests.esp_fakes.ses import CREDENTIALS, REGION, FakeSesErrors, MotoSes, moto_ses

from postroom.errors import PermanentProviderError, RateLimitedError, TransientProviderError
from postroom.providers.ses import SesProvider, email_tags


def _provider(endpoint: str, **options: str) -> SesProvider:
    return SesProvider(
        REGION,
        access_key_id=CREDENTIALS["aws_access_key_id"],
        secret_access_key=CREDENTIALS["aws_secret_access_key"],
        endpoint_url=endpoint,
        timeout=2.0,
        **options,  # type: ignore[arg-type]
    )


def _lines(text: str) -> list[str]:
    # MIME transport turns line ends into CRLF; the content is otherwise unchanged.
    return text.replace("\r\n", "\n").rstrip("\n").split("\n")


@pytest.fixture
def moto() -> Iterator[MotoSes]:
    with moto_ses("jane@news.example") as server:
        yield server


async def test_each_message_arrives_through_sendemail_with_its_own_headers(moto: MotoSes) -> None:
    batch = [*newsletter(3), sign_in()]
    ses = _provider(moto.endpoint_url)
    try:
        results = await ses.send(batch)
    finally:
        await ses.close()

    assert [r.send_id for r in results] == [e.send_id for e in batch]
    assert all(r.ok for r in results), results
    sent = moto.sent_raw()
    assert sorted(r.provider_message_id for r in results) == sorted(m.id for m in sent)
    by_id = {m.id: m for m in sent}
    for rendered, result in zip(batch, results, strict=True):
        raw = by_id[result.provider_message_id]
        assert raw.source == "jane@news.example"
        message = email.message_from_string(raw.raw_data, policy=email.policy.default)
        assert message["Subject"] == rendered.subject
        assert message["To"] == f"{rendered.recipient_name} <{rendered.recipient}>"
        assert message["Message-ID"] == rendered.message_id
        assert message["X-Postroom-Send-Id"] == rendered.send_id
        assert message.get("List-Unsubscribe") == rendered.headers.get("List-Unsubscribe")
        html, text = message.get_body(("html",)), message.get_body(("plain",))
        assert html is not None and _lines(html.get_content()) == _lines(rendered.html)
        assert text is not None and _lines(text.get_content()) == _lines(rendered.text)


async def test_an_unverified_sender_is_refused_permanently(moto: MotoSes) -> None:
    ses = _provider(moto.endpoint_url)
    stranger = dataclasses.replace(newsletter(1)[0], sender="Eve <eve@elsewhere.example>")
    try:
        [result] = await ses.send([stranger])
    finally:
        await ses.close()
    assert isinstance(result.error, PermanentProviderError)
    assert result.error.code == "MessageRejected"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSesErrors]:
    async with FakeSesErrors() as server:
        yield server


async def _send_against(fake: FakeSesErrors, **options: str) -> list:  # type: ignore[type-arg]
    ses = _provider(fake.base_url, **options)
    try:
        return await ses.send([sign_in()])
    finally:
        await ses.close()


async def test_tags_and_configuration_set_travel_with_the_request(fake: FakeSesErrors) -> None:
    [result] = await _send_against(fake, configuration_set="postroom-events")
    assert result.ok
    [call] = fake.calls
    assert call["ConfigurationSetName"] == "postroom-events"
    assert call["EmailTags"] == [
        {"Name": "postroom_send_id", "Value": "s00001"},
        {"Name": "postroom_email_type", "Value": "sign_in_link"},
    ]
    assert call["Destination"] == {"ToAddresses": ["ada@example.com"]}


def test_a_send_id_outside_the_tag_alphabet_is_base32_encoded() -> None:
    odd = dataclasses.replace(sign_in(), send_id="key.with+odd=chars")
    [tag, _type] = email_tags(odd)
    assert tag["Name"] == "postroom_send_id_b32"
    padded = tag["Value"] + "=" * (-len(tag["Value"]) % 8)
    assert base64.b32decode(padded).decode() == "key.with+odd=chars"


@pytest.mark.parametrize(
    ("status", "code", "message", "wait"),
    [
        (429, "TooManyRequestsException", "Too many requests", 1.0),
        (400, "Throttling", "Maximum sending rate exceeded.", 1.0),
        (400, "Throttling", "Daily message quota exceeded.", 600.0),
        (400, "LimitExceededException", "Too many instances", 60.0),
    ],
)
async def test_throttling_is_rate_limited(
    fake: FakeSesErrors, status: int, code: str, message: str, wait: float
) -> None:
    fake.fail_with(status, code, message)
    [result] = await _send_against(fake)
    assert isinstance(result.error, RateLimitedError)
    assert result.error.retry_after == wait
    assert result.error.code == code


async def test_throttling_honours_retry_after(fake: FakeSesErrors) -> None:
    fake.fail_with(429, "TooManyRequestsException", "slow down", **{"Retry-After": "5"})
    [result] = await _send_against(fake)
    assert isinstance(result.error, RateLimitedError) and result.error.retry_after == 5.0


@pytest.mark.parametrize("code", ["MessageRejected", "BadRequestException"])
async def test_rejected_requests_are_permanent(fake: FakeSesErrors, code: str) -> None:
    fake.fail_with(400, code, "Email address is not verified.")
    [result] = await _send_against(fake)
    assert isinstance(result.error, PermanentProviderError) and not result.error.suppress
    assert result.error.code == code


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "MailFromDomainNotVerifiedException"),
        (400, "AccountSuspendedException"),
        (400, "SendingPausedException"),
        (404, "NotFoundException"),
        (403, "AccessDeniedException"),
        (400, "UnrecognizedClientException"),
        (403, "SignatureDoesNotMatch"),
    ],
)
async def test_account_and_credential_errors_are_permanent_and_alert(
    fake: FakeSesErrors, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail_with(status, code, "refused")
    with caplog.at_level(logging.ERROR):
        [result] = await _send_against(fake)
    assert isinstance(result.error, PermanentProviderError)
    assert any(r.levelno >= logging.ERROR and code in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "InternalFailure"), (503, "ServiceUnavailable"), (502, "BadGateway")],
)
async def test_server_errors_are_transient(fake: FakeSesErrors, status: int, code: str) -> None:
    fake.fail_with(status, code, "try again")
    [result] = await _send_against(fake)
    assert type(result.error) is TransientProviderError


def test_missing_region_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from postroom.config import Settings
    from postroom.errors import ConfigurationError

    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(ConfigurationError, match="POSTROOM_SES_REGION"):
        SesProvider.from_settings(Settings(provider="ses"))
