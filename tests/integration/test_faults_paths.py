"""The escrow's fault paths between real nodes (libp2p on loopback, anvil, the deployed contracts with windows of
seconds: settlement 3 s, dispute 5 s, liveness 5 s): a silent consumer, an over-claim disputed, a silent provider
slashed, a provider restarted in time to answer, equivocation reported. Each test ends with the lease finalized and
checks the final balances of consumer, provider (tokens, earnings and stake), treasury and finder to the wei."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Any

import pytest

from node.chain.anvil import devnet_key
from node.chain.proxies import Escrow, Staking
from node.crypto import eip712
from node.protocol.checkpoint import Checkpoint, sign_checkpoint
from node.protocol.lease_messages import CheckpointMessage, encode_message
from node.service import Node

from .conftest import PRICE, Devnet, address, node_config, until

pytestmark = pytest.mark.integration

TREASURY = 0  # the deployer is the devnet treasury


def _job(seconds: int) -> dict[str, Any]:
    return {"argv": [sys.executable, "-c", f"import time; time.sleep({seconds})"], "timeout_s": seconds + 30}


@dataclass
class Books:
    """Token balances, escrow and staking books of one test's parties, read at once."""

    tokens: dict[str, int]
    earnings: int
    stake: int
    accrued_fees: int


async def books(devnet: Devnet, provider: str, others: dict[str, str]) -> Books:
    c = await devnet.client()
    try:
        from node.chain.proxies import Token

        token, escrow, staking = Token(c), Escrow(c), Staking(c)
        parties = {"provider": provider, **others}
        tokens = {name: await token.balance(who) for name, who in parties.items()}
        return Books(tokens, await escrow.earnings(provider), await staking.stake_of(provider),
                     await escrow.accrued_fees())
    finally:
        await c.close()


async def on_chain(devnet: Devnet, lease_id: int) -> Any:
    c = await devnet.client()
    try:
        return await Escrow(c).get_lease(lease_id)
    finally:
        await c.close()


async def events(devnet: Devnet, lease_id: int, name: str) -> list[dict[str, Any]]:
    c = await devnet.client()
    try:
        logs = await c.w3.eth.get_logs({"fromBlock": devnet.deployment.deploy_block, "toBlock": "latest",
                                        "address": devnet.deployment.escrow})
        decoded = [c.events.decode(dict(r)) for r in logs]
        return [e.args for e in decoded if e is not None and e.name == name and e.args.get("leaseId") == lease_id]
    finally:
        await c.close()


async def pair(nodes: Any, p: int, c: int, *, consumer_config: dict[str, Any] | None = None,
               provider_config: dict[str, Any] | None = None, **consumer_kw: Any) -> tuple[Node, Node, dict]:
    provider = await nodes(f"provider{p}", account=p, provider=True)
    consumer = await nodes(f"consumer{c}", account=c, bootstrap=(provider.p2p.listen_addrs[0],), **consumer_kw)
    assert provider.engine is not None and consumer.engine is not None
    if provider_config:
        provider.engine.provider.config = replace(provider.engine.provider.config, **provider_config)
    if consumer_config:
        consumer.engine.consumer.config = replace(consumer.engine.consumer.config, **consumer_config)
    offers = await until(lambda: [o for o in consumer.query_offers({}) if o["provider"] == provider.address], 20,
                         "the provider's offer in the consumer's book")
    return provider, consumer, offers[0]


def fault(node: Node, lease_id: int) -> dict[str, Any]:
    return dict((node.lease(lease_id) or {}).get("faults") or {})


