"""Rule-based exploration of both roles of the lease state machine: an honest provider lease (the pure provider
rules: job, meter, outgoing queue) and malicious reports, against the consumer lease.

The honest provider's queued messages reach the consumer through the wire codec and are acked back; the
provider's keys may also be used to misbehave (over-claiming beats and checkpoints, forks, replays, gaps,
forgeries); a small chain model mines the transactions the consumer emits and tells both leases. Invariants:
what the consumer has authorised never exceeds price x the largest usage it verified, nor the deposit; nothing it
verified exceeds what elapsed time allows; status only moves forward; settled seqs strictly increase; the
provider never signs two different checkpoints with one seq, never meters more than elapsed time allows, starts
its job once and stops it once the lease is closed.
"""

from __future__ import annotations

from eth_account import Account
from eth_utils import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from nacl.signing import SigningKey

from node.crypto import eip712
from node.protocol.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint
from node.protocol.heartbeat import Heartbeat, sign_heartbeat
from node.protocol.lease import (
    ActionCloseLease,
    ActionOpenLease,
    ActionTopUp,
    ContractReceiveLeaseClosed,
    ContractReceiveLeaseFinalized,
    ContractReceiveLeaseOpened,
    ContractReceiveLeaseSettled,
    ContractReceiveSettleFailed,
    ContractReceiveTopUp,
    ContractSendClose,
    ContractSendFinalize,
    ContractSendSettle,
    ContractSendTopUp,
    JobEnd,
    JobEnded,
    JobPhase,
    JobRequest,
    JobStarted,
    LeaseConfig,
    LeaseStatus,
    OfferTerms,
    ProviderTick,
    ReceiveAck,
    ReceiveCheckpoint,
    ReceiveHeartbeat,
    ReceiveJobSpec,
    StartJob,
    StopJob,
    StoreCheckpoint,
    TimerTick,
    transition,
)
from node.protocol.lease_messages import decode_message, to_change
from node.protocol.provider_lease import ProviderKeys, new_provider_lease

WALLET = keccak(b"provider wallet")
PROVIDER = Account.from_key(WALLET).address
NODE = SigningKey(keccak(b"provider node key"))
FORGER_WALLET = keccak(b"forger")
FORGER_NODE = SigningKey(keccak(b"forger node"))
CONSUMER = "0x" + "cc" * 20
DOMAIN = eip712.Domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
START = 1_700_000_000
GPUS = 2
PRICE = 7
MAX_DURATION = 900
LEASE = 3
TERMS = OfferTerms(b"\x0f" * 32, PROVIDER, bytes(NODE.verify_key), PRICE, MAX_DURATION)
CONFIG = LeaseConfig(settlement_window_s=120, topup_warning_ms=60_000)
KEYS = ProviderKeys(NODE, WALLET)
CONSUMER_PEER = "12D3KooWConsumer"
NEVER = 10**12  # a checkpoint interval that never comes due


