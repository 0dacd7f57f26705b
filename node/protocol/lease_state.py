"""Lease state, changes and events: plain frozen data, no behaviour (the rules are in ``node.protocol.lease``).

``LeaseState`` holds what both roles share (terms, status, chain times) and named parts: ``Ledger`` (money),
``BeatChain`` (the consumer's verified heartbeat chain), ``Counters`` and, for the provider, ``ProviderSide``
(meter, job, outgoing queue). Changes are named by origin (``Action*``, ``Receive*``, ``ContractReceive*``,
``Timer*``; ``Job*``/``ProviderTick`` report the provider's own job and meter), events by effect.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from node.crypto.eip712 import Domain
from node.protocol.checkpoint import (
    DEFAULT_TOLERANCE,
    NO_LINK,
    ChainLink,
    ChainRules,
    LeaseView,
    RejectReason,
    SignedCheckpoint,
    Tolerance,
)
from node.protocol.heartbeat import ZERO_HASH, UsageSummary
from node.protocol.meter import ProviderMeter


class Role(enum.Enum):
    CONSUMER = "consumer"
    PROVIDER = "provider"


class LeaseStatus(enum.IntEnum):
    """Ordered lifecycle; a transition never lowers it."""

    OPENING = 10  # open transaction sent, not yet seen on-chain
    OPEN = 20
    CLOSING = 30  # close transaction sent, not yet seen on-chain
    CLOSED = 40  # closed on-chain; final settlements allowed within the settlement window
    FINALIZING = 45  # finalize transaction sent
    FINALIZED = 50  # refund paid, collateral unlocked


class CloseReason(enum.Enum):
    USER = "user"
    TOO_MANY_REJECTIONS = "too_many_rejections"
    DEPOSIT_EXHAUSTED = "deposit_exhausted"
    LEASE_END = "lease_end"  # provider: paid-through end reached
    LIVENESS_SLASHED = "liveness_slashed"  # the provider missed a liveness challenge: resolved, slashed, closed
    EQUIVOCATION = "equivocation"  # the provider signed two checkpoints with one seq: reported, slashed, closed


class Notice(enum.Enum):
    LEASE_OPENED = "lease_opened"
    HEARTBEAT_REJECTED = "heartbeat_rejected"
    CHECKPOINT_REJECTED = "checkpoint_rejected"
    EQUIVOCATION = "equivocation"  # two provider-signed checkpoints with one seq: evidence stored and reported
    TOPUP_SUGGESTED = "topup_suggested"
    PROVIDER_SILENT = "provider_silent"
    CLOSING = "closing"
    LEASE_CLOSED = "lease_closed"
    LEASE_FINALIZED = "lease_finalized"
    JOB_RESULT = "job_result"
    SETTLED_ELSEWHERE = "settled_elsewhere"  # a settlement we did not send (co-signed/claim)
    SETTLE_FAILED = "settle_failed"
    IGNORED = "ignored"  # a change that does not apply in this state
    # fault paths (the escrow's claims, disputes, liveness challenges and equivocation reports)
    SERVICE_PAUSED = "service_paused"  # provider: too much unsettled usage, the job is stopped
    SERVICE_RESUMED = "service_resumed"  # provider: the consumer settled again
    CLAIM_SENT = "claim_sent"  # provider: claimed its latest checkpoint of a silent consumer
    USAGE_CLAIMED = "usage_claimed"  # a claim is pending on-chain
    CLAIM_DISPUTED = "claim_disputed"
    CLAIM_FINALIZED = "claim_finalized"
    CHALLENGE_SENT = "challenge_sent"  # consumer: challenged a silent provider's liveness
    LIVENESS_CHALLENGED = "liveness_challenged"
    LIVENESS_ANSWERED = "liveness_answered"
    LIVENESS_RESOLVED = "liveness_resolved"  # the deadline passed unanswered: slashed and closed
    EQUIVOCATION_REPORTED = "equivocation_reported"
    FAULT_TX_FAILED = "fault_tx_failed"
    JOB_REATTACHED = "job_reattached"  # provider: a restarted node took over the job still running


# --------------------------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class LeaseConfig:
    max_consecutive_rejections: int = 3
    settle_interval_ms: int = 0  # 0: settle as soon as a checkpoint is accepted (the I/O layer batches)
    settle_retry_ms: int = 30_000  # wait after a failed settlement before sending again
    topup_warning_ms: int = 300_000  # act when the paid-through end is this close
    auto_topup_amount: int = 0  # 0: only suggest a top-up
    close_on_exhaustion: bool = True
    settlement_window_s: int = 3_600  # the escrow's window after close (finalize after it)
    provider_silence_ms: int = 30_000
    max_pending_beats: int = 4_096  # beats held past the last accepted head; more are refused
    tolerance: Tolerance = DEFAULT_TOLERANCE
    # fault paths
    max_unsettled_s: int = 600  # provider: unsettled usage tolerated, in seconds of the whole lease (x gpus)
    challenge_after_ms: int = 60_000  # consumer: no heartbeat for this long -> challenge the provider's liveness
    fault_retry_ms: int = 5_000  # wait after a failed fault transaction before sending it again


DEFAULT_CONFIG = LeaseConfig()


@dataclass(frozen=True, slots=True)
class OfferTerms:
    """The parts of a signed offer a lease needs (the full offer and its signature live in the offer book)."""

    offer_hash: bytes  # EIP-712 struct hash = offer id
    provider: str  # 0x-hex wallet address
    provider_node_key: bytes  # 32-byte ed25519 node key (from the staking registry)
    price_per_gpu_second: int
    max_duration: int  # seconds


@dataclass(frozen=True, slots=True)
class PendingSettlement:
    seq: int
    cumulative: int
    amount: int
    sent_at_ms: int



# --------------------------------------------------------------------------------------------- state


@dataclass(frozen=True, slots=True)
class BeatChain:
    """Consumer: the provider's heartbeat chain as verified so far, and the last checkpoint accepted on it.

    ``head`` is the beat the last accepted checkpoint covers, ``tip`` the last beat received and verified;
    ``pending`` holds the verified beats after ``head`` up to ``tip`` (raw 224-byte beats).
    """

    last_accepted: SignedCheckpoint | None = None
    accepted_digest: bytes | None = None
    head: ChainLink = NO_LINK
    tip: ChainLink = NO_LINK
    pending: tuple[bytes, ...] = ()
    last_beat_at_ms: int = 0  # local receive time of the latest accepted beat
    silence_notified: bool = False

    @property
    def accepted_seq(self) -> int:
        return self.last_accepted.checkpoint.seq if self.last_accepted else 0

    @property
    def accepted_cumulative(self) -> int:
        return self.last_accepted.checkpoint.cumulative_gpu_seconds if self.last_accepted else 0


@dataclass(frozen=True, slots=True)
class Ledger:
    """Money of one lease: chain-confirmed unless said otherwise."""

    deposit: int  # including confirmed top-ups
    settled_seq: int = 0
    settled_cumulative: int = 0
    paid: int = 0  # gross amount that left the deposit
    fees: int = 0
    refund: int = 0
    pending_settlement: PendingSettlement | None = None  # sent, not yet confirmed
    last_settle_sent_ms: int = 0
    last_settle_sent_seq: int = 0
    settle_blocked_until_ms: int = 0  # back-off after a failed settlement
    topup_in_flight: int = 0
    topup_notified_for_ends_at: int = 0

    @property
    def remaining_deposit(self) -> int:
        return self.deposit - self.paid


@dataclass(frozen=True, slots=True)
class Counters:
    consecutive_rejections: int = 0
    rejected_total: int = 0
    accepted_total: int = 0
    heartbeats_accepted: int = 0
    heartbeats_rejected: int = 0


class JobPhase(enum.Enum):
    """Provider: where the lease's job is."""

    NONE = "none"  # no job spec accepted yet
    STARTING = "starting"  # handed to the executor
    RUNNING = "running"
    ENDED = "ended"  # the outcome is known


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A job spec the consumer signed, as the executor takes it."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    timeout_s: int = 3600
    image: str = ""  # a container job (job spec version 2); "" for a host process
    resources: tuple[int, int, int, int] = (0, 0, 0, 0)  # memory, milli-CPUs, shm, scratch; 0: the default
    ports: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class JobEnd:
    """How the job ended, as reported to the consumer (``log_tail`` already cut to the message limit)."""

    exit_code: int
    log_tail: str
    simulated: bool
    failure: str = ""  # why the job did not run or end by itself (image_not_allowed, oom, timeout, ...)
    image_digest: str = ""  # the image a container job actually ran


