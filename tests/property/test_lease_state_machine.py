"""Rule-based exploration of both roles of the lease state machine: an honest provider lease (the pure provider
rules: job, meter, outgoing queue) and malicious reports, against the consumer lease, with the escrow's fault paths.

The honest provider's queued messages reach the consumer through the wire codec and are acked back; the
provider's keys may also be used to misbehave (over-claiming beats and checkpoints, forks, replays, gaps,
forgeries, claims of usage it never metered); a small chain model mines the transactions both leases emit (with the
escrow's checks and its errors) and tells both leases its logs. Either node may stall (a silent consumer stops
settling, a silent provider stops beating and answering) and catches up on the logs when it is back; chain logs are
replayed, and random changes are thrown at both states.

Invariants: what the consumer has authorised never exceeds price x the largest usage it verified, nor the deposit;
nothing leaves the deposit for usage the consumer did not verify except through an undisputed claim; paid + refund
never exceed the deposit; nothing the consumer verified exceeds what elapsed time allows; status only moves forward;
settled seqs strictly increase; the provider never signs two different checkpoints with one seq, never meters more
than elapsed time allows, starts its job once and stops it once the lease is closed; a claim carries the provider's
latest signed checkpoint and never a disputed seq; a dispute carries provider-signed evidence that refutes the claim,
and a refutable claim is disputed; at most one liveness challenge is pending, an answer clears it, a resolve comes
only after its deadline; every ``ContractSend*`` comes from the role and status that may send it; both leases mirror
the chain's claim, dispute, challenge, slash and money books; a replayed log changes nothing; ``transition`` is
deterministic and raises for no change in any state.
"""

from __future__ import annotations

from eth_account import Account
from eth_utils import keccak
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from nacl.signing import SigningKey

