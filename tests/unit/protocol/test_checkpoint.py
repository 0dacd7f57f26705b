"""Checkpoint signing and the consumer's verification: one test per rejection reason, plus the accepted paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak
from nacl.signing import SigningKey

from node.crypto import eip712
from node.protocol.checkpoint import (
    Checkpoint,
    LeaseView,
    RejectReason,
    SignedCheckpoint,
    Tolerance,
    checkpoint_digest,
    recover_checkpoint_signer,
    sign_checkpoint,
    verify_checkpoint,
)
from node.protocol.heartbeat import ZERO_HASH, Heartbeat, heartbeat_hash, sign_heartbeat

WALLET = keccak(b"provider wallet")
PROVIDER = Account.from_key(WALLET).address
PROVIDER_RAW = bytes.fromhex(PROVIDER[2:])
OTHER_WALLET = keccak(b"someone else")
NODE = SigningKey(keccak(b"provider node key"))
NODE_PK = bytes(NODE.verify_key)
OTHER_NODE = SigningKey(keccak(b"other node key"))
DOMAIN = eip712.Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
LEASE = 7
GPUS = 2
START = 1_700_000_000
NOW = (START + 60) * 1000 + 500


def make_view(**overrides) -> LeaseView:
    v = LeaseView(
        lease_id=LEASE,
        provider=PROVIDER_RAW,
        provider_node_key=NODE_PK,
        gpus=GPUS,
        started_at=START,
        ends_at=START + 3600,
        accepting=True,
    )
    return dataclasses.replace(v, **overrides)


def make_beats(
    first: int = 1, last: int = 12, prev: bytes = ZERO_HASH, *, time_of=None, gpu_of=None, key_of=None, lease=LEASE
) -> list[bytes]:
    """Beats every 5 s from START, GPUS busy all along; overrides per seq through the *_of callables."""
    out = []
    for seq in range(first, last + 1):
        t = time_of(seq) if time_of else START * 1000 + 5000 * seq
        g = gpu_of(seq) if gpu_of else GPUS * 5 * seq
        key = key_of(seq) if key_of else NODE
        signed = sign_heartbeat(Heartbeat(lease, seq, t, g, prev), key)
        out.append(signed)
        prev = heartbeat_hash(signed)
    return out


def make_cp(seq=1, cum=GPUS * 60, head=None, ts=START + 60, beats=None, lease=LEASE, key=WALLET) -> SignedCheckpoint:
    if head is None:
        head = heartbeat_hash((beats or make_beats())[-1])
    return sign_checkpoint(Checkpoint(lease, seq, cum, head, ts), key, DOMAIN)


DEFAULT_TOL = Tolerance()


def verify(view=None, beats=None, cp=None, now=NOW, tol=DEFAULT_TOL, **kw):
    beats = make_beats() if beats is None else beats
    cp = make_cp(beats=beats) if cp is None else cp
    return verify_checkpoint(view or make_view(), beats, cp, DOMAIN, now, tol, **kw)


# ------------------------------------------------------------------------------------------ signing


def test_digest_matches_eth_account_typed_data():
    cp = Checkpoint(LEASE, 3, 99, b"\x12" * 32, START)
    signed = sign_checkpoint(cp, WALLET, DOMAIN)
    typed = eip712.checkpoint_typed_data(
        DOMAIN,
        {"leaseId": LEASE, "seq": 3, "cumulativeGpuSeconds": 99, "heartbeatHead": b"\x12" * 32, "timestamp": START},
    )
    assert eip712.sign_typed_data(WALLET, typed) == signed.signature
    assert recover_checkpoint_signer(DOMAIN, signed) == PROVIDER_RAW
    assert len(checkpoint_digest(DOMAIN, cp)) == 32


# ------------------------------------------------------------------------------------------ accepted


def test_honest_checkpoint_accepted():
    v = verify()
    assert v.accepted, v
    assert v.beats_covered == 12 and v.head_seq == 12 and v.head_gpu_seconds == 120
    assert v.head_time_ms == START * 1000 + 60_000


def test_checkpoint_may_cover_a_prefix_of_the_received_beats():
    beats = make_beats(last=14)
    v = verify(beats=beats, cp=make_cp(head=heartbeat_hash(beats[11])))
    assert v.accepted and v.beats_covered == 12


def test_second_checkpoint_continues_from_the_last_head():
    first = make_beats()
    second = make_beats(13, 24, heartbeat_hash(first[-1]))
    view = make_view(
        last_seq=1,
        last_cumulative=120,
        last_timestamp=START + 60,
        last_head=heartbeat_hash(first[-1]),
        last_head_seq=12,
        last_head_time_ms=START * 1000 + 60_000,
        last_head_gpu_seconds=120,
    )
    cp = make_cp(seq=2, cum=240, beats=second, ts=START + 120)
    assert verify(view, second, cp, now=(START + 121) * 1000).accepted


def test_checkpoint_without_new_usage_needs_no_new_beats():
    view = make_view(last_seq=1, last_cumulative=0, last_timestamp=START)
    cp = make_cp(seq=2, cum=0, head=ZERO_HASH)
    assert verify(view, [], cp).accepted


def test_closed_lease_accepts_checkpoint_up_to_closed_at():
    assert verify(make_view(closed_at=START + 60)).accepted


def test_signatures_checked_skips_beat_signature_verification():
    beats = make_beats(key_of=lambda s: OTHER_NODE)
    assert not verify(beats=beats).accepted
    assert verify(beats=beats, signatures_checked=True).accepted


def test_tolerance_allows_small_over_claim_at_both_bounds():
    # beats run 2 GPU-seconds ahead of wall time (sampling jitter), within max(2 s x gpus, 1 %) = 4
    beats = make_beats(gpu_of=lambda s: GPUS * 5 * s + 4)
    assert verify(beats=beats, cp=make_cp(cum=124, beats=beats)).accepted


# ------------------------------------------------------------------------------------------ rejections


def expect(reason, **kw):
    v = verify(**kw)
    assert not v.accepted
    assert v.reason is reason, (v.reason, v.detail)
    return v


def test_wrong_lease():
    expect(RejectReason.WRONG_LEASE, cp=make_cp(lease=LEASE + 1))


def test_forged_signature():
    expect(RejectReason.BAD_SIGNATURE, cp=make_cp(key=OTHER_WALLET))


def test_malformed_signatures():
    good = make_cp()
    expect(RejectReason.BAD_SIGNATURE, cp=SignedCheckpoint(good.checkpoint, good.signature[:64]))
    r, s, v = good.signature[:32], int.from_bytes(good.signature[32:64], "big"), good.signature[64]
    high_s = (eip712.SECP256K1_N - s).to_bytes(32, "big")
    malleated = SignedCheckpoint(good.checkpoint, r + high_s + bytes([55 - v]))
    expect(RejectReason.BAD_SIGNATURE, cp=malleated)
    tampered = dataclasses.replace(good.checkpoint, cumulative_gpu_seconds=119)
    expect(RejectReason.BAD_SIGNATURE, cp=SignedCheckpoint(tampered, good.signature))


def test_lease_not_open():
    expect(RejectReason.LEASE_NOT_OPEN, view=make_view(accepting=False))


def test_lease_closed_before_checkpoint_timestamp():
    expect(RejectReason.AFTER_CLOSE, view=make_view(closed_at=START + 59))


def test_replayed_seq():
    cp = make_cp()
    view = make_view(last_seq=1, last_cumulative=120, last_digest=checkpoint_digest(DOMAIN, cp.checkpoint))
    expect(RejectReason.SEQ_REPLAYED, view=view, cp=cp)
    expect(RejectReason.SEQ_REPLAYED, view=make_view(last_seq=5), cp=make_cp(seq=3))


def test_equivocation_same_seq_different_content():
    first = make_cp()
    view = make_view(last_seq=1, last_cumulative=100, last_digest=checkpoint_digest(DOMAIN, first.checkpoint))
    expect(RejectReason.EQUIVOCATION, view=view, cp=make_cp(cum=110))


def test_out_of_order_seq():
    expect(RejectReason.SEQ_GAP, cp=make_cp(seq=2))


def test_future_timestamp():
    expect(RejectReason.TIMESTAMP_IN_FUTURE, cp=make_cp(ts=START + 66))  # now + 5 s skew < ts


def test_timestamp_regressed():
    expect(RejectReason.TIMESTAMP_REGRESSED, cp=make_cp(ts=START - 1))
    view = make_view(last_seq=0, last_timestamp=START + 61)
    expect(RejectReason.TIMESTAMP_REGRESSED, view=view)


def test_decreasing_cumulative():
    view = make_view(last_seq=1, last_cumulative=130, last_timestamp=START)
    expect(RejectReason.CUMULATIVE_DECREASED, view=view, cp=make_cp(seq=2))


def test_over_claiming_beyond_tolerance():
    # bound = 2 gpus x 60 s = 120, tolerance 4: 125 is over, 124 is not (it fails later, unproven)
    expect(RejectReason.OVER_CLAIM, cp=make_cp(cum=125))
    expect(RejectReason.UNPROVEN_USAGE, cp=make_cp(cum=124))


def test_over_claiming_past_the_contract_cap_has_no_tolerance():
    # paid-through end at 50 s: cap = 100 exactly, even though now is later
    beats = make_beats(last=10)
    view = make_view(ends_at=START + 50)
    expect(RejectReason.OVER_CLAIM, view=view, beats=beats, cp=make_cp(cum=101, beats=beats, ts=START + 50))
    assert verify(view=view, beats=beats, cp=make_cp(cum=100, beats=beats, ts=START + 50)).accepted


def test_bad_heartbeat_signature():
    beats = make_beats(key_of=lambda s: OTHER_NODE if s == 5 else NODE)
    expect(RejectReason.BAD_HEARTBEAT_SIGNATURE, beats=beats)


def test_malformed_heartbeat():
    beats = make_beats()
    expect(RejectReason.MALFORMED_HEARTBEAT, beats=[beats[0][:-1], *beats[1:]], cp=make_cp(beats=beats))


def test_chain_broken_by_a_missing_beat():
    beats = make_beats()
    expect(RejectReason.CHAIN_BROKEN, beats=beats[:4] + beats[5:], cp=make_cp(beats=beats))


def test_chain_broken_by_wrong_prev_hash():
    beats = make_beats(1, 1) + make_beats(2, 12, prev=b"\x01" * 32)
    expect(RejectReason.CHAIN_BROKEN, beats=beats)


def test_chain_broken_by_beats_of_another_lease():
    beats = make_beats(lease=LEASE + 1)
    expect(RejectReason.CHAIN_BROKEN, beats=beats)


def test_chain_must_start_at_the_last_accepted_head():
    view = make_view(last_seq=1, last_head=b"\x05" * 32, last_head_seq=12, last_head_time_ms=START * 1000)
    beats = make_beats(13, 24, prev=b"\x06" * 32)
    expect(RejectReason.CHAIN_BROKEN, view=view, beats=beats, cp=make_cp(seq=2, beats=beats))


def test_heartbeat_time_going_backwards():
    beats = make_beats(time_of=lambda s: START * 1000 + 5000 * s - (7000 if s == 6 else 0))
    expect(RejectReason.HEARTBEAT_OUT_OF_ORDER, beats=beats)


def test_heartbeat_gpu_seconds_decreasing():
    beats = make_beats(gpu_of=lambda s: 5 if s == 6 else GPUS * 5 * s)
    expect(RejectReason.HEARTBEAT_OUT_OF_ORDER, beats=beats)


def test_heartbeat_gap_longer_than_k_intervals():
    # beats at 5, 10 and then 30 s: a 20 s gap > 3 x 5 s
    beats = make_beats(1, 3, time_of=lambda s: START * 1000 + (30_000 if s == 3 else 5000 * s))
    cp = make_cp(cum=60, beats=beats, ts=START + 30)
    expect(RejectReason.HEARTBEAT_GAP, beats=beats, cp=cp)


def test_heartbeat_in_future():
    beats = make_beats(1, 1, time_of=lambda s: NOW + 5_600, gpu_of=lambda s: 10)
    cp = make_cp(cum=10, beats=beats, ts=(NOW + 5_000) // 1000)
    expect(RejectReason.HEARTBEAT_IN_FUTURE, beats=beats, cp=cp)


def test_heartbeat_over_claim():
    beats = make_beats(gpu_of=lambda s: 100 if s >= 2 else 10)  # 100 GPU-s after 10 s with 2 GPUs
    cp = make_cp(cum=100, beats=beats)
    expect(RejectReason.HEARTBEAT_OVER_CLAIM, beats=beats, cp=cp)


def test_head_not_among_the_beats():
    expect(RejectReason.HEAD_MISMATCH, cp=make_cp(head=b"\x33" * 32))


def test_new_usage_without_new_beats():
    view = make_view(last_seq=1, last_cumulative=0, last_timestamp=START)
    expect(RejectReason.HEAD_MISMATCH, view=view, beats=[], cp=make_cp(seq=2, cum=10, head=ZERO_HASH))


def test_head_too_old_for_the_checkpoint_time():
    beats = make_beats(last=8)  # head at 40 s, checkpoint at 60 s: more than 3 x 5 s
    expect(RejectReason.HEAD_TIME_MISMATCH, beats=beats, cp=make_cp(cum=80, beats=beats))


def test_head_after_the_checkpoint_time():
    beats = make_beats()  # head at 60 s
    expect(RejectReason.HEAD_TIME_MISMATCH, beats=beats, cp=make_cp(cum=110, beats=beats, ts=START + 58))


def test_usage_not_proven_by_the_head_beat():
    expect(RejectReason.UNPROVEN_USAGE, cp=make_cp(cum=121))


@pytest.mark.parametrize("reason", list(RejectReason))
def test_every_reason_is_covered_by_a_test(reason):
    src = Path(__file__).read_text()
    assert f"RejectReason.{reason.name}" in src