@dataclass(frozen=True, slots=True)
class ProviderSide:
    """Provider: the meter, the job and the ordered queue of messages to the consumer not yet acknowledged.

    ``outq`` holds encoded lease-stream messages (heartbeats, checkpoints, the job result) in the order they
    must arrive; the head is retried until the consumer acks it (a lost beat would break the chain).
    """

    meter: ProviderMeter
    devices: tuple[int, ...] = ()  # indices of the GPUs given to this lease
    peer: str | None = None  # the consumer's node, once its job spec was accepted
    job: JobPhase = JobPhase.NONE
    job_error: str = ""  # why the executor refused the last job spec
    outcome: JobEnd | None = None
    result_sent: bool = False  # the job result is queued
    final_sent: bool = False  # the lease is closed and its last checkpoint queued: metering is over
    outq: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Faults:
    """Where a lease stands on the escrow's fault paths (both roles; chain-confirmed unless said otherwise).

    Silent consumer: the provider pauses serving (``serving_paused``), claims its latest signed checkpoint
    (``last_signed``; ``claim_sent_seq`` once the claim is sent), and finalizes the claim from ``claim_ready_at``.
    The consumer disputes a claim above what it verified (``dispute_sent_seq``, with ``dispute_evidence``; a dispute
    that failed for a reason that may pass is sent again). Silent provider: the consumer
    challenges (``challenge_sent``), the provider answers (``answered_deadline``), the consumer resolves a missed
    deadline (``resolve_sent``). Equivocation: the pair of conflicting checkpoints and whether it was reported.
    """

    serving_paused: bool = False
    last_signed: SignedCheckpoint | None = None  # provider: the latest checkpoint it signed
    claim_sent_seq: int = 0
    claim_seq: int = 0  # the pending claim on-chain (0: none)
    claim_cumulative: int = 0
    claim_ready_at: int = 0
    claim_finalize_sent: bool = False
    claims: int = 0  # claims seen on-chain
    disputed_seq: int = 0  # the highest seq a dispute refuted (claims need a higher one)
    dispute_sent_seq: int = 0
    dispute_evidence: SignedCheckpoint | None = None  # consumer: what refutes the pending claim (kept for a retry)
    challenge_deadline: int = 0  # the pending challenge's deadline (chain time, s; 0: none)
    challenge_sent: bool = False
    challenges: int = 0  # challenges seen on-chain
    cooldown_until: int = 0  # no new challenge before (s)
    answered_deadline: int = 0  # provider: answer sent for the challenge with this deadline
    resolve_sent: bool = False
    equivocation_a: SignedCheckpoint | None = None
    equivocation_b: SignedCheckpoint | None = None
    equivocation_sent: bool = False
    equivocation_reported: bool = False
    slashed: int = 0  # collateral slashed on this lease (liveness and equivocation)
    retry_after_ms: int = 0  # back-off after a failed fault transaction
    reason: str = ""  # the last fault step and why (shown in the API)


