"""Lease state machine: the consumer happy path and each change, and the provider role."""

from __future__ import annotations

import dataclasses

import pytest
from eth_account import Account
from eth_utils import keccak
from nacl.signing import SigningKey

from node.crypto import eip712
from node.protocol.checkpoint import Checkpoint, RejectReason, sign_checkpoint
from node.protocol.heartbeat import Heartbeat, sign_heartbeat
from node.protocol.lease import (
    ActionCloseLease,
    ActionOpenLease,
    ActionTopUp,
    CloseReason,
    ContractReceiveLeaseClosed,
    ContractReceiveLeaseFinalized,
    ContractReceiveLeaseOpened,
    ContractReceiveLeaseSettled,
    ContractReceiveSettleFailed,
    ContractReceiveTopUp,
    ContractReceiveTopUpFailed,
    ContractSendClose,
    ContractSendFinalize,
    ContractSendOpenLease,
    ContractSendSettle,
    ContractSendTopUp,
    LeaseConfig,
    LeaseStatus,
    Notice,
    NotifyUser,
    OfferTerms,
    ReceiveCheckpoint,
    ReceiveHeartbeat,
    ReceiveJobResult,
    Role,
    SendJobSpec,
    StoreCheckpoint,
    StoreHeartbeat,
    StoreJobResult,
    TimerTick,
    new_provider_lease,
    transition,
)
from node.protocol.provider_lease import MeteringSample, cut_checkpoint, new_meter, next_heartbeat

WALLET = keccak(b"provider wallet")
PROVIDER = Account.from_key(WALLET).address
NODE = SigningKey(keccak(b"provider node key"))
NODE_PK = bytes(NODE.verify_key)
CONSUMER = "0x" + "cc" * 20
DOMAIN = eip712.Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
START = 1_700_000_000
GPUS = 2
PRICE = 10
DEPOSIT = PRICE * GPUS * 600  # ten minutes
LEASE = 1
TERMS = OfferTerms(b"\x0f" * 32, PROVIDER, NODE_PK, PRICE, 86_400)
SPEC_HASH = b"\x01" * 32


def opened_event(**kw) -> ContractReceiveLeaseOpened:
    fields = dict(
        lease_id=LEASE,
        offer_hash=TERMS.offer_hash,
        provider=PROVIDER,
        consumer=CONSUMER,
        gpus=GPUS,
        price_per_gpu_second=PRICE,
        deposit=DEPOSIT,
        started_at=START,
        ends_at=START + 600,
    )
    fields.update(kw)
    return ContractReceiveLeaseOpened(**fields)


def make_open(config: LeaseConfig | None = None):
    state, _ = transition(
        None, ActionOpenLease(TERMS, CONSUMER, GPUS, DEPOSIT, DOMAIN, SPEC_HASH, config or LeaseConfig())
    )
    state, _ = transition(state, opened_event())
    return state


class Provider:
    """An honest provider: a beat every 5 s, a checkpoint when asked."""

    def __init__(self):
        self.meter = new_meter(LEASE, GPUS, START, START + 600)

    def beat(self, t_ms: int) -> bytes:
        self.meter, signed = next_heartbeat(self.meter, MeteringSample(t_ms, GPUS), NODE)
        return signed

    def checkpoint(self, t_ms: int):
        self.meter, signed = cut_checkpoint(self.meter, t_ms, WALLET, DOMAIN)
        return signed


def run_minute(state, provider: Provider, from_s: int, to_s: int):
    """Feed beats every 5 s in (from_s, to_s] and then the checkpoint; returns state and all events."""
    events = []
    for t in range(from_s + 5, to_s + 1, 5):
        state, ev = transition(state, ReceiveHeartbeat(provider.beat((START + t) * 1000), (START + t) * 1000 + 50))
        events += ev
    cp = provider.checkpoint((START + to_s) * 1000)
    state, ev = transition(state, ReceiveCheckpoint(cp, (START + to_s) * 1000 + 100))
    return state, events + ev, cp


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


# ------------------------------------------------------------------------------------------ opening


def test_open_action_sends_the_open_transaction():
    state, events = transition(None, ActionOpenLease(TERMS, CONSUMER, GPUS, DEPOSIT, DOMAIN, SPEC_HASH))
    assert state.status is LeaseStatus.OPENING and state.role is Role.CONSUMER
    assert events == [ContractSendOpenLease(TERMS.offer_hash, GPUS, DEPOSIT)]
    with pytest.raises(ValueError):
        transition(None, TimerTick(0))
    with pytest.raises(ValueError):
        transition(None, ActionOpenLease(TERMS, CONSUMER, 0, DEPOSIT, DOMAIN))


