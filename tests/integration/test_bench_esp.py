"""``postroom bench esp`` runs end to end (a fake ESP in its own process, the real adapter
over HTTP) and prints its figures; a short run, not a measurement."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from postroom.cli.main import app


@pytest.mark.parametrize(
    ("esp", "mode", "recipients", "calls"),
    [("sendgrid", "batch", 2000, 2), ("mailgun", "single", 200, 200)],
)
def test_bench_esp_hands_every_recipient_over_and_prints_its_figures(
    esp: str, mode: str, recipients: int, calls: int
) -> None:
    args = ["bench", "esp", "--esp", esp, "--mode", mode, "--recipients", str(recipients)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # The run fails unless the fake counted exactly the recipients handed over.
    assert f"handed over      {recipients:,} recipients in {calls:,} calls" in result.output
    rate = re.search(r"throughput\s+([\d,]+) recipients/s", result.output)
    cpu = re.search(r"client CPU\s+([\d.]+) µs per recipient", result.output)
    assert rate is not None and int(rate.group(1).replace(",", "")) > 0, result.output
    assert cpu is not None and float(cpu.group(1)) > 0, result.output


def test_an_esp_without_a_bench_is_refused() -> None:
    result = CliRunner().invoke(app, ["bench", "esp", "--esp", "postmark"])
    assert result.exit_code != 0
    assert "--esp must be one of" in result.output
