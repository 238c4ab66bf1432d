"""``postroom dns``: the records a sending domain needs, and a check of what is published."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from postroom.cli.common import fail

app = typer.Typer(
    help="Plan and check SPF, DKIM, DMARC and Return-Path records.", no_args_is_help=True
)

_STATUS_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


@app.command()
def plan(
    domain: Annotated[str, typer.Argument(help="The sending domain, e.g. news.example.com.")],
    provider: Annotated[str, typer.Option(help="sendgrid, mailgun, ses, postmark or smtp.")],
    ip: Annotated[str | None, typer.Option(help="Your server's address (smtp).")] = None,
    dkim_selector: Annotated[str | None, typer.Option("--selector", help="DKIM selector.")] = None,
    dkim_key: Annotated[
        Path | None, typer.Option(help="Public or private key file from `postroom dkim keygen`.")
    ] = None,
    return_path: Annotated[str, typer.Option(help="Bounce subdomain label.")] = "bounces",
    dmarc: Annotated[str, typer.Option(help="DMARC stage: none, quarantine or reject.")] = "none",
    report_email: Annotated[str | None, typer.Option(help="DMARC aggregate reports (rua).")] = None,
    mta_sts: Annotated[bool, typer.Option(help="Add MTA-STS.")] = False,
    tls_rpt: Annotated[bool, typer.Option(help="Add TLS-RPT.")] = False,
    bimi_logo: Annotated[str | None, typer.Option(help="BIMI logo URL (SVG).")] = None,
    output: Annotated[str, typer.Option("--format", help="table, zone or json.")] = "table",
) -> None:
    """Print the DNS records to publish for DOMAIN."""
    from postroom.deliverability import dns_plan

    public_key = None
    if dkim_key is not None:
        try:
            public_key = _public_key_text(dkim_key)
        except (OSError, ValueError) as exc:
            fail(f"--dkim-key: {exc}")
    try:
        records = dns_plan.plan(
            domain,
            provider,
            ip=ip,
            dkim_selector=dkim_selector,
            dkim_public_key=public_key,
            return_path=return_path,
            dmarc_stage=dmarc,
            report_email=report_email,
            mta_sts=mta_sts,
            tls_rpt=tls_rpt,
            bimi_logo=bimi_logo,
        )
    except ValueError as exc:
        fail(str(exc))
    formatters = {
        "table": dns_plan.format_table,
        "zone": dns_plan.format_zone,
        "json": dns_plan.format_json,
    }
    if output not in formatters:
        fail("--format must be table, zone or json")
    print(formatters[output](records))


def _public_key_text(path: Path) -> str:
    """The PEM public key for a key file that holds either half of the pair."""
    from cryptography.hazmat.primitives import serialization

    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = serialization.load_pem_private_key(data, password=None)
        data = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return data.decode()


@app.command()
def check(
    domain: Annotated[str, typer.Argument(help="The sending domain.")],
    provider: Annotated[
        str | None, typer.Option(help="The ESP whose include must be there.")
    ] = None,
    selector: Annotated[list[str] | None, typer.Option(help="DKIM selector(s) to check.")] = None,
    return_path: Annotated[str, typer.Option(help="Bounce subdomain label.")] = "bounces",
    nameserver: Annotated[
        str | None, typer.Option(help="Ask this server (HOST:PORT) instead of the system's.")
    ] = None,
) -> None:
    """Look the records up and grade each; exit status 1 when any fails."""
    from postroom.deliverability import dns_check

    try:
        findings = asyncio.run(
            dns_check.check(
                domain,
                provider=provider,
                nameserver=nameserver,
                dkim_selectors=tuple(selector or ()),
                return_path=return_path,
            )
        )
    except ValueError as exc:
        fail(str(exc))
    table = Table("record", "status", "finding", "fix")
    for f in findings:
        style = _STATUS_STYLE.get(f.status, "")
        table.add_row(f.record, f"[{style}]{f.status}[/]", f.message, f.fix or "")
    Console(width=160).print(table)
    raise typer.Exit(dns_check.exit_status(findings))