@dataclass(frozen=True, slots=True)
class LeaseState:
    role: Role
    terms: OfferTerms
    consumer: str
    gpus: int
    domain: Domain
    ledger: Ledger
    config: LeaseConfig = DEFAULT_CONFIG
    status: LeaseStatus = LeaseStatus.OPENING
    lease_id: int = 0  # 0 until LeaseOpened is seen
    price_per_gpu_second: int = 0  # as recorded on-chain
    started_at: int = 0
    ends_at: int = 0
    closed_at: int | None = None
    now_ms: int = 0  # latest time seen on a change
    job_spec_hash: bytes | None = None  # plaintext lives in the I/O layer's secret store
    close_reason: CloseReason | None = None
    beats: BeatChain = field(default_factory=BeatChain)  # consumer
    counters: Counters = field(default_factory=Counters)
    provider: ProviderSide | None = None  # provider
    faults: Faults = field(default_factory=Faults)

    @property
    def provider_address(self) -> bytes:
        return bytes.fromhex(self.terms.provider[2:])

    @property
    def accepted_seq(self) -> int:
        return self.beats.accepted_seq

    @property
    def accepted_cumulative(self) -> int:
        return self.beats.accepted_cumulative

    @property
    def deposit(self) -> int:
        return self.ledger.deposit

    @property
    def hard_end(self) -> int:
        """The end of billable time: the paid-through end, or the close if earlier."""
        return self.ends_at if self.closed_at is None else min(self.ends_at, self.closed_at)


