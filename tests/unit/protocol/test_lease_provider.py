"""Provider metering -> heartbeats and checkpoints: deterministic, and always accepted by an honest consumer."""

from __future__ import annotations

import dataclasses

from eth_account import Account
from eth_utils import keccak
from nacl.signing import SigningKey

from node.crypto import eip712
from node.protocol.checkpoint import LeaseView, verify_checkpoint
from node.protocol.heartbeat import DeviceUsage, UsageSummary, heartbeat_hash, verify_heartbeat
from node.protocol.lease import StoreCheckpoint
from node.protocol.provider_lease import (
    MeteringSample,
    SendCheckpoint,
    SendHeartbeat,
    cut_checkpoint,
    new_meter,
    next_heartbeat,
    provider_tick,
    record_sample,
    update_lease_times,
)

WALLET = keccak(b"provider wallet")
PROVIDER_RAW = bytes.fromhex(Account.from_key(WALLET).address[2:])
NODE = SigningKey(keccak(b"provider node key"))
NODE_PK = bytes(NODE.verify_key)
DOMAIN = eip712.Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
START = 1_700_000_000
GPUS = 4


def test_usage_accrues_active_gpus_times_elapsed_and_stops_at_the_end():
    m = new_meter(1, GPUS, START, START + 100)
    m = record_sample(m, MeteringSample((START + 10) * 1000, 4))
    assert m.gpu_ms == 40_000
    m = record_sample(m, MeteringSample((START + 15) * 1000 + 500, 2))
    assert m.gpu_ms == 40_000 + 2 * 5_500
    m = record_sample(m, MeteringSample((START + 12) * 1000, 4))  # clock went back: nothing
    assert m.gpu_ms == 51_000
    m = record_sample(m, MeteringSample((START + 15) * 1000 + 600, 9))  # capped at the lease's GPUs
    assert m.gpu_ms == 51_000 + 4 * 100
    m = record_sample(m, MeteringSample((START + 500) * 1000, 4))  # only up to ends_at
    assert m.metered_until_ms == (START + 100) * 1000
    m = update_lease_times(m, ends_at=START + 200, closed_at=START + 150)
    m = record_sample(m, MeteringSample((START + 500) * 1000, 4))
    assert m.metered_until_ms == (START + 150) * 1000


def test_heartbeats_chain_and_carry_usage():
    m = new_meter(1, GPUS, START, START + 100)
    usage = UsageSummary(GPUS, tuple(DeviceUsage(90, 70_000, 600) for _ in range(GPUS)), simulated=True)
    m, b1 = next_heartbeat(m, MeteringSample((START + 5) * 1000, GPUS, usage), NODE)
    m, b2 = next_heartbeat(m, MeteringSample((START + 10) * 1000, GPUS), NODE)
    h1, h2 = verify_heartbeat(b1, NODE_PK), verify_heartbeat(b2, NODE_PK)
    assert (h1.seq, h1.gpu_seconds, h2.seq, h2.gpu_seconds) == (1, 20, 2, 40)
    assert h2.prev_hash == heartbeat_hash(b1) and m.hb_head == heartbeat_hash(b2)
    assert h1.usage_summary() == usage


def test_same_inputs_give_the_same_bytes():
    def run():
        m = new_meter(1, GPUS, START, START + 100)
        out = []
        for t in range(5, 65, 5):
            m, evs = provider_tick(m, MeteringSample((START + t) * 1000, GPUS), NODE, WALLET, DOMAIN, 30_000)
            out += evs
        return m, out

    assert run() == run()


def test_no_checkpoint_without_new_beats():
    m = new_meter(1, GPUS, START, START + 100)
    m, cp = cut_checkpoint(m, (START + 10) * 1000, WALLET, DOMAIN)
    assert cp is None and m.cp_seq == 0


def test_provider_output_is_accepted_by_the_verifier_over_a_long_lease():
    m = new_meter(9, GPUS, START, START + 3_600)
    cps = 0
    beats: list[bytes] = []
    view = LeaseView(9, PROVIDER_RAW, NODE_PK, GPUS, START, START + 3_600, True)
    for t in range(5, 3_605, 5):
        active = GPUS if (t // 60) % 3 else GPUS - 1  # the job sometimes uses fewer GPUs
        m, events = provider_tick(m, MeteringSample((START + t) * 1000 + 37, active), NODE, WALLET, DOMAIN, 60_000)
        for ev in events:
            if isinstance(ev, SendHeartbeat):
                beats.append(ev.signed)
            elif isinstance(ev, SendCheckpoint):
                now = (START + t) * 1000 + 250
                verdict = verify_checkpoint(view, beats, ev.signed_cp, DOMAIN, now)
                assert verdict.accepted, (t, verdict)
                cp = ev.signed_cp.checkpoint
                view = dataclasses.replace(
                    view,
                    last_seq=cp.seq,
                    last_cumulative=cp.cumulative_gpu_seconds,
                    last_timestamp=cp.timestamp,
                    last_digest=verdict.digest,
                    last_head=cp.heartbeat_head,
                    last_head_seq=verdict.head_seq,
                    last_head_time_ms=verdict.head_time_ms,
                    last_head_gpu_seconds=verdict.head_gpu_seconds,
                )
                beats = beats[verdict.beats_covered :]
                cps += 1
            else:
                assert isinstance(ev, StoreCheckpoint) and ev.accepted
    assert cps == 60
    assert view.last_cumulative <= GPUS * 3_600


def test_final_checkpoint_after_close_covers_a_beat_before_closed_at():
    m = new_meter(1, GPUS, START, START + 600)
    for t in range(5, 65, 5):
        m, _ = next_heartbeat(m, MeteringSample((START + t) * 1000, GPUS), NODE)
    m = update_lease_times(m, closed_at=START + 52)
    m, cp = cut_checkpoint(m, (START + 70) * 1000, WALLET, DOMAIN)
    assert cp is not None
    assert cp.checkpoint.timestamp == START + 52
    assert cp.checkpoint.cumulative_gpu_seconds == GPUS * 50  # the beat at 50 s
    assert [r.seq for r in m.recent] == [11, 12]  # beats after the head wait for nothing more
