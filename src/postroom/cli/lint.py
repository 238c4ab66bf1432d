"""``postroom lint``: content checks on an email type (rendered with sample data) or an .eml."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from postroom.cli.common import fail, json_object_option, settings_or_exit


def lint(
    eml: Annotated[Path | None, typer.Argument(help="A message file (.eml) to check.")] = None,
    email_type: Annotated[
        str | None, typer.Option("--type", help="An email type to render and check.")
    ] = None,
    template: Annotated[
        Path | None,
        typer.Option(help="An email type's folder (email.toml, body.html), registered or not."),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="template_data as JSON (default: the type's sample).")
    ] = None,
    threshold: Annotated[float, typer.Option(help="Score at which mail counts as spam.")] = 5.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Score content for spam signals; exit 1 when it counts as spam or has errors."""
    from postroom.deliverability.content import LintReport, lint_email_type, lint_eml
    from postroom.errors import PostroomError
    from postroom.rendering.registry import TemplateRegistry, bundled_templates_dir
    from postroom.wiring import build_renderer, with_generated_secrets

    if sum(x is not None for x in (eml, email_type, template)) != 1:
        fail("give one of: an .eml file, --type or --template")
    report: LintReport
    try:
        if eml is not None:
            report = lint_eml(eml.read_bytes())
        else:
            settings = with_generated_secrets(settings_or_exit())
            if template is not None:
                # The folder's parent is a templates folder of its own; its _layouts apply.
                email_type = template.resolve().name
                registry = TemplateRegistry.load(template.resolve().parent)
            else:
                registry = TemplateRegistry.load(settings.templates_dir or bundled_templates_dir())
            sample = (
                json_object_option(data, "data")
                if data
                else dict(registry.get(str(email_type)).sample)
            )
            report = lint_email_type(build_renderer(settings, registry), str(email_type), sample)
    except OSError as exc:
        fail(f"{eml}: {exc.strerror}")
    except PostroomError as exc:
        fail(str(exc))
    if json_output:
        print(orjson.dumps(report.to_dict(threshold), option=orjson.OPT_INDENT_2).decode())
    else:
        _print(report, threshold)
    if report.verdict(threshold) == "spam" or report.errors:
        raise typer.Exit(1)


def _print(report: Any, threshold: float) -> None:
    table = Table("rule", "severity", "points", "finding")
    for f in report.findings:
        table.add_row(f.rule, f.severity, f"{f.points:.1f}", f.message)
    console = Console(width=140)
    if report.findings:
        console.print(table)
    verdict = report.verdict(threshold)
    console.print(f"score {report.score:.1f} (spam at {threshold:.1f}): {verdict}", highlight=False)
