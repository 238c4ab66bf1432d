"""``postroom webhooks parse`` as a user runs it, on a sample of the ESP fixtures: the
manifest's events on stdout as JSON lines, or exit status 1 and one line saying why; and
``postroom webhooks bench`` end to end on a small load."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
from tests.conftest import fresh_postgres_database
from tests.unit.webhooks.esp_fixtures import (
    CERT_DIR,
    ESP_DIR,
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    SENDGRID_KEY_B,
    by_file,
    ses_topics,
)

SAMPLE = [
    ("sendgrid", "sendgrid/anymail-bounce_hard_5_1_1.json"),
    ("mailgun", "mailgun/docs-failed_permanent_delayed_bounce.json"),
    ("ses", "ses/notifications/bounce_permanent_no_dsn_two_recipients.json"),
    ("postmark", "postmark/anymail-click.json"),
    ("ses", "ses/sns-real/negative-tampered-notification_v2.json"),
]


def _env(tmp_path: Path, max_age: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(
        POSTROOM_DATA_DIR=str(tmp_path),
        POSTROOM_SENDGRID_WEBHOOK_PUBLIC_KEY=SENDGRID_KEY_B,
        POSTROOM_MAILGUN_WEBHOOK_SIGNING_KEY=MAILGUN_KEY,
        POSTROOM_SES_TOPIC_ARNS=",".join(ses_topics()),
        POSTROOM_SNS_CERT_DIR=str(CERT_DIR),
        POSTROOM_POSTMARK_WEBHOOK_USER=POSTMARK_USER,
        POSTROOM_POSTMARK_WEBHOOK_PASSWORD=POSTMARK_PASSWORD,
        POSTROOM_WEBHOOK_MAX_AGE=max_age,
    )
    return env


def _start(provider: str, file: str, env: dict[str, str]) -> subprocess.Popen[str]:
    entry = by_file(file)
    command = [sys.executable, "-m", "postroom", "webhooks", "parse", "--provider", provider]
    command += ["--body", str(ESP_DIR / file), "--headers", str(ESP_DIR / entry["headers_file"])]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_parse_prints_the_manifest_events_or_refuses(tmp_path: Path) -> None:
    # Side by side: starting Python and importing Postroom is most of each command's cost.
    stale = _start("sendgrid", "sendgrid/docs-delivered.json", _env(tmp_path, "300"))
    running = [
        (provider, file, _start(provider, file, _env(tmp_path, "0"))) for provider, file in SAMPLE
    ]
    for provider, file, process in running:
        out, err = process.communicate(timeout=60)
        expected = by_file(file)["expected_events"]
        if by_file(file)["signature"]["valid"] is False:
            assert process.returncode == 1, (file, out, err)
            assert out == ""
            assert err.startswith("postroom: error: verification failed: signature:")
            assert err.count("\n") == 1
            continue
        assert process.returncode == 0, (file, err)
        printed = [orjson.loads(line) for line in out.splitlines()]
        assert [(e["type"], e["recipient"]) for e in printed] == [
            (x["type"], x["recipient"]) for x in expected
        ], file
        assert all(e["provider"] == provider and len(e["content_hash"]) == 64 for e in printed)
    out, err = stale.communicate(timeout=60)
    assert stale.returncode == 1 and "verification failed: stale" in err


def test_bench_posts_signed_requests_and_checks_they_were_stored(tmp_path: Path) -> None:
    # A short run of both modes: every POST verified, answered 200 and its events stored
    # (the command fails otherwise), and the rate printed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    runs = [
        ("20", "SendGrid batches", "--no-bound"),
        ("1", "single Mailgun events", "--no-bound"),
        ("20", "SendGrid batches", "--bound"),  # the command checks every send was delivered
    ]
    for batch, kind, bound in runs:
        command = [sys.executable, "-m", "postroom", "webhooks", "bench", "--batch", batch]
        command += ["--events", "200", "--concurrency", "4", bound]
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(kind), done.stdout
        assert "events/s" in done.stdout


def test_bench_runs_on_a_given_postgres_database_twice(tmp_path: Path) -> None:
    # The second run finds the first one's sends, states, events and tokens and removes them
    # first: else its sends would clash and its events would be stored as duplicates (the
    # command fails when fewer than all are stored, or not all sends were delivered).
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    with fresh_postgres_database() as url:
        for batch, kind in [
            ("20", "SendGrid batches"),
            ("20", "SendGrid batches"),
            ("1", "single"),
        ]:
            command = [sys.executable, "-m", "postroom", "webhooks", "bench", "--batch", batch]
            command += ["--events", "100", "--concurrency", "4", "--bound", "--database", url]
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=120, check=False
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout.startswith(kind), done.stdout
            assert "PostgreSQL" in done.stdout.splitlines()[0]