async def test_silent_consumer_provider_stops_claims_finalizes_and_withdraws(nodes, devnet):
    provider, consumer, offer = await pair(nodes, 1, 2, provider_config={"max_unsettled_s": 3})
    parties = {"consumer": consumer.address, "treasury": address(TREASURY)}
    before = await books(devnet, provider.address, parties)
    deposit = PRICE * 24
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(deposit),
                                       "job": _job(60)})
    lid = lease["lease_id"]
    await until(lambda: consumer.lease(lid)["settled_seq"] >= 1, 20, "a first settlement")
    await consumer.stop()  # the consumer disappears
    await until(lambda: fault(provider, lid).get("serving_paused"), 20, "the provider to stop serving")
    await until(lambda: provider.lease(lid)["job_running"] is False, 10, "the job to be stopped")
    claimed = await until(lambda: events(devnet, lid, "UsageClaimed"), 20, "the provider's claim")
    await until(lambda: events(devnet, lid, "ClaimFinalized"), 20, "the claim to be finalized")
    await until(lambda: provider.lease(lid)["status"] == "FINALIZED", 60, "the provider to finalize the lease")
    await until(lambda: _earnings_zero(devnet, provider.address), 20, "the provider to withdraw")
    le = await on_chain(devnet, lid)
    assert le.settled_gpu_seconds >= claimed[-1]["cumulativeGpuSeconds"] and le.paid == PRICE * le.settled_gpu_seconds
    [fin] = await events(devnet, lid, "LeaseFinalized")
    assert fin["refund"] == deposit - le.paid
    fee = le.paid * 100 // 10_000
    after = await books(devnet, provider.address, parties)
    assert after.tokens["consumer"] == before.tokens["consumer"] - le.paid
    assert after.tokens["provider"] == before.tokens["provider"] + le.paid - fee
    assert after.accrued_fees == before.accrued_fees + fee
    assert after.tokens["treasury"] == before.tokens["treasury"]
    assert after.stake == before.stake and after.earnings == 0
    notes = [n["notice"] for n in provider.lease(lid)["notices"]]
    assert {"service_paused", "claim_sent", "usage_claimed", "claim_finalized"} <= set(notes)


async def _earnings_zero(devnet: Devnet, who: str) -> bool:
    c = await devnet.client()
    try:
        return await Escrow(c).earnings(who) == 0
    finally:
        await c.close()


async def test_a_claim_above_the_verified_usage_is_disputed_and_cannot_be_claimed_again(nodes, devnet):
    provider, consumer, offer = await pair(nodes, 3, 4, settle_interval=3600.0)  # the consumer does not settle
    parties = {"consumer": consumer.address, "treasury": address(TREASURY)}
    before = await books(devnet, provider.address, parties)
    deposit = PRICE * 40
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(deposit),
                                       "job": _job(60)})
    lid = lease["lease_id"]
    await until(lambda: consumer.lease(lid)["accepted_seq"] >= 2, 20, "verified checkpoints")
    acc = consumer.engine.leases[(lid, "consumer")].state.beats.last_accepted
    cp = acc.checkpoint
    # the provider's wallet signs the same seq again with more usage and claims it
    domain = eip712.Domain(devnet.deployment.chain_id, devnet.deployment.escrow)
    inflated = sign_checkpoint(Checkpoint(lid, cp.seq, cp.cumulative_gpu_seconds + 2, cp.heartbeat_head,
                                          cp.timestamp), devnet_key(3), domain)
    cheat = await devnet.client(3)
    started = (await on_chain(devnet, lid)).started_at

    async def elapsed_allows_it() -> bool:  # the escrow caps usage by the time elapsed on-chain
        block = await cheat.w3.eth.get_block("latest")
        return int(block["timestamp"]) - started > inflated.checkpoint.cumulative_gpu_seconds

    try:
        await until(elapsed_allows_it, 20, "the chain's clock to pass the inflated usage")
        await Escrow(cheat).claim(f"cheat:{lid}", inflated.checkpoint, inflated.signature)
        [disputed] = await until(lambda: events(devnet, lid, "ClaimDisputed"), 20, "the consumer's dispute")
        assert disputed["claimedSeq"] == cp.seq and disputed["evidenceSeq"] >= cp.seq
        await until(lambda: fault(consumer, lid)["disputed_seq"] == disputed["evidenceSeq"], 10,
                    "the consumer to see its dispute")
        assert "exceeds" in " ".join(n["detail"] for n in consumer.lease(lid)["notices"])
        from node.chain.tx import TxFailed, TxRace

        with pytest.raises((TxFailed, TxRace), match="LeaseEscrow_SeqDisputed"):
            await Escrow(cheat).claim(f"cheat-again:{lid}", inflated.checkpoint, inflated.signature)
    finally:
        await cheat.close()
    consumer.engine.settlements.interval = 0.5  # settle from now on, then close and finalize
    await consumer.close_lease(lid)
    await until(lambda: consumer.lease(lid)["status"] == "FINALIZED", 40, "finalization")
    await until(lambda: _earnings_zero(devnet, provider.address), 20, "the provider to withdraw")
    le = await on_chain(devnet, lid)
    fee = le.paid * 100 // 10_000
    after = await books(devnet, provider.address, parties)
    assert le.paid == PRICE * le.settled_gpu_seconds and le.settled_gpu_seconds <= cp.cumulative_gpu_seconds + 3
    assert after.tokens["consumer"] == before.tokens["consumer"] - le.paid
    assert after.tokens["provider"] == before.tokens["provider"] + le.paid - fee
    assert after.accrued_fees == before.accrued_fees + fee and after.tokens["treasury"] == before.tokens["treasury"]
    assert after.stake == before.stake


