"""The lease state machine: ``transition(state, change) -> (state, events)``, pure and deterministic.

Inputs (*changes*) are named by origin: ``Action*`` (user/API), ``Receive*`` (peer messages on the lease stream,
stamped with the local receive time by the I/O layer), ``ContractReceive*`` (chain logs and transaction
outcomes), ``Timer*``. Outputs (*events*) are ``Send*`` (lease stream), ``ContractSend*`` (transactions),
``Store*`` (persistence) and ``NotifyUser``. No clocks, randomness or I/O here: time comes in on the changes.

Consumer rules (``Role.CONSUMER``):

* a checkpoint is settled only after :func:`node.protocol.checkpoint.verify_checkpoint` accepted it; the amount
  authorised is ``price * (cp.cumulative - settled_cumulative)`` capped by ``deposit - paid``, and at most one
  settlement per lease is in flight (a later checkpoint supersedes an unsent earlier one: cumulative usage);
* ``max_consecutive_rejections`` rejected checkpoints in a row close the lease;
* when the paid-through end (``ends_at``) is near, top up (``auto_topup_amount``) or suggest it; at ``ends_at``
  the deposit is exhausted and the lease is closed;
* after close, the final checkpoint (timestamp <= closed_at) is still verified and settled; once the settlement
  window has passed, the lease is finalized (refund).

The provider role (``Role.PROVIDER``) follows the chain and closes the lease at ``ends_at``; metering, heartbeats
and checkpoints of the provider are cut by :mod:`node.protocol.provider_lease`.

Status only moves forward (``LeaseStatus`` values are ordered with gaps, so failure-handling states such as a
pending claim or a liveness challenge can be added between the existing ones).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from node.crypto.eip712 import Domain
from node.protocol.checkpoint import (
    DEFAULT_TOLERANCE,
    LeaseView,
    RejectReason,
    SignedCheckpoint,
    Tolerance,
    verify_checkpoint,
)
from node.protocol.heartbeat import ZERO_HASH, HeartbeatError, heartbeat_hash, verify_heartbeat


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


class Notice(enum.Enum):
    LEASE_OPENED = "lease_opened"
    HEARTBEAT_REJECTED = "heartbeat_rejected"
    CHECKPOINT_REJECTED = "checkpoint_rejected"
    EQUIVOCATION = "equivocation"  # evidence stored; reporting it on-chain is a later step
    TOPUP_SUGGESTED = "topup_suggested"
    PROVIDER_SILENT = "provider_silent"
    CLOSING = "closing"
    LEASE_CLOSED = "lease_closed"
    LEASE_FINALIZED = "lease_finalized"
    JOB_RESULT = "job_result"
    SETTLED_ELSEWHERE = "settled_elsewhere"  # a settlement we did not send (co-signed/claim)
    SETTLE_FAILED = "settle_failed"
    IGNORED = "ignored"  # a change that does not apply in this state


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
class LeaseState:
    role: Role
    terms: OfferTerms
    consumer: str
    gpus: int
    deposit: int  # including confirmed top-ups
    domain: Domain
    config: LeaseConfig = DEFAULT_CONFIG
    status: LeaseStatus = LeaseStatus.OPENING
    lease_id: int = 0  # 0 until LeaseOpened is seen
    price_per_gpu_second: int = 0  # as recorded on-chain
    started_at: int = 0
    ends_at: int = 0
    closed_at: int | None = None
    now_ms: int = 0  # latest time seen on a change
    job_spec_hash: bytes | None = None  # plaintext lives in the I/O layer's secret store
    # last accepted checkpoint (consumer) and the heartbeat it covers
    last_accepted: SignedCheckpoint | None = None
    accepted_digest: bytes | None = None
    accepted_head_seq: int = 0
    accepted_head_time_ms: int = 0
    accepted_head_gpu_seconds: int = 0
    # heartbeats received past the accepted head: verified, chained raw bytes
    pending_beats: tuple[bytes, ...] = ()
    tip_hash: bytes = ZERO_HASH
    tip_seq: int = 0
    tip_time_ms: int = 0
    tip_gpu_seconds: int = 0
    last_beat_at_ms: int = 0  # local receive time of the latest accepted beat
    silence_notified: bool = False
    # money (chain-confirmed unless said otherwise)
    settled_seq: int = 0
    settled_cumulative: int = 0
    paid: int = 0  # gross amount that left the deposit
    fees: int = 0
    pending_settlement: PendingSettlement | None = None  # sent, not yet confirmed
    last_settle_sent_ms: int = 0
    last_settle_sent_seq: int = 0
    settle_blocked_until_ms: int = 0  # back-off after a failed settlement
    topup_in_flight: int = 0
    topup_notified_for_ends_at: int = 0
    # counters
    consecutive_rejections: int = 0
    rejected_total: int = 0
    accepted_total: int = 0
    heartbeats_accepted: int = 0
    heartbeats_rejected: int = 0
    close_reason: CloseReason | None = None
    refund: int = 0

    @property
    def provider_address(self) -> bytes:
        return bytes.fromhex(self.terms.provider[2:])

    @property
    def accepted_seq(self) -> int:
        return self.last_accepted.checkpoint.seq if self.last_accepted else 0

    @property
    def accepted_cumulative(self) -> int:
        return self.last_accepted.checkpoint.cumulative_gpu_seconds if self.last_accepted else 0

    @property
    def remaining_deposit(self) -> int:
        return self.deposit - self.paid


def lease_view(state: LeaseState) -> LeaseView:
    """The verification view of a consumer lease."""
    acc = state.last_accepted
    accepting = LeaseStatus.OPEN <= state.status <= LeaseStatus.CLOSED
    return LeaseView(
        lease_id=state.lease_id,
        provider=state.provider_address,
        provider_node_key=state.terms.provider_node_key,
        gpus=state.gpus,
        started_at=state.started_at,
        ends_at=state.ends_at,
        accepting=accepting,
        closed_at=state.closed_at,
        last_seq=max(state.accepted_seq, state.settled_seq),
        last_cumulative=max(state.accepted_cumulative, state.settled_cumulative),
        last_timestamp=acc.checkpoint.timestamp if acc else 0,
        last_digest=state.accepted_digest if state.accepted_seq >= state.settled_seq else None,
        last_head=acc.checkpoint.heartbeat_head if acc else ZERO_HASH,
        last_head_seq=state.accepted_head_seq,
        last_head_time_ms=state.accepted_head_time_ms,
        last_head_gpu_seconds=state.accepted_head_gpu_seconds,
    )


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
    pass


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
)

Result = tuple[LeaseState, list[Event]]


# --------------------------------------------------------------------------------------------- constructors


def new_provider_lease(
    opened: ContractReceiveLeaseOpened,
    terms: OfferTerms,
    domain: Domain,
    config: LeaseConfig = DEFAULT_CONFIG,
) -> LeaseState:
    """Provider side: a lease starts when its ``LeaseOpened`` log names our address."""
    return LeaseState(
        role=Role.PROVIDER,
        terms=terms,
        consumer=opened.consumer,
        gpus=opened.gpus,
        deposit=opened.deposit,
        domain=domain,
        config=config,
        status=LeaseStatus.OPEN,
        lease_id=opened.lease_id,
        price_per_gpu_second=opened.price_per_gpu_second,
        started_at=opened.started_at,
        ends_at=opened.ends_at,
    )


# --------------------------------------------------------------------------------------------- transition


def transition(state: LeaseState | None, change: Change) -> Result:
    """Apply one change. ``state`` is ``None`` only for ``ActionOpenLease`` (a new consumer lease)."""
    if state is None:
        if isinstance(change, ActionOpenLease):
            return _open_lease(change)
        raise ValueError(f"{type(change).__name__} needs an existing lease state")
    handler = _HANDLERS.get(type(change))
    if handler is None:
        raise TypeError(f"unknown change {type(change).__name__}")
    return handler(state, change)


def _ignored(state: LeaseState, why: str) -> Result:
    return state, [NotifyUser(state.lease_id, Notice.IGNORED, why)]


def _open_lease(a: ActionOpenLease) -> Result:
    if a.gpus <= 0 or a.deposit <= 0:
        raise ValueError("gpus and deposit must be positive")
    state = LeaseState(
        role=Role.CONSUMER,
        terms=a.terms,
        consumer=a.consumer,
        gpus=a.gpus,
        deposit=a.deposit,
        domain=a.domain,
        config=a.config,
        price_per_gpu_second=a.terms.price_per_gpu_second,
        job_spec_hash=a.job_spec_hash,
    )
    return state, [ContractSendOpenLease(a.terms.offer_hash, a.gpus, a.deposit)]


def _on_open_action(state: LeaseState, a: ActionOpenLease) -> Result:
    return _ignored(state, "lease already exists")


def _on_opened(state: LeaseState, c: ContractReceiveLeaseOpened) -> Result:
    if state.status != LeaseStatus.OPENING:
        return state, []  # replayed log
    if c.offer_hash != state.terms.offer_hash or c.consumer.lower() != state.consumer.lower():
        return _ignored(state, "LeaseOpened for another open request")
    state = replace(
        state,
        status=LeaseStatus.OPEN,
        lease_id=c.lease_id,
        gpus=c.gpus,
        deposit=c.deposit,
        price_per_gpu_second=c.price_per_gpu_second,
        started_at=c.started_at,
        ends_at=c.ends_at,
        # silence is measured from the start of the lease
        last_beat_at_ms=max(state.last_beat_at_ms, c.started_at * 1000),
    )
    events: list[Event] = [NotifyUser(c.lease_id, Notice.LEASE_OPENED)]
    if state.role is Role.CONSUMER and state.job_spec_hash is not None:
        events.append(SendJobSpec(c.lease_id, state.terms.provider_node_key, state.job_spec_hash))
    return state, events


def _on_heartbeat(state: LeaseState, c: ReceiveHeartbeat) -> Result:
    # hot path: a single dataclasses.replace per beat
    now = max(state.now_ms, c.received_at_ms)
    if state.role is not Role.CONSUMER or not (LeaseStatus.OPEN <= state.status <= LeaseStatus.CLOSED):
        return _ignored(replace(state, now_ms=now), "heartbeat not expected in this state")

    def reject(why: str) -> Result:
        s = replace(state, now_ms=now, heartbeats_rejected=state.heartbeats_rejected + 1)
        return s, [NotifyUser(state.lease_id, Notice.HEARTBEAT_REJECTED, why)]

    try:
        hb = verify_heartbeat(c.signed, state.terms.provider_node_key)
    except HeartbeatError as exc:
        return reject(str(exc))
    if hb.lease_id != state.lease_id:
        return reject("heartbeat for another lease")
    if hb.seq <= state.tip_seq:
        return replace(state, now_ms=now), []  # duplicate or stale: harmless, the chain cannot fork past the tip
    if hb.seq != state.tip_seq + 1 or hb.prev_hash != state.tip_hash:
        return reject(f"chain broken at seq {hb.seq}")
    if state.tip_seq and (hb.time_ms < state.tip_time_ms or hb.gpu_seconds < state.tip_gpu_seconds):
        return reject(f"heartbeat {hb.seq} goes backwards")
    if hb.time_ms > now + state.config.tolerance.clock_skew_ms:
        return reject(f"heartbeat {hb.seq} is in the future")
    if len(state.pending_beats) >= state.config.max_pending_beats:
        return reject("too many heartbeats without a checkpoint")
    h = heartbeat_hash(c.signed)
    state = replace(
        state,
        now_ms=now,
        pending_beats=(*state.pending_beats, bytes(c.signed)),
        tip_hash=h,
        tip_seq=hb.seq,
        tip_time_ms=hb.time_ms,
        tip_gpu_seconds=hb.gpu_seconds,
        last_beat_at_ms=now,
        silence_notified=False,
        heartbeats_accepted=state.heartbeats_accepted + 1,
    )
    return state, [StoreHeartbeat(state.lease_id, hb.seq, h, bytes(c.signed))]


def _on_checkpoint(state: LeaseState, c: ReceiveCheckpoint) -> Result:
    now = max(state.now_ms, c.received_at_ms)
    state = replace(state, now_ms=now)
    if state.role is not Role.CONSUMER:
        return _ignored(state, "checkpoints are verified by the consumer")
    verdict = verify_checkpoint(
        lease_view(state),
        state.pending_beats,
        c.signed_cp,
        state.domain,
        now,
        state.config.tolerance,
        signatures_checked=True,  # pending_beats only holds beats verified in _on_heartbeat
    )
    lid = state.lease_id
    if not verdict.accepted:
        assert verdict.reason is not None
        state = replace(
            state,
            consecutive_rejections=state.consecutive_rejections + 1,
            rejected_total=state.rejected_total + 1,
        )
        events: list[Event] = [
            StoreCheckpoint(lid, c.signed_cp, False, verdict.reason, verdict.detail),
            NotifyUser(
                lid,
                Notice.EQUIVOCATION if verdict.reason is RejectReason.EQUIVOCATION else Notice.CHECKPOINT_REJECTED,
                f"{verdict.reason.value}: {verdict.detail}",
            ),
        ]
        if state.consecutive_rejections >= state.config.max_consecutive_rejections and state.status == LeaseStatus.OPEN:
            state, close_events = _close(state, CloseReason.TOO_MANY_REJECTIONS)
            events += close_events
        return state, events

    covered = verdict.beats_covered
    state = replace(
        state,
        last_accepted=c.signed_cp,
        accepted_digest=verdict.digest,
        accepted_head_seq=verdict.head_seq if covered else state.accepted_head_seq,
        accepted_head_time_ms=verdict.head_time_ms if covered else state.accepted_head_time_ms,
        accepted_head_gpu_seconds=verdict.head_gpu_seconds if covered else state.accepted_head_gpu_seconds,
        pending_beats=state.pending_beats[covered:],
        consecutive_rejections=0,
        accepted_total=state.accepted_total + 1,
    )
    events = [StoreCheckpoint(lid, c.signed_cp, True)]
    if state.config.settle_interval_ms == 0 or state.status >= LeaseStatus.CLOSING:
        state, settle_events = _maybe_settle(state, force=True)
        events += settle_events
    return state, events


def _settle_amount(state: LeaseState, cumulative: int) -> int:
    owed = state.price_per_gpu_second * max(0, cumulative - state.settled_cumulative)
    return max(0, min(owed, state.deposit - state.paid))


def _maybe_settle(state: LeaseState, *, force: bool = False) -> Result:
    """Send the latest accepted checkpoint for settlement if it adds usage and nothing is in flight."""
    acc = state.last_accepted
    if (
        state.role is not Role.CONSUMER
        or acc is None
        or state.pending_settlement is not None
        or state.status >= LeaseStatus.FINALIZING
    ):
        return state, []
    cp = acc.checkpoint
    if cp.seq <= state.settled_seq or cp.cumulative_gpu_seconds <= state.settled_cumulative:
        return state, []
    if state.now_ms < state.settle_blocked_until_ms:
        return state, []
    if state.closed_at is not None and state.now_ms >= (state.closed_at + state.config.settlement_window_s) * 1000:
        return state, []  # the escrow no longer accepts settlements for this lease
    if not force and state.now_ms - state.last_settle_sent_ms < state.config.settle_interval_ms:
        return state, []
    amount = _settle_amount(state, cp.cumulative_gpu_seconds)
    if amount == 0:
        return state, []  # deposit used up: the contract would pay nothing
    state = replace(
        state,
        pending_settlement=PendingSettlement(cp.seq, cp.cumulative_gpu_seconds, amount, state.now_ms),
        last_settle_sent_ms=state.now_ms,
        last_settle_sent_seq=cp.seq,
    )
    return state, [ContractSendSettle(state.lease_id, acc, amount)]


def _close(state: LeaseState, reason: CloseReason) -> Result:
    """Settle what is verified, then close (the I/O layer sends these in order)."""
    events: list[Event] = []
    if state.role is Role.CONSUMER:
        state, events = _maybe_settle(state, force=True)
    state = replace(state, status=LeaseStatus.CLOSING, close_reason=reason)
    events += [ContractSendClose(state.lease_id, reason), NotifyUser(state.lease_id, Notice.CLOSING, reason.value)]
    return state, events


def _on_job_result(state: LeaseState, c: ReceiveJobResult) -> Result:
    state = replace(state, now_ms=max(state.now_ms, c.received_at_ms))
    if state.role is not Role.CONSUMER or state.status < LeaseStatus.OPEN:
        return _ignored(state, "job result not expected")
    return state, [
        StoreJobResult(state.lease_id, c.exit_code, c.log_tail, c.simulated),
        NotifyUser(state.lease_id, Notice.JOB_RESULT, f"exit {c.exit_code}", (("exit_code", c.exit_code),)),
    ]


def _on_topup_action(state: LeaseState, a: ActionTopUp) -> Result:
    if a.amount <= 0:
        return _ignored(state, "top-up amount must be positive")
    if state.status != LeaseStatus.OPEN:
        return _ignored(state, "only an open lease can be topped up")
    state = replace(state, topup_in_flight=state.topup_in_flight + a.amount)
    return state, [ContractSendTopUp(state.lease_id, a.amount)]


def _on_topup(state: LeaseState, c: ContractReceiveTopUp) -> Result:
    if c.lease_id != state.lease_id or state.status >= LeaseStatus.FINALIZED:
        return state, []
    state = replace(
        state,
        deposit=max(state.deposit, c.deposit),
        ends_at=max(state.ends_at, c.ends_at),
        topup_in_flight=max(0, state.topup_in_flight - c.amount),
    )
    return state, []


def _on_topup_failed(state: LeaseState, c: ContractReceiveTopUpFailed) -> Result:
    state = replace(state, topup_in_flight=max(0, state.topup_in_flight - c.amount))
    return state, [NotifyUser(state.lease_id, Notice.TOPUP_SUGGESTED, f"top-up failed: {c.reason}")]


def _on_close_action(state: LeaseState, a: ActionCloseLease) -> Result:
    if state.status != LeaseStatus.OPEN:
        return _ignored(state, f"cannot close a lease in status {state.status.name}")
    if state.role is Role.PROVIDER and state.now_ms < state.ends_at * 1000:
        return _ignored(state, "the provider may close only from ends_at")
    return _close(state, CloseReason.USER)


def _on_settled(state: LeaseState, c: ContractReceiveLeaseSettled) -> Result:
    if c.lease_id != state.lease_id or c.seq <= state.settled_seq:
        return state, []  # replayed log
    pending = state.pending_settlement
    events: list[Event] = []
    if pending is not None and c.seq >= pending.seq:
        pending = None
    if c.seq != state.last_settle_sent_seq and state.role is Role.CONSUMER:
        events.append(NotifyUser(state.lease_id, Notice.SETTLED_ELSEWHERE, f"seq {c.seq}"))
    state = replace(
        state,
        settled_seq=c.seq,
        settled_cumulative=max(state.settled_cumulative, c.cumulative_gpu_seconds),
        paid=state.paid + c.amount,
        fees=state.fees + c.fee,
        pending_settlement=pending,
    )
    # a newer accepted checkpoint may be waiting for the slot
    more_state, more = _maybe_settle(state, force=state.status >= LeaseStatus.CLOSING)
    return more_state, events + more


def _on_settle_failed(state: LeaseState, c: ContractReceiveSettleFailed) -> Result:
    pending = state.pending_settlement
    if pending is None or c.seq != pending.seq:
        return state, []
    state = replace(state, pending_settlement=None, settle_blocked_until_ms=state.now_ms + state.config.settle_retry_ms)
    return state, [NotifyUser(state.lease_id, Notice.SETTLE_FAILED, f"seq {c.seq}: {c.reason}")]


def _on_closed(state: LeaseState, c: ContractReceiveLeaseClosed) -> Result:
    if c.lease_id != state.lease_id or state.status >= LeaseStatus.CLOSED:
        return state, []
    state = replace(state, status=LeaseStatus.CLOSED, closed_at=c.closed_at)
    events: list[Event] = [NotifyUser(state.lease_id, Notice.LEASE_CLOSED, f"by {c.closed_by}")]
    more_state, more = _maybe_settle(state, force=True)
    return more_state, events + more


def _on_finalized(state: LeaseState, c: ContractReceiveLeaseFinalized) -> Result:
    if c.lease_id != state.lease_id or state.status >= LeaseStatus.FINALIZED:
        return state, []
    state = replace(state, status=LeaseStatus.FINALIZED, refund=c.refund, pending_settlement=None)
    return state, [NotifyUser(state.lease_id, Notice.LEASE_FINALIZED, f"refund {c.refund}")]


def _on_tick(state: LeaseState, t: TimerTick) -> Result:
    now = max(state.now_ms, t.now_ms)
    state = replace(state, now_ms=now)
    events: list[Event] = []
    cfg = state.config
    lid = state.lease_id

    if state.status == LeaseStatus.OPEN:
        ends_ms = state.ends_at * 1000
        if state.role is Role.PROVIDER:
            if now >= ends_ms:
                return _close(state, CloseReason.LEASE_END)
            return state, events
        if state.consecutive_rejections >= cfg.max_consecutive_rejections:
            return _close(state, CloseReason.TOO_MANY_REJECTIONS)
        if now >= ends_ms and cfg.close_on_exhaustion:
            return _close(state, CloseReason.DEPOSIT_EXHAUSTED)
        if (
            ends_ms - now <= cfg.topup_warning_ms
            and state.topup_in_flight == 0
            and state.topup_notified_for_ends_at != state.ends_at  # once per paid-through end
        ):
            state = replace(state, topup_notified_for_ends_at=state.ends_at)
            if cfg.auto_topup_amount > 0:
                state = replace(state, topup_in_flight=cfg.auto_topup_amount)
                events.append(ContractSendTopUp(lid, cfg.auto_topup_amount))
            else:
                events.append(NotifyUser(lid, Notice.TOPUP_SUGGESTED, f"paid through {state.ends_at}"))
        if not state.silence_notified and now - state.last_beat_at_ms > cfg.provider_silence_ms:
            state = replace(state, silence_notified=True)
            events.append(NotifyUser(lid, Notice.PROVIDER_SILENT, f"no heartbeat since {state.last_beat_at_ms}"))

    if state.role is Role.CONSUMER and LeaseStatus.OPEN <= state.status <= LeaseStatus.CLOSED:
        state, settle = _maybe_settle(state, force=state.status >= LeaseStatus.CLOSING)
        events += settle

    if (
        state.status == LeaseStatus.CLOSED
        and state.role is Role.CONSUMER
        and state.closed_at is not None
        and now >= (state.closed_at + cfg.settlement_window_s) * 1000
        and state.pending_settlement is None
    ):
        state = replace(state, status=LeaseStatus.FINALIZING)
        events.append(ContractSendFinalize(lid))
    return state, events


_HANDLERS = {
    ActionOpenLease: _on_open_action,
    ContractReceiveLeaseOpened: _on_opened,
    ReceiveHeartbeat: _on_heartbeat,
    ReceiveCheckpoint: _on_checkpoint,
    ReceiveJobResult: _on_job_result,
    ActionTopUp: _on_topup_action,
    ContractReceiveTopUp: _on_topup,
    ContractReceiveTopUpFailed: _on_topup_failed,
    ActionCloseLease: _on_close_action,
    ContractReceiveLeaseSettled: _on_settled,
    ContractReceiveSettleFailed: _on_settle_failed,
    ContractReceiveLeaseClosed: _on_closed,
    ContractReceiveLeaseFinalized: _on_finalized,
    TimerTick: _on_tick,
}


__all__ = [
    "DEFAULT_CONFIG",
    "ActionCloseLease",
    "ActionOpenLease",
    "ActionTopUp",
    "Change",
    "CloseReason",
    "ContractReceiveLeaseClosed",
    "ContractReceiveLeaseFinalized",
    "ContractReceiveLeaseOpened",
    "ContractReceiveLeaseSettled",
    "ContractReceiveSettleFailed",
    "ContractReceiveTopUp",
    "ContractReceiveTopUpFailed",
    "ContractSendClose",
    "ContractSendFinalize",
    "ContractSendOpenLease",
    "ContractSendSettle",
    "ContractSendTopUp",
    "Event",
    "LeaseConfig",
    "LeaseState",
    "LeaseStatus",
    "Notice",
    "NotifyUser",
    "OfferTerms",
    "PendingSettlement",
    "ReceiveCheckpoint",
    "ReceiveHeartbeat",
    "ReceiveJobResult",
    "Role",
    "SendJobSpec",
    "StoreCheckpoint",
    "StoreHeartbeat",
    "StoreJobResult",
    "TimerTick",
    "lease_view",
    "new_provider_lease",
    "transition",
]