def lease_view(state: LeaseState) -> LeaseView:
    """The verification view of a consumer lease."""
    b, money = state.beats, state.ledger
    acc = b.last_accepted
    return LeaseView(
        lease_id=state.lease_id,
        provider=state.provider_address,
        provider_node_key=state.terms.provider_node_key,
        gpus=state.gpus,
        started_at=state.started_at,
        ends_at=state.ends_at,
        accepting=LeaseStatus.OPEN <= state.status <= LeaseStatus.CLOSED,
        closed_at=state.closed_at,
        last_seq=max(b.accepted_seq, money.settled_seq),
        last_cumulative=max(b.accepted_cumulative, money.settled_cumulative),
        last_timestamp=acc.checkpoint.timestamp if acc else 0,
        last_digest=b.accepted_digest if b.accepted_seq >= money.settled_seq else None,
        last_head=acc.checkpoint.heartbeat_head if acc else ZERO_HASH,
        last_head_seq=b.head.seq,
        last_head_time_ms=b.head.time_ms,
        last_head_gpu_seconds=b.head.gpu_seconds,
    )


def chain_rules(state: LeaseState) -> ChainRules:
    """The rules the consumer checks each received beat against (the same the checkpoint check applies)."""
    return ChainRules(state.lease_id, state.gpus, state.started_at, state.hard_end, state.now_ms,
                      state.config.tolerance)


# --------------------------------------------------------------------------------------------- changes


@dataclass(frozen=True, slots=True)
class ActionOpenLease:
    terms: OfferTerms
    consumer: str
    gpus: int
    deposit: int
    domain: Domain
    job_spec_hash: bytes | None = None
    config: LeaseConfig = DEFAULT_CONFIG


@dataclass(frozen=True, slots=True)
class ContractReceiveLeaseOpened:
    lease_id: int
    offer_hash: bytes
    provider: str
    consumer: str
    gpus: int
    price_per_gpu_second: int
    deposit: int
    started_at: int
    ends_at: int


@dataclass(frozen=True, slots=True)
class ReceiveHeartbeat:
    signed: bytes  # 224-byte signed beat
    received_at_ms: int


@dataclass(frozen=True, slots=True)
class ReceiveCheckpoint:
    signed_cp: SignedCheckpoint
    received_at_ms: int


@dataclass(frozen=True, slots=True)
class ReceiveJobResult:
    exit_code: int
    log_tail: str
    simulated: bool
    received_at_ms: int
    failure: str = ""
    image_digest: str = ""


@dataclass(frozen=True, slots=True)
class ActionTopUp:
    amount: int


@dataclass(frozen=True, slots=True)
class ContractReceiveTopUp:
    lease_id: int
    amount: int
    deposit: int  # total afterwards, as logged
    ends_at: int


@dataclass(frozen=True, slots=True)
class ContractReceiveTopUpFailed:
    lease_id: int
    amount: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ActionCloseLease:
    now_ms: int = 0  # when the user asked (a provider may close only from ends_at)


@dataclass(frozen=True, slots=True)
class ContractReceiveLeaseSettled:
    lease_id: int
    seq: int
    cumulative_gpu_seconds: int
    amount: int  # gross, left the deposit
    fee: int = 0


@dataclass(frozen=True, slots=True)
class ContractReceiveSettleFailed:
    """Our settlement transaction reverted or was skipped (``SettlementSkipped``) for ``seq``."""

    lease_id: int
    seq: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ContractReceiveLeaseClosed:
    lease_id: int
    closed_at: int
    closed_by: str


@dataclass(frozen=True, slots=True)
class ContractReceiveLeaseFinalized:
    lease_id: int
    refund: int


@dataclass(frozen=True, slots=True)
class TimerTick:
    now_ms: int


@dataclass(frozen=True, slots=True)
class NodeRestarted:
    """The node started again: a settlement sent before and not confirmed since is forgotten (it is cumulative
    and keyed by (lease, seq), so sending the latest verified checkpoint again can neither pay twice nor skip
    usage; a mined one arrives as ``ContractReceiveLeaseSettled``)."""

    now_ms: int


