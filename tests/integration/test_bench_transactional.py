"""``postroom bench transactional`` gets every email to its sink and reports the latencies."""

from __future__ import annotations

import pytest

from postroom.bench.transactional import run_transactional


@pytest.mark.parametrize(("sink", "workers"), [("outbox", 1), ("sendgrid", 2)])
def test_every_email_reaches_the_sink(sink: str, workers: int) -> None:
    # run_transactional raises unless every email's acceptance was recorded.
    report = run_transactional(rate=100, duration=0.5, sink=sink, workers=workers)
    assert 0 < report.p50_ms <= report.p90_ms <= report.p99_ms <= report.max_ms
    assert report.lines()[0].endswith(f"{sink} ({workers} worker process(es))")


def test_an_unknown_sink_is_refused() -> None:
    with pytest.raises(ValueError, match="sink must be one of"):
        run_transactional(rate=100, duration=0.5, sink="carrier-pigeon")
