"""Email types with sample data are content-checked when registered; findings are logged."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from tests.conftest import make_settings

from postroom.rendering.registry import TemplateRegistry, bundled_templates_dir
from postroom.wiring import open_postroom, prepare_database


def test_bundled_types_carry_sample_data_that_satisfies_them() -> None:
    registry = TemplateRegistry.load(bundled_templates_dir())
    for email_type in registry:
        assert email_type.sample, f"{email_type.name} has no [sample] in email.toml"
        email_type.check_data(email_type.sample)


async def test_spammy_sample_is_reported_at_startup_and_clean_ones_are_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(bundled_templates_dir(), templates)
    loud = templates / "flash_sale"
    loud.mkdir()
    (loud / "email.toml").write_text(
        'subject = "FREE CASH NOW!!! {{ name }}"\nrequired = ["name"]\n\n[sample]\nname = "Ada"\n'
    )
    (loud / "body.html").write_text(
        "<p>Click here! 100% free cash bonus, act now, no credit card, limited time!!!</p>"
        '<p><a href="https://bit.ly/x">https://platform.example/offer</a></p>'
    )
    settings = make_settings(tmp_path, templates_dir=templates)
    await prepare_database(settings)
    with caplog.at_level(logging.WARNING, logger="postroom"):
        postroom = await open_postroom(settings)
    await postroom.close()
    reported = [r.getMessage() for r in caplog.records if "email type" in r.getMessage()]
    assert any("flash_sale" in m and "url-shortener" in m for m in reported), reported
    assert any("flash_sale" in m and "spam-phrase" in m for m in reported), reported
    assert all("flash_sale" in m for m in reported), reported  # bundled types are clean
