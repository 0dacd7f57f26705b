"""Leases end to end between real nodes (libp2p on loopback, real anvil, real contracts, real job processes)."""

from __future__ import annotations

import sys

import pytest

from node.chain.anvil import devnet_key
from node.crypto import eip712
from node.leases import LEASE_PROTOCOL
from node.protocol.checkpoint import Checkpoint, sign_checkpoint
from node.protocol.lease_messages import CheckpointMessage, decode_message, encode_message

from .conftest import CONSUMER, PRICE, PROVIDER, until

pytestmark = pytest.mark.integration


async def _pair(nodes, **consumer_kw):
    provider = await nodes("provider", account=PROVIDER, provider=True)
    consumer = await nodes("consumer", account=CONSUMER, bootstrap=(provider.p2p.listen_addrs[0],), **consumer_kw)
    offers = await until(lambda: [o for o in consumer.query_offers({}) if o["provider"] == provider.address], 20,
                         "the provider's offer in the consumer's book")
    return provider, consumer, offers[0]


def _job(code: str, timeout: int = 60) -> dict:
    return {"argv": [sys.executable, "-c", code], "timeout_s": timeout}


async def _lease_events(devnet, lease_id: int, name: str) -> list[dict]:
    c = await devnet.client()
    try:
        logs = await c.w3.eth.get_logs({"fromBlock": devnet.deployment.deploy_block, "toBlock": "latest",
                                        "address": devnet.deployment.escrow})
        events = [c.events.decode(dict(r)) for r in logs]
        return [e.args for e in events if e is not None and e.name == name and e.args.get("leaseId") == lease_id]
    finally:
        await c.close()


async def test_happy_path_job_output_topup_settle_close_refund_withdraw(nodes, devnet):
    provider, consumer, offer = await _pair(nodes)
    c_before = await devnet.balance(consumer.address)
    p_before = await devnet.balance(provider.address)
    chain, escrow, _ = await devnet.escrow_view()
    fees_before = await escrow.accrued_fees()

    deposit = PRICE * 2 * 60
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 2, "deposit": str(deposit),
                                       "job": _job("import time; print('hello-gpunet'); time.sleep(2.5)")})
    lid = lease["lease_id"]
    assert await devnet.balance(consumer.address) == c_before - deposit

    view = await until(lambda: (consumer.lease(lid) or {}).get("job_result"), 30, "the job's output at the consumer")
    assert view["exit_code"] == 0 and "hello-gpunet" in view["log_tail"]
    assert view["simulated"] is False  # a real process ran (on simulated devices)

    ends_before = consumer.lease(lid)["ends_at"]
    await consumer.top_up(lid, PRICE * 2 * 30)
    await until(lambda: consumer.lease(lid)["ends_at"] > ends_before, 20, "the top-up to extend the lease")
    assert int(consumer.lease(lid)["deposit"]) == deposit + PRICE * 2 * 30

    # usage stops with the job; wait until everything verified so far is also settled on-chain
    await until(lambda: (v := consumer.lease(lid))["settled_gpu_seconds"] > 0
                and v["settled_gpu_seconds"] == v["accepted_gpu_seconds"], 30, "checkpoints to be settled")
    await consumer.close_lease(lid)
    await until(lambda: consumer.lease(lid)["status"] == "FINALIZED", 40, "finalization")
    await until(lambda: provider.lease(lid)["status"] == "FINALIZED", 20, "the provider to see finalization")
    await until(lambda: _zero(escrow.earnings(provider.address)), 20, "the provider to withdraw")

    v = consumer.lease(lid)
    on_chain = await escrow.get_lease(lid)
    paid, fees = int(v["paid"]), await escrow.accrued_fees() - fees_before
    assert on_chain.settled_gpu_seconds == v["settled_gpu_seconds"] > 0
    assert paid == PRICE * v["settled_gpu_seconds"]
    assert v["rejected_checkpoints"] == 0
    assert int(v["refund"]) == int(v["deposit"]) - paid
    assert await devnet.balance(consumer.address) == c_before - paid
    assert await devnet.balance(provider.address) == p_before + paid - fees
    assert fees == paid * 100 // 10_000  # feeBps = 100 in the devnet deployment
    seqs = [e["seq"] for e in await _lease_events(devnet, lid, "LeaseSettled")]
    assert len(seqs) == len(set(seqs))
    await chain.close()


async def _zero(coro) -> bool:
    return (await coro) == 0


