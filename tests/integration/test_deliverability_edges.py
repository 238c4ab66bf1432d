"""The deliverability toolkit through its edges: `postroom dns|lint` and the HTTP endpoints."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.zone
import pytest
from fastapi.testclient import TestClient
from tests.conftest import make_settings
from tests.dns_server import serve_zone
from tests.unit.deliverability.test_dns_check import ESP_ZONE, good_records, replaced, zone_text

from postroom.api.app import create_app

AUTH = {"Authorization": "Bearer test-key"}


def postroom(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postroom", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "POSTROOM_DATA_DIR": str(cwd / "data")},
    )


@pytest.fixture
def good_zone_server() -> Iterator[str]:
    with serve_zone(zone_text(good_records("mailgun")), ESP_ZONE) as address:
        yield address


def test_dns_plan_zone_output_loads_in_a_zone_parser(tmp_path: Path) -> None:
    result = postroom(
        "dns", "plan", "example.com", "--provider", "mailgun", "--format", "zone", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    zone = dns.zone.from_text(result.stdout, check_origin=False)
    assert zone.get_rdataset("_dmarc", "TXT") is not None


def test_dns_check_exit_status_follows_the_findings(tmp_path: Path, good_zone_server: str) -> None:
    passing = postroom(
        "dns",
        "check",
        "example.com",
        "--provider",
        "mailgun",
        "--nameserver",
        good_zone_server,
        cwd=tmp_path,
    )
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "fail" not in passing.stdout
    records = replaced(
        good_records("mailgun"), "example.com", "TXT", "v=spf1 include:mailgun.org +all"
    )
    with serve_zone(zone_text(records), ESP_ZONE) as broken:
        failing = postroom("dns", "check", "example.com", "--nameserver", broken, cwd=tmp_path)
    assert failing.returncode == 1
    assert "+all" in failing.stdout


def test_lint_exit_status(tmp_path: Path) -> None:
    spam = tmp_path / "spam.eml"
    spam.write_text(
        "Subject: FREE MONEY!!! ACT NOW\n\nClick here to claim your $$$ cash bonus, 100% free, "
        "no credit card, limited time, act now!!!\n"
    )
    assert postroom("lint", str(spam), cwd=tmp_path).returncode == 1
    data = '{"creator_name": "Jane", "post_title": "Hello", "post_url": "https://x.example/p"}'
    clean = postroom("lint", "--type", "new_post_notification", "--data", data, cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    folder = tmp_path / "templates" / "flash_sale"
    folder.mkdir(parents=True)
    (folder / "email.toml").write_text('subject = "FREE CASH!!! ACT NOW"\n')
    (folder / "body.html").write_text("<p>100% free cash bonus, click here, act now!!!</p>")
    assert postroom("lint", "--template", str(folder), cwd=tmp_path).returncode == 1
    both = postroom("lint", str(spam), "--type", "welcome", cwd=tmp_path)
    assert both.returncode == 1 and both.stderr.count("\n") == 1


def test_api_lint_and_domain_check(tmp_path: Path, good_zone_server: str) -> None:
    settings = make_settings(tmp_path, dns_nameserver=good_zone_server)
    with TestClient(create_app(settings)) as client:
        sample = {"creator_name": "Jane", "post_title": "Hi", "post_url": "https://x.example/p"}
        clean = client.post(
            "/v1/lint",
            json={"email_type": "new_post_notification", "template_data": sample},
            headers=AUTH,
        )
        assert clean.status_code == 200 and clean.json()["verdict"] == "ham", clean.text
        spammy = client.post(
            "/v1/lint",
            json={
                "subject": "WIN CASH NOW!!!",
                "html": "<p>Click here: 100% free cash bonus, act now, no credit card!!!</p>",
            },
            headers=AUTH,
        )
        assert spammy.json()["verdict"] == "spam"
        assert client.post("/v1/lint", json={}, headers=AUTH).status_code == 422
        check = client.get("/v1/domains/example.com/check?provider=mailgun", headers=AUTH)
        assert check.status_code == 200, check.text
        assert check.json()["ok"] is True
        assert {f["record"] for f in check.json()["findings"]} >= {"SPF", "DKIM", "DMARC"}
        assert client.get("/v1/domains/example.com/check").status_code == 401
