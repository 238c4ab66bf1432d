"""``postroom dkim``: make DKIM signing keys."""

from __future__ import annotations

from email.utils import parseaddr
from pathlib import Path
from typing import Annotated

import typer

from postroom.cli.common import fail, settings_or_exit

app = typer.Typer(help="DKIM signing keys.", no_args_is_help=True)


@app.command()
def keygen(
    selector: Annotated[str, typer.Option(help="DKIM selector, e.g. 'pr2026'.")],
    domain: Annotated[
        str | None, typer.Option(help="The signing (d=) domain (default: POSTROOM_SENDER's).")
    ] = None,
    out: Annotated[
        Path, typer.Option(help="Where to write the private key (PEM, mode 0600).")
    ] = Path("dkim-private.pem"),
    algorithm: Annotated[str, typer.Option(help="rsa (default) or ed25519.")] = "rsa",
    bits: Annotated[int, typer.Option(help="RSA key size.")] = 2048,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key file.")] = False,
) -> None:
    """Write a new private key and print the DNS TXT record to publish."""
    from postroom.deliverability.dkim import generate_key
    from postroom.errors import ConfigurationError

    if algorithm not in ("rsa", "ed25519"):
        fail("--algorithm must be rsa or ed25519")
    if domain is None:
        domain = parseaddr(settings_or_exit().sender)[1].rpartition("@")[2]
    try:
        key = generate_key(selector, algorithm=algorithm, bits=bits)  # type: ignore[arg-type]
        key.write(out, overwrite=force)
    except FileExistsError:
        fail(f"{out} exists; pass --force to replace it (mail signed with it will then fail)")
    except (ConfigurationError, ValueError) as exc:
        fail(str(exc))
    print(f"private key: {out} (set POSTROOM_DKIM_PRIVATE_KEY_FILE to it)")
    print(f'publish:     {key.dns_name(domain)}  TXT  "{key.dns_value()}"')
    print(f"then set:    POSTROOM_DKIM_SELECTOR={selector} POSTROOM_DKIM_DOMAIN={domain}")