def test_lease_opened_moves_to_open_and_sends_the_job_spec():
    state, _ = transition(None, ActionOpenLease(TERMS, CONSUMER, GPUS, DEPOSIT, DOMAIN, SPEC_HASH))
    state, events = transition(state, opened_event())
    assert state.status is LeaseStatus.OPEN and state.lease_id == LEASE
    assert state.started_at == START and state.ends_at == START + 600
    assert SendJobSpec(LEASE, NODE_PK, SPEC_HASH) in events
    # a replayed log changes nothing
    again, events = transition(state, opened_event())
    assert again == state and events == []


def test_lease_opened_for_another_request_is_ignored():
    state, _ = transition(None, ActionOpenLease(TERMS, CONSUMER, GPUS, DEPOSIT, DOMAIN))
    state2, events = transition(state, opened_event(offer_hash=b"\x99" * 32))
    assert state2.status is LeaseStatus.OPENING
    assert of(events, NotifyUser)[0].notice is Notice.IGNORED


# ------------------------------------------------------------------------------------------ happy path


def test_happy_path_verify_settle_close_finalize():
    state = make_open()
    provider = Provider()
    state, events, cp1 = run_minute(state, provider, 0, 60)
    assert len(of(events, StoreHeartbeat)) == 12
    assert of(events, StoreCheckpoint) == [StoreCheckpoint(LEASE, cp1, True)]
    (settle,) = of(events, ContractSendSettle)
    assert settle.signed_cp == cp1 and settle.amount == PRICE * 120
    assert state.beats.pending == () and state.ledger.pending_settlement is not None

    state, events = transition(state, ContractReceiveLeaseSettled(LEASE, 1, 120, PRICE * 120, 12))
    money = state.ledger
    assert money.settled_seq == 1 and money.paid == PRICE * 120 and money.pending_settlement is None

    state, events, cp2 = run_minute(state, provider, 60, 120)
    (settle,) = of(events, ContractSendSettle)
    assert settle.signed_cp == cp2 and settle.amount == PRICE * 120  # only the new usage
    state, _ = transition(state, ContractReceiveLeaseSettled(LEASE, 2, 240, PRICE * 120))

    state, events = transition(state, ActionCloseLease())
    assert state.status is LeaseStatus.CLOSING
    assert of(events, ContractSendClose) == [ContractSendClose(LEASE, CloseReason.USER)]
    state, events = transition(state, ContractReceiveLeaseClosed(LEASE, START + 121, CONSUMER))
    assert state.status is LeaseStatus.CLOSED and state.closed_at == START + 121

    # the final checkpoint (timestamp <= closed_at) is still verified and settled at once
    state, events = transition(state, ReceiveHeartbeat(provider.beat((START + 121) * 1000), (START + 121) * 1000))
    provider.meter = dataclasses.replace(provider.meter, closed_at=START + 121)
    cp3 = provider.checkpoint((START + 125) * 1000)
    assert cp3.checkpoint.timestamp == START + 121
    state, events = transition(state, ReceiveCheckpoint(cp3, (START + 125) * 1000))
    assert of(events, ContractSendSettle)[0].amount == PRICE * (cp3.checkpoint.cumulative_gpu_seconds - 240)
    state, _ = transition(state, ContractReceiveLeaseSettled(LEASE, 3, cp3.checkpoint.cumulative_gpu_seconds, 20))

    # finalize after the settlement window
    state, events = transition(state, TimerTick((START + 121 + 3_600) * 1000 - 1))
    assert of(events, ContractSendFinalize) == []
    state, events = transition(state, TimerTick((START + 121 + 3_600) * 1000))
    assert of(events, ContractSendFinalize) == [ContractSendFinalize(LEASE)]
    assert state.status is LeaseStatus.FINALIZING
    state, events = transition(state, ContractReceiveLeaseFinalized(LEASE, DEPOSIT - state.ledger.paid))
    assert state.status is LeaseStatus.FINALIZED and state.ledger.refund == DEPOSIT - state.ledger.paid


# ------------------------------------------------------------------------------------------ heartbeats