async def test_silent_provider_is_challenged_and_slashed_at_the_deadline(nodes, devnet):
    provider, consumer, offer = await pair(nodes, 5, 6, consumer_config={"challenge_after_ms": 3_000})
    parties = {"consumer": consumer.address, "treasury": address(TREASURY)}
    before = await books(devnet, provider.address, parties)
    deposit = PRICE * 120
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(deposit),
                                       "job": _job(120)})
    lid = lease["lease_id"]
    await until(lambda: consumer.lease(lid)["settled_seq"] >= 1, 20, "a first settlement")
    collateral = (await on_chain(devnet, lid)).collateral
    await provider.stop()  # the provider disappears
    [challenge] = await until(lambda: events(devnet, lid, "LivenessChallenged"), 20, "the consumer's challenge")
    [resolved] = await until(lambda: events(devnet, lid, "LivenessResolved"), 30, "the resolution")
    assert resolved["slashed"] == collateral * 1_000 // 10_000
    v = await until(lambda: consumer.lease(lid)["status"] == "FINALIZED" and consumer.lease(lid), 40, "finalization")
    assert v["close_reason"] == "liveness_slashed" and int(v["faults"]["slashed"]) == resolved["slashed"]
    assert challenge["deadline"] <= (await on_chain(devnet, lid)).closed_at
    le = await on_chain(devnet, lid)
    fee = le.paid * 100 // 10_000
    slashed = resolved["slashed"]
    to_consumer = slashed * 5_000 // 10_000 + slashed * 2_000 // 10_000  # wronged and finder shares
    after = await books(devnet, provider.address, parties)
    assert after.tokens["consumer"] == before.tokens["consumer"] - le.paid + to_consumer
    assert after.tokens["treasury"] == before.tokens["treasury"] + slashed - to_consumer
    assert after.stake == before.stake - slashed
    assert after.earnings == before.earnings + le.paid - fee  # the provider is gone: not withdrawn
    assert after.tokens["provider"] == before.tokens["provider"]
    assert after.accrued_fees == before.accrued_fees + fee


