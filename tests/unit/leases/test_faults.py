"""The escrow's fault paths driven by the lease engine, against the in-memory fakes: a silent consumer (the
provider pauses, claims, finalizes the claim and withdraws), a claim above what the consumer verified (disputed), a
silent provider (challenged, resolved at the deadline; answered by a live or restarted provider), equivocation
(reported), and the races between them, each ending in one state both nodes agree with."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from node.chain.tx import TxFailed
from node.protocol import lease as L
from node.protocol.checkpoint import Checkpoint, sign_checkpoint
from node.protocol.lease_messages import CheckpointMessage, encode_message
from node.storage import codec, migrations

from .fakes import (
    CONSUMER,
    CONSUMER_NODE,
    DOMAIN,
    GPUS,
    OFFER_ID,
    PRICE,
    PROVIDER,
    PROVIDER_NODE,
    PROVIDER_WALLET,
    FakeWallet,
    World,
    peer_of,
    quiesce,
)

DEPOSIT = PRICE * GPUS * 600  # ten minutes


async def started(tmp_path, **config: int) -> World:
    """Two nodes; ``config`` overrides the lease settings of new leases on both."""
    world = World(tmp_path)
    await world.start()
    for engine in (world.consumer, world.provider):
        engine.consumer.config = replace(engine.consumer.config, **config)  # type: ignore[arg-type]
        engine.provider.config = replace(engine.provider.config, **config)  # type: ignore[arg-type]
    return world


async def open_lease(world: World) -> int:
    view = await world.consumer.open_lease(OFFER_ID, GPUS, DEPOSIT, {"argv": ["train"]})
    await world.deliver()
    return int(view["lease_id"])


async def step(world: World, seconds: int = 2) -> None:
    """``seconds`` pass: the provider serves, both timers tick, the consumer settles, the logs reach both."""
    world.advance(seconds)
    if "provider" not in world.killed:
        await world.serve()
        await world.provider.tick()
    if "consumer" not in world.killed:
        await world.consumer.tick()
        await world.consumer.settlements.send_due()
    await world.deliver()
    await quiesce()


def down(world: World, role: str) -> None:
    """The node is gone: no messages, no logs, no timers."""
    node = PROVIDER_NODE if role == "provider" else CONSUMER_NODE
    world.killed.add(role)
    world.network.down.add(peer_of(node))


def kinds(world: World) -> list[str]:
    return [kind for kind, _ in world.chain.executed]


def faults(world: World, role: str, lid: int) -> L.Faults:
    engine = world.consumer if role == "consumer" else world.provider
    return engine.leases[(lid, role)].state.faults


def notices(world: World, role: str, lid: int) -> list[str]:
    engine = world.consumer if role == "consumer" else world.provider
    return [n["notice"] for n in engine.notices if n["lease_id"] == lid]


async def challenged_while_provider_down(world: World) -> int:
    """A lease whose provider went silent until the consumer challenged it; returns the lease id."""
    lid = await open_lease(world)
    for _ in range(3):
        await step(world)
    down(world, "provider")
    for _ in range(8):
        await step(world)
        if "challengeLiveness" in kinds(world):
            break
    return lid


async def inflated_claim(world: World) -> tuple[int, Checkpoint]:
    """The provider claims more usage than it signed for the consumer's last accepted checkpoint (a second,
    inflated checkpoint of the same seq), on a lease not settled yet; returns the lease and the honest checkpoint."""
    lid = await open_lease(world)
    for _ in range(4):
        await step(world)
    acc = world.consumer.leases[(lid, "consumer")].state.beats.last_accepted
    assert acc is not None
    cp = acc.checkpoint
    inflated = sign_checkpoint(Checkpoint(lid, cp.seq, cp.cumulative_gpu_seconds + 5, cp.heartbeat_head,
                                          cp.timestamp), PROVIDER_WALLET, DOMAIN)
    world.chain.leases[lid].lease = replace(world.chain.leases[lid].lease, last_seq=cp.seq - 1,
                                            settled_gpu_seconds=0, paid=0)  # as if not settled yet
    await world.chain.wallet(PROVIDER).claim("cheat", inflated.checkpoint, inflated.signature)
    await world.deliver()
    await quiesce()
    return lid, cp


async def test_silent_consumer_provider_pauses_claims_finalizes_the_claim_and_withdraws(tmp_path):
    world = await started(tmp_path, max_unsettled_s=10)
    lid = await open_lease(world)
    for _ in range(4):
        await step(world)
    settled = world.chain.leases[lid].lease.settled_gpu_seconds
    assert settled > 0  # the consumer settles while it is there
    down(world, "consumer")
    for _ in range(12):
        await step(world)
        if "claim" in kinds(world):
            break
    f = faults(world, "provider", lid)
    assert f.serving_paused and "unsettled" in notices_detail(world, lid, "service_paused")
    assert not world.executor.jobs[-1][1].running  # the job was stopped: nothing more accrues
    assert f.claim_seq > 0 and world.chain.claims[lid][0] == f.claim_seq
    claimed = world.chain.claims[lid][1]
    assert claimed > settled
    view = world.provider.lease_detail(lid)
    assert view is not None and view["faults"]["claim"]["seq"] == f.claim_seq
    assert "claim pending" in view["faults"]["reason"]
    assert "the consumer stopped settling" in notices_detail(world, lid, "claim_sent")
    for _ in range(4):  # the dispute window (5 s) passes
        await step(world)
    assert kinds(world).count("finalizeClaim") == 1 and "withdrawEarnings" in kinds(world)
    le = world.chain.leases[lid].lease
    assert le.settled_gpu_seconds == claimed and le.paid == PRICE * claimed
    assert world.chain.earnings_of[PROVIDER] == 0  # withdrawn
    assert notices(world, "provider", lid)[-2:] == ["claim_finalized", "settled_elsewhere"] or \
        "claim_finalized" in notices(world, "provider", lid)
    assert faults(world, "provider", lid).claim_seq == 0
    await world.provider.stop()


def notices_detail(world: World, lid: int, notice: str) -> str:
    return " ".join(n["detail"] for n in world.provider.notices if n["lease_id"] == lid and n["notice"] == notice)


async def test_claim_above_the_verified_usage_is_disputed_with_the_providers_own_checkpoint(tmp_path):
    world = await started(tmp_path)
    lid, cp = await inflated_claim(world)
    await world.deliver()
    assert kinds(world)[-2:] == ["claim", "dispute"]
    assert lid not in world.chain.claims and world.chain.disputed[lid] == cp.seq
    f = faults(world, "consumer", lid)
    assert f.claim_seq == 0 and f.disputed_seq == cp.seq and f.dispute_sent_seq == cp.seq
    assert "claim_disputed" in notices(world, "consumer", lid)
    assert faults(world, "provider", lid).disputed_seq == cp.seq  # both nodes agree
    await world.provider.stop()
    await world.consumer.stop()


async def test_a_claim_within_the_verified_usage_is_not_disputed(tmp_path):
    world = await started(tmp_path)
    lid = await open_lease(world)
    for _ in range(4):
        await step(world)
    acc = world.consumer.leases[(lid, "consumer")].state.beats.last_accepted
    assert acc is not None
    world.chain.leases[lid].lease = replace(world.chain.leases[lid].lease, last_seq=0, settled_gpu_seconds=0, paid=0)
    await world.chain.wallet(PROVIDER).claim("honest", acc.checkpoint, acc.signature)
    await world.deliver()
    assert "dispute" not in kinds(world)
    assert "within the usage we verified" in faults(world, "consumer", lid).reason


async def test_silent_provider_is_challenged_and_slashed_at_the_deadline(tmp_path):
    world = await started(tmp_path, challenge_after_ms=10_000)
    lid = await challenged_while_provider_down(world)
    assert "challengeLiveness" in kinds(world)
    f = faults(world, "consumer", lid)
    assert f.challenge_deadline > 0 and "challenge pending" in f.reason
    assert any("no heartbeat for" in n["detail"] for n in world.consumer.notices if n["notice"] == "challenge_sent")
    collateral = world.chain.leases[lid].lease.collateral
    for _ in range(4):
        await step(world)
    assert "resolveLiveness" in kinds(world)
    c = world.consumer.lease_detail(lid)
    assert c is not None and c["status"] in ("CLOSED", "FINALIZING", "FINALIZED")
    assert c["close_reason"] == "liveness_slashed" and int(c["faults"]["slashed"]) == collateral // 2
    assert world.chain.slashed_to[CONSUMER] == collateral // 2
    for _ in range(3):
        await step(world)
    assert world.chain.leases[lid].lease.status == 3  # finalized: the refund is paid, nothing stays locked
    await world.consumer.stop()


async def test_a_provider_restarted_during_a_challenge_answers_it(tmp_path):
    world = await started(tmp_path, challenge_after_ms=10_000)
    lid = await challenged_while_provider_down(world)
    assert world.chain.leases[lid].lease.liveness_deadline > 0
    world.network.down.clear()
    await world.restart("provider")  # its log poller has not seen the challenge: found at start
    await quiesce()
    assert "answerLiveness" in kinds(world)
    await world.deliver()
    assert world.chain.leases[lid].lease.liveness_deadline == 0
    assert faults(world, "consumer", lid).challenge_deadline == 0
    assert faults(world, "provider", lid).challenge_deadline == 0
    assert "liveness_answered" in notices(world, "consumer", lid)
    for _ in range(3):
        await step(world)
    assert "resolveLiveness" not in kinds(world) and world.chain.leases[lid].lease.status == 1
    await world.provider.stop()
    await world.consumer.stop()


async def test_an_answer_after_the_deadline_loses_to_the_resolution_and_both_nodes_agree(tmp_path):
    world = await started(tmp_path, challenge_after_ms=10_000)
    lid = await challenged_while_provider_down(world)
    world.advance(6)  # past the deadline before the provider is back
    world.network.down.clear()
    await world.restart("provider")
    await quiesce()
    await step(world, 1)
    await step(world, 1)
    assert "answerLiveness" not in kinds(world) and "resolveLiveness" in kinds(world)
    c, p = world.consumer.lease_detail(lid), world.provider.lease_detail(lid)
    assert c is not None and p is not None
    assert c["faults"]["slashed"] == p["faults"]["slashed"] != "0"
    assert c["closed_at"] == p["closed_at"] is not None
    await world.provider.stop()
    await world.consumer.stop()


async def test_equivocating_checkpoints_are_reported_and_the_collateral_slashed(tmp_path):
    world = await started(tmp_path)
    lid = await open_lease(world)
    for _ in range(4):
        await step(world)
    acc = world.consumer.leases[(lid, "consumer")].state.beats.last_accepted
    assert acc is not None
    cp = acc.checkpoint
    second = sign_checkpoint(Checkpoint(lid, cp.seq, cp.cumulative_gpu_seconds + 1, cp.heartbeat_head,
                                        cp.timestamp), PROVIDER_WALLET, DOMAIN)
    collateral = world.chain.leases[lid].lease.collateral
    await world.consumer.on_lease_message(peer_of(PROVIDER_NODE), encode_message(CheckpointMessage(second)))
    await quiesce()
    await world.deliver()
    assert kinds(world).count("reportEquivocation") == 1
    f = faults(world, "consumer", lid)
    assert f.equivocation_reported and f.equivocation_a == acc and f.equivocation_b == second
    assert world.chain.slashed_to[CONSUMER] == collateral // 2 + collateral // 4  # wronged and finder
    c = world.consumer.lease_detail(lid)
    assert c is not None and c["close_reason"] == "equivocation" and c["faults"]["equivocation_seq"] == cp.seq
    assert world.provider.lease_detail(lid)["faults"]["equivocation_reported"] is True
    await world.provider.stop()
    await world.consumer.stop()


async def test_a_claim_made_moot_by_a_settlement_pays_nothing_twice(tmp_path):
    world = await started(tmp_path, max_unsettled_s=10)
    lid = await open_lease(world)
    for _ in range(3):
        await step(world)
    down(world, "consumer")
    for _ in range(12):
        await step(world)
        if "claim" in kinds(world):
            break
    claimed = world.chain.claims[lid]
    # the consumer comes back and settles the same checkpoint before the claim is final
    world.killed.discard("consumer")
    world.network.down.clear()
    await world.restart("consumer")
    for _ in range(5):
        await step(world)
    le = world.chain.leases[lid].lease
    assert lid not in world.chain.claims
    assert le.paid == PRICE * le.settled_gpu_seconds and le.settled_gpu_seconds >= claimed[1]
    seqs = [e.args["seq"] for e in world.chain.logs if e.name == "LeaseSettled"]
    assert len(seqs) == len(set(seqs))  # no seq paid twice
    c, p = world.consumer.lease_detail(lid), world.provider.lease_detail(lid)
    assert c is not None and p is not None and c["settled_seq"] == p["settled_seq"] == le.last_seq
    await world.provider.stop()
    await world.consumer.stop()


async def test_parallel_opens_from_one_wallet_all_open_none_burns_a_permit_nonce(tmp_path):
    world = await started(tmp_path)
    views = await asyncio.gather(*(world.consumer.open_lease(OFFER_ID, 1, PRICE * 600, None) for _ in range(6)))
    assert sorted(int(v["lease_id"]) for v in views) == [1, 2, 3, 4, 5, 6]
    assert kinds(world) == ["openLease"] * 6 and world.chain.permit_nonces[CONSUMER] == 6
    await world.provider.stop()
    await world.consumer.stop()


async def test_without_the_per_wallet_open_lock_parallel_permits_collide(tmp_path):
    """The fake token models the shared permit nonce: the lock is what keeps the opens apart."""
    world = await started(tmp_path)
    world.consumer.consumer._open_lock = _NoLock()  # type: ignore[assignment]
    results = await asyncio.gather(*(world.consumer.open_lease(OFFER_ID, 1, PRICE * 600, None) for _ in range(3)),
                                   return_exceptions=True)
    failed = [r for r in results if isinstance(r, TxFailed)]
    assert len(failed) == 2 and all(f.error.startswith("ERC20InsufficientAllowance(") for f in failed)
    await world.provider.stop()
    await world.consumer.stop()


class _NoLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def test_schema_3_lease_rows_gain_the_fault_state_at_its_defaults():
    state = L.LeaseState(L.Role.CONSUMER, L.OfferTerms(b"\x01" * 32, PROVIDER, b"\x02" * 32, PRICE, 3600), CONSUMER,
                         GPUS, DOMAIN, L.Ledger(deposit=DEPOSIT))
    now = json.loads(codec.dumps(state))
    v3 = {k: v for k, v in now.items() if k != "faults"}
    v3["config"] = {k: v for k, v in now["config"].items()
                    if k not in ("max_unsettled_s", "challenge_after_ms", "fault_retry_ms")}
    migrated = migrations.lease_row_v5_to_v6(migrations.lease_row_v4_to_v5(migrations.lease_row_v3_to_v4(v3)))
    assert migrated == now
    assert codec.loads(L.LeaseState, json.dumps(migrated)) == state


def test_schema_5_lease_rows_gain_no_dispute_evidence():
    state = L.LeaseState(L.Role.CONSUMER, L.OfferTerms(b"\x01" * 32, PROVIDER, b"\x02" * 32, PRICE, 3600), CONSUMER,
                         GPUS, DOMAIN, L.Ledger(deposit=DEPOSIT))
    now = json.loads(codec.dumps(state))
    v5 = {**now, "faults": {k: v for k, v in now["faults"].items() if k != "dispute_evidence"}}
    assert migrations.lease_row_v5_to_v6(v5) == now
    assert codec.loads(L.LeaseState, json.dumps(migrations.lease_row_v5_to_v6(v5))) == state


async def test_a_close_deferred_by_a_dead_endpoint_is_sent_once_it_answers_without_a_restart(tmp_path):
    world = await started(tmp_path)
    lid = await open_lease(world)
    await step(world)
    runner = world.consumer.runner
    runner.retry_first_s, runner.retry_max_s = 0.02, 0.05
    world.chain.endpoint_down = True
    await world.consumer.close_lease(lid)
    for _ in range(100):
        if runner.deferred_retries >= 3:
            break
        await asyncio.sleep(0.02)
    assert runner.deferred_retries >= 3  # tried again and again while the endpoint is down, without a restart
    assert "closeLease" not in kinds(world)
    assert [type(p.event).__name__ for p in world.consumer.store.pending()] == ["ContractSendClose"]
    world.chain.endpoint_down = False
    for _ in range(100):
        if "closeLease" in kinds(world):
            break
        await asyncio.sleep(0.02)
    assert kinds(world).count("closeLease") == 1
    assert world.consumer.store.pending() == []
    retries = runner.deferred_retries
    await asyncio.sleep(0.2)
    assert runner.deferred_retries == retries  # done: nothing tried again


async def test_a_failed_liveness_answer_is_sent_again_before_the_deadline(tmp_path, monkeypatch):
    """An answer that fails for a reason that is no race (here: a revert the node cannot explain) used to be given
    up for good, and the provider was slashed at the deadline."""
    calls: list[str] = []
    real = FakeWallet.answer_liveness

    async def failing_once(self: FakeWallet, key: str, lease_id: int) -> object:
        calls.append(key)
        if len(calls) == 1:
            raise TxFailed("answer", "GasLimitTooLow()")
        return await real(self, key, lease_id)

    monkeypatch.setattr(FakeWallet, "answer_liveness", failing_once)
    world = await started(tmp_path, challenge_after_ms=10_000)
    lid = await challenged_while_provider_down(world)
    deadline = world.chain.leases[lid].lease.liveness_deadline
    assert deadline > 0
    world.network.down.clear()
    await world.restart("provider")
    await quiesce()
    await step(world)
    assert world.chain.now_s < deadline
    assert "fault_tx_failed" in notices(world, "provider", lid)  # the first answer failed ...
    assert len(calls) == 2 and kinds(world).count("answerLiveness") == 1  # ... the second one was mined
    assert world.chain.leases[lid].lease.liveness_deadline == 0
    for _ in range(3):
        await step(world)
    assert "resolveLiveness" not in kinds(world) and faults(world, "provider", lid).slashed == 0
    await world.provider.stop()
    await world.consumer.stop()


async def test_a_dispute_that_failed_for_a_passing_reason_is_sent_again_with_its_evidence(tmp_path, monkeypatch):
    """A dispute whose transaction failed for a reason that may pass (not a final answer such as no claim or
    invalid evidence) used to be given up: the inflated claim then became final and the consumer paid it."""
    calls: list[str] = []
    real = FakeWallet.dispute

    async def failing_once(self: FakeWallet, key: str, cp: object, signature: bytes) -> object:
        calls.append(key)
        if len(calls) == 1:
            raise TxFailed("dispute", "GasLimitTooLow()")
        return await real(self, key, cp, signature)

    monkeypatch.setattr(FakeWallet, "dispute", failing_once)
    world = await started(tmp_path)
    lid, cp = await inflated_claim(world)
    assert len(calls) == 1 and "dispute" not in kinds(world)  # the first dispute failed
    f = faults(world, "consumer", lid)
    assert f.dispute_sent_seq == 0 and f.dispute_evidence is not None and f.claim_seq == cp.seq
    for _ in range(2):  # past the retry pause, within the dispute window
        await step(world)
        if "dispute" in kinds(world):
            break
    assert len(calls) == 2 and kinds(world).count("dispute") == 1
    assert lid not in world.chain.claims and world.chain.disputed[lid] == cp.seq
    f = faults(world, "consumer", lid)
    assert f.claim_seq == 0 and f.disputed_seq == cp.seq and f.dispute_evidence is None
    await world.provider.stop()
    await world.consumer.stop()