def test_heartbeat_rejections_do_not_advance_the_tip():
    state = make_open()
    provider = Provider()
    b1 = provider.beat((START + 5) * 1000)
    b2 = provider.beat((START + 10) * 1000)
    state, events = transition(state, ReceiveHeartbeat(b2, (START + 10) * 1000))  # out of order
    assert state.beats.tip.seq == 0 and state.counters.heartbeats_rejected == 1
    assert of(events, NotifyUser)[0].notice is Notice.HEARTBEAT_REJECTED
    forged = sign_heartbeat(Heartbeat(LEASE, 1, (START + 5) * 1000, 10, bytes(32)), SigningKey(b"\x02" * 32))
    state, _ = transition(state, ReceiveHeartbeat(forged, (START + 5) * 1000))
    assert state.counters.heartbeats_rejected == 2 and state.beats.tip.seq == 0
    state, events = transition(state, ReceiveHeartbeat(b1, (START + 5) * 1000))
    assert state.beats.tip.seq == 1 and of(events, StoreHeartbeat)
    state, events = transition(state, ReceiveHeartbeat(b1, (START + 6) * 1000))  # duplicate: silent
    assert events == [] and state.beats.tip.seq == 1
    future = Provider()
    fb = future.beat((START + 100) * 1000)
    fresh = make_open()
    fresh, _ = transition(fresh, ReceiveHeartbeat(fb, (START + 10) * 1000))
    assert fresh.counters.heartbeats_rejected == 1


def test_heartbeat_before_open_is_ignored():
    state, _ = transition(None, ActionOpenLease(TERMS, CONSUMER, GPUS, DEPOSIT, DOMAIN))
    beat = Provider().beat((START + 5) * 1000)
    state2, events = transition(state, ReceiveHeartbeat(beat, (START + 5) * 1000))
    assert state2.beats.tip.seq == 0 and of(events, NotifyUser)[0].notice is Notice.IGNORED


# ------------------------------------------------------------------------------------------ checkpoints


def test_rejected_checkpoint_is_stored_with_reason_and_not_settled():
    state = make_open()
    provider = Provider()
    state, events, cp = run_minute(state, provider, 0, 60)
    state, events = transition(state, ReceiveCheckpoint(cp, (START + 61) * 1000))  # replay
    (stored,) = of(events, StoreCheckpoint)
    assert not stored.accepted and stored.reason is RejectReason.SEQ_REPLAYED
    assert of(events, ContractSendSettle) == []
    assert state.counters.consecutive_rejections == 1 and state.counters.rejected_total == 1


def test_equivocation_is_flagged():
    state = make_open()
    provider = Provider()
    state, _, cp = run_minute(state, provider, 0, 60)
    other = sign_checkpoint(dataclasses.replace(cp.checkpoint, cumulative_gpu_seconds=1), WALLET, DOMAIN)
    state, events = transition(state, ReceiveCheckpoint(other, (START + 61) * 1000))
    assert of(events, StoreCheckpoint)[0].reason is RejectReason.EQUIVOCATION
    assert of(events, NotifyUser)[0].notice is Notice.EQUIVOCATION


def test_three_consecutive_rejections_close_the_lease():
    state = make_open(LeaseConfig(max_consecutive_rejections=3))
    forged = [
        sign_checkpoint(Checkpoint(LEASE, 1, 10 + i, bytes(32), START + 10), keccak(b"x"), DOMAIN) for i in range(3)
    ]
    for i, cp in enumerate(forged):
        state, events = transition(state, ReceiveCheckpoint(cp, (START + 20) * 1000))
        assert (state.status is LeaseStatus.CLOSING) == (i == 2)
    assert of(events, ContractSendClose) == [ContractSendClose(LEASE, CloseReason.TOO_MANY_REJECTIONS)]


def test_an_accepted_checkpoint_resets_the_rejection_streak():
    state = make_open()
    bad = sign_checkpoint(Checkpoint(LEASE, 1, 10, bytes(32), START + 10), keccak(b"x"), DOMAIN)
    state, _ = transition(state, ReceiveCheckpoint(bad, (START + 20) * 1000))
    state, _ = transition(state, ReceiveCheckpoint(bad, (START + 20) * 1000))
    state, _, _ = run_minute(state, Provider(), 0, 60)
    assert state.counters.consecutive_rejections == 0 and state.status is LeaseStatus.OPEN


def test_settle_interval_batches_and_one_settlement_in_flight():
    state = make_open(LeaseConfig(settle_interval_ms=120_000))
    provider = Provider()
    state, events, _ = run_minute(state, provider, 0, 60)
    assert of(events, ContractSendSettle) == []
    state, events = transition(state, TimerTick((START + 119) * 1000))
    assert len(of(events, ContractSendSettle)) == 1
    state, events, cp2 = run_minute(state, provider, 60, 120)
    state, events = transition(state, TimerTick((START + 500) * 1000))
    assert of(events, ContractSendSettle) == []  # the first is still in flight
    # the confirmation frees the slot; the next settlement is due, so it goes out at once
    state, events = transition(state, ContractReceiveLeaseSettled(LEASE, 1, 120, PRICE * 120))
    (settle2,) = of(events, ContractSendSettle)
    assert settle2.signed_cp == cp2 and settle2.amount == PRICE * 120


