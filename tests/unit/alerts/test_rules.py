"""The alert rules, pure: each fires past its line and not before, with the severity it says."""

from __future__ import annotations

from botocore.exceptions import ClientError

from postroom.alerts.rules import (
    CAMPAIGN_BOUNCE,
    CAMPAIGN_COMPLAINT,
    CIRCUIT_OPEN,
    COMPLAINT,
    DLQ_GROWING,
    HARD_BOUNCE,
    PROVIDER_AUTH,
    QUEUE_LAG,
    CampaignReading,
    Rate,
    Readings,
    Severity,
    Thresholds,
    campaign_id,
    dlq_growth,
    evaluate,
    is_auth_failure,
)
from postroom.providers.http import auth_failure
from postroom.providers.ses import classify_client_error
from postroom.providers.smtp import classify_reply

LIMITS = Thresholds()


def test_nothing_measured_judges_nothing() -> None:
    verdict = evaluate(Readings(), LIMITS)
    assert verdict.findings == [] and verdict.evaluated == set()


def test_hard_bounces_over_two_percent_of_the_window_are_critical() -> None:
    assert evaluate(Readings(bounces=Rate(1000, 20)), LIMITS).findings == []
    [finding] = evaluate(Readings(bounces=Rate(1000, 21)), LIMITS).findings
    assert (finding.rule, finding.severity, finding.subject) == (
        HARD_BOUNCE,
        Severity.CRITICAL,
        "all",
    )
    assert finding.value == 0.021 and finding.threshold == 0.02
    assert "2.1%" in finding.message and "21 of 1000" in finding.message


def test_rates_need_the_minimum_number_of_sends() -> None:
    # One bounce out of three sends is 33%, and means nothing yet.
    assert evaluate(Readings(bounces=Rate(99, 33)), LIMITS).findings == []
    assert evaluate(Readings(bounces=Rate(100, 33)), LIMITS).findings != []


def test_complaints_warn_over_a_tenth_and_are_critical_over_three_tenths_of_a_percent() -> None:
    def judged(complaints: int) -> list[tuple[str, Severity]]:
        verdict = evaluate(Readings(complaints=Rate(10_000, complaints)), LIMITS)
        assert verdict.evaluated == {COMPLAINT}
        return [(f.rule, f.severity) for f in verdict.findings]

    assert judged(10) == []
    assert judged(11) == [(COMPLAINT, Severity.WARNING)]
    assert judged(30) == [(COMPLAINT, Severity.WARNING)]
    assert judged(31) == [(COMPLAINT, Severity.CRITICAL)]


def test_each_running_campaign_is_judged_on_its_own_counters() -> None:
    campaigns = [
        CampaignReading("c1", "sending", sent=1000, bounced_hard=25, complained=0),
        CampaignReading("c2", "sending", sent=1000, bounced_hard=5, complained=2),
        CampaignReading("c3", "sending", sent=50, bounced_hard=50, complained=50),
        CampaignReading("c4", "paused", sent=2000, bounced_hard=0, complained=7),
    ]
    verdict = evaluate(Readings(campaigns=campaigns), LIMITS)
    assert verdict.evaluated == {CAMPAIGN_BOUNCE, CAMPAIGN_COMPLAINT}
    found = {(f.rule, f.subject, f.severity) for f in verdict.findings}
    assert found == {
        (CAMPAIGN_BOUNCE, "campaign:c1", Severity.CRITICAL),
        (CAMPAIGN_COMPLAINT, "campaign:c2", Severity.WARNING),
        (CAMPAIGN_COMPLAINT, "campaign:c4", Severity.CRITICAL),
    }
    assert campaign_id("campaign:c1") == "c1"
    assert campaign_id("marketing") is None


def test_the_dlq_alerts_only_when_it_grew_and_is_over_the_floor() -> None:
    def judged(size: int, growth: int | None) -> list[str]:
        readings = Readings(dead_letters=size, dlq_growth=growth)
        return [f.rule for f in evaluate(readings, LIMITS).findings]

    assert judged(50, None) == []  # no earlier sample: not judged at all
    assert evaluate(Readings(dead_letters=50), LIMITS).evaluated == set()
    assert judged(50, 0) == []
    assert judged(9, 5) == []
    assert judged(10, 1) == [DLQ_GROWING]


def test_dlq_growth_compares_with_the_smallest_size_since_the_window_began() -> None:
    assert dlq_growth([(0.0, 5)], now=0.0, window=900) is None
    assert dlq_growth([(0.0, 5), (5.0, 8)], now=5.0, window=900) == 3
    assert dlq_growth([(0.0, 5), (5.0, 8), (10.0, 8)], now=10.0, window=900) == 3
    # A purge in between: growth counts from the low point.
    assert dlq_growth([(0.0, 5), (5.0, 0), (10.0, 2)], now=10.0, window=900) == 2
    # The window began after the growth: none within it.
    assert dlq_growth([(0.0, 5), (5.0, 8), (1000.0, 8), (1005.0, 8)], now=1005.0, window=900) == 0


def test_queue_lag_is_judged_per_class_against_its_own_line() -> None:
    ages = {"critical": 61.0, "transactional": 299.0, "marketing": 4000.0}
    found = evaluate(Readings(oldest_age=ages), LIMITS).findings
    assert [(f.rule, f.subject) for f in found] == [
        (QUEUE_LAG, "critical"),
        (QUEUE_LAG, "marketing"),
    ]


def test_refused_credentials_and_open_breakers_name_the_provider() -> None:
    readings = Readings(auth_failures={"sendgrid": 3, "ses": 0}, open_breakers=["smtp", "smtp"])
    found = evaluate(readings, LIMITS).findings
    assert [(f.rule, f.subject, f.severity) for f in found] == [
        (PROVIDER_AUTH, "sendgrid", Severity.CRITICAL),
        (CIRCUIT_OPEN, "smtp", Severity.WARNING),
    ]


def test_auth_failures_are_recognised_as_each_provider_words_them() -> None:
    assert is_auth_failure(str(auth_failure("sendgrid", 401, "The provided key is invalid")))
    assert is_auth_failure(str(auth_failure("postmark", 403, "inactive server token")))
    denied = ClientError(
        {
            "Error": {"Code": "AccessDeniedException", "Message": "not authorized"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        },
        "SendEmail",
    )
    assert is_auth_failure(str(classify_client_error(denied)))
    assert is_auth_failure(
        str(classify_reply(535, "5.7.8 Authentication failed", after_data=False))
    )
    assert is_auth_failure(str(classify_reply(530, "Must issue STARTTLS first", after_data=False)))
    # Bad mailboxes, policy blocks and rate limits are not credential problems.
    assert not is_auth_failure(str(classify_reply(550, "5.1.1 No such user", after_data=False)))
    assert not is_auth_failure("sendgrid HTTP 400: invalid email address")
    assert not is_auth_failure("mailgun HTTP 429: slow down")
    assert not is_auth_failure(None)