async def test_forged_overclaiming_and_replayed_checkpoints_are_rejected_never_settled(nodes, devnet):
    provider, consumer, offer = await _pair(nodes)
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(PRICE * 60),
                                       "job": _job("import time; time.sleep(30)")})
    lid = lease["lease_id"]
    await until(lambda: consumer.lease(lid)["accepted_seq"] >= 1, 20, "a first honest checkpoint")
    # the honest provider goes quiet so that crafted reports below do not race its own: it is stopped at a moment
    # its queue is empty and all it cut was accepted (checked and cancelled in one step of the loop, so no beat
    # can be half-way between its meter and the consumer)
    prec = provider.engine.leases[(lid, "provider")]

    def quiet_then_stopped() -> bool:
        side = prec.state.provider
        if side.outq or consumer.lease(lid)["accepted_seq"] != side.meter.cp_seq:
            return False
        prec.serving.cancel()
        return True

    await until(quiet_then_stopped, 20, "the provider's queue to drain")
    honest = consumer.lease(lid)
    domain = eip712.Domain(devnet.deployment.chain_id, devnet.deployment.escrow)
    peer = provider.p2p.peer_id
    now = honest["started_at"] + 5

    async def deliver(cp: Checkpoint, key: bytes, sender: str = peer) -> object:
        body = encode_message(CheckpointMessage(sign_checkpoint(cp, key, domain)))
        return decode_message(await consumer.engine.on_lease_message(sender, body))

    # from a node that is not the lease's provider: refused outright, nothing stored
    reply = await deliver(Checkpoint(lid, 99, 1, b"\x00" * 32, now), devnet_key(PROVIDER), sender="12D3KooWFake")
    assert type(reply).__name__ == "ErrorMessage"
    seq = honest["accepted_seq"] + 1
    # signed by the consumer's key instead of the provider's wallet; over-claiming; seq 1 again with other contents
    await deliver(Checkpoint(lid, seq, 1, b"\x00" * 32, now), devnet_key(CONSUMER))
    await deliver(Checkpoint(lid, seq, 10**9, b"\x00" * 32, now), devnet_key(PROVIDER))
    await deliver(Checkpoint(lid, 1, 0, b"\x00" * 32, now), devnet_key(PROVIDER))
    detail = consumer.lease(lid)
    reasons = [c["reason"].split(":")[0] for c in detail["checkpoints"] if c["status"] == "rejected"]
    assert reasons == ["bad_signature", "over_claim", "equivocation"]
    assert detail["accepted_seq"] == honest["accepted_seq"]
    # three consecutive rejections: the consumer closes the lease and never settles a rejected report
    await until(lambda: consumer.lease(lid)["status"] in ("CLOSING", "CLOSED", "FINALIZING", "FINALIZED"), 20,
                "the consumer to close after repeated rejections")
    assert consumer.lease(lid)["close_reason"] == "too_many_rejections"
    settled = await _lease_events(devnet, lid, "LeaseSettled")
    assert all(e["cumulativeGpuSeconds"] < 10**9 for e in settled)
    assert all(e["seq"] <= honest["accepted_seq"] + 3 for e in settled)


async def test_restarted_consumer_settles_checkpoints_received_before_restart_exactly_once(nodes, devnet, tmp_path):
    provider, consumer, offer = await _pair(nodes, settle_interval=3600.0)  # settles nothing before the restart
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(PRICE * 120),
                                       "job": _job("import time; time.sleep(4)")})
    lid = lease["lease_id"]
    await until(lambda: consumer.lease(lid)["accepted_seq"] >= 2, 30, "checkpoints accepted before the restart")
    accepted_before = consumer.lease(lid)["accepted_seq"]
    assert consumer.lease(lid)["settled_seq"] == 0
    await consumer.stop()

    from node.service import Node

    from .conftest import node_config

    cfg = node_config(devnet, consumer.cfg.data_dir, account=CONSUMER, bootstrap=(provider.p2p.listen_addrs[0],),
                      settle_interval=0.5)
    again = Node(cfg)
    await again.start()
    try:
        assert again.lease(lid)["accepted_seq"] >= accepted_before  # state survived the restart
        await until(lambda: again.lease(lid)["settled_seq"] >= accepted_before, 30,
                    "the checkpoints received before the restart to be settled")
        events = await _lease_events(devnet, lid, "LeaseSettled")
        seqs = [e["seq"] for e in events]
        assert len(seqs) == len(set(seqs))
        chain, escrow, _ = await devnet.escrow_view()
        on_chain = await escrow.get_lease(lid)
        await until(lambda: again.lease(lid)["settled_gpu_seconds"] == on_chain.settled_gpu_seconds
                    or again.lease(lid)["settled_seq"] > max(seqs), 10, "the node's view to match the chain")
        await chain.close()
    finally:
        await again.stop()


async def test_bad_lease_stream_input_gets_an_error_not_a_crash(nodes):
    provider, consumer, offer = await _pair(nodes)
    # a deposit the contract refuses: a clear, decoded revert and no lease
    from node.chain.tx import TxFailed

    with pytest.raises(TxFailed, match="LeaseEscrow_DepositTooLow"):
        await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": "1"})
    with pytest.raises(ValueError, match="gpus must be within"):
        await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 99, "deposit": str(PRICE * 600)})
    with pytest.raises(ValueError, match="offer not in the book"):
        await consumer.open_lease({"offer_id": "0x" + "11" * 32, "gpus": 1, "deposit": str(PRICE * 600)})
    assert consumer.leases() == []
    reply = await consumer.p2p.request(provider.p2p.peer_id, LEASE_PROTOCOL, b"\x01\x02garbage", timeout=5)
    assert type(decode_message(reply)).__name__ == "ErrorMessage"
    assert provider.status()["peer_id"]  # still serving


async def test_auto_top_up_keeps_a_lease_from_running_dry(nodes, devnet):
    _provider, consumer, offer = await _pair(nodes, auto_topup=PRICE * 120)
    lease = await consumer.open_lease({"offer_id": offer["offer_id"], "gpus": 1, "deposit": str(PRICE * 60),
                                       "job": _job("import time; time.sleep(20)")})
    lid = lease["lease_id"]
    first_end = lease["ends_at"]
    await until(lambda: consumer.lease(lid)["ends_at"] > first_end, 20, "the automatic top-up")
    assert int(consumer.lease(lid)["deposit"]) == PRICE * 180
    chain, escrow, _ = await devnet.escrow_view()
    assert (await escrow.get_lease(lid)).deposit == PRICE * 180
    await chain.close()