def test_settle_failure_frees_the_slot_for_a_retry():
    state = make_open()
    state, events, cp = run_minute(state, Provider(), 0, 60)
    state, events = transition(state, ContractReceiveSettleFailed(LEASE, 1, "reverted"))
    assert state.ledger.pending_settlement is None and of(events, NotifyUser)[0].notice is Notice.SETTLE_FAILED
    state, events = transition(state, TimerTick((START + 61) * 1000 + 29_000))
    assert of(events, ContractSendSettle) == []  # backing off
    state, events = transition(state, TimerTick((START + 61) * 1000 + 30_000))
    assert of(events, ContractSendSettle)[0].signed_cp == cp


def test_no_settlement_after_the_settlement_window():
    state = make_open()
    state, _, _ = run_minute(state, Provider(), 0, 60)
    state, _ = transition(state, ContractReceiveSettleFailed(LEASE, 1, "reverted"))
    state, _ = transition(state, ContractReceiveLeaseClosed(LEASE, START + 61, CONSUMER))
    state, events = transition(state, TimerTick((START + 61 + 3_600) * 1000))
    assert of(events, ContractSendSettle) == []
    assert of(events, ContractSendFinalize) == [ContractSendFinalize(LEASE)]


def test_settlement_is_capped_by_the_remaining_deposit():
    state = make_open()
    state = dataclasses.replace(state, ledger=dataclasses.replace(state.ledger, paid=DEPOSIT - 50))
    state, events, _ = run_minute(state, Provider(), 0, 60)
    assert of(events, ContractSendSettle)[0].amount == 50


def test_settlement_sent_by_someone_else_moves_the_baseline():
    state = make_open()
    state, events = transition(state, ContractReceiveLeaseSettled(LEASE, 4, 50, 500))
    assert state.ledger.settled_seq == 4 and state.ledger.settled_cumulative == 50
    assert of(events, NotifyUser)[0].notice is Notice.SETTLED_ELSEWHERE
    state2, events = transition(state, ContractReceiveLeaseSettled(LEASE, 4, 50, 500))  # replay
    assert state2 == state and events == []


# ------------------------------------------------------------------------------------------ top-ups, timers


def test_topup_action_and_chain_event():
    state = make_open()
    state, events = transition(state, ActionTopUp(1_000))
    assert events == [ContractSendTopUp(LEASE, 1_000)] and state.ledger.topup_in_flight == 1_000
    state, _ = transition(state, ContractReceiveTopUp(LEASE, 1_000, DEPOSIT + 1_000, START + 650))
    assert state.deposit == DEPOSIT + 1_000 and state.ends_at == START + 650 and state.ledger.topup_in_flight == 0
    state, events = transition(state, ActionTopUp(0))
    assert of(events, NotifyUser)[0].notice is Notice.IGNORED
    state, _ = transition(state, ActionTopUp(5))
    state, events = transition(state, ContractReceiveTopUpFailed(LEASE, 5, "cap"))
    assert state.ledger.topup_in_flight == 0


def test_timer_suggests_top_up_once_then_closes_when_exhausted():
    state = make_open(LeaseConfig(topup_warning_ms=120_000, provider_silence_ms=10**9, challenge_after_ms=10**9))
    state, events = transition(state, TimerTick((START + 470) * 1000))
    assert events == []
    state, events = transition(state, TimerTick((START + 480) * 1000))
    assert [e.notice for e in of(events, NotifyUser)] == [Notice.TOPUP_SUGGESTED]
    state, events = transition(state, TimerTick((START + 490) * 1000))
    assert events == []
    state, events = transition(state, TimerTick((START + 600) * 1000))
    assert of(events, ContractSendClose) == [ContractSendClose(LEASE, CloseReason.DEPOSIT_EXHAUSTED)]
    assert state.status is LeaseStatus.CLOSING


def test_timer_auto_top_up():
    state = make_open(LeaseConfig(topup_warning_ms=120_000, auto_topup_amount=2_400))
    state, events = transition(state, TimerTick((START + 480) * 1000))
    assert of(events, ContractSendTopUp) == [ContractSendTopUp(LEASE, 2_400)]
    state, events = transition(state, TimerTick((START + 481) * 1000))
    assert of(events, ContractSendTopUp) == []


