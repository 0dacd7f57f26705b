"""Races between real nodes on anvil: two consumers opening an offer's last GPUs, six opens from one wallet at
once, a close racing the settlements, a claim racing a settlement. Each ends in one state both nodes agree with,
every revert a user sees is the escrow's error by name, and the final balances are exact to the wei."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from typing import Any

import pytest

from node.chain.tx import TxFailed
from node.service import Node

from .conftest import PRICE, address, node_config, until
from .test_faults_paths import _earnings_zero, books, events, on_chain, pair

pytestmark = pytest.mark.integration


def _job(seconds: int) -> dict[str, Any]:
    return {"argv": [sys.executable, "-c", f"import time; time.sleep({seconds})"], "timeout_s": seconds + 30}


async def test_two_consumers_race_for_the_last_gpus_one_lease_the_other_keeps_its_funds(nodes, devnet):
    provider, first, offer = await pair(nodes, 1, 2)
    second = await nodes("consumer4", account=4, bootstrap=(provider.p2p.listen_addrs[0],))
    await until(lambda: [o for o in second.query_offers({}) if o["offer_id"] == offer["offer_id"]], 20,
                "the offer at the second consumer")
    deposit = PRICE * 2 * 30
    b_first, b_second = await devnet.balance(first.address), await devnet.balance(second.address)
    req = {"offer_id": offer["offer_id"], "gpus": 2, "deposit": str(deposit)}
    results = await asyncio.gather(first.open_lease(dict(req)), second.open_lease(dict(req)), return_exceptions=True)
    opened = [r for r in results if isinstance(r, dict)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(opened) == 1 and len(failed) == 1, results
    assert isinstance(failed[0], TxFailed) and failed[0].error.startswith("LeaseEscrow_InsufficientCapacity("), \
        failed[0]
    winner, loser = (first, second) if isinstance(results[0], dict) else (second, first)
    assert loser.leases() == []
    b_loser = b_second if loser is second else b_first
    assert await devnet.balance(loser.address) == b_loser  # its funds never left
    lid = opened[0]["lease_id"]
    await winner.close_lease(lid)
    await until(lambda: winner.lease(lid)["status"] == "FINALIZED", 40, "finalization")
    await until(lambda: provider.lease(lid)["status"] == "FINALIZED", 20, "the provider to see it")
    b_winner = b_first if winner is first else b_second
    le = await on_chain(devnet, lid)
    assert await devnet.balance(winner.address) == b_winner - le.paid


async def test_six_opens_from_one_wallet_all_open_and_none_reverts(nodes, devnet, tmp_path):
    cfg = node_config(devnet, tmp_path / "provider6", account=3, provider=True)
    provider = Node(replace(cfg, provider=replace(cfg.provider, declared_gpus="6xSIM-A100:40960")))
    await provider.start()
    try:
        consumer = await nodes("consumer6", account=6, bootstrap=(provider.p2p.listen_addrs[0],))
        [offer] = await until(lambda: [o for o in consumer.query_offers({}) if o["provider"] == provider.address],
                              20, "the offer")
        before = await devnet.balance(consumer.address)
        req = {"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(PRICE * 30)}
        results = await asyncio.gather(*(consumer.open_lease(dict(req)) for _ in range(6)), return_exceptions=True)
        assert all(isinstance(r, dict) for r in results), results
        lids = sorted(r["lease_id"] for r in results)
        assert len(set(lids)) == 6
        assert await devnet.balance(consumer.address) == before - 6 * PRICE * 30
        opens = [dict(r) for r in consumer.db.query("SELECT kind, status, error FROM tx_intents")
                 if str(r["kind"]).startswith("openLease")]
        assert len(opens) == 6 and all(r["status"] == "mined" for r in opens), opens  # no gas burnt on a revert
        for lid in lids:
            await consumer.close_lease(lid)
        await until(lambda: all(consumer.lease(lid)["status"] == "FINALIZED" for lid in lids), 60, "finalization")
        paid = sum([(await on_chain(devnet, lid)).paid for lid in lids])
        assert await devnet.balance(consumer.address) == before - paid
    finally:
        await provider.stop()


async def test_a_close_racing_the_settlements_ends_in_one_state_both_nodes_agree_with(nodes, devnet):
    provider, consumer, offer = await pair(nodes, 5, 7)
    parties = {"consumer": consumer.address, "treasury": address(0)}
    before = await books(devnet, provider.address, parties)
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(PRICE * 60),
                                       "job": _job(60)})
    lid = lease["lease_id"]
    await until(lambda: consumer.lease(lid)["accepted_seq"] >= 2, 20, "checkpoints")
    await consumer.close_lease(lid)  # while the latest checkpoint is being settled
    await until(lambda: consumer.lease(lid)["status"] == "FINALIZED", 40, "finalization")
    await until(lambda: provider.lease(lid)["status"] == "FINALIZED", 20, "the provider to see it")
    await until(lambda: _earnings_zero(devnet, provider.address), 20, "the provider to withdraw")
    le = await on_chain(devnet, lid)
    c, p = consumer.lease(lid), provider.lease(lid)
    assert c["settled_seq"] == p["settled_seq"] == le.last_seq
    assert c["settled_gpu_seconds"] == p["settled_gpu_seconds"] == le.settled_gpu_seconds
    assert c["closed_at"] == p["closed_at"] == le.closed_at
    seqs = [e["seq"] for e in await events(devnet, lid, "LeaseSettled")]
    assert len(seqs) == len(set(seqs))
    fee = le.paid * 100 // 10_000
    after = await books(devnet, provider.address, parties)
    assert after.tokens["consumer"] == before.tokens["consumer"] - le.paid
    assert after.tokens["provider"] == before.tokens["provider"] + le.paid - fee
    assert after.accrued_fees == before.accrued_fees + fee and after.tokens["treasury"] == before.tokens["treasury"]


async def test_a_claim_racing_a_settlement_pays_each_gpu_second_once(nodes, devnet):
    # the consumer settles only every 6 s: the provider (max 2 s unsettled) claims meanwhile
    provider, consumer, offer = await pair(nodes, 3, 4, provider_config={"max_unsettled_s": 2}, settle_interval=6.0)
    parties = {"consumer": consumer.address, "treasury": address(0)}
    before = await books(devnet, provider.address, parties)
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(PRICE * 30),
                                       "job": _job(60)})
    lid = lease["lease_id"]
    await until(lambda: events(devnet, lid, "UsageClaimed"), 30, "a claim")
    await until(lambda: events(devnet, lid, "ClaimFinalized"), 30, "the claim's end (paid, or moot)")
    await consumer.close_lease(lid)
    await until(lambda: consumer.lease(lid)["status"] == "FINALIZED", 40, "finalization")
    await until(lambda: provider.lease(lid)["status"] == "FINALIZED", 20, "the provider to see it")
    await until(lambda: _earnings_zero(devnet, provider.address), 20, "the provider to withdraw")
    le = await on_chain(devnet, lid)
    settled = await events(devnet, lid, "LeaseSettled")
    assert len({e["seq"] for e in settled}) == len(settled)
    assert sum(e["amount"] for e in settled) == le.paid == PRICE * le.settled_gpu_seconds
    c, p = consumer.lease(lid), provider.lease(lid)
    assert c["settled_gpu_seconds"] == p["settled_gpu_seconds"] == le.settled_gpu_seconds
    fee = le.paid * 100 // 10_000
    after = await books(devnet, provider.address, parties)
    assert after.tokens["consumer"] == before.tokens["consumer"] - le.paid
    assert after.tokens["provider"] == before.tokens["provider"] + le.paid - fee
    assert after.accrued_fees == before.accrued_fees + fee