async def test_equivocation_is_reported_and_the_collateral_slashed(nodes, devnet):
    provider, consumer, offer = await pair(nodes, 1, 7)
    parties = {"consumer": consumer.address, "treasury": address(TREASURY)}
    before = await books(devnet, provider.address, parties)
    deposit = PRICE * 60
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(deposit),
                                       "job": _job(60)})
    lid = lease["lease_id"]
    await until(lambda: consumer.lease(lid)["accepted_seq"] >= 1, 20, "a verified checkpoint")
    collateral = (await on_chain(devnet, lid)).collateral
    acc = consumer.engine.leases[(lid, "consumer")].state.beats.last_accepted
    cp = acc.checkpoint
    domain = eip712.Domain(devnet.deployment.chain_id, devnet.deployment.escrow)
    second = sign_checkpoint(Checkpoint(lid, cp.seq, cp.cumulative_gpu_seconds + 1, cp.heartbeat_head,
                                        cp.timestamp), devnet_key(1), domain)
    await consumer.engine.on_lease_message(provider.p2p.peer_id, encode_message(CheckpointMessage(second)))
    [report] = await until(lambda: events(devnet, lid, "EquivocationReported"), 20, "the equivocation report")
    assert report["finder"] == consumer.address and report["slashed"] == collateral
    v = await until(lambda: consumer.lease(lid)["status"] == "FINALIZED" and consumer.lease(lid), 40, "finalization")
    assert v["close_reason"] == "equivocation" and v["faults"]["equivocation_reported"] is True
    await until(lambda: provider.lease(lid)["status"] == "FINALIZED", 20, "the provider to see finalization")
    await until(lambda: _earnings_zero(devnet, provider.address), 20, "the provider to withdraw")
    le = await on_chain(devnet, lid)
    fee = le.paid * 100 // 10_000
    slashed = report["slashed"]
    to_consumer = slashed * 5_000 // 10_000 + slashed * 2_000 // 10_000  # wronged, and finder (the consumer)
    after = await books(devnet, provider.address, parties)
    assert after.tokens["consumer"] == before.tokens["consumer"] - le.paid + to_consumer
    assert after.tokens["treasury"] == before.tokens["treasury"] + slashed - to_consumer
    assert after.stake == before.stake - slashed
    assert after.tokens["provider"] == before.tokens["provider"] + le.paid - fee
    assert after.accrued_fees == before.accrued_fees + fee
    assert provider.lease(lid)["faults"]["equivocation_reported"] is True


async def test_a_provider_restarted_during_a_challenge_answers_it_and_the_lease_goes_on(nodes, devnet, tmp_path):
    provider, consumer, offer = await pair(nodes, 3, 2, consumer_config={"challenge_after_ms": 2_000})
    stake = (await books(devnet, provider.address, {})).stake
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(PRICE * 120),
                                       "job": _job(120)})
    lid = lease["lease_id"]
    await until(lambda: consumer.lease(lid)["settled_seq"] >= 1, 20, "a first settlement")
    await provider.stop()
    await until(lambda: events(devnet, lid, "LivenessChallenged"), 20, "the consumer's challenge")
    again = Node(node_config(devnet, provider.cfg.data_dir, account=3, provider=True))
    await again.start()
    try:
        await until(lambda: events(devnet, lid, "LivenessAnswered"), 20, "the restarted provider's answer")
        await until(lambda: fault(consumer, lid).get("challenge_deadline") is None, 20,
                    "the consumer to see the answer")
        assert not await events(devnet, lid, "LivenessResolved")
        assert (await on_chain(devnet, lid)).status == 1
        assert "liveness_answered" in [n["notice"] for n in consumer.lease(lid)["notices"]]
        await consumer.close_lease(lid)
        await until(lambda: consumer.lease(lid)["status"] == "FINALIZED", 40, "finalization")
        assert (await books(devnet, provider.address, {})).stake == stake  # nothing slashed
    finally:
        await again.stop()


async def test_a_restarted_provider_listens_where_it_did_and_its_consumer_resumes(nodes, devnet):
    provider, consumer, offer = await pair(nodes, 5, 4)
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(PRICE * 120),
                                       "job": _job(120)})
    lid = lease["lease_id"]
    await until(lambda: consumer.lease(lid)["accepted_seq"] >= 1, 20, "a first checkpoint")
    addrs = provider.p2p.listen_addrs
    await provider.stop()
    again = Node(node_config(devnet, provider.cfg.data_dir, account=5, provider=True))
    await again.start()
    try:
        assert again.p2p.listen_addrs == addrs  # the kept port, not a new random one
        beats = consumer.lease(lid)["heartbeats"]
        seq = consumer.lease(lid)["accepted_seq"]
        # the consumer dials the quiet provider again; the provider's queued beats and checkpoints follow
        await until(lambda: (v := consumer.lease(lid))["heartbeats"] > beats + 2 and v["accepted_seq"] > seq, 40,
                    "heartbeats and checkpoints from the restarted provider")
        assert consumer.lease(lid)["rejected_checkpoints"] == 0
    finally:
        await again.stop()
