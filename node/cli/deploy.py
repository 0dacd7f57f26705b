"""``gpunet deploy``: the contracts and the deployments file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from node.cli.app import fail, main
from node.errors import NodeError


@main.command()
@click.option("--rpc-url", default="http://127.0.0.1:8545", show_default=True)
@click.option("--dev-account", type=click.IntRange(0, 999), help="devnet only: deploy from anvil account N")
@click.option("--keystore", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="default deployments/<chainId>.json")
def deploy(rpc_url: str, dev_account: int | None, keystore: Path | None, password_file: Path | None,
           out: Path | None) -> None:
    """Deploy DevToken, ProviderStaking and LeaseEscrow and write the deployments file (docs/deployments.md)
    with the compiler input of every contract next to it. Prints the deployments file as JSON.

    Example: gpunet deploy --rpc-url http://127.0.0.1:8545 --dev-account 0
    """
    from node.chain.deploy import deploy_all
    from node.crypto.wallet import resolve_wallet

    try:
        key = resolve_wallet(keystore, password_file, dev_account)
        if key is None:
            raise click.UsageError("give --dev-account (devnet) or --keystore")
        d = asyncio.run(deploy_all(rpc_url, key, out=out))
    except NodeError as exc:
        fail(str(exc))
    click.echo(json.dumps(d.to_json(), indent=2))