# fault-path changes (escrow logs, and our fault transactions that failed)


@dataclass(frozen=True, slots=True)
class ContractReceiveUsageClaimed:
    """A claim is pending. ``evidence``: the consumer's stored provider-signed checkpoint that contradicts it (seq
    at or above the claim's, less usage), attached by the I/O layer; ``None`` when it holds none."""

    lease_id: int
    seq: int
    cumulative_gpu_seconds: int
    ready_at: int
    evidence: SignedCheckpoint | None = None


@dataclass(frozen=True, slots=True)
class ContractReceiveClaimDisputed:
    lease_id: int
    claimed_seq: int
    evidence_seq: int


@dataclass(frozen=True, slots=True)
class ContractReceiveClaimFinalized:
    lease_id: int
    seq: int
    cumulative_gpu_seconds: int
    amount: int


@dataclass(frozen=True, slots=True)
class ContractReceiveLivenessChallenged:
    lease_id: int
    deadline: int


@dataclass(frozen=True, slots=True)
class ContractReceiveLivenessAnswered:
    lease_id: int
    at: int = 0  # block time of the answer (0: unknown); the next challenge waits for the cooldown


@dataclass(frozen=True, slots=True)
class ContractReceiveLivenessResolved:
    lease_id: int
    slashed: int


@dataclass(frozen=True, slots=True)
class ContractReceiveEquivocationReported:
    lease_id: int
    finder: str
    seq: int
    slashed: int


@dataclass(frozen=True, slots=True)
class ContractReceiveFaultTxFailed:
    """One of our fault transactions (``kind``: claim, dispute, finalizeClaim, challenge, answer, resolve,
    reportEquivocation) reverted, or lost a race; ``reason`` is the decoded error."""

    lease_id: int
    kind: str
    reason: str = ""


# provider changes


@dataclass(frozen=True, slots=True)
class ProviderTick:
    """Provider: one heartbeat interval passed. ``job_running`` and ``usage`` are what the node measured."""

    now_ms: int
    job_running: bool
    usage: UsageSummary | None = None
    checkpoint_interval_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class ReceiveJobSpec:
    """Provider: the consumer's job spec, opened and authenticated (signed by the lease's consumer wallet)."""

    peer: str
    job: JobRequest


@dataclass(frozen=True, slots=True)
class JobStarted:
    peer: str


@dataclass(frozen=True, slots=True)
class JobStartFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class JobEnded:
    end: JobEnd


@dataclass(frozen=True, slots=True)
class JobReattached:
    """Provider, at start: the executor took over the job a previous run of the node started, still running
    (its container outlived the node). The job stays ``RUNNING``; metering and the lease go on as before."""


@dataclass(frozen=True, slots=True)
class ReceiveAck:
    """Provider: the consumer acknowledged the first ``count`` queued messages."""

    count: int = 1


Change = (
    ActionOpenLease
    | ContractReceiveLeaseOpened
    | ReceiveHeartbeat
    | ReceiveCheckpoint
    | ReceiveJobResult
    | ActionTopUp
    | ContractReceiveTopUp
    | ContractReceiveTopUpFailed
    | ActionCloseLease
    | ContractReceiveLeaseSettled
    | ContractReceiveSettleFailed
    | ContractReceiveLeaseClosed
    | ContractReceiveLeaseFinalized
    | TimerTick
    | NodeRestarted
    | ContractReceiveUsageClaimed
    | ContractReceiveClaimDisputed
    | ContractReceiveClaimFinalized
    | ContractReceiveLivenessChallenged
    | ContractReceiveLivenessAnswered
    | ContractReceiveLivenessResolved
    | ContractReceiveEquivocationReported
    | ContractReceiveFaultTxFailed
    | ProviderTick
    | ReceiveJobSpec
    | JobStarted
    | JobStartFailed
    | JobEnded
    | JobReattached
    | ReceiveAck
)


# --------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class ContractSendOpenLease:
    offer_hash: bytes  # the I/O layer takes the offer and its signature from the offer book
    gpus: int
    deposit: int


@dataclass(frozen=True, slots=True)
class SendJobSpec:
    lease_id: int
    provider_node_key: bytes
    job_spec_hash: bytes  # the I/O layer loads the plaintext, seals it (node/crypto/box.py) and sends it


