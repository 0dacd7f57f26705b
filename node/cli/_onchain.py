"""What the wallet commands share: the ``--rpc-url``/``--deployments``/``--wallet`` options and a chain client."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from node.cli.app import fail, gpunet_home
from node.errors import NodeError

T = TypeVar("T")


def wallet_path(wallet: str) -> Path:
    """A wallet name (``$GPUNET_HOME/wallets/<name>.json``) or a keystore path."""
    if "/" in wallet or wallet.endswith(".json"):
        return Path(wallet)
    return gpunet_home() / "wallets" / f"{wallet}.json"


@dataclass
class ChainRef:
    rpc_url: str
    deployments: Path | None
    wallet: str | None
    password_file: Path | None
    dev_account: int | None

    def key(self) -> bytes | None:
        from node.crypto.wallet import load_keystore, read_password, resolve_wallet

        if self.wallet is not None:
            return load_keystore(wallet_path(self.wallet), read_password(self.password_file))
        return resolve_wallet(None, None, self.dev_account)

    async def connect(self, need_wallet: bool = True) -> Any:
        from node.chain.artifacts import find_deployment, load_deployment
        from node.chain.client import ChainClient, make_w3
        from node.errors import ChainError
        from node.storage.db import Database

        key = self.key()
        if key is None and need_wallet:
            raise click.UsageError("give --wallet NAME (see `gpunet wallet list`) or, on a devnet, --dev-account N")
        w3 = make_w3(self.rpc_url, retry_for=3)
        try:
            chain_id = int(await w3.eth.chain_id)
        except Exception as exc:
            raise ChainError(f"RPC endpoint {self.rpc_url} unreachable (is the devnet up? `gpunet devnet "
                             "status`)") from exc
        finally:
            await w3.provider.disconnect()
        deployment = load_deployment(self.deployments or find_deployment(chain_id))
        return await ChainClient.connect(self.rpc_url, deployment, Database(":memory:"), key)


def chain_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The chain and wallet options, passed on as ``chain: ChainRef``."""

    @click.option("--rpc-url", envvar="GPUNET_RPC_URL", default="http://127.0.0.1:8545", show_default=True,
                  help="JSON-RPC endpoint (env GPUNET_RPC_URL)")
    @click.option("--deployments", type=click.Path(dir_okay=False, path_type=Path), envvar="GPUNET_DEPLOYMENTS",
                  help="deployments file (default: the devnet's, or deployments/<chainId>.json)")
    @click.option("--wallet", envvar="GPUNET_WALLET", help="wallet name or keystore path (env GPUNET_WALLET)")
    @click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path), envvar="GPUNET_PASSWORD_FILE",
                  help="keystore password file (or env GPUNET_KEYSTORE_PASSWORD, or a prompt)")
    @click.option("--dev-account", type=click.IntRange(0, 999), help="devnet only: anvil account N as the wallet")
    @functools.wraps(f)
    def wrapper(rpc_url: str, deployments: Path | None, wallet: str | None, password_file: Path | None,
                dev_account: int | None, **kwargs: Any) -> Any:
        return f(chain=ChainRef(rpc_url, deployments, wallet, password_file, dev_account), **kwargs)

    return wrapper


def with_client(chain: ChainRef, body: Callable[[Any], Awaitable[T]], need_wallet: bool = True) -> T:
    """Connect (with the wallet, or read-only when ``need_wallet`` is false), run ``body(client)``, close; expected
    failures end as one-line errors (exit 1)."""
    ref = chain if need_wallet else ChainRef(chain.rpc_url, chain.deployments, None, None, None)

    async def go() -> T:
        client = await ref.connect(need_wallet=need_wallet)
        try:
            return await body(client)
        finally:
            await client.close()

    return run(go)


def run(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; expected failures end as one-line errors (exit 1)."""
    try:
        return asyncio.run(fn())
    except NodeError as exc:
        fail(str(exc))


async def is_devnet(w3: Any) -> bool:
    """anvil (or hardhat) answers ``web3_clientVersion`` with its name; public chains do not run it."""
    try:
        version = str(await w3.provider.make_request("web3_clientVersion", [])).lower()
    except Exception:
        return False
    return "anvil" in version or "hardhat" in version