class ConsumerLease(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        deposit = PRICE * GPUS * 300
        self.state, _ = transition(None, ActionOpenLease(TERMS, CONSUMER, GPUS, deposit, DOMAIN, None, CONFIG))
        opened = ContractReceiveLeaseOpened(
            LEASE, TERMS.offer_hash, PROVIDER, CONSUMER, GPUS, PRICE, deposit, START, START + 300
        )
        self.now = START * 1000
        # the provider's side of the same lease: job started, metering
        self.provider = new_provider_lease(opened, TERMS, DOMAIN, CONFIG, devices=(0, 1))
        self.provider_cps: dict[int, SignedCheckpoint] = {}  # every checkpoint the provider signed, by seq
        self.jobs_started = 0
        self.job_stopped = False
        self.provide(ReceiveJobSpec(CONSUMER_PEER, JobRequest(("train",))))
        self.provide(JobStarted(CONSUMER_PEER))
        # chain model
        self.chain_deposit = deposit
        self.chain_ends_at = START + 300
        self.chain_paid = 0
        self.chain_settled_seq = 0
        self.chain_settled_cum = 0
        self.chain_closed_at: int | None = None
        self.chain_finalized = False
        self.txs: list = []
        # observations
        self.max_accepted_cum = 0
        self.accepted: set[SignedCheckpoint] = set()
        self.outstanding = 0  # authorised by sent settlements, minus those that failed
        self.sent_amounts: dict[int, int] = {}
        self.last_status = self.state.status
        self.last_settled_seq = 0
        self.last_cp: SignedCheckpoint | None = None
        self.apply(opened)

    # ----------------------------------------------------------------------------------- plumbing

    def apply(self, change):
        before = self.state
        self.state, events = transition(self.state, change)
        assert self.state.status >= before.status
        if self.state.ledger.settled_seq != before.ledger.settled_seq:
            assert self.state.ledger.settled_seq > before.ledger.settled_seq
        for ev in events:
            if isinstance(ev, StoreCheckpoint) and ev.accepted:
                cp = ev.signed_cp.checkpoint
                self.accepted.add(ev.signed_cp)
                self.max_accepted_cum = max(self.max_accepted_cum, cp.cumulative_gpu_seconds)
                # what the consumer verified never exceeds what time allows (+ tolerance)
                end = min(self.now // 1000, self.state.ends_at, self.state.closed_at or 2**64)
                bound = GPUS * max(0, end - START)
                assert cp.cumulative_gpu_seconds <= bound + CONFIG.tolerance.slack(GPUS, bound)
                assert cp.cumulative_gpu_seconds <= GPUS * (self.chain_ends_at - START)
            elif isinstance(ev, ContractSendSettle):
                assert ev.signed_cp in self.accepted, "settled an unverified checkpoint"
                seq = ev.signed_cp.checkpoint.seq
                assert seq not in self.sent_amounts, "settlement sent twice without a failure"
                self.sent_amounts[seq] = ev.amount
                self.outstanding += ev.amount
                self.txs.append(ev)
            elif isinstance(ev, ContractSendClose | ContractSendFinalize | ContractSendTopUp):
                self.txs.append(ev)
        return events

    def provide(self, change):
        """A change of the provider's lease; its events are checked."""
        before = self.provider
        self.provider, events = transition(self.provider, change, KEYS)
        assert self.provider.status >= before.status
        for ev in events:
            if isinstance(ev, StoreCheckpoint):
                cp = ev.signed_cp
                assert self.provider_cps.setdefault(cp.checkpoint.seq, cp) == cp, "signed a seq twice"
            elif isinstance(ev, StartJob):
                self.jobs_started += 1
                assert self.jobs_started == 1
            elif isinstance(ev, StopJob):
                self.job_stopped = True
        return events

    def deliver(self):
        """The provider's queue reaches the consumer in order; each message is acked."""
        side = self.provider.provider
        for raw in side.outq:
            change = to_change(decode_message(raw), self.now + 20)
            if change is not None:
                self.apply(change)
        self.provide(ReceiveAck(len(side.outq)))
        assert self.provider.provider.outq == ()

    def provider_tick(self, checkpoint_interval_ms: int):
        side = self.provider.provider
        running = side.job is JobPhase.RUNNING
        self.provide(ProviderTick(self.now, running, None, checkpoint_interval_ms))
        self.deliver()

    def advance(self, ms: int):
        self.now += ms

    # ----------------------------------------------------------------------------------- honest provider

    @rule(dt=st.integers(1_000, 6_000))
    def honest_beat(self, dt):
        self.advance(dt)
        self.provider_tick(NEVER)

    @rule()
    def honest_checkpoint(self):
        self.provider_tick(0)
        if self.provider_cps:
            self.last_cp = self.provider_cps[max(self.provider_cps)]

    @rule(beats=st.integers(1, 12))
    def honest_interval(self, beats):
        for _ in range(beats):
            self.advance(5_000)
            self.provider_tick(NEVER)
        self.honest_checkpoint()

    @rule()
    def job_ends(self):
        if self.provider.provider.outcome is None:
            self.provide(JobEnded(JobEnd(0, "done\n", True)))

    # ----------------------------------------------------------------------------------- malicious provider

    @rule(extra=st.integers(1, 10_000), chained=st.booleans())
    def over_claiming_beat(self, extra, chained):
        s = self.state
        prev = s.beats.tip.hash if chained else keccak(b"fork")
        seq = s.beats.tip.seq + 1
        if seq == 1:
            prev = bytes(32)
        hb = Heartbeat(LEASE, seq, max(self.now, s.beats.tip.time_ms), s.beats.tip.gpu_seconds + extra, prev)
        self.apply(ReceiveHeartbeat(sign_heartbeat(hb, NODE), self.now))

    @rule(extra=st.integers(0, 5_000), seq_delta=st.sampled_from([-1, 0, 1, 1, 1, 2]), forged=st.booleans())
    def malicious_checkpoint(self, extra, seq_delta, forged):
        s = self.state
        seq = max(s.accepted_seq, s.ledger.settled_seq) + seq_delta
        if seq < 0:
            return
        cum = max(s.accepted_cumulative, s.ledger.settled_cumulative) + extra
        cp = Checkpoint(LEASE, seq, cum, s.beats.tip.hash, self.now // 1000)
        signed = sign_checkpoint(cp, FORGER_WALLET if forged else WALLET, DOMAIN)
        self.apply(ReceiveCheckpoint(signed, self.now))

    @rule()
    def replay_checkpoint(self):
        if self.last_cp is not None:
            self.apply(ReceiveCheckpoint(self.last_cp, self.now))

    @rule()
    def forged_beat(self):
        tip = self.state.beats.tip
        hb = Heartbeat(LEASE, tip.seq + 1, self.now, tip.gpu_seconds, tip.hash if tip.seq else bytes(32))
        self.apply(ReceiveHeartbeat(sign_heartbeat(hb, FORGER_NODE), self.now))

    # ----------------------------------------------------------------------------------- user, time, chain

    @rule(dt=st.integers(0, 120_000))
    def tick(self, dt):
        self.advance(dt)
        self.apply(TimerTick(self.now))

    @rule(amount=st.integers(1, PRICE * GPUS * 400))
    def top_up(self, amount):
        self.apply(ActionTopUp(amount))

    @rule()
    def close(self):
        self.apply(ActionCloseLease())

    @precondition(lambda self: self.txs)
    @rule(fail=st.booleans())
    def mine(self, fail):
        tx = self.txs.pop(0)
        now_s = self.now // 1000
        if isinstance(tx, ContractSendSettle):
            cp = tx.signed_cp.checkpoint
            end = min(now_s, self.chain_ends_at, self.chain_closed_at or 2**64)
            ok = (
                not fail
                and not self.chain_finalized
                and cp.seq > self.chain_settled_seq
                and cp.cumulative_gpu_seconds >= self.chain_settled_cum
                and cp.cumulative_gpu_seconds <= GPUS * max(0, end - START)
            )
            if not ok:
                self.outstanding -= self.sent_amounts.pop(cp.seq)
                self.apply(ContractReceiveSettleFailed(LEASE, cp.seq, "reverted"))
                return
            owed = PRICE * (cp.cumulative_gpu_seconds - self.chain_settled_cum)
            pay = min(owed, self.chain_deposit - self.chain_paid)
            assert pay == tx.amount, (pay, tx.amount)
            self.chain_paid += pay
            self.chain_settled_seq, self.chain_settled_cum = cp.seq, cp.cumulative_gpu_seconds
            self.apply(ContractReceiveLeaseSettled(LEASE, cp.seq, cp.cumulative_gpu_seconds, pay))
        elif isinstance(tx, ContractSendClose):
            if self.chain_closed_at is None:
                self.chain_closed_at = now_s
                self.apply(ContractReceiveLeaseClosed(LEASE, now_s, CONSUMER))
                self.provide(ContractReceiveLeaseClosed(LEASE, now_s, CONSUMER))
        elif isinstance(tx, ContractSendTopUp):
            cap = PRICE * GPUS * MAX_DURATION
            if self.chain_closed_at is None and self.chain_deposit + tx.amount <= cap and not fail:
                self.chain_deposit += tx.amount
                self.chain_ends_at = START + min(MAX_DURATION, self.chain_deposit // (PRICE * GPUS))
                self.apply(ContractReceiveTopUp(LEASE, tx.amount, self.chain_deposit, self.chain_ends_at))
                self.provide(ContractReceiveTopUp(LEASE, tx.amount, self.chain_deposit, self.chain_ends_at))
        elif isinstance(tx, ContractSendFinalize):
            assert self.chain_closed_at is not None and now_s >= self.chain_closed_at + CONFIG.settlement_window_s
            if not self.chain_finalized:
                self.chain_finalized = True
                self.apply(ContractReceiveLeaseFinalized(LEASE, self.chain_deposit - self.chain_paid))
                self.provide(ContractReceiveLeaseFinalized(LEASE, self.chain_deposit - self.chain_paid))

    # ----------------------------------------------------------------------------------- invariants

    @invariant()
    def never_authorises_more_than_proven_or_deposited(self):
        assert self.outstanding <= PRICE * self.max_accepted_cum
        assert self.outstanding <= self.chain_deposit
        assert self.chain_paid <= PRICE * self.max_accepted_cum
        assert self.state.ledger.paid == self.chain_paid

    @invariant()
    def status_only_moves_forward(self):
        assert self.state.status >= self.last_status
        self.last_status = self.state.status

    @invariant()
    def settled_seq_strictly_increasing(self):
        assert self.state.ledger.settled_seq >= self.last_settled_seq
        self.last_settled_seq = self.state.ledger.settled_seq
        assert self.state.ledger.settled_seq == self.chain_settled_seq

    @invariant()
    def provider_meters_no_more_than_elapsed_time(self):
        meter = self.provider.provider.meter  # (a close is learnt after the fact: it clips later samples only)
        assert meter.gpu_ms <= GPUS * max(0, min(self.now, meter.ends_at * 1000) - START * 1000)
        assert meter.closed_at == self.chain_closed_at

    @invariant()
    def provider_job_stops_once_the_lease_closes(self):
        side = self.provider.provider
        if self.chain_closed_at is not None and side.outcome is None:
            assert self.job_stopped
        assert self.jobs_started == 1

    @invariant()
    def finalized_only_after_close(self):
        if self.state.status >= LeaseStatus.FINALIZING:
            assert self.state.closed_at is not None


TestConsumerLease = ConsumerLease.TestCase
TestConsumerLease.settings = settings(
    max_examples=60, stateful_step_count=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