def test_timer_reports_a_silent_provider_once():
    state = make_open(LeaseConfig(provider_silence_ms=30_000))
    state, events = transition(state, TimerTick((START + 31) * 1000))
    assert [e.notice for e in of(events, NotifyUser)] == [Notice.PROVIDER_SILENT]
    state, events = transition(state, TimerTick((START + 40) * 1000))
    assert events == []


def test_close_action_only_from_open():
    state = make_open()
    state, _ = transition(state, ActionCloseLease())
    state2, events = transition(state, ActionCloseLease())
    assert state2.status is LeaseStatus.CLOSING and of(events, NotifyUser)[0].notice is Notice.IGNORED


def test_provider_closing_first_is_followed():
    state = make_open()
    state, events = transition(state, ContractReceiveLeaseClosed(LEASE, START + 30, PROVIDER))
    assert state.status is LeaseStatus.CLOSED
    state2, events = transition(state, ContractReceiveLeaseClosed(LEASE, START + 31, PROVIDER))
    assert state2 == state and events == []


def test_job_result_is_stored_and_reported():
    state = make_open()
    state, events = transition(state, ReceiveJobResult(0, "done\n", True, (START + 9) * 1000))
    assert of(events, StoreJobResult) == [StoreJobResult(LEASE, 0, "done\n", True)]
    assert of(events, NotifyUser)[0].notice is Notice.JOB_RESULT


def test_status_never_moves_back():
    state = make_open()
    state, _ = transition(state, ContractReceiveLeaseClosed(LEASE, START + 30, PROVIDER))
    state, _ = transition(state, ContractReceiveLeaseFinalized(LEASE, 5))
    for change in (opened_event(), ContractReceiveLeaseClosed(LEASE, START + 40, CONSUMER), TimerTick(10**13)):
        after, _ = transition(state, change)
        assert after.status is LeaseStatus.FINALIZED


# ------------------------------------------------------------------------------------------ provider role


def test_provider_role_follows_the_chain_and_closes_at_the_end():
    state = new_provider_lease(opened_event(), TERMS, DOMAIN)
    assert state.role is Role.PROVIDER and state.status is LeaseStatus.OPEN
    state, events = transition(state, ActionCloseLease())
    assert of(events, NotifyUser)[0].notice is Notice.IGNORED  # before ends_at
    state, events = transition(state, TimerTick((START + 599) * 1000))
    assert events == []
    state, events = transition(state, TimerTick((START + 600) * 1000))
    assert of(events, ContractSendClose) == [ContractSendClose(LEASE, CloseReason.LEASE_END)]
    beat = Provider().beat((START + 5) * 1000)
    _, events = transition(state, ReceiveHeartbeat(beat, 0))
    assert of(events, NotifyUser)[0].notice is Notice.IGNORED
    state, _ = transition(state, ContractReceiveLeaseSettled(LEASE, 1, 100, 1_000))
    assert state.ledger.paid == 1_000 and state.ledger.settled_seq == 1


def test_a_received_heartbeat_is_checked_with_the_checkpoint_chain_rules():
    state = make_open()
    provider = Provider()
    state, _ = transition(state, ReceiveHeartbeat(provider.beat((START + 5) * 1000), (START + 5) * 1000))
    late = provider.beat((START + 30) * 1000)  # 25 s after the previous beat: more than 3 x 5 s
    after, events = transition(state, ReceiveHeartbeat(late, (START + 30) * 1000))
    assert after.beats.tip == state.beats.tip and after.counters.heartbeats_rejected == 1
    assert of(events, NotifyUser)[0].detail.startswith(RejectReason.HEARTBEAT_GAP.value)
    greedy = sign_heartbeat(Heartbeat(LEASE, 2, (START + 10) * 1000, 1_000, state.beats.tip.hash), NODE)
    after, events = transition(state, ReceiveHeartbeat(greedy, (START + 10) * 1000))
    assert after.beats.tip == state.beats.tip
    assert of(events, NotifyUser)[0].detail.startswith(RejectReason.HEARTBEAT_OVER_CLAIM.value)
    early = sign_heartbeat(Heartbeat(LEASE, 1, (START - 1) * 1000, 0, bytes(32)), NODE)
    after, events = transition(make_open(), ReceiveHeartbeat(early, START * 1000))
    assert of(events, NotifyUser)[0].detail.startswith(RejectReason.HEARTBEAT_OUT_OF_ORDER.value)
