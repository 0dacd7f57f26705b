"""Spend caps in the lease engine: a top-up (the automatic one goes the same way) that would take a lease past its
cap is not sent; the lease gets a notice naming the cap, and a top-up within the cap still goes through."""

from __future__ import annotations

from node.config import ConsumerConfig
from node.leases.spend import spend_guard, top_up_check

from .fakes import GPUS, OFFER_ID, PRICE, World, quiesce

DEPOSIT = PRICE * GPUS * 20


async def test_a_top_up_past_the_per_lease_cap_is_not_sent_and_says_why(tmp_path):
    world = World(tmp_path)
    await world.start()
    consumer = world.consumer
    guard = spend_guard(consumer.store.db, ConsumerConfig(max_spend_per_lease=DEPOSIT + PRICE * GPUS * 5))
    consumer.runner.spend_check = top_up_check(guard)
    lid = int((await consumer.open_lease(OFFER_ID, GPUS, DEPOSIT, {"argv": ["train"]}))["lease_id"])
    await world.deliver()
    assert guard.spent_today() == DEPOSIT  # the opening deposit, from the lease store

    await consumer.top_up(lid, PRICE * GPUS * 10)  # over the cap by 5 s of the lease
    await quiesce()
    assert "topUp" not in [kind for kind, _ in world.chain.executed]
    (notice,) = [n for n in consumer.notices if n["notice"] == "topup_suggested"]
    assert notice["notice"] == "topup_suggested" and "lease spend cap" in notice["detail"]
    assert f"per-lease cap of {DEPOSIT + PRICE * GPUS * 5}" in notice["detail"]

    await consumer.top_up(lid, PRICE * GPUS * 5)  # exactly up to the cap
    await quiesce()
    await world.deliver()
    assert [kind for kind, _ in world.chain.executed].count("topUp") == 1
    await world.provider.stop()
    await consumer.stop()
