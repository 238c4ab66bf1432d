"""POSTROOM_PROVIDER=sendgrid|mailgun|ses|postmark: built from settings, or one line naming
the missing variable."""

from __future__ import annotations

import pytest

from postroom.config import Settings
from postroom.errors import ConfigurationError
from postroom.providers.mailgun import MailgunProvider
from postroom.providers.postmark import PostmarkProvider
from postroom.providers.sendgrid import SendGridProvider
from postroom.providers.ses import SesProvider
from postroom.wiring import build_provider


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        ({"provider": "sendgrid"}, "POSTROOM_SENDGRID_API_KEY"),
        ({"provider": "mailgun", "mailgun_domain": "mg.example"}, "POSTROOM_MAILGUN_API_KEY"),
        ({"provider": "mailgun", "mailgun_api_key": "key"}, "POSTROOM_MAILGUN_DOMAIN"),
        ({"provider": "postmark"}, "POSTROOM_POSTMARK_SERVER_TOKEN"),
        ({"provider": "ses"}, "POSTROOM_SES_REGION"),
        (
            {"provider": "ses", "ses_region": "eu-west-1", "ses_access_key_id": "AKIA"},
            "POSTROOM_SES_SECRET_ACCESS_KEY",
        ),
    ],
)
def test_a_missing_credential_is_one_line_naming_the_variable(
    settings: dict[str, str], variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError) as raised:
        build_provider(Settings(**settings))  # type: ignore[arg-type]
    message = str(raised.value)
    assert variable in message and "\n" not in message


async def test_each_provider_is_built_with_its_base_url_override() -> None:
    sendgrid = build_provider(
        Settings(provider="sendgrid", sendgrid_api_key="SG.k", sendgrid_base_url="http://fake:1")  # type: ignore[arg-type]
    )
    assert isinstance(sendgrid, SendGridProvider)
    assert sendgrid._url == "http://fake:1/v3/mail/send"

    mailgun = build_provider(
        Settings(
            provider="mailgun",
            mailgun_api_key="k",
            mailgun_domain="mg.example",
            mailgun_region="eu",
        )  # type: ignore[arg-type]
    )
    assert isinstance(mailgun, MailgunProvider)
    assert mailgun._url == "https://api.eu.mailgun.net/v3/mg.example/messages"
    override = build_provider(
        Settings(
            provider="mailgun",
            mailgun_api_key="k",
            mailgun_domain="mg.example",
            mailgun_base_url="http://fake:2",
        )  # type: ignore[arg-type]
    )
    assert isinstance(override, MailgunProvider)
    assert override._url == "http://fake:2/v3/mg.example/messages"

    postmark = build_provider(
        Settings(
            provider="postmark", postmark_server_token="t", postmark_message_stream="broadcast"
        )  # type: ignore[arg-type]
    )
    assert isinstance(postmark, PostmarkProvider) and postmark.message_stream == "broadcast"

    ses = build_provider(
        Settings(
            provider="ses",
            ses_region="eu-west-1",
            ses_base_url="http://fake:3",
            ses_configuration_set="cs",
        )  # type: ignore[arg-type]
    )
    assert isinstance(ses, SesProvider)
    assert (ses.region, ses.endpoint_url, ses.configuration_set) == (
        "eu-west-1",
        "http://fake:3",
        "cs",
    )
    for provider in (sendgrid, mailgun, override, postmark, ses):
        await provider.close()


def test_secrets_do_not_show_in_the_settings_repr() -> None:
    settings = Settings(provider="sendgrid", sendgrid_api_key="SG.very-secret")  # type: ignore[arg-type]
    assert "SG.very-secret" not in repr(settings)
