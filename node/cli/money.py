"""``gpunet fund``, ``gpunet balance``, ``gpunet withdraw`` and ``gpunet provider stake|unbond|withdraw-stake|
register|status``: the wallet's side of the contracts, straight on the chain (no node needed)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from node.cli._onchain import ChainRef, chain_options, is_devnet, run, with_client
from node.cli.app import eth, fail, gdev, json_option, main, parse_gdev, print_fields, print_json, report, when

FAUCET_ACCOUNT = 0  # devnet: anvil account 0 sends the faucet's mints


def _key(kind: str) -> str:
    return f"cli:{kind}:{time.time_ns()}:{os.urandom(3).hex()}"


def _tx(r: Any) -> dict[str, Any]:
    return {"tx": r.tx_hash, "block": r.block_number, "gas": r.gas_used}


@main.command()
@click.argument("address", required=False)
@click.option("--eth", "eth_amount", default="10", show_default=True, help="ETH to add (for gas)")
@click.option("--gdev", "gdev_amount", default="1000", show_default=True, help="gDEV to mint")
@chain_options
@json_option
def fund(address: str | None, eth_amount: str, gdev_amount: str, chain: ChainRef, as_json: bool) -> None:
    """Devnet faucet: give ADDRESS (default: --wallet's) ETH for gas and gDEV. Refuses on other chains.

    Example: gpunet fund --wallet provider --gdev 2000
    """
    from eth_account import Account
    from eth_utils import is_address, to_checksum_address

    from node.chain.proxies import Token

    add_wei, add_gdev = parse_gdev(eth_amount, "--eth"), parse_gdev(gdev_amount, "--gdev")
    if address is not None and not is_address(address):
        raise click.BadParameter(f"{address!r} is not an address", param_hint="ADDRESS")

    async def go() -> dict[str, Any]:
        who = address
        if who is None:
            key = chain.key()
            if key is None:
                raise click.UsageError("give an ADDRESS or --wallet NAME")
            who = Account.from_key(key).address
        who = to_checksum_address(who)
        faucet = ChainRef(chain.rpc_url, chain.deployments, None, None, FAUCET_ACCOUNT)
        client = await faucet.connect()
        try:
            if not await is_devnet(client.w3):
                fail(f"gpunet fund is a devnet faucet; {chain.rpc_url} is not a devnet (anvil)")
            wei = int(await client.w3.eth.get_balance(who)) + add_wei
            await client.w3.provider.make_request("anvil_setBalance", [who, hex(wei)])
            r = await Token(client).mint(_key("fund"), who, add_gdev)
            return {"address": who, "eth": str(wei), "gdev": str(await Token(client).balance(who)), **_tx(r)}
        finally:
            await client.close()

    out = run(go)
    if as_json:
        print_json(out)
    else:
        click.echo(f"funded {out['address']}: now {eth(int(out['eth']))} ETH, {gdev(out['gdev'])} gDEV")


async def _balances(client: Any, who: str) -> dict[str, Any]:
    from node.chain.proxies import Escrow, Staking, Token

    token, staking, escrow = Token(client), Staking(client), Escrow(client)
    unbonding, ready_at = await client.call(client.c.staking, "unbonding", who)
    return {
        "address": who, "eth": str(await client.w3.eth.get_balance(who)), "token": str(await token.balance(who)),
        "stake": str(await staking.stake_of(who)), "stake_free": str(await staking.free_stake(who)),
        "stake_locked": str(await staking.locked_stake(who)), "unbonding": str(unbonding),
        "unbonding_ready_at": int(ready_at), "earnings": str(await escrow.earnings(who)),
        "refunds": str(await escrow.refunds(who)),
        "slash_proceeds": str(await client.call(client.c.staking, "slashProceeds", who)),
    }


def _who(chain: ChainRef, address: str | None) -> str:
    from eth_account import Account
    from eth_utils import to_checksum_address

    if address is not None:
        return to_checksum_address(address)
    key = chain.key()
    if key is None:
        raise click.UsageError("give an ADDRESS or --wallet NAME")
    return str(Account.from_key(key).address)


@main.command()
@click.argument("address", required=False)
@chain_options
@json_option
def balance(address: str | None, chain: ChainRef, as_json: bool) -> None:
    """ETH, gDEV, stake (free, locked as lease collateral, unbonding), earnings and refunds waiting to be withdrawn.

    Example: gpunet balance --wallet provider
    """
    b = with_client(chain, lambda client: _balances(client, _who(chain, address)), need_wallet=False)
    if as_json:
        print_json(b)
        return
    print_fields(b["address"], [
        ("ETH", eth(int(b["eth"]))), ("gDEV", gdev(b["token"])), ("stake", f"{gdev(b['stake'])} gDEV"),
        ("  free", f"{gdev(b['stake_free'])} gDEV"), ("  locked as collateral", f"{gdev(b['stake_locked'])} gDEV"),
        ("unbonding", f"{gdev(b['unbonding'])} gDEV" + (f" (ready {when(b['unbonding_ready_at'])})"
                                                        if int(b["unbonding"]) else "")),
        ("earnings to withdraw", f"{gdev(b['earnings'])} gDEV"), ("refunds to withdraw", f"{gdev(b['refunds'])} gDEV"),
        ("slash rewards to withdraw", f"{gdev(b['slash_proceeds'])} gDEV"),
    ])


@main.command()
@chain_options
@json_option
def withdraw(chain: ChainRef, as_json: bool) -> None:
    """Withdraw everything the contracts hold for this wallet: provider earnings, consumer refunds, slash rewards.

    Example: gpunet withdraw --wallet provider
    """
    async def go(client: Any) -> dict[str, Any]:
        from node.chain.proxies import Escrow

        who = client.address
        before = await _balances(client, who)
        out: dict[str, Any] = {"address": who, "withdrawn": {}}
        escrow = Escrow(client)
        if int(before["earnings"]):
            out["withdrawn"]["earnings"] = {"amount": before["earnings"],
                                            **_tx(await escrow.withdraw_earnings(_key("earnings")))}
        if int(before["refunds"]):
            out["withdrawn"]["refunds"] = {"amount": before["refunds"],
                                           **_tx(await escrow.withdraw_refund(_key("refund")))}
        if int(before["slash_proceeds"]):
            r = await client.transact(_key("slash"), client.c.staking, "withdrawSlashProceeds")
            out["withdrawn"]["slash_proceeds"] = {"amount": before["slash_proceeds"], **_tx(r)}
        out["token"] = str((await _balances(client, who))["token"])
        return out

    out = with_client(chain, go)
    if as_json:
        print_json(out)
    elif not out["withdrawn"]:
        click.echo("nothing to withdraw")
    else:
        for what, r in out["withdrawn"].items():
            click.echo(f"withdrew {gdev(r['amount'])} gDEV {what.replace('_', ' ')} (tx {r['tx']})")
        click.echo(f"wallet now holds {gdev(out['token'])} gDEV")


# ---------------------------------------------------------------------------------------------- provider
@main.group()
def provider() -> None:
    """Provider stake and registration on the staking contract."""


@provider.command("stake")
@click.argument("amount")
@chain_options
@json_option
def provider_stake(amount: str, chain: ChainRef, as_json: bool) -> None:
    """Add AMOUNT gDEV to this wallet's provider stake (approves the staking contract for exactly that).

    Example: gpunet provider stake 1000 --wallet provider
    """
    base = parse_gdev(amount, "AMOUNT")

    async def go(client: Any) -> dict[str, Any]:
        from node.chain.proxies import Staking, Token

        who, token, staking = client.address, Token(client), Staking(client)
        have = await token.balance(who)
        if have < base:
            fail(f"wallet {who} holds {gdev(have)} gDEV, less than {gdev(base)}: on a devnet, `gpunet fund {who}`")
        await token.ensure_allowance(_key("approve-stake"), client.deployment.staking, base)
        r = await staking.stake(_key("stake"), base)
        total, minimum = await staking.stake_of(who), await staking.min_stake()
        return {"address": who, "staked": str(base), "stake": str(total), "min_stake": str(minimum), **_tx(r)}

    report(with_client(chain, go), as_json, lambda o: f"staked {gdev(o['staked'])} gDEV; stake now "
           f"{gdev(o['stake'])} gDEV (minimum {gdev(o['min_stake'])}) tx {o['tx']}")


@provider.command("unbond")
@click.argument("amount")
@chain_options
@json_option
def provider_unbond(amount: str, chain: ChainRef, as_json: bool) -> None:
    """Start unbonding AMOUNT gDEV of free stake; `gpunet provider withdraw-stake` after the unbonding period.

    Example: gpunet provider unbond 1000 --wallet provider
    """
    base = parse_gdev(amount, "AMOUNT")

    async def go(client: Any) -> dict[str, Any]:
        r = await client.transact(_key("unbond"), client.c.staking, "requestUnbond", base)
        pending, ready_at = await client.call(client.c.staking, "unbonding", client.address)
        return {"address": client.address, "unbonding": str(pending), "ready_at": int(ready_at), **_tx(r)}

    report(with_client(chain, go), as_json, lambda o: f"unbonding {gdev(o['unbonding'])} gDEV, withdrawable "
           f"{when(o['ready_at'])} (tx {o['tx']})")


@provider.command("withdraw-stake")
@chain_options
@json_option
def provider_withdraw_stake(chain: ChainRef, as_json: bool) -> None:
    """Withdraw stake whose unbonding period is over.

    Example: gpunet provider withdraw-stake --wallet provider
    """
    async def go(client: Any) -> dict[str, Any]:
        pending, ready_at = await client.call(client.c.staking, "unbonding", client.address)
        if not pending:
            fail("nothing is unbonding: `gpunet provider unbond AMOUNT` first")
        if ready_at > int((await client.w3.eth.get_block("latest"))["timestamp"]):
            fail(f"{gdev(pending)} gDEV unbonding, withdrawable {when(ready_at)}")
        r = await client.transact(_key("withdraw-stake"), client.c.staking, "withdrawUnbonded")
        return {"address": client.address, "withdrawn": str(pending), **_tx(r)}

    report(with_client(chain, go), as_json, lambda o: f"withdrew {gdev(o['withdrawn'])} gDEV of stake (tx {o['tx']})")


@provider.command("register")
@click.option("--node-data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".gpunet"),
              show_default=True, help="the node whose key is registered (its node.key; created if missing)")
@click.option("--metadata", default="", help="public metadata (e.g. the node's multiaddrs)")
@chain_options
@json_option
def provider_register(node_data_dir: Path, metadata: str, chain: ChainRef, as_json: bool) -> None:
    """Register the node key that signs this provider's lease messages (the node also does this at start).

    Example: gpunet provider register --wallet provider --node-data-dir provider-node
    """
    from node.crypto.nodekey import signing_key
    from node.p2p.keys import load_or_create_node_key

    node_data_dir.mkdir(parents=True, exist_ok=True)
    pub = bytes(signing_key(load_or_create_node_key(node_data_dir / "node.key")).verify_key)

    async def go(client: Any) -> dict[str, Any]:
        from node.chain.proxies import Staking

        r = await Staking(client).register(_key("register"), pub, metadata[:512])
        return {"address": client.address, "node_key": "0x" + pub.hex(), **_tx(r)}

    report(with_client(chain, go), as_json,
           lambda o: f"registered node key {o['node_key']} for {o['address']} (tx {o['tx']})")


@provider.command("status")
@click.argument("address", required=False)
@chain_options
@json_option
def provider_status(address: str | None, chain: ChainRef, as_json: bool) -> None:
    """Stake, minimum, registration and node key of a provider.

    Example: gpunet provider status --wallet provider
    """
    async def go(client: Any) -> dict[str, Any]:
        from node.chain.proxies import Staking

        who = _who(chain, address)
        staking = Staking(client)
        b = await _balances(client, who)
        return {**b, "min_stake": str(await staking.min_stake()), "registered": await staking.is_registered(who),
                "node_key": "0x" + (await staking.node_key(who)).hex()}

    s = with_client(chain, go, need_wallet=False)
    if as_json:
        print_json(s)
        return
    short = int(s["min_stake"]) - int(s["stake"])
    print_fields(f"provider {s['address']}", [
        ("stake", f"{gdev(s['stake'])} gDEV (minimum {gdev(s['min_stake'])})"),
        ("  free", f"{gdev(s['stake_free'])} gDEV"), ("  locked as collateral", f"{gdev(s['stake_locked'])} gDEV"),
        ("unbonding", f"{gdev(s['unbonding'])} gDEV"), ("registered", "yes" if s["registered"] else "no"),
        ("node key", s["node_key"]), ("earnings to withdraw", f"{gdev(s['earnings'])} gDEV"),
    ])
    if short > 0:
        click.echo(f"stake {gdev(short)} gDEV more: gpunet provider stake {gdev(short).replace(',', '')}")
