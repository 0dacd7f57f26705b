"""Crash safety of the lease engine: a node killed between any two outbox effects and restarted from its SQLite
file neither repeats nor loses an effect.

The scenario runs a whole lease (open, job, heartbeats, checkpoints, settlement, close, final checkpoint,
finalization, withdrawal) between two engines over the in-memory fakes. ``World.kill_after[role] = k`` kills that
node as it is about to carry out its (k+1)-th effect; the test then restarts it from the same database and lets
the scenario go on (the other node and the chain keep going meanwhile).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from .fakes import GPUS, OFFER_ID, PRICE, Killed, World, quiesce

DEPOSIT = PRICE * GPUS * 20
LEASE = 1  # the fake escrow numbers leases from 1

Step = Callable[[World], Awaitable[object]]


async def _serve_for(world: World, seconds: int) -> None:
    world.advance(seconds)
    await world.serve()


async def _finish_job(world: World) -> None:
    world.executor.jobs[-1][1].finish(b"done\n")
    await quiesce()


async def _finalize(world: World) -> None:
    """The settlement window passes (the provider keeps serving: it retries what was not acked), then the
    consumer's timer finalizes."""
    for _ in range(world.chain.settlement_window + 1):
        await _serve_for(world, 1)
    await world.consumer.tick()


STEPS: list[Step] = [
    lambda w: w.consumer.open_lease(OFFER_ID, GPUS, DEPOSIT, {"argv": ["train"]}),
    World.deliver,
    lambda w: _serve_for(w, 2),
    lambda w: _serve_for(w, 2),
    lambda w: _serve_for(w, 2),  # the first checkpoint
    lambda w: w.consumer.settlements.send_due(),
    World.deliver,
    lambda w: _serve_for(w, 2),
    _finish_job,
    lambda w: _serve_for(w, 2),  # the job result
    lambda w: w.consumer.close_lease(LEASE),
    World.deliver,
    lambda w: _serve_for(w, 1),  # the final checkpoint
    lambda w: w.consumer.settlements.send_due(),
    World.deliver,
    _finalize,
    World.deliver,
    World.deliver,  # LeaseFinalized -> the provider withdraws
    World.deliver,
]


async def run_scenario(world: World) -> None:
    await world.start()
    for step in STEPS:
        with contextlib.suppress(Killed):
            await step(world)
        await quiesce()
        for role in sorted(world.killed):
            await world.restart(role)
        await quiesce()
    # the nodes keep running: a few more rounds of ticks, serving, settling and log delivery carry out whatever a
    # restart delayed (a checkpoint delivered later is settled later; the finalization follows the settlement)
    for _ in range(3):
        await world.consumer.tick()
        await world.serve()
        await world.consumer.settlements.send_due()
        await world.deliver()
        await world.deliver()
    await world.provider.stop()
    await world.consumer.stop()


def outcome(world: World) -> dict[str, object]:
    c = world.consumer.lease_detail(LEASE)
    p = world.provider.lease_detail(LEASE)
    assert c is not None and p is not None
    cdb = world.dbs["consumer"]
    return {
        # every transaction mined, by kind and idempotency key (the open's key ends in a random nonce); a crash
        # may delay one (a checkpoint delivered after the restart is settled later), so order is not compared
        "chain": sorted((kind, key.rsplit(":", 1)[0] if kind == "openLease" else key)
                        for kind, key in world.chain.executed),
        "on_chain": world.chain.leases[LEASE].lease,
        "earnings": dict(world.chain.earnings_of),
        "consumer": {k: c.get(k) for k in ("status", "paid", "refund", "settled_seq", "settled_gpu_seconds",
                                       "accepted_seq", "rejected_checkpoints", "job_result")},
        "provider_status": p["status"],
        "checkpoints": sorted((r.seq, r.gpu_seconds, r.status) for r in world.consumer.store.checkpoints(LEASE)),
        "heartbeats": [r["seq"] for r in cdb.query("SELECT seq FROM heartbeats ORDER BY seq")],
        "jobs_started": len(world.executor.jobs),
    }


async def reference(tmp_path) -> tuple[dict[str, object], World]:
    world = World(tmp_path / "reference")
    await run_scenario(world)
    return outcome(world), world


async def test_the_scenario_runs_a_whole_lease(tmp_path):
    out, world = await reference(tmp_path)
    runs = world.runs
    assert world.dones["consumer"] > 5 and world.dones["provider"] > 3
    assert [key for _, key in out["chain"]] == [
        "close:1", "finalize:1:0", "open:0f0f0f0f0f0f0f0f", "settle:1:1", "settle:1:2",
        f"withdraw:1:{out['on_chain'].paid - world.chain.leases[1].fees}"]
    assert out["consumer"]["status"] == out["provider_status"] == "FINALIZED"
    assert out["earnings"] == {out["on_chain"].provider: 0}
    assert runs["consumer"] > 15 and runs["provider"] > 5


@pytest.mark.parametrize("when", ["before an effect", "before its done mark"])
@pytest.mark.parametrize("role", ["consumer", "provider"])
async def test_a_restart_after_any_effect_neither_repeats_nor_loses_one(tmp_path, role, when):
    expected, ref = await reference(tmp_path)
    chain_keys = [key for _, key in expected["chain"]]
    assert len(chain_keys) == len(set(chain_keys))
    points = ref.runs[role] if when == "before an effect" else ref.dones[role]
    assert points > 3
    for k in range(points):
        world = World(tmp_path / f"{role}-{k}")
        if when == "before an effect":
            world.kill_after[role] = k
        else:
            world.kill_at_done[role] = k
        await run_scenario(world)
        got = outcome(world)
        if got == expected:
            continue
        assert role == "provider", (role, when, k, got, expected)
        # A provider killed while the job runs loses the job (jobs do not survive a restart): from then on it
        # meters no usage, so the amounts may be lower and the job result never comes. Every chain effect still
        # happens at most once, the lease still ends, and no checkpoint is rejected (it never signs two different
        # checkpoints with one seq).
        kinds = Counter(kind for kind, _ in got["chain"])
        assert kinds <= Counter(kind for kind, _ in expected["chain"]), (role, k, got["chain"])
        assert kinds["openLease"] == kinds["closeLease"] == kinds["finalizeLease"] == 1, (role, k, got["chain"])
        assert kinds["withdrawEarnings"] == (1 if got["on_chain"].paid else 0), (role, k, got["chain"])
        assert got["consumer"]["status"] == got["provider_status"] == "FINALIZED", (role, k)
        assert got["consumer"]["rejected_checkpoints"] == 0, (role, k, got["checkpoints"])
        assert got["jobs_started"] == 1, (role, k)
        assert got["on_chain"].paid <= expected["on_chain"].paid
