"""``gpunet run``: a peer node in the foreground."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from node.cli.app import fail, main
from node.errors import NodeError


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rpc-url")
@click.option("--deployments", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dev-account", type=click.IntRange(0, 999), help="devnet only: anvil mnemonic account index")
@click.option("--wallet", help="wallet name (see `gpunet wallet list`) or keystore path")
@click.option("--keystore", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--listen", multiple=True, help="libp2p listen multiaddr (repeatable)")
@click.option("--bootstrap", multiple=True, help="bootstrap peer multiaddr with /p2p/<id> (repeatable)")
@click.option("--api-port", type=click.IntRange(0, 65535))
@click.option("--provider/--no-provider", "provider", default=None, help="offer this machine's GPUs")
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def run(config_path: Path | None, data_dir: Path | None, rpc_url: str | None, deployments: Path | None,
        dev_account: int | None, wallet: str | None, keystore: Path | None, password_file: Path | None,
        listen: tuple[str, ...], bootstrap: tuple[str, ...], api_port: int | None, provider: bool | None,
        log_level: str) -> None:
    """Run a peer node (provider, consumer, or plain relay) until interrupted.

    Example: gpunet run --data-dir provider-node --wallet provider --provider
    """
    from node.cli._onchain import wallet_path
    from node.config import load_config
    from node.logs import setup_logging

    if wallet is not None:
        keystore = wallet_path(wallet)
    setup_logging(log_level)
    overrides: dict[str, Any] = {
        "data_dir": data_dir, "rpc_url": rpc_url, "deployments": deployments, "dev_account": dev_account,
        "keystore": keystore, "password_file": password_file, "listen": listen or None,
        "bootstrap": bootstrap or None, "api_port": api_port,
    }
    if provider is not None:
        overrides["provider"] = {"enabled": provider}
    try:
        cfg = load_config(config_path, overrides=overrides)
        from node.service import run_forever

        asyncio.run(run_forever(cfg))
    except KeyboardInterrupt:
        pass
    except NodeError as exc:
        fail(str(exc))
