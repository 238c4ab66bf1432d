"""The provider contract (``providers/base.py``), run against every ESP adapter and its fake:
one result per message in input order, a failure of one message returned not raised and not
spilling onto the others, an empty batch, ``close`` idempotent and the provider usable after,
and a 429's ``Retry-After`` obeyed by a caller that waits it out."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from tests.esp_fakes.base import Fault
from tests.esp_fakes.mailgun import FakeMailgun
from tests.esp_fakes.messages import newsletter, sign_in
from tests.esp_fakes.postmark import FakePostmark
from tests.esp_fakes.sendgrid import FakeSendGrid
from tests.esp_fakes.ses import CREDENTIALS, REGION, moto_ses

from postroom.errors import PermanentProviderError, RateLimitedError
from postroom.messages import RenderedEmail
from postroom.providers.mailgun import MailgunProvider
from postroom.providers.postmark import PostmarkProvider
from postroom.providers.sendgrid import SendGridProvider
from postroom.providers.ses import SesProvider

SENDER = "jane@news.example"


@dataclass
class Subject:
    provider: Any
    spoil: Callable[[RenderedEmail], RenderedEmail]  # make one message fail at the ESP
    limit: int
    fake: Any = None


@contextmanager
def _moto() -> Iterator[str]:
    with moto_ses(SENDER) as server:
        yield server.endpoint_url


@pytest.fixture(params=["sendgrid", "mailgun", "postmark", "ses"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    async with AsyncExitStack() as stack:
        if request.param == "ses":
            url = stack.enter_context(_moto())
            ses = SesProvider(
                REGION,
                access_key_id=CREDENTIALS["aws_access_key_id"],
                secret_access_key=CREDENTIALS["aws_secret_access_key"],
                endpoint_url=url,
            )
            stack.push_async_callback(ses.close)
            # moto refuses a sender that is not verified, as SES does.
            yield Subject(ses, lambda e: dataclasses.replace(e, sender="x@unverified.example"), 50)
            return
        if request.param == "sendgrid":
            sendgrid = await stack.enter_async_context(FakeSendGrid())
            provider: Any = SendGridProvider(sendgrid.credential, base_url=sendgrid.base_url)
            rejected, limit, fake = sendgrid.rejected, 1000, sendgrid
        elif request.param == "mailgun":
            mailgun = await stack.enter_async_context(FakeMailgun(domain="mg.news.example"))
            provider = MailgunProvider(
                mailgun.credential, "mg.news.example", base_url=mailgun.base_url
            )
            rejected, limit, fake = mailgun.rejected, 1000, mailgun
        else:
            postmark = await stack.enter_async_context(FakePostmark())
            provider = PostmarkProvider(postmark.credential, base_url=postmark.base_url)
            rejected, limit, fake = postmark.inactive, 500, postmark
        stack.push_async_callback(provider.close)

        def spoil(email: RenderedEmail) -> RenderedEmail:
            rejected.add(email.recipient.lower())
            return email

        yield Subject(provider, spoil, limit, fake)


async def test_one_result_per_message_in_input_order(subject: Subject) -> None:
    batch = [sign_in("z@example.com", "s9"), *newsletter(4), sign_in("a@example.com", "s1")]
    results = await subject.provider.send(batch)
    assert [r.send_id for r in results] == [e.send_id for e in batch]
    assert all(r.ok and r.provider_message_id for r in results)


async def test_a_failing_message_is_returned_and_spares_the_others(subject: Subject) -> None:
    batch = newsletter(5)
    batch[2] = subject.spoil(batch[2])
    results = await subject.provider.send(batch)
    assert [r.ok for r in results] == [True, True, False, True, True]
    assert isinstance(results[2].error, PermanentProviderError)


async def test_an_empty_batch_gives_no_results(subject: Subject) -> None:
    assert await subject.provider.send([]) == []


async def test_close_is_idempotent_and_the_provider_reopens(subject: Subject) -> None:
    await subject.provider.close()
    await subject.provider.close()
    [result] = await subject.provider.send([sign_in()])
    assert result.ok


def test_max_batch_size_is_the_esps_per_call_limit(subject: Subject) -> None:
    assert subject.provider.max_batch_size == subject.limit


# moto cannot answer 429; SES throttling is covered in test_esp_ses.py.
@pytest.mark.parametrize("subject", ["sendgrid", "mailgun", "postmark"], indirect=True)
async def test_a_caller_that_waits_retry_after_commits_no_violation(subject: Subject) -> None:
    subject.fake.fail_next(Fault.answer(429, b"{}", Retry_After="0.2"))
    [first] = await subject.provider.send([sign_in()])
    assert isinstance(first.error, RateLimitedError)
    await asyncio.sleep(first.error.retry_after)
    [second] = await subject.provider.send([sign_in()])
    assert second.ok
    assert subject.fake.retry_after_violations == 0
    # …and one that does not wait is held by the adapter until the Retry-After has passed.
    subject.fake.fail_next(Fault.answer(429, b"{}", Retry_After="0.3"))
    await subject.provider.send([sign_in()])
    started = time.monotonic()
    [third] = await subject.provider.send([sign_in()])
    assert third.ok and time.monotonic() - started >= 0.25
    assert subject.fake.retry_after_violations == 0
