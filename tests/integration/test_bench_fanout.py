"""``postroom bench fanout`` runs a real campaign to the end through worker processes."""

from __future__ import annotations

import pytest

from postroom.bench.fanout import run_fanout


@pytest.mark.slow
@pytest.mark.parametrize("esp", ["mailgun", "sendgrid"])
def test_the_fake_esp_receives_every_recipient(esp: str) -> None:
    # run_fanout waits until the fake ESP has counted every recipient; it raises on a
    # campaign that fails or is cancelled.
    report = run_fanout(3_000, esp, "sql://", None, workers=2)
    assert report.recipients == 3_000
    assert 0 < report.snapshot_seconds < report.handoff_seconds
    names = sorted(u.name for u in report.processes)
    assert names == ["benchmark (main)", "worker 1", "worker 2"]
    assert all(u.peak_rss_mib > 10 and u.cpu_seconds > 0 for u in report.processes)
    assert "recipients/s" in "\n".join(report.lines())
