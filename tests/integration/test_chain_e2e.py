"""Issue-level check of the on-chain half: a real anvil, the deployed contracts, one lease opened from a
provider-signed offer, settled with a provider-signed checkpoint, closed, finalized — every balance to the wei."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from eth_account import Account

from node.chain.anvil import Anvil, devnet_key
from node.chain.artifacts import Deployment
from node.chain.client import ChainClient
from node.chain.proxies import Escrow, Staking, Token
from node.chain.tx import TxFailed
from node.crypto import eip712
from node.storage.db import Database

pytestmark = pytest.mark.integration

E18 = 10**18


@dataclass(frozen=True)
class OfferArgs:
    provider: str
    nonce: int
    gpu_model: bytes
    gpu_count: int
    vram_mib: int
    price_per_gpu_second: int
    min_duration: int
    max_duration: int
    expires_at: int
    spec_hash: bytes


@dataclass(frozen=True)
class CP:
    lease_id: int
    seq: int
    cumulative_gpu_seconds: int
    heartbeat_head: bytes
    timestamp: int


def sign_offer(key: bytes, domain: eip712.Domain, o: OfferArgs) -> bytes:
    sh = eip712.offer_struct_hash(o.provider, o.nonce, o.gpu_model, o.gpu_count, o.vram_mib, o.price_per_gpu_second,
                                  o.min_duration, o.max_duration, o.expires_at, o.spec_hash)
    return eip712.sign_digest(key, eip712.digest(domain.separator, sh))


def sign_cp(key: bytes, domain: eip712.Domain, cp: CP) -> bytes:
    msg = {"leaseId": cp.lease_id, "seq": cp.seq, "cumulativeGpuSeconds": cp.cumulative_gpu_seconds,
           "heartbeatHead": cp.heartbeat_head, "timestamp": cp.timestamp}
    return eip712.sign_typed_data(key, eip712.checkpoint_typed_data(domain, msg))  # the wallet path


async def _scenario(anvil: Anvil, deployment: Deployment, tmp_path) -> None:
    pk, ck = devnet_key(1), devnet_key(2)
    provider, consumer = Account.from_key(pk).address, Account.from_key(ck).address
    pchain = await ChainClient.connect(anvil.url, deployment, Database(tmp_path / "p.sqlite"), pk)
    cchain = await ChainClient.connect(anvil.url, deployment, Database(tmp_path / "c.sqlite"), ck)
    ptoken, ctoken = Token(pchain), Token(cchain)
    pstaking, pescrow, cescrow = Staking(pchain), Escrow(pchain), Escrow(cchain)
    domain = eip712.Domain(deployment.chain_id, deployment.escrow)
    assert await cescrow.domain_separator() == domain.separator

    stake = 1_000 * E18
    await ptoken.mint("mint-p", provider, stake)
    await ptoken.approve("approve-p", deployment.staking, stake)
    await pstaking.stake("stake-p", stake)
    await pstaking.register("register-p", b"\x42" * 32, "")
    assert await pstaking.is_registered(provider)

    price = 10**12
    block = await pchain.w3.eth.get_block("latest")
    now = int(block["timestamp"])
    offer = OfferArgs(provider, 1, b"H100".ljust(32, b"\0"), 4, 81920, price, 10, 3600, now + 600, b"\x01" * 32)
    sig = sign_offer(pk, domain, offer)

    deposit = 2 * 3600 * price  # 2 GPUs for an hour
    await ctoken.mint("mint-c", consumer, deposit)
    await ctoken.approve("approve-c", deployment.escrow, deposit)
    c_before = await ctoken.balance(consumer)
    r_open = await cescrow.open_lease("open-1", offer, sig, 2, deposit)
    lease_id = 1
    lease = await cescrow.get_lease(lease_id)
    assert lease.consumer == consumer and lease.provider == provider and lease.status == 1
    assert lease.deposit == deposit and lease.gpus == 2
    assert await ctoken.balance(consumer) == c_before - deposit
    collateral = lease.collateral
    assert await pstaking.locked_stake(provider) == collateral

    # advance time so that usage is possible, then settle a provider-signed checkpoint
    await pchain.w3.provider.make_request("evm_increaseTime", [100])
    await pchain.w3.provider.make_request("evm_mine", [])
    cp = CP(lease_id, 1, 150, b"\x07" * 32, now + 90)
    r_settle = await cescrow.settle("settle-1", cp, sign_cp(pk, domain, cp))
    fee_bps = await cescrow.fee_bps()
    gross = 150 * price
    fee = gross * fee_bps // 10_000
    assert await cescrow.earnings(provider) == gross - fee
    # the lease's fee stays in the escrow and becomes withdrawable fees when the lease is finalized
    assert await cescrow.accrued_fees() == 0
    assert await ctoken.balance(deployment.escrow) == deposit

    # replaying the same checkpoint is a race (already settled), not a bug
    from node.chain.tx import TxRace

    with pytest.raises(TxRace):
        await cescrow.settle("settle-1-again", cp, sign_cp(pk, domain, cp))
    # a checkpoint signed by the consumer instead of the provider is refused
    forged = CP(lease_id, 2, 160, b"\x07" * 32, now + 95)
    with pytest.raises(TxFailed, match="InvalidSignature"):
        await cescrow.settle("settle-forged", forged, sign_cp(ck, domain, forged))

    r_close = await cescrow.close("close-1", lease_id)
    window = await cescrow.settlement_window()
    await pchain.w3.provider.make_request("evm_increaseTime", [window + 1])
    await pchain.w3.provider.make_request("evm_mine", [])
    await cescrow.finalize("finalize-1", lease_id)
    assert await ctoken.balance(consumer) == c_before - gross
    assert await cescrow.accrued_fees() == fee
    assert await pstaking.locked_stake(provider) == 0
    p_before = await ptoken.balance(provider)
    await pescrow.withdraw_earnings("withdraw-1")
    assert await ptoken.balance(provider) == p_before + gross - fee
    assert await ctoken.balance(deployment.escrow) == fee  # only unwithdrawn fees remain
    total = r_open.gas_used + r_settle.gas_used + r_close.gas_used
    print(f"gas open={r_open.gas_used} settle={r_settle.gas_used} close={r_close.gas_used} total={total}")


def test_open_settle_close_refund_withdraw(anvil: Anvil, deployment: Deployment, tmp_path) -> None:
    asyncio.run(_scenario(anvil, deployment, tmp_path))


def test_wrong_chain_is_refused(anvil: Anvil, deployment: Deployment, tmp_path) -> None:
    from dataclasses import replace

    from node.errors import ChainMismatch

    bad = replace(deployment, chain_id=1)
    with pytest.raises(ChainMismatch):
        asyncio.run(ChainClient.connect(anvil.url, bad, Database(tmp_path / "x.sqlite"), None))


def test_dead_rpc_gives_clear_error(deployment: Deployment, tmp_path) -> None:
    from node.errors import ChainError

    with pytest.raises(ChainError, match="unreachable"):
        asyncio.run(ChainClient.connect("http://127.0.0.1:9", deployment, Database(tmp_path / "y.sqlite"), None))
