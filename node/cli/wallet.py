"""``gpunet wallet new|import|show|list``: encrypted keystores under ``$GPUNET_HOME/wallets``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from node.cli._onchain import wallet_path
from node.cli.app import fail, gpunet_home, json_option, main, print_json, print_table
from node.errors import NodeError

password_file_option = click.option(
    "--password-file", type=click.Path(dir_okay=False, path_type=Path), envvar="GPUNET_PASSWORD_FILE",
    help="read the password from a file (or env GPUNET_KEYSTORE_PASSWORD; else asked on the terminal)")


@main.group()
def wallet() -> None:
    """Wallets: encrypted keystores (scrypt) in $GPUNET_HOME/wallets (default ~/.gpunet/wallets)."""


def _address(path: Path) -> str:
    try:
        return "0x" + str(json.loads(path.read_text())["address"]).removeprefix("0x")
    except (OSError, KeyError, json.JSONDecodeError):
        return "?"


@wallet.command("new")
@click.argument("name")
@password_file_option
@json_option
def wallet_new(name: str, password_file: Path | None, as_json: bool) -> None:
    """Create wallet NAME with a new random key. The password is asked twice on a terminal.

    Example: gpunet wallet new provider
    """
    from eth_utils import to_checksum_address

    from node.crypto.wallet import create_keystore, read_password

    path = wallet_path(name)
    if path.exists():
        fail(f"wallet {path} already exists; refusing to overwrite")
    try:
        address = create_keystore(path, read_password(password_file, confirm=True, what=f"password for {name}"))
    except NodeError as exc:
        fail(str(exc))
    if as_json:
        print_json({"name": name, "address": to_checksum_address(address), "path": str(path)})
    else:
        click.echo(f"wallet {name}: {address}  ({path})")


@wallet.command("import")
@click.argument("name")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="file holding the 0x private key (default: asked on the terminal, or read from stdin)")
@password_file_option
@json_option
def wallet_import(name: str, key_file: Path | None, password_file: Path | None, as_json: bool) -> None:
    """Import a private key as wallet NAME.

    Example: gpunet wallet import mykey --key-file key.txt
    """
    from node.crypto.wallet import create_keystore, read_password

    if key_file is not None:
        raw = key_file.read_text().strip()
    elif sys.stdin.isatty():
        raw = click.prompt("private key (0x…)", hide_input=True, err=True)
    else:
        raw = sys.stdin.readline().strip()
    try:
        key = bytes.fromhex(raw.removeprefix("0x"))
        if len(key) != 32:
            raise ValueError
    except ValueError:
        fail("the private key must be 32 bytes of hex")
    path = wallet_path(name)
    if path.exists():
        fail(f"wallet {path} already exists; refusing to overwrite")
    try:
        address = create_keystore(path, read_password(password_file, confirm=True, what=f"password for {name}"), key)
    except NodeError as exc:
        fail(str(exc))
    if as_json:
        print_json({"name": name, "address": address, "path": str(path)})
    else:
        click.echo(f"wallet {name}: {address}  ({path})")


@wallet.command("show")
@click.argument("name")
@json_option
def wallet_show(name: str, as_json: bool) -> None:
    """Address and keystore path of wallet NAME (no password needed).

    Example: gpunet wallet show provider
    """
    from eth_utils import to_checksum_address

    path = wallet_path(name)
    if not path.exists():
        fail(f"no wallet {name} ({path}): create it with `gpunet wallet new {name}`")
    address = _address(path)
    address = to_checksum_address(address) if address != "?" else address
    if as_json:
        print_json({"name": name, "address": address, "path": str(path)})
    else:
        click.echo(address)


@wallet.command("list")
@json_option
def wallet_list(as_json: bool) -> None:
    """Every wallet in $GPUNET_HOME/wallets.

    Example: gpunet wallet list --json
    """
    from eth_utils import to_checksum_address

    folder = gpunet_home() / "wallets"
    rows = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        address = _address(path)
        rows.append({"name": path.stem, "address": to_checksum_address(address) if address != "?" else address,
                     "path": str(path), "mode": oct(os.stat(path).st_mode & 0o777)})
    if as_json:
        print_json(rows)
    elif not rows:
        click.echo(f"no wallets in {folder}: create one with `gpunet wallet new NAME`")
    else:
        print_table(None, ["name", "address", "path"], [[r["name"], r["address"], r["path"]] for r in rows])
