"""``gpunet`` command line: run a node, deploy contracts, manage keys, query and drive a running node's API.

Bad arguments end in a one-line error and exit status 2 (click's usage errors) or 1 (a failure while running);
no traceback is shown for expected errors.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from node.errors import NodeError


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group()
@click.version_option("0.1.0", prog_name="gpunet")
def main() -> None:
    """gpunet: a decentralized GPU marketplace node."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), help="TOML config file")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--rpc-url")
@click.option("--deployments", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dev-account", type=click.IntRange(0, 999), help="devnet only: anvil mnemonic account index")
@click.option("--keystore", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--listen", multiple=True, help="libp2p listen multiaddr (repeatable)")
@click.option("--bootstrap", multiple=True, help="bootstrap peer multiaddr with /p2p/<id> (repeatable)")
@click.option("--api-port", type=click.IntRange(0, 65535))
@click.option("--provider/--no-provider", "provider", default=None, help="offer this machine's GPUs")
@click.option("--log-level", default="INFO", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def run(config_path: Path | None, data_dir: Path | None, rpc_url: str | None, deployments: Path | None,
        dev_account: int | None, keystore: Path | None, password_file: Path | None, listen: tuple[str, ...],
        bootstrap: tuple[str, ...], api_port: int | None, provider: bool | None, log_level: str) -> None:
    """Run a peer node (provider, consumer, or plain relay) until interrupted."""
    from node.config import load_config
    from node.logs import setup_logging

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
        _fail(str(exc))


@main.command()
@click.option("--rpc-url", default="http://127.0.0.1:8545", show_default=True)
@click.option("--dev-account", type=click.IntRange(0, 999), help="devnet only: deploy from anvil account N")
@click.option("--keystore", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="default deployments/<chainId>.json")
def deploy(rpc_url: str, dev_account: int | None, keystore: Path | None, password_file: Path | None,
           out: Path | None) -> None:
    """Deploy DevToken, ProviderStaking and LeaseEscrow and write the deployments file."""
    from node.chain.deploy import deploy_all
    from node.crypto.wallet import resolve_wallet

    try:
        key = resolve_wallet(keystore, password_file, dev_account)
        if key is None:
            raise click.UsageError("give --dev-account (devnet) or --keystore")
        d = asyncio.run(deploy_all(rpc_url, key, out=out))
    except NodeError as exc:
        _fail(str(exc))
    click.echo(json.dumps(d.to_json(), indent=2))


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
        _fail(str(exc))
    click.echo(address)


def _api(url: str, path: str, token: str | None = None, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("error", str(exc))
        except Exception:
            msg = str(exc)
        _fail(f"{exc.code}: {msg}")
    except urllib.error.URLError as exc:
        _fail(f"node API {url} unreachable: {exc.reason}")


def _token(token: str | None, token_file: Path | None) -> str:
    if token:
        return token
    if token_file is not None:
        try:
            return token_file.read_text().strip()
        except FileNotFoundError:
            _fail(f"token file {token_file} not found")
    _fail("this action moves funds: give --token or --token-file (the node writes <data_dir>/api-token)")
    return ""


api_option = click.option("--api", "api_url", default="http://127.0.0.1:8080", show_default=True,
                          help="the node's HTTP API")


@main.command()
@api_option
@click.option("--model")
@click.option("--min-gpus", type=click.IntRange(1))
@click.option("--max-price", type=click.IntRange(1))
@click.option("--region")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def offers(api_url: str, model: str | None, min_gpus: int | None, max_price: int | None, region: str | None,
           limit: int) -> None:
    """List offers from a running node's book, cheapest first."""
    from urllib.parse import urlencode

    q = {k: v for k, v in {"model": model, "min_gpus": min_gpus, "max_price": max_price, "region": region,
                           "limit": limit}.items() if v is not None}
    click.echo(json.dumps(_api(api_url, "/v1/offers?" + urlencode(q)), indent=2))


@main.command("cancel-offers")
@api_option
@click.option("--token")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path))
def cancel_offers(api_url: str, token: str | None, token_file: Path | None) -> None:
    """Provider: withdraw all of this node's offers (gossip withdrawal and on-chain cancelOffersBelow)."""
    click.echo(json.dumps(_api(api_url, "/v1/offers/cancel", _token(token, token_file), {}), indent=2))


@main.group()
def lease() -> None:
    """Open, inspect and close leases through a running node."""


@lease.command("open")
@api_option
@click.option("--token")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--offer-id", required=True, help="0x offer id from `gpunet offers`")
@click.option("--gpus", type=click.IntRange(1), required=True)
@click.option("--deposit", type=click.IntRange(1), required=True, help="token base units")
@click.option("--command", "command", help="job command (argv as a JSON list or a plain string)")
def lease_open(api_url: str, token: str | None, token_file: Path | None, offer_id: str, gpus: int, deposit: int,
               command: str | None) -> None:
    body: dict[str, Any] = {"offer_id": offer_id, "gpus": gpus, "deposit": str(deposit)}
    if command:
        try:
            argv = json.loads(command) if command.strip().startswith("[") else command.split()
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"--command: {exc}") from exc
        body["job"] = {"argv": argv}
    click.echo(json.dumps(_api(api_url, "/v1/leases", _token(token, token_file), body), indent=2))


@lease.command("show")
@api_option
@click.argument("lease_id", type=click.IntRange(1))
def lease_show(api_url: str, lease_id: int) -> None:
    click.echo(json.dumps(_api(api_url, f"/v1/leases/{lease_id}"), indent=2))


@lease.command("close")
@api_option
@click.option("--token")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("lease_id", type=click.IntRange(1))
def lease_close(api_url: str, token: str | None, token_file: Path | None, lease_id: int) -> None:
    click.echo(json.dumps(_api(api_url, f"/v1/leases/{lease_id}/close", _token(token, token_file), {}), indent=2))


if __name__ == "__main__":
    main()
