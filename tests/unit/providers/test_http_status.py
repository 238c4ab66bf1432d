"""The shared reading of rate-limit headers and status codes (``providers/http.py``)."""

from __future__ import annotations

import logging
from email.utils import formatdate

import pytest
from multidict import CIMultiDict

from postroom.errors import PermanentProviderError, RateLimitedError, TransientProviderError
from postroom.providers.http import (
    DEFAULT_RATE_LIMIT_WAIT,
    MAX_RATE_LIMIT_WAIT,
    HttpReply,
    classify_status,
    rate_limit_snapshot,
    retry_after_seconds,
)

NOW = 1_800_000_000.0


def test_retry_after_in_seconds() -> None:
    assert retry_after_seconds(CIMultiDict({"retry-after": "3"}), now=NOW) == 3.0


def test_retry_after_as_an_http_date() -> None:
    headers = CIMultiDict({"Retry-After": formatdate(NOW + 30, usegmt=True)})
    assert retry_after_seconds(headers, now=NOW) == 30.0


def test_sendgrid_reset_epoch_and_the_later_of_two_hints() -> None:
    assert retry_after_seconds(CIMultiDict({"X-RateLimit-Reset": str(NOW + 12)}), now=NOW) == 12
    both = CIMultiDict({"X-RateLimit-Reset": str(NOW + 12), "Retry-After": "20"})
    assert retry_after_seconds(both, now=NOW) == 20.0


def test_no_hint_or_garbage_gives_the_default_and_waits_are_bounded() -> None:
    assert retry_after_seconds(CIMultiDict(), now=NOW) == DEFAULT_RATE_LIMIT_WAIT
    assert (
        retry_after_seconds(CIMultiDict({"Retry-After": "soon"}), now=NOW)
        == DEFAULT_RATE_LIMIT_WAIT
    )
    assert retry_after_seconds(CIMultiDict({"X-RateLimit-Reset": str(NOW - 5)}), now=NOW) == 0.0
    far = CIMultiDict({"X-RateLimit-Reset": str(NOW + 10**7)})
    assert retry_after_seconds(far, now=NOW) == MAX_RATE_LIMIT_WAIT


def test_rate_limit_snapshot_reads_the_three_headers() -> None:
    headers = CIMultiDict(
        {"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "17", "X-RateLimit-Reset": "1800"}
    )
    snapshot = rate_limit_snapshot(headers)
    assert snapshot is not None
    assert (snapshot.limit, snapshot.remaining, snapshot.reset_at) == (600, 17, 1800.0)
    assert rate_limit_snapshot(CIMultiDict({"Content-Type": "text/plain"})) is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, RateLimitedError),
        (408, TransientProviderError),
        (500, TransientProviderError),
        (503, TransientProviderError),
        (400, PermanentProviderError),
        (404, PermanentProviderError),
        (413, PermanentProviderError),
        (401, PermanentProviderError),
        (403, PermanentProviderError),
    ],
)
def test_status_classes(status: int, kind: type) -> None:
    error = classify_status("esp", HttpReply(status, CIMultiDict(), b""), "detail")
    assert type(error) is kind
    assert error.code == str(status)


def test_credential_refusals_log_at_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        classify_status("esp", HttpReply(401, CIMultiDict(), b""), "bad key")
    [record] = caplog.records
    assert record.levelno == logging.ERROR and "esp refused our credentials" in record.getMessage()