from node.crypto import eip712
from node.protocol.checkpoint import Checkpoint, RejectReason, SignedCheckpoint, sign_checkpoint
from node.protocol.heartbeat import Heartbeat, sign_heartbeat
from node.protocol.lease import (
    ActionCloseLease,
    ActionOpenLease,
    ActionTopUp,
    ContractReceiveClaimDisputed,
    ContractReceiveClaimFinalized,
    ContractReceiveEquivocationReported,
    ContractReceiveFaultTxFailed,
    ContractReceiveLeaseClosed,
    ContractReceiveLeaseFinalized,
    ContractReceiveLeaseOpened,
    ContractReceiveLeaseSettled,
    ContractReceiveLivenessAnswered,
    ContractReceiveLivenessChallenged,
    ContractReceiveLivenessResolved,
    ContractReceiveSettleFailed,
    ContractReceiveTopUp,
    ContractReceiveTopUpFailed,
    ContractReceiveUsageClaimed,
    ContractSendAnswer,
    ContractSendChallenge,
    ContractSendClaim,
    ContractSendClose,
    ContractSendDispute,
    ContractSendFinalize,
    ContractSendFinalizeClaim,
    ContractSendOpenLease,
    ContractSendReportEquivocation,
    ContractSendResolve,
    ContractSendSettle,
    ContractSendTopUp,
    ContractSendWithdraw,
    JobEnd,
    JobEnded,
    JobPhase,
    JobRequest,
    JobStarted,
    LeaseConfig,
    LeaseState,
    LeaseStatus,
    NodeRestarted,
    OfferTerms,
    ProviderTick,
    ReceiveAck,
    ReceiveCheckpoint,
    ReceiveHeartbeat,
    ReceiveJobResult,
    ReceiveJobSpec,
    Role,
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
# fault paths within reach of a 300 s lease: the provider pauses above 60 unsettled GPU-seconds, the consumer
# challenges after 20 s without a beat
CONFIG = LeaseConfig(settlement_window_s=120, topup_warning_ms=60_000, max_unsettled_s=30, challenge_after_ms=20_000,
                     fault_retry_ms=5_000)
KEYS = ProviderKeys(NODE, WALLET)
CONSUMER_PEER = "12D3KooWConsumer"
NEVER = 10**12  # a checkpoint interval that never comes due
JOB_SPEC = keccak(b"job spec")
# the escrow's fault parameters (seconds)
DISPUTE_WINDOW = 20
LIVENESS_WINDOW = 15
COOLDOWN_WINDOWS = 2

C, P = "consumer", "provider"
S = LeaseStatus
OPEN_TO_CLOSED = frozenset({S.OPEN, S.CLOSING, S.CLOSED})
BEFORE_FINALIZED = frozenset({S.OPEN, S.CLOSING, S.CLOSED, S.FINALIZING})
# every transaction a lease may ask for: the role that sends it and the statuses (before the change) it is sent from
SENDS: dict[type, tuple[Role | None, frozenset[LeaseStatus]]] = {
    ContractSendSettle: (Role.CONSUMER, OPEN_TO_CLOSED),
    ContractSendClose: (None, frozenset({S.OPEN})),
    ContractSendFinalize: (None, frozenset({S.CLOSED})),
    ContractSendTopUp: (Role.CONSUMER, frozenset({S.OPEN})),
    ContractSendClaim: (Role.PROVIDER, OPEN_TO_CLOSED),
    ContractSendDispute: (Role.CONSUMER, BEFORE_FINALIZED),
    ContractSendFinalizeClaim: (Role.PROVIDER, OPEN_TO_CLOSED),
    ContractSendChallenge: (Role.CONSUMER, frozenset({S.OPEN})),
    ContractSendAnswer: (Role.PROVIDER, frozenset({S.OPEN})),
    ContractSendResolve: (Role.CONSUMER, OPEN_TO_CLOSED),
    ContractSendReportEquivocation: (Role.CONSUMER, BEFORE_FINALIZED),
    ContractSendWithdraw: (Role.PROVIDER, BEFORE_FINALIZED),
}
FAULT_KINDS = {ContractSendClaim: "claim", ContractSendDispute: "dispute", ContractSendFinalizeClaim: "finalizeClaim",
               ContractSendChallenge: "challenge", ContractSendAnswer: "answer", ContractSendResolve: "resolve",
               ContractSendReportEquivocation: "reportEquivocation"}
ChainLog = (ContractReceiveLeaseSettled | ContractReceiveLeaseClosed | ContractReceiveLeaseFinalized
            | ContractReceiveTopUp | ContractReceiveUsageClaimed | ContractReceiveClaimDisputed
            | ContractReceiveClaimFinalized | ContractReceiveLivenessChallenged | ContractReceiveLivenessAnswered
            | ContractReceiveLivenessResolved | ContractReceiveEquivocationReported)


def checked_transition(before: LeaseState, change, keys: ProviderKeys | None = None):
    """``transition``, checked for what holds of any change in any state: it does not raise, gives the same
    result twice, never lowers the status, and asks only for transactions its role may send in its status."""
    state, events = transition(before, change, keys)
    again = transition(before, change, keys)
    assert again == (state, events), f"{type(change).__name__} is not deterministic"
    assert state.status >= before.status, f"{type(change).__name__} lowered {before.status.name} to {state.status}"
    for ev in events:
        allowed = SENDS.get(type(ev))
        if allowed is None:
            assert not isinstance(ev, ContractSendOpenLease)
            continue
        role, statuses = allowed
        assert role in (None, before.role), f"{type(ev).__name__} sent by the {before.role.value}"
        assert before.status in statuses, f"{type(ev).__name__} sent in status {before.status.name}"
    return state, events


class ConsumerLease(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        deposit = PRICE * GPUS * 300
        self.state, _ = transition(None, ActionOpenLease(TERMS, CONSUMER, GPUS, deposit, DOMAIN, JOB_SPEC, CONFIG))
        opened = ContractReceiveLeaseOpened(
            LEASE, TERMS.offer_hash, PROVIDER, CONSUMER, GPUS, PRICE, deposit, START, START + 300
        )
        self.now = START * 1000
        # the provider's side of the same lease: job started, metering
        self.provider = new_provider_lease(opened, TERMS, DOMAIN, CONFIG, devices=(0, 1))
        self.provider_cps: dict[int, SignedCheckpoint] = {}  # every checkpoint the provider signed, by seq
        self.wallet_signed: set[SignedCheckpoint] = set()  # every checkpoint the provider's wallet signed
        self.jobs_started = 0
        self.job_stopped = False
        self.down: set[str] = set()  # stalled nodes: no clock, no messages, no transactions, logs wait
        self.inbox: dict[str, list] = {C: [], P: []}  # chain logs a stalled node has not read yet
        self.stalled_at = 0
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
        self.chain_claim: tuple[int, int, int] | None = None  # (seq, cumulative, ready_at)
        self.chain_disputed = 0
        self.chain_deadline = 0  # the pending liveness challenge's deadline
        self.chain_cooldown = 0
        self.collateral = deposit // 2
        self.chain_slashed = 0
        self.txs: list[tuple[str, object]] = []  # (sender, transaction), mined in order per sender
        # observations
        self.max_accepted_cum = 0
        self.claim_paid_cum = 0  # the largest usage an undisputed claim was paid for
        self.accepted: set[SignedCheckpoint] = set()
        self.evidence: list[SignedCheckpoint] = []  # what the consumer's store holds against a claim
        self.outstanding = 0  # authorised by sent settlements, minus those that failed
        self.sent_amounts: dict[int, int] = {}
        self.disputes_sent: set[int] = set()  # claimed seqs the consumer disputed
        self.disputes_failed: set[int] = set()  # ... whose dispute failed for a reason that may pass
        self.known_disputed = {C: 0, P: 0}  # the highest disputed seq each node was told of
        self.last_status = self.state.status
        self.last_provider_status = self.provider.status
        self.last_settled_seq = 0
        self.last_cp: SignedCheckpoint | None = None
        self.apply(opened)

    # ----------------------------------------------------------------------------------- plumbing

    def apply(self, change):
        before = self.state
        self.state, events = checked_transition(before, change)
        if self.state.ledger.settled_seq != before.ledger.settled_seq:
            assert self.state.ledger.settled_seq > before.ledger.settled_seq
        for ev in events:
            if isinstance(ev, StoreCheckpoint) and ev.accepted:
                cp = ev.signed_cp.checkpoint
                self.accepted.add(ev.signed_cp)
                self.evidence.append(ev.signed_cp)
                self.max_accepted_cum = max(self.max_accepted_cum, cp.cumulative_gpu_seconds)
                # what the consumer verified never exceeds what time allows (+ tolerance)
                end = min(self.now // 1000, self.state.ends_at, self.state.closed_at or 2**64)
                bound = GPUS * max(0, end - START)
                assert cp.cumulative_gpu_seconds <= bound + CONFIG.tolerance.slack(GPUS, bound)
                assert cp.cumulative_gpu_seconds <= GPUS * (self.chain_ends_at - START)
            elif isinstance(ev, StoreCheckpoint) and ev.reason is RejectReason.EQUIVOCATION:
                self.evidence.append(ev.signed_cp)  # stored: provider-signed, evidence against a claim
            elif isinstance(ev, ContractSendSettle):
                assert ev.signed_cp in self.accepted, "settled an unverified checkpoint"
                seq = ev.signed_cp.checkpoint.seq
                assert seq not in self.sent_amounts, "settlement sent twice without a failure"
                self.sent_amounts[seq] = ev.amount
                self.outstanding += ev.amount
                self.txs.append((C, ev))
            elif isinstance(ev, ContractSendDispute):
                if isinstance(change, ContractReceiveUsageClaimed):
                    claimed_seq, claimed_cum = change.seq, change.cumulative_gpu_seconds
                else:  # the pending claim, disputed with a checkpoint that came after it (or again)
                    claimed_seq, claimed_cum = before.faults.claim_seq, before.faults.claim_cumulative
                    assert claimed_seq and before.now_ms // 1000 < before.faults.claim_ready_at
                assert ev.claimed_seq == claimed_seq
                cp = ev.evidence.checkpoint
                assert ev.evidence in self.wallet_signed, "disputed with evidence the provider did not sign"
                assert ev.evidence in self.evidence or ev.evidence in (
                    before.beats.last_accepted, self.state.beats.last_accepted, before.faults.dispute_evidence)
                assert cp.seq >= claimed_seq and cp.cumulative_gpu_seconds < claimed_cum
                assert ev.claimed_seq not in self.disputes_sent or ev.claimed_seq in self.disputes_failed, (
                    "disputed one claim twice without a failure that may pass")
                self.disputes_failed.discard(ev.claimed_seq)
                self.disputes_sent.add(ev.claimed_seq)
                self.txs.append((C, ev))
            elif isinstance(ev, ContractSendChallenge):
                assert self.chain_deadline == 0 and self.state.faults.challenge_deadline == 0, "challenge pending"
                assert not any(isinstance(t, ContractSendChallenge) for _, t in self.txs), "two challenges sent"
                assert self.state.now_ms // 1000 < self.state.ends_at
                self.txs.append((C, ev))
            elif isinstance(ev, ContractSendResolve):
                assert ev.deadline == before.faults.challenge_deadline != 0
                assert self.state.now_ms // 1000 >= ev.deadline, "resolved before the deadline"
                self.txs.append((C, ev))
            elif isinstance(ev, ContractSendClose | ContractSendFinalize | ContractSendTopUp
                            | ContractSendReportEquivocation):
                if isinstance(ev, ContractSendReportEquivocation):
                    assert ev.a.checkpoint.seq == ev.b.checkpoint.seq and ev.a != ev.b
                    assert {ev.a, ev.b} <= self.wallet_signed
                self.txs.append((C, ev))
        return events

    def provide(self, change):
        """A change of the provider's lease; its events are checked."""
        before = self.provider
        self.provider, events = checked_transition(before, change, KEYS)
        stopped = False
        for ev in events:
            if isinstance(ev, StoreCheckpoint):
                cp = ev.signed_cp
                assert self.provider_cps.setdefault(cp.checkpoint.seq, cp) == cp, "signed a seq twice"
                self.wallet_signed.add(cp)
            elif isinstance(ev, StartJob):
                self.jobs_started += 1
                assert self.jobs_started == 1
            elif isinstance(ev, StopJob):
                self.job_stopped = stopped = True
            elif isinstance(ev, ContractSendClaim):
                cp = ev.signed_cp.checkpoint
                assert ev.signed_cp == self.provider_cps.get(cp.seq), "claimed a checkpoint it did not sign"
                assert ev.signed_cp == self.provider_cps[max(self.provider_cps)], "claimed an older checkpoint"
                assert cp.seq > self.known_disputed[P], "claimed a disputed seq again"
                money = before.ledger
                assert cp.seq > money.settled_seq and cp.cumulative_gpu_seconds > money.settled_cumulative
                assert cp.timestamp <= self.provider.now_ms // 1000
                assert before.faults.claim_seq == 0, "claimed while a claim is pending"
                self.txs.append((P, ev))
            elif isinstance(ev, ContractSendAnswer):
                assert ev.deadline == self.provider.faults.challenge_deadline != 0
                assert self.provider.now_ms // 1000 < ev.deadline, "answered after the deadline"
                self.txs.append((P, ev))
            elif isinstance(ev, ContractSendFinalizeClaim):
                assert self.chain_claim is None or self.provider.now_ms // 1000 >= self.chain_claim[2]
                self.txs.append((P, ev))
            elif isinstance(ev, ContractSendClose | ContractSendFinalize):
                self.txs.append((P, ev))
        if stopped and self.provider.provider.outcome is None:  # the executor stops the job
            self.provide(JobEnded(JobEnd(137, "stopped\n", True, "stopped")))
        return events

    def deliver(self):
        """The provider's queue reaches the consumer in order; each message is acked."""
        if self.down:
            return  # one end is stalled: the queue waits
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
        self.provide(TimerTick(self.now))  # the provider's lease timer runs beside its meter
        self.deliver()

    def advance(self, ms: int):
        self.now += ms

    def log(self, *changes):
        """Chain logs, read in order by each node (later by a stalled one)."""
        for who in (C, P):
            self.inbox[who] += changes
            self.read_logs(who)

    def read_logs(self, who: str):
        if who in self.down:
            return
        while self.inbox[who]:
            change = self.inbox[who].pop(0)
            if who == C:
                change = self.with_evidence(change)
                before = self.state
                events = self.apply(change)
                self.check_refutable_claim_disputed(before, change, events)
            else:
                self.provide(change)
            if isinstance(change, ContractReceiveClaimDisputed):
                self.known_disputed[who] = max(self.known_disputed[who], change.evidence_seq)
            self.check_replay(who, change)

    def check_replay(self, who: str, change):
        """A node that stopped while it read a log reads it again: nothing changes, nothing is sent."""
        if isinstance(change, ContractReceiveTopUp):
            return  # (a replayed top-up log lowers the amount still in flight: not a fault path)
        state = self.state if who == C else self.provider
        after, events = checked_transition(state, change, KEYS)
        assert after == state, f"a replayed {type(change).__name__} changed the {who}'s lease"
        assert not [ev for ev in events if type(ev) in SENDS], f"a replayed {type(change).__name__} sent a transaction"

    def with_evidence(self, change):
        """The consumer's I/O layer attaches its stored checkpoint that refutes a claim (lowest seq first)."""
        if not isinstance(change, ContractReceiveUsageClaimed):
            return change
        refuting = [e for e in self.evidence if e.checkpoint.seq >= change.seq
                    and e.checkpoint.cumulative_gpu_seconds < change.cumulative_gpu_seconds]
        if not refuting:
            return change
        best = min(refuting, key=lambda e: (e.checkpoint.seq, e.checkpoint.cumulative_gpu_seconds))
        return ContractReceiveUsageClaimed(change.lease_id, change.seq, change.cumulative_gpu_seconds,
                                           change.ready_at, best)

    def check_refutable_claim_disputed(self, before: LeaseState, change, events):
        if not isinstance(change, ContractReceiveUsageClaimed) or change.evidence is None:
            return
        if (before.status < LeaseStatus.FINALIZED and before.now_ms // 1000 < change.ready_at
                and change.seq not in self.disputes_sent and before.faults.claim_seq != change.seq):
            assert any(isinstance(ev, ContractSendDispute) for ev in events), "a refutable claim was not disputed"

    def fault_failed(self, who: str, kind: str, reason: str):
        change = ContractReceiveFaultTxFailed(LEASE, kind, reason)
        if who == C:
            if kind == "dispute" and reason == "reverted":  # no answer of the escrow's: the node tries again
                self.disputes_failed.add(self.state.faults.dispute_sent_seq)
            self.apply(change)
        else:
            self.provide(change)
            if kind == "claim" and "LeaseEscrow_SeqDisputed" in reason:
                self.known_disputed[P] = max(self.known_disputed[P], self.chain_disputed)

    def synced(self, who: str) -> bool:
        return who not in self.down and not self.inbox[who]

    # ----------------------------------------------------------------------------------- honest provider

    @rule(dt=st.integers(1_000, 6_000))
    def honest_beat(self, dt):
        self.advance(dt)
        if P not in self.down:
            self.provider_tick(NEVER)

    @precondition(lambda self: P not in self.down)
    @rule()
    def honest_checkpoint(self):
        self.provider_tick(0)
        if self.provider_cps:
            self.last_cp = self.provider_cps[max(self.provider_cps)]

    @precondition(lambda self: P not in self.down)
    @rule(beats=st.integers(1, 12))
    def honest_interval(self, beats):
        for _ in range(beats):
            self.advance(5_000)
            self.provider_tick(NEVER)
        self.honest_checkpoint()

    @precondition(lambda self: P not in self.down)
    @rule()
    def job_ends(self):
        if self.provider.provider.outcome is None:
            self.provide(JobEnded(JobEnd(0, "done\n", True)))

    # ----------------------------------------------------------------------------------- malicious provider

    @precondition(lambda self: C not in self.down)
    @rule(extra=st.integers(1, 10_000), chained=st.booleans())
    def over_claiming_beat(self, extra, chained):
        s = self.state
        prev = s.beats.tip.hash if chained else keccak(b"fork")
        seq = s.beats.tip.seq + 1
        if seq == 1:
            prev = bytes(32)
        hb = Heartbeat(LEASE, seq, max(self.now, s.beats.tip.time_ms), s.beats.tip.gpu_seconds + extra, prev)
        self.apply(ReceiveHeartbeat(sign_heartbeat(hb, NODE), self.now))

    @precondition(lambda self: C not in self.down)
    @rule(extra=st.integers(0, 5_000), seq_delta=st.sampled_from([-1, 0, 1, 1, 1, 2]), forged=st.booleans())
    def malicious_checkpoint(self, extra, seq_delta, forged):
        s = self.state
        seq = max(s.accepted_seq, s.ledger.settled_seq) + seq_delta
        if seq < 0:
            return
        cum = max(s.accepted_cumulative, s.ledger.settled_cumulative) + extra
        cp = Checkpoint(LEASE, seq, cum, s.beats.tip.hash, self.now // 1000)
        signed = sign_checkpoint(cp, FORGER_WALLET if forged else WALLET, DOMAIN)
        if not forged:
            self.wallet_signed.add(signed)
        self.apply(ReceiveCheckpoint(signed, self.now))

    @precondition(lambda self: C not in self.down)
    @rule()
    def replay_checkpoint(self):
        if self.last_cp is not None:
            self.apply(ReceiveCheckpoint(self.last_cp, self.now))

    @precondition(lambda self: C not in self.down)
    @rule()
    def forged_beat(self):
        tip = self.state.beats.tip
        hb = Heartbeat(LEASE, tip.seq + 1, self.now, tip.gpu_seconds, tip.hash if tip.seq else bytes(32))
        self.apply(ReceiveHeartbeat(sign_heartbeat(hb, FORGER_NODE), self.now))

    def rogue(self, seq: int, cumulative: int):
        """The provider's wallet claims usage of its choice (not what its node metered)."""
        signed = sign_checkpoint(Checkpoint(LEASE, seq, cumulative, bytes(32), self.now // 1000), WALLET, DOMAIN)
        self.wallet_signed.add(signed)
        if self.claim_error(signed) is None:
            self.chain_claim = (seq, cumulative, self.now // 1000 + DISPUTE_WINDOW)
            self.log(ContractReceiveUsageClaimed(LEASE, *self.chain_claim))

    @rule(seq_delta=st.integers(1, 2), extra=st.integers(1, 400))
    def rogue_claim(self, seq_delta, extra):
        self.rogue(max(self.state.accepted_seq, self.chain_settled_seq) + seq_delta,
                   max(self.state.accepted_cumulative, self.chain_settled_cum) + extra)

    @precondition(lambda self: self.state.accepted_seq > self.chain_settled_seq and self.chain_claim is None)
    @rule(extra=st.integers(1, 400))
    def rogue_claim_above_a_verified_checkpoint(self, extra):
        """More usage than the provider signed for a seq the consumer verified but did not settle yet."""
        self.rogue(self.state.accepted_seq, self.state.accepted_cumulative + extra)

    # ----------------------------------------------------------------------------------- stalls

    @precondition(lambda self: not self.down)
    @rule(who=st.sampled_from([C, P]))
    def stall(self, who):
        self.down.add(who)
        self.stalled_at = self.now

    @precondition(lambda self: self.down and self.now >= self.stalled_at + 60_000)  # long enough to be noticed
    @rule()
    def resume(self):
        who = self.down.pop()
        self.read_logs(who)
        if who == C:
            self.apply(TimerTick(self.now))
        else:
            self.provide(TimerTick(self.now))
        self.deliver()

    # ----------------------------------------------------------------------------------- user, time, chain

    @rule(dt=st.integers(0, 45_000))
    def tick(self, dt):
        self.advance(dt)
        if C not in self.down:
            self.apply(TimerTick(self.now))
        if P not in self.down:
            self.provide(TimerTick(self.now))

    @precondition(lambda self: C not in self.down)
    @rule(amount=st.integers(1, PRICE * GPUS * 400))
    def top_up(self, amount):
        self.apply(ActionTopUp(amount))

    @precondition(lambda self: C not in self.down)
    @rule()
    def close(self):
        self.apply(ActionCloseLease())

    @precondition(lambda self: any(who not in self.down for who, _ in self.txs))
    @rule(sender=st.sampled_from([C, P]), fail=st.sampled_from([False, False, False, True]))
    def mine(self, sender, fail):
        ready = [i for i, (who, _) in enumerate(self.txs) if who not in self.down]
        mine = [i for i in ready if self.txs[i][0] == sender]
        who, tx = self.txs.pop((mine or ready)[0])
        now_s = self.now // 1000
        if isinstance(tx, ContractSendSettle):
            cp = tx.signed_cp.checkpoint
            end = min(now_s, self.chain_ends_at, self.chain_closed_at or 2**64)
            ok = (
                not fail
                and not self.chain_finalized
                and (self.chain_closed_at is None or now_s < self.chain_closed_at + CONFIG.settlement_window_s)
                and cp.seq > self.chain_settled_seq
                and cp.cumulative_gpu_seconds >= self.chain_settled_cum
                and cp.cumulative_gpu_seconds <= GPUS * max(0, end - START)
            )
            if not ok:
                self.outstanding -= self.sent_amounts.pop(cp.seq)
                self.apply(ContractReceiveSettleFailed(LEASE, cp.seq, "reverted"))
                return
            pay = self.chain_settle(cp.seq, cp.cumulative_gpu_seconds)
            assert pay <= tx.amount, (pay, tx.amount)
            self.log(ContractReceiveLeaseSettled(LEASE, cp.seq, cp.cumulative_gpu_seconds, pay))
        elif isinstance(tx, ContractSendClose):
            if self.chain_closed_at is None and not self.chain_finalized:
                if who == P and now_s < self.chain_ends_at:
                    return  # LeaseEscrow_LeaseNotEnded: a top-up moved the end meanwhile
                self.log(*self.chain_close(CONSUMER if who == C else PROVIDER))
        elif isinstance(tx, ContractSendTopUp):
            cap = PRICE * GPUS * MAX_DURATION
            if (self.chain_closed_at is None and self.chain_deposit + tx.amount <= cap and not fail
                    and self.chain_deadline == 0):
                self.chain_deposit += tx.amount
                self.chain_ends_at = START + min(MAX_DURATION, self.chain_deposit // (PRICE * GPUS))
                self.log(ContractReceiveTopUp(LEASE, tx.amount, self.chain_deposit, self.chain_ends_at))
            else:
                self.apply(ContractReceiveTopUpFailed(LEASE, tx.amount, "reverted"))
        elif isinstance(tx, ContractSendFinalize):
            assert self.chain_closed_at is not None and now_s >= self.chain_closed_at + CONFIG.settlement_window_s
            if self.chain_claim is not None:
                self.txs.append((who, tx))  # LeaseEscrow_ClaimPending: the node tries again
            elif not self.chain_finalized:
                self.chain_finalized = True
                self.log(ContractReceiveLeaseFinalized(LEASE, self.chain_deposit - self.chain_paid))
        elif isinstance(tx, ContractSendWithdraw):
            pass
        else:
            kind = FAULT_KINDS[type(tx)]
            error = "reverted" if fail else self.mine_fault(tx)
            event(f"{kind}: {(error or 'mined').split('(')[0]}")  # (--hypothesis-show-statistics)
            if error is not None:
                self.fault_failed(who, kind, error)

    def chain_settle(self, seq: int, cumulative: int) -> int:
        pay = PRICE * (cumulative - self.chain_settled_cum)
        assert pay <= self.chain_deposit - self.chain_paid, "the escrow pays only what elapsed paid-through time allows"
        self.chain_paid += pay
        self.chain_settled_seq, self.chain_settled_cum = seq, cumulative
        return pay

    def chain_close(self, by: str) -> list:
        now_s = self.now // 1000
        self.chain_closed_at = now_s
        logs: list = [ContractReceiveLeaseClosed(LEASE, now_s, by)]
        if self.chain_deadline and now_s >= self.chain_deadline:  # closing resolves a missed deadline
            slash = self.collateral // 2
            self.collateral -= slash
            self.chain_slashed += slash
            logs.append(ContractReceiveLivenessResolved(LEASE, slash))
        self.chain_deadline = 0
        return logs

    def claim_error(self, signed: SignedCheckpoint) -> str | None:
        cp, now_s = signed.checkpoint, self.now // 1000
        if self.chain_finalized:
            return f"LeaseEscrow_LeaseFinalized({LEASE})"
        if self.chain_closed_at is not None and now_s >= self.chain_closed_at + CONFIG.settlement_window_s:
            return f"LeaseEscrow_SettlementWindowClosed({LEASE}, {self.chain_closed_at + CONFIG.settlement_window_s})"
        if self.chain_claim is not None:
            return f"LeaseEscrow_ClaimPending({LEASE})"
        if cp.seq <= self.chain_disputed:
            return f"LeaseEscrow_SeqDisputed({LEASE}, {cp.seq}, {self.chain_disputed})"
        if cp.seq <= self.chain_settled_seq:
            return f"LeaseEscrow_StaleSeq({LEASE}, {cp.seq}, {self.chain_settled_seq})"
        if cp.cumulative_gpu_seconds < self.chain_settled_cum:
            return f"LeaseEscrow_UsageDecreased({LEASE}, {cp.cumulative_gpu_seconds}, {self.chain_settled_cum})"
        end = min(now_s, self.chain_ends_at, self.chain_closed_at or 2**64)
        if cp.cumulative_gpu_seconds > GPUS * max(0, end - START):
            return f"LeaseEscrow_UsageExceedsElapsed({LEASE}, {cp.cumulative_gpu_seconds}, {GPUS * (end - START)})"
        if cp.cumulative_gpu_seconds == self.chain_settled_cum:
            return f"LeaseEscrow_NothingToClaim({LEASE})"
        if signed not in self.wallet_signed:
            return f"LeaseEscrow_InvalidSignature({PROVIDER})"
        return None

    def mine_fault(self, tx) -> str | None:
        """The escrow's fault functions: the error a transaction reverts with, or ``None`` with its logs told."""
        now_s = self.now // 1000
        is_open = self.chain_closed_at is None and not self.chain_finalized
        if isinstance(tx, ContractSendClaim):
            error = self.claim_error(tx.signed_cp)
            if error is None:
                cp = tx.signed_cp.checkpoint
                self.chain_claim = (cp.seq, cp.cumulative_gpu_seconds, now_s + DISPUTE_WINDOW)
                self.log(ContractReceiveUsageClaimed(LEASE, *self.chain_claim))
            return error
        if isinstance(tx, ContractSendDispute):
            claim, ev = self.chain_claim, tx.evidence.checkpoint
            if claim is None:
                return f"LeaseEscrow_NoClaim({LEASE})"
            if now_s >= claim[2]:
                return f"LeaseEscrow_DisputeWindowClosed({LEASE}, {claim[2]})"
            if ev.seq < claim[0] or ev.cumulative_gpu_seconds >= claim[1]:
                return f"LeaseEscrow_InvalidEvidence({LEASE})"
            if tx.evidence not in self.wallet_signed:
                return f"LeaseEscrow_InvalidSignature({PROVIDER})"
            self.chain_claim, self.chain_disputed = None, ev.seq
            self.log(ContractReceiveClaimDisputed(LEASE, claim[0], ev.seq))
            return None
        if isinstance(tx, ContractSendFinalizeClaim):
            claim = self.chain_claim
            if claim is None:
                return f"LeaseEscrow_NoClaim({LEASE})"
            if now_s < claim[2]:
                return f"LeaseEscrow_DisputeWindowOpen({LEASE}, {claim[2]})"
            self.chain_claim = None
            seq, cumulative, _ = claim
            logs: list = []
            amount = 0
            if seq > self.chain_settled_seq and cumulative >= self.chain_settled_cum:
                amount = self.chain_settle(seq, cumulative)
                self.claim_paid_cum = max(self.claim_paid_cum, cumulative)
                logs.append(ContractReceiveLeaseSettled(LEASE, seq, cumulative, amount))
            self.log(*logs, ContractReceiveClaimFinalized(LEASE, seq, cumulative, amount))
            return None
        if isinstance(tx, ContractSendChallenge):
            if not is_open:
                return f"LeaseEscrow_LeaseNotOpen({LEASE})"
            if self.chain_deadline:
                return f"LeaseEscrow_ChallengePending({LEASE})"
            if now_s >= self.chain_ends_at:
                return f"LeaseEscrow_LeaseEnded({LEASE}, {self.chain_ends_at})"
            if now_s < self.chain_cooldown:
                return f"LeaseEscrow_ChallengeCooldown({LEASE}, {self.chain_cooldown})"
            self.chain_deadline = now_s + LIVENESS_WINDOW
            self.log(ContractReceiveLivenessChallenged(LEASE, self.chain_deadline))
            return None
        if isinstance(tx, ContractSendAnswer):
            if not is_open:
                return f"LeaseEscrow_LeaseNotOpen({LEASE})"
            if not self.chain_deadline:
                return f"LeaseEscrow_NoChallenge({LEASE})"
            if now_s >= self.chain_deadline:
                return f"LeaseEscrow_LivenessWindowClosed({LEASE}, {self.chain_deadline})"
            self.chain_deadline, self.chain_cooldown = 0, now_s + LIVENESS_WINDOW * COOLDOWN_WINDOWS
            self.log(ContractReceiveLivenessAnswered(LEASE, now_s))
            return None
        if isinstance(tx, ContractSendResolve):
            if not is_open:
                return f"LeaseEscrow_LeaseNotOpen({LEASE})"
            if not self.chain_deadline:
                return f"LeaseEscrow_NoChallenge({LEASE})"
            if now_s < self.chain_deadline:
                return f"LeaseEscrow_LivenessWindowOpen({LEASE}, {self.chain_deadline})"
            self.log(*self.chain_close(CONSUMER))
            return None
        assert isinstance(tx, ContractSendReportEquivocation)
        a, b = tx.a, tx.b
        if self.chain_finalized:
            return f"LeaseEscrow_LeaseFinalized({LEASE})"
        if a.checkpoint.seq != b.checkpoint.seq or a == b or not {a, b} <= self.wallet_signed:
            return f"LeaseEscrow_NotEquivocation({LEASE})"
        if self.collateral == 0:
            return f"LeaseEscrow_NothingToSlash({LEASE})"
        logs = self.chain_close(CONSUMER) if is_open else []
        slash, self.collateral = self.collateral, 0
        self.chain_slashed += slash
        self.log(*logs, ContractReceiveEquivocationReported(LEASE, CONSUMER, a.checkpoint.seq, slash))
        return None

    # ----------------------------------------------------------------------------------- replays, noise

    @rule(who=st.sampled_from([C, P]), data=st.data())
    def noise(self, who, data):
        """Any change, with any values, in the current state of either lease: checked, then dropped."""
        seqs, amounts = st.integers(0, 60), st.integers(0, 5_000)
        times = st.integers(START - 100, START + 2_000)
        known = sorted(self.wallet_signed, key=lambda s: (s.checkpoint.seq, s.checkpoint.cumulative_gpu_seconds,
                                                          s.signature))
        evidence = st.sampled_from([None, *known])
        lid = st.sampled_from([LEASE, LEASE, 0, 99])
        reasons = st.sampled_from([
            "", "reverted", "LeaseEscrow_SeqDisputed(3, 5, 4)", "LeaseEscrow_SeqDisputed(3, x)",
            "LeaseEscrow_SeqDisputed(", "LeaseEscrow_ChallengeCooldown(3, 1700000100)",
            "LeaseEscrow_ChallengeCooldown(3)", "LeaseEscrow_NoClaim(3)", "LeaseEscrow_NoChallenge(3)",
            "LeaseEscrow_LeaseNotOpen(3)", "LeaseEscrow_LeaseEnded(3, 1)", "LeaseEscrow_NothingToSlash(3)",
            "LeaseEscrow_LeaseFinalized(3)", "LeaseEscrow_DisputeWindowOpen(3, 9)"])
        kinds = st.sampled_from([*FAULT_KINDS.values(), "bogus"])
        change = data.draw(st.one_of(
            st.builds(ContractReceiveUsageClaimed, lid, seqs, amounts, times, evidence),
            st.builds(ContractReceiveClaimDisputed, lid, seqs, seqs),
            st.builds(ContractReceiveClaimFinalized, lid, seqs, amounts, amounts),
            st.builds(ContractReceiveLivenessChallenged, lid, times),
            st.builds(ContractReceiveLivenessAnswered, lid, times),
            st.builds(ContractReceiveLivenessResolved, lid, amounts),
            st.builds(ContractReceiveEquivocationReported, lid, st.just(CONSUMER), seqs, amounts),
            st.builds(ContractReceiveFaultTxFailed, lid, kinds, reasons),
            st.builds(ContractReceiveLeaseSettled, lid, seqs, amounts, amounts, amounts),
            st.builds(ContractReceiveSettleFailed, lid, seqs, reasons),
            st.builds(ContractReceiveLeaseClosed, lid, times, st.just(CONSUMER)),
            st.builds(ContractReceiveLeaseFinalized, lid, amounts),
            st.builds(ContractReceiveTopUp, lid, amounts, amounts, times),
            st.builds(ContractReceiveTopUpFailed, lid, amounts, reasons),
            *([st.builds(ActionTopUp, st.integers(-5, 5_000))] if who == C else []),  # (the API's consumer only)
            st.builds(ActionCloseLease, st.integers(0, (START + 2_000) * 1000)),
            st.builds(TimerTick, st.integers(self.now - 10_000, self.now + 400_000)),
            st.builds(NodeRestarted, st.integers(self.now - 10_000, self.now + 400_000)),
            st.builds(ReceiveJobResult, st.integers(-1, 255), st.just("log"), st.booleans(), st.just(self.now)),
            st.builds(ReceiveAck, st.integers(-2, 5)),
            st.builds(JobStarted, st.just(CONSUMER_PEER)),
            st.builds(JobEnded, st.just(JobEnd(1, "x", True))),
        ), label="change")
        checked_transition(self.state if who == C else self.provider, change, KEYS)

    # ----------------------------------------------------------------------------------- invariants

    @invariant()
    def never_authorises_more_than_proven_or_deposited(self):
        if self.claim_paid_cum == 0:  # (a paid claim frees the settlement slot while a doomed settlement is queued)
            assert self.outstanding <= PRICE * self.max_accepted_cum
            assert self.outstanding <= self.chain_deposit
        if self.synced(C):
            assert self.state.ledger.paid == self.chain_paid

    @invariant()
    def money_is_conserved(self):
        # nothing leaves the deposit for usage the consumer did not verify, unless an undisputed claim took it
        assert self.chain_paid <= PRICE * max(self.max_accepted_cum, self.claim_paid_cum)
        assert self.chain_paid <= self.chain_deposit
        for who, s in ((C, self.state), (P, self.provider)):
            money = s.ledger
            assert money.paid >= 0 and money.paid + money.refund <= money.deposit, who
            if self.synced(who):
                assert (money.paid, money.deposit, money.settled_seq) == (
                    self.chain_paid, self.chain_deposit, self.chain_settled_seq), who
                if self.chain_finalized:
                    assert money.refund == self.chain_deposit - self.chain_paid, who

    @invariant()
    def status_only_moves_forward(self):
        assert self.state.status >= self.last_status
        assert self.provider.status >= self.last_provider_status
        self.last_status, self.last_provider_status = self.state.status, self.provider.status
        for who, s in ((C, self.state), (P, self.provider)):
            if self.synced(who) and self.chain_closed_at is not None:
                assert s.status >= LeaseStatus.CLOSED and s.closed_at == self.chain_closed_at, who
            if self.synced(who) and self.chain_finalized:
                assert s.status == LeaseStatus.FINALIZED, who

    @invariant()
    def settled_seq_strictly_increasing(self):
        assert self.state.ledger.settled_seq >= self.last_settled_seq
        self.last_settled_seq = self.state.ledger.settled_seq
        if self.synced(C):
            assert self.state.ledger.settled_seq == self.chain_settled_seq

    @invariant()
    def both_leases_mirror_the_fault_books(self):
        claim_seq = self.chain_claim[0] if self.chain_claim else 0
        for who, s in ((C, self.state), (P, self.provider)):
            if not self.synced(who):
                continue
            f = s.faults
            assert f.claim_seq == claim_seq, (who, f.claim_seq, claim_seq)
            assert f.disputed_seq == self.chain_disputed, (who, f.disputed_seq, self.chain_disputed)
            assert f.slashed == self.chain_slashed, (who, f.slashed, self.chain_slashed)
            if self.chain_closed_at is None:  # an answer (or a resolution) clears the pending challenge
                assert f.challenge_deadline == self.chain_deadline, (who, f.challenge_deadline, self.chain_deadline)

    @invariant()
    def at_most_one_challenge_pending(self):
        in_flight = sum(isinstance(tx, ContractSendChallenge) for _, tx in self.txs)
        assert in_flight + (self.chain_deadline != 0) <= 1
        if in_flight:
            assert self.state.faults.challenge_sent

    @invariant()
    def provider_meters_no_more_than_elapsed_time(self):
        meter = self.provider.provider.meter  # (a close is learnt after the fact: it clips later samples only)
        assert meter.gpu_ms <= GPUS * max(0, min(self.now, meter.ends_at * 1000) - START * 1000)
        if self.synced(P):
            assert meter.closed_at == self.chain_closed_at

    @invariant()
    def provider_job_stops_once_the_lease_closes(self):
        side = self.provider.provider
        if self.synced(P) and self.chain_closed_at is not None and side.outcome is None:
            assert self.job_stopped
        assert self.jobs_started == 1

    @invariant()
    def finalized_only_after_close(self):
        for s in (self.state, self.provider):
            if s.status >= LeaseStatus.FINALIZING:
                assert s.closed_at is not None


class FaultPaths(ConsumerLease):
    """The same leases with fewer attacks on the lease stream (forged, over-claiming and replayed messages close a
    lease early), so that they live long enough for the fault paths to play out: silent nodes, claims, disputes,
    liveness challenges, answers and resolutions."""

    over_claiming_beat = forged_beat = replay_checkpoint = noise = None  # not rules here

    @precondition(lambda self: C not in self.down and self.now >= (START + 200) * 1000)
    @rule()
    def close(self):
        """The user closes late in the lease (early closes would leave little to fault)."""
        self.apply(ActionCloseLease())


TestConsumerLease = ConsumerLease.TestCase
TestConsumerLease.settings = settings(
    max_examples=60, stateful_step_count=80, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestFaultPaths = FaultPaths.TestCase
TestFaultPaths.settings = settings(
    max_examples=100, stateful_step_count=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
