"""``gpunet devnet up|down|status``: a local anvil chain that keeps its state across restarts, with the contracts
deployed and the development wallets funded. Everything lives in ``$GPUNET_HOME/devnet`` (``--dir``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from node.cli.app import fail, gdev, json_option, main, print_json, print_table
from node.errors import NodeError

DEV_ACCOUNTS = 4  # anvil accounts 0..3 get gDEV
DEV_GDEV = 10_000 * 10**18

dir_option = click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
                          help="devnet directory (default $GPUNET_HOME/devnet, ~/.gpunet/devnet)")
rpc_option = click.option("--rpc-url", envvar="GPUNET_RPC_URL", default="http://127.0.0.1:8545", show_default=True,
                          help="where the devnet listens (its port is used; env GPUNET_RPC_URL)")


def _dir(directory: Path | None) -> Path:
    from node.chain.artifacts import devnet_dir

    return directory or devnet_dir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running(d: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((d / "anvil.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return info if _pid_alive(int(info["pid"])) else None


def _rpc_ready(url: str) -> bool:
    from node.chain.anvil import _rpc_ready as ready

    return ready(url)


async def _deploy_and_fund(url: str, out: Path) -> dict[str, Any]:
    from eth_account import Account

    from node.chain.client import ChainClient
    from node.chain.deploy import DeployParams, deploy_all
    from node.chain.proxies import Token
    from node.crypto.devnet import devnet_key
    from node.storage.db import Database

    deployment = deploy_all(url, devnet_key(0), DeployParams(), out=out)
    dep = await deployment
    chain = await ChainClient.connect(url, dep, Database(":memory:"), devnet_key(0))
    try:
        token = Token(chain)
        for i in range(DEV_ACCOUNTS):
            await token.mint(f"devnet-fund:{i}:{time.time_ns()}", Account.from_key(devnet_key(i)).address, DEV_GDEV)
    finally:
        await chain.close()
    return dep.to_json()


async def _deployed(url: str, path: Path) -> bool:
    """The deployments file exists and its escrow has code on this chain (the state was kept)."""
    from node.chain.artifacts import load_deployment
    from node.chain.client import make_w3

    if not path.exists():
        return False
    dep = load_deployment(path)
    w3 = make_w3(url)
    try:
        return bool(await w3.eth.get_code(dep.escrow))  # type: ignore[arg-type]
    finally:
        await w3.provider.disconnect()


def _accounts() -> list[dict[str, Any]]:
    from eth_account import Account

    from node.crypto.devnet import devnet_key

    return [{"index": i, "address": Account.from_key(devnet_key(i)).address, "gdev": str(DEV_GDEV)}
            for i in range(DEV_ACCOUNTS)]


@main.group()
def devnet() -> None:
    """A local development chain (anvil) with the contracts deployed and dev wallets funded."""


@devnet.command("up")
@dir_option
@rpc_option
@click.option("--block-time", type=click.FloatRange(0.1), default=1.0, show_default=True, help="seconds per block")
@json_option
def devnet_up(directory: Path | None, rpc_url: str, block_time: float, as_json: bool) -> None:
    """Start anvil in the background (state kept in the devnet directory across restarts), deploy the contracts
    on first start and fund the dev accounts. Prints the RPC URL, the deployments file and the funded accounts.

    Example: gpunet devnet up
    """
    from node.chain.anvil import find_tool

    d = _dir(directory)
    d.mkdir(parents=True, exist_ok=True)
    parts = urlsplit(rpc_url)
    if parts.hostname not in ("127.0.0.1", "localhost") or not parts.port:
        raise click.BadParameter("the devnet listens on loopback: give http://127.0.0.1:PORT", param_hint="--rpc-url")
    url = f"http://127.0.0.1:{parts.port}"
    running = _running(d)
    started = False
    if running is None:
        if _rpc_ready(url):
            fail(f"something else already answers on {url}: stop it or give another --rpc-url")
        try:
            args = [find_tool("anvil"), "--host", "127.0.0.1", "--port", str(parts.port), "--chain-id", "31337",
                    "--block-time", f"{block_time:g}", "--state", str(d / "state.json"), "--state-interval", "5",
                    "--silent"]
        except NodeError as exc:
            fail(str(exc))
        log = open(d / "anvil.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while not _rpc_ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                fail(f"anvil did not start on {url} (see {d / 'anvil.log'})")
            time.sleep(0.05)
        (d / "anvil.json").write_text(json.dumps({"pid": proc.pid, "rpc_url": url}) + "\n")
        started = True
    else:
        url = running["rpc_url"]
    dep_path = d / "deployments.json"
    try:
        deployed = asyncio.run(_deployed(url, dep_path))
        if not deployed:
            asyncio.run(_deploy_and_fund(url, dep_path))
    except NodeError as exc:
        fail(str(exc))
    out: dict[str, Any] = {"rpc_url": url, "chain_id": 31337, "deployments": str(dep_path), "dir": str(d),
                           "started": started, "deployed_now": not deployed, "accounts": _accounts()}
    if as_json:
        print_json(out)
        return
    click.echo(f"devnet {'started' if started else 'already running'}: {url} (chain 31337, state in {d})")
    click.echo(f"deployments file: {dep_path}" + ("  (contracts deployed now)" if not deployed else ""))
    print_table("dev accounts (use --dev-account N, or `gpunet fund` a wallet of your own)",
                ["N", "address", "funded with"],
                [[a["index"], a["address"], f"{gdev(a['gdev'])} gDEV, 10,000 ETH"] for a in out["accounts"]])
    click.echo(f"next: export GPUNET_RPC_URL={url}")


@devnet.command("down")
@dir_option
@json_option
def devnet_down(directory: Path | None, as_json: bool) -> None:
    """Stop the devnet's anvil; its state is written to the devnet directory and loaded by the next `up`.

    Example: gpunet devnet down
    """
    d = _dir(directory)
    info = _running(d)
    if info is None:
        if as_json:
            print_json({"stopped": False})
        else:
            click.echo("devnet is not running")
        return
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    (d / "anvil.json").unlink(missing_ok=True)
    if as_json:
        print_json({"stopped": True, "state": str(d / "state.json")})
    else:
        click.echo(f"devnet stopped; state kept in {d / 'state.json'}")


@devnet.command("status")
@dir_option
@json_option
def devnet_status(directory: Path | None, as_json: bool) -> None:
    """Whether the devnet runs, its RPC URL, head block and deployments file. Exit status 3 when it is down.

    Example: gpunet devnet status --json
    """
    import sys

    d = _dir(directory)
    info = _running(d)
    out: dict[str, Any] = {"running": info is not None, "dir": str(d), "deployments": str(d / "deployments.json")}
    if info is not None:
        out["rpc_url"] = info["rpc_url"]
        out["pid"] = info["pid"]
        with contextlib.suppress(Exception):
            out["block"] = asyncio.run(_block(info["rpc_url"]))
    if as_json:
        print_json(out)
    elif info is None:
        click.echo(f"devnet is not running ({d}); start it with `gpunet devnet up`")
    else:
        click.echo(f"devnet running: {out['rpc_url']} (pid {out['pid']}), block {out.get('block', '?')}, "
                   f"deployments {out['deployments']}")
    if info is None:
        sys.exit(3)


async def _block(url: str) -> int:
    from node.chain.client import make_w3

    w3 = make_w3(url, retry_for=1)
    try:
        return int(await w3.eth.block_number)
    finally:
        await w3.provider.disconnect()
