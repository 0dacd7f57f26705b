"""The lease engine end to end against in-memory fakes: two engines over a fake network and a fake escrow."""

from __future__ import annotations

import asyncio
import logging

from eth_utils import keccak

from node.crypto import eip712
from node.protocol import lease as L
from node.protocol.lease_messages import MAX_LOG_TAIL_BYTES, AckMessage, decode_message, encode_message, seal_job_spec

from .fakes import (
    CONSUMER_NODE,
    CONSUMER_WALLET,
    DOMAIN,
    GPUS,
    OFFER_ID,
    PRICE,
    PROVIDER_NODE,
    World,
    peer_of,
    quiesce,
)

DEPOSIT = PRICE * GPUS * 20  # 20 s of the lease


async def open_and_run(world: World, output: bytes = b"done\n") -> int:
    """Open a lease with a job, serve it for 8 s (the job ends at 6 s), settle what is proven."""
    view = await world.consumer.open_lease(OFFER_ID, GPUS, DEPOSIT, {"argv": ["train"]})
    await world.deliver()
    for _ in range(3):
        world.advance(2)
        await world.serve()
    world.executor.jobs[-1][1].finish(output)
    await quiesce()
    world.advance(2)
    await world.serve()
    await world.consumer.settlements.send_due()
    await world.deliver()
    return int(view["lease_id"])


async def close_and_finalize(world: World, lid: int) -> None:
    await world.consumer.close_lease(lid)
    await world.deliver()
    world.advance(1)
    await world.serve()
    await world.consumer.settlements.send_due()
    await world.deliver()
    world.advance(world.chain.settlement_window + 1)
    await world.consumer.tick()
    await world.deliver()
    await world.deliver()


async def test_a_lease_runs_from_open_to_withdrawal(tmp_path):
    world = World(tmp_path)
    await world.start()
    lid = await open_and_run(world)
    c = world.consumer.lease_detail(lid)
    assert c is not None and c["status"] == "OPEN" and c["job_result"]["log_tail"] == "done\n"
    assert c["accepted_seq"] == 1 and c["settled_seq"] == 1 and c["heartbeats"] == 4
    await close_and_finalize(world, lid)
    c, p = world.consumer.lease_detail(lid), world.provider.lease_detail(lid)
    assert c is not None and p is not None
    assert c["status"] == p["status"] == "FINALIZED" and c["rejected_checkpoints"] == 0
    on_chain = world.chain.leases[lid].lease
    assert int(c["paid"]) == on_chain.paid == PRICE * on_chain.settled_gpu_seconds > 0
    assert c["settled_gpu_seconds"] == on_chain.settled_gpu_seconds == c["accepted_gpu_seconds"]
    assert int(c["refund"]) == DEPOSIT - on_chain.paid
    assert world.chain.earnings_of[world.provider.address] == 0  # withdrawn
    assert c["accepted_seq"] == 2  # the final checkpoint adds no usage (the job ended at 6 s): nothing to settle
    assert [kind for kind, _ in world.chain.executed] == [
        "openLease", "settle", "closeLease", "finalizeLease", "withdrawEarnings"]
    assert world.provider.busy_devices() == set()
    await world.provider.stop()
    await world.consumer.stop()


async def test_a_log_tail_of_multibyte_characters_is_cut_to_the_message_limit_in_bytes(tmp_path):
    world = World(tmp_path)
    await world.start()
    bar = ("\u2588" * 3000 + "\n").encode()  # a progress bar: 9,001 bytes in 3,001 characters
    lid = await open_and_run(world, output=bar)
    result = world.consumer.lease_detail(lid)["job_result"]
    tail = result["log_tail"]
    assert len(tail.encode()) <= MAX_LOG_TAIL_BYTES and tail.endswith("\u2588\n") and set(tail) == {"\u2588", "\n"}
    assert world.provider.lease_detail(lid)["job_result"]["log_tail"] == tail
    # the provider still serves the lease: the next beat reaches the consumer
    beats = world.consumer.lease_detail(lid)["heartbeats"]
    world.advance(2)
    await world.serve()
    assert world.consumer.lease_detail(lid)["heartbeats"] == beats + 1
    await world.provider.stop()
    await world.consumer.stop()


async def test_lease_opened_and_job_spec_arriving_together_adopt_the_lease_once(tmp_path, caplog):
    world = World(tmp_path)
    await world.start()
    # the consumer's job spec is sent once the open is mined; hold it back to race it against the log
    world.network.down.add(peer_of(PROVIDER_NODE))
    view = await world.consumer.open_lease(OFFER_ID, GPUS, DEPOSIT, None)
    lid = int(view["lease_id"])
    world.network.down.clear()
    spec = b'{"argv":["train"],"env":{},"timeout_s":60}'
    auth = eip712.sign_digest(CONSUMER_WALLET, eip712.digest(DOMAIN.separator, eip712.job_spec_struct_hash(
        lid, keccak(spec), bytes(CONSUMER_NODE.verify_key))))
    body = encode_message(seal_job_spec(lid, auth + spec, CONSUMER_NODE, bytes(PROVIDER_NODE.verify_key)))
    [opened] = [e for e in world.chain.logs if e.name == "LeaseOpened"]
    with caplog.at_level(logging.INFO):
        _, reply = await asyncio.gather(world.provider.on_chain_event(opened),
                                        world.provider.on_lease_message(peer_of(CONSUMER_NODE), body))
    assert isinstance(decode_message(reply), AckMessage)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert world.chain.reads[(world.provider.address, "getLease")] == 1  # one adoption ran; the other waited for it
    assert [key for key in world.provider.leases] == [(lid, "provider")]
    assert world.provider.busy_devices() == {0, 1} and len(world.executor.jobs) == 1
    assert world.provider.leases[(lid, "provider")].state.provider.devices == (0, 1)
    assert world.provider.leases[(lid, "provider")].state.provider.job is L.JobPhase.RUNNING
    await world.provider.stop()
    await world.consumer.stop()


async def test_an_unforeseen_settlement_failure_keeps_the_checkpoint_queued(tmp_path, caplog):
    world = World(tmp_path)
    await world.start()
    view = await world.consumer.open_lease(OFFER_ID, GPUS, DEPOSIT, {"argv": ["train"]})
    await world.deliver()
    for _ in range(3):
        world.advance(2)
        await world.serve()
    escrow = world.consumer.runner.escrow
    real = escrow.settle

    async def broken(*args, **kwargs):
        raise RuntimeError("an RPC library error nobody mapped")

    escrow.settle = broken
    with caplog.at_level(logging.ERROR):
        await world.consumer.settlements.send_due()
    assert world.consumer.settlements.queue and "settlement failed unexpectedly" in caplog.text
    escrow.settle = real
    await world.consumer.settlements.send_due()
    await world.deliver()
    assert world.consumer.lease_detail(int(view["lease_id"]))["settled_seq"] >= 1
    await world.provider.stop()
    await world.consumer.stop()