@dataclass(frozen=True, slots=True)
class StoreHeartbeat:
    lease_id: int
    seq: int
    hash: bytes
    signed: bytes


@dataclass(frozen=True, slots=True)
class StoreCheckpoint:
    lease_id: int
    signed_cp: SignedCheckpoint
    accepted: bool
    reason: RejectReason | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StoreJobResult:
    lease_id: int
    exit_code: int
    log_tail: str
    simulated: bool
    failure: str = ""
    image_digest: str = ""


@dataclass(frozen=True, slots=True)
class ContractSendSettle:
    lease_id: int
    signed_cp: SignedCheckpoint
    amount: int  # the most this settlement may pay (the contract computes the same from cumulative)


@dataclass(frozen=True, slots=True)
class ContractSendClose:
    lease_id: int
    reason: CloseReason


@dataclass(frozen=True, slots=True)
class ContractSendFinalize:
    lease_id: int


@dataclass(frozen=True, slots=True)
class ContractSendTopUp:
    lease_id: int
    amount: int


@dataclass(frozen=True, slots=True)
class NotifyUser:
    lease_id: int
    notice: Notice
    detail: str = ""
    data: tuple[tuple[str, int | str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class StartJob:
    lease_id: int
    job: JobRequest
    devices: tuple[int, ...]
    peer: str


@dataclass(frozen=True, slots=True)
class StopJob:
    lease_id: int


@dataclass(frozen=True, slots=True)
class ReleaseDevices:
    """Provider: the lease is over; its GPUs are free again (the offer may grow)."""

    lease_id: int
    offer_hash: bytes
    devices: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ContractSendWithdraw:
    """Provider: collect earnings (the escrow pays everything owed to the provider at once)."""

    lease_id: int


# fault-path transactions


@dataclass(frozen=True, slots=True)
class ContractSendClaim:
    """Provider: claim ``signed_cp`` (its latest checkpoint) of a silent consumer."""

    lease_id: int
    signed_cp: SignedCheckpoint


@dataclass(frozen=True, slots=True)
class ContractSendDispute:
    """Consumer: void the pending claim of ``claimed_seq`` with provider-signed ``evidence``."""

    lease_id: int
    claimed_seq: int
    evidence: SignedCheckpoint


@dataclass(frozen=True, slots=True)
class ContractSendFinalizeClaim:
    lease_id: int
    seq: int


@dataclass(frozen=True, slots=True)
class ContractSendChallenge:
    """Consumer: challenge the provider's liveness (``reason`` says why)."""

    lease_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ContractSendAnswer:
    """Provider: answer the challenge with ``deadline``."""

    lease_id: int
    deadline: int


@dataclass(frozen=True, slots=True)
class ContractSendResolve:
    """Consumer: resolve the challenge whose ``deadline`` passed unanswered."""

    lease_id: int
    deadline: int


@dataclass(frozen=True, slots=True)
class ContractSendReportEquivocation:
    lease_id: int
    a: SignedCheckpoint
    b: SignedCheckpoint


# What a provider's outgoing queue carries (encoded on the lease stream, acked one by one).


@dataclass(frozen=True, slots=True)
class SendHeartbeat:
    lease_id: int
    signed: bytes


@dataclass(frozen=True, slots=True)
class SendCheckpoint:
    lease_id: int
    signed_cp: SignedCheckpoint


@dataclass(frozen=True, slots=True)
class SendJobResult:
    lease_id: int
    end: JobEnd


Outgoing = SendHeartbeat | SendCheckpoint | SendJobResult

Event = (
    ContractSendOpenLease
    | SendJobSpec
    | StoreHeartbeat
    | StoreCheckpoint
    | StoreJobResult
    | ContractSendSettle
    | ContractSendClose
    | ContractSendFinalize
    | ContractSendTopUp
    | NotifyUser
    | StartJob
    | StopJob
    | ReleaseDevices
    | ContractSendWithdraw
    | ContractSendClaim
    | ContractSendDispute
    | ContractSendFinalizeClaim
    | ContractSendChallenge
    | ContractSendAnswer
    | ContractSendResolve
    | ContractSendReportEquivocation
)

Result = tuple[LeaseState, list[Event]]
