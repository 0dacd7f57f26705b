"""``gpunet keys``: wallet keystores."""

from __future__ import annotations

from pathlib import Path

import click

from node.cli.app import fail, main
from node.errors import NodeError


@main.group()
def keys() -> None:
    """Wallet keystores."""


@keys.command("new")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.password_option("--password", help="keystore password (prompted)")
def keys_new(path: Path, password: str) -> None:
    """Create an encrypted wallet keystore at PATH (mode 0600)."""
    from node.crypto.wallet import create_keystore

    try:
        address = create_keystore(path, password)
    except NodeError as exc:
        fail(str(exc))
    click.echo(address)
