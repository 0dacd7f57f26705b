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

The provider role (``Role.PROVIDER``) follows the chain and closes the lease at ``ends_at``; its own rules (the
meter, the heartbeats and checkpoints it signs, the job, the outgoing queue) are in
:mod:`node.protocol.provider_lease`, reached through the same ``transition``.

Each received heartbeat is checked with the one chain verifier (:func:`node.protocol.checkpoint.check_link`)
that checkpoint verification applies again to the beats a checkpoint covers.

Status only moves forward (``LeaseStatus`` values are ordered with gaps, so failure-handling states such as a
pending claim or a liveness challenge can be added between the existing ones).
"""


from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from node.protocol import provider_lease
from node.protocol.checkpoint import ChainLink, RejectReason, SignedCheckpoint, check_link, verify_checkpoint
from node.protocol.heartbeat import HeartbeatError, heartbeat_hash, verify_heartbeat
from node.protocol.lease_state import (
    DEFAULT_CONFIG,
    ActionCloseLease,
    ActionOpenLease,
    ActionTopUp,
    BeatChain,
    Change,
    CloseReason,
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
    Counters,
    Event,
    Faults,
    JobEnd,
    JobEnded,
    JobPhase,
    JobRequest,
    JobStarted,
    JobStartFailed,
    LeaseConfig,
    LeaseState,
    LeaseStatus,
    Ledger,
    NodeRestarted,
    Notice,
    NotifyUser,
    OfferTerms,
    Outgoing,
    PendingSettlement,
    ProviderSide,
    ProviderTick,
    ReceiveAck,
    ReceiveCheckpoint,
    ReceiveHeartbeat,
    ReceiveJobResult,
    ReceiveJobSpec,
    ReleaseDevices,
    Result,
    Role,
    SendCheckpoint,
    SendHeartbeat,
    SendJobResult,
    SendJobSpec,
    StartJob,
    StopJob,
    StoreCheckpoint,
    StoreHeartbeat,
    StoreJobResult,
    TimerTick,
    chain_rules,
    lease_view,
)
from node.protocol.provider_lease import ProviderKeys, new_provider_lease

# --------------------------------------------------------------------------------------------- transition


def transition(state: LeaseState | None, change: Change, keys: ProviderKeys | None = None) -> Result:
    """Apply one change. ``state`` is ``None`` only for ``ActionOpenLease`` (a new consumer lease).

    ``keys`` sign the provider's heartbeats and checkpoints on a ``ProviderTick`` (never stored in the state).
    """
    if state is None:
        if isinstance(change, ActionOpenLease):
            return _open_lease(change)
        raise ValueError(f"{type(change).__name__} needs an existing lease state")
    if isinstance(change, provider_lease.PROVIDER_CHANGES):
        if state.provider is None:
            return _ignored(state, f"{type(change).__name__} concerns a provider lease")
        return provider_lease.apply(state, change, keys)
    before = state
    state, events = _handle(state, change)
    if state.provider is not None:  # the provider's meter and job follow what the chain says
        state, more = provider_lease.follow_chain(before, state, change)
        events += more
    return state, events


def _ignored(state: LeaseState, why: str) -> Result:
    return state, [NotifyUser(state.lease_id, Notice.IGNORED, why)]


def _at(state: LeaseState, now_ms: int) -> LeaseState:
    """The state with its clock moved to ``now_ms`` (never backwards)."""
    return state if now_ms <= state.now_ms else replace(state, now_ms=now_ms)


def _open_lease(a: ActionOpenLease) -> Result:
    if a.gpus <= 0 or a.deposit <= 0:
        raise ValueError("gpus and deposit must be positive")
    state = LeaseState(
        role=Role.CONSUMER,
        terms=a.terms,
        consumer=a.consumer,
        gpus=a.gpus,
        domain=a.domain,
        ledger=Ledger(deposit=a.deposit),
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
        ledger=replace(state.ledger, deposit=c.deposit),
        price_per_gpu_second=c.price_per_gpu_second,
        started_at=c.started_at,
        ends_at=c.ends_at,
        # silence is measured from the start of the lease
        beats=replace(state.beats, last_beat_at_ms=max(state.beats.last_beat_at_ms, c.started_at * 1000)),
    )
    events: list[Event] = [NotifyUser(c.lease_id, Notice.LEASE_OPENED)]
    if state.role is Role.CONSUMER and state.job_spec_hash is not None:
        events.append(SendJobSpec(c.lease_id, state.terms.provider_node_key, state.job_spec_hash))
    return state, events


# --------------------------------------------------------------------------------------------- heartbeats


def _on_heartbeat(state: LeaseState, c: ReceiveHeartbeat) -> Result:
    state = _at(state, c.received_at_ms)
    if state.role is not Role.CONSUMER or not (LeaseStatus.OPEN <= state.status <= LeaseStatus.CLOSED):
        return _ignored(state, "heartbeat not expected in this state")

    def reject(why: str) -> Result:
        counters = replace(state.counters, heartbeats_rejected=state.counters.heartbeats_rejected + 1)
        return replace(state, counters=counters), [NotifyUser(state.lease_id, Notice.HEARTBEAT_REJECTED, why)]

    try:
        hb = verify_heartbeat(c.signed, state.terms.provider_node_key)
    except HeartbeatError as exc:
        return reject(str(exc))
    if hb.lease_id != state.lease_id:
        return reject("heartbeat for another lease")
    chain = state.beats
    if hb.seq <= chain.tip.seq:
        return state, []  # duplicate or stale: harmless, the chain cannot fork past the tip
    broken = check_link(chain.tip, hb, chain_rules(state))
    if broken is not None:
        reason, detail = broken
        return reject(f"{reason.value}: {detail}")
    if len(chain.pending) >= state.config.max_pending_beats:
        return reject("too many heartbeats without a checkpoint")
    h = heartbeat_hash(c.signed)
    chain = replace(
        chain,
        pending=(*chain.pending, bytes(c.signed)),
        tip=ChainLink(hb.seq, h, hb.time_ms, hb.gpu_seconds),
        last_beat_at_ms=state.now_ms,
        silence_notified=False,
    )
    counters = replace(state.counters, heartbeats_accepted=state.counters.heartbeats_accepted + 1)
    return replace(state, beats=chain, counters=counters), [StoreHeartbeat(state.lease_id, hb.seq, h, bytes(c.signed))]


# --------------------------------------------------------------------------------------------- checkpoints


def _on_checkpoint(state: LeaseState, c: ReceiveCheckpoint) -> Result:
    state = _at(state, c.received_at_ms)
    if state.role is not Role.CONSUMER:
        return _ignored(state, "checkpoints are verified by the consumer")
    verdict = verify_checkpoint(
        lease_view(state),
        state.beats.pending,
        c.signed_cp,
        state.domain,
        state.now_ms,
        state.config.tolerance,
        signatures_checked=True,  # pending beats were verified on receipt
    )
    lid = state.lease_id
    counters = state.counters
    if verdict.reason is RejectReason.SEQ_REPLAYED and c.signed_cp.checkpoint.seq <= state.ledger.settled_seq:
        # an older checkpoint delivered late (queued while we were away; a claim or a restart settled past it):
        # it pays nothing again and says nothing about the provider's honesty
        return state, []
    if not verdict.accepted:
        assert verdict.reason is not None
        counters = replace(
            counters,
            consecutive_rejections=counters.consecutive_rejections + 1,
            rejected_total=counters.rejected_total + 1,
        )
        state = replace(state, counters=counters)
        events: list[Event] = [
            StoreCheckpoint(lid, c.signed_cp, False, verdict.reason, verdict.detail),
            NotifyUser(
                lid,
                Notice.EQUIVOCATION if verdict.reason is RejectReason.EQUIVOCATION else Notice.CHECKPOINT_REJECTED,
                f"{verdict.reason.value}: {verdict.detail}",
            ),
        ]
        if verdict.reason is RejectReason.EQUIVOCATION:
            state, report = _report_equivocation(state, c.signed_cp)
            events += report
        too_many = counters.consecutive_rejections >= state.config.max_consecutive_rejections
        if too_many and state.status == LeaseStatus.OPEN:
            state, close_events = _close(state, CloseReason.TOO_MANY_REJECTIONS)
            events += close_events
        return state, events

    covered = verdict.beats_covered
    chain = state.beats
    head = chain.head
    if covered:
        head = ChainLink(verdict.head_seq, c.signed_cp.checkpoint.heartbeat_head, verdict.head_time_ms,
                         verdict.head_gpu_seconds)
    state = replace(
        state,
        beats=replace(chain, last_accepted=c.signed_cp, accepted_digest=verdict.digest, head=head,
                      pending=chain.pending[covered:]),
        counters=replace(counters, consecutive_rejections=0, accepted_total=counters.accepted_total + 1),
    )
    events = [StoreCheckpoint(lid, c.signed_cp, True)]
    if state.config.settle_interval_ms == 0 or state.status >= LeaseStatus.CLOSING:
        state, settle_events = _maybe_settle(state, force=True)
        events += settle_events
    return state, events


# --------------------------------------------------------------------------------------------- money


def _settle_amount(state: LeaseState, cumulative: int) -> int:
    money = state.ledger
    owed = state.price_per_gpu_second * max(0, cumulative - money.settled_cumulative)
    return max(0, min(owed, money.remaining_deposit))


def _maybe_settle(state: LeaseState, *, force: bool = False) -> Result:
    """Send the latest accepted checkpoint for settlement if it adds usage and nothing is in flight."""
    acc = state.beats.last_accepted
    money = state.ledger
    if (
        state.role is not Role.CONSUMER
        or acc is None
        or money.pending_settlement is not None
        or state.status >= LeaseStatus.FINALIZING
    ):
        return state, []
    cp = acc.checkpoint
    if cp.seq <= money.settled_seq or cp.cumulative_gpu_seconds <= money.settled_cumulative:
        return state, []
    if state.now_ms < money.settle_blocked_until_ms:
        return state, []
    if state.closed_at is not None and state.now_ms >= (state.closed_at + state.config.settlement_window_s) * 1000:
        return state, []  # the escrow no longer accepts settlements for this lease
    if not force and state.now_ms - money.last_settle_sent_ms < state.config.settle_interval_ms:
        return state, []
    amount = _settle_amount(state, cp.cumulative_gpu_seconds)
    if amount == 0:
        return state, []  # deposit used up: the contract would pay nothing
    money = replace(
        money,
        pending_settlement=PendingSettlement(cp.seq, cp.cumulative_gpu_seconds, amount, state.now_ms),
        last_settle_sent_ms=state.now_ms,
        last_settle_sent_seq=cp.seq,
    )
    return replace(state, ledger=money), [ContractSendSettle(state.lease_id, acc, amount)]


def _close(state: LeaseState, reason: CloseReason) -> Result:
    """Settle what is verified, then close (the I/O layer sends these in order)."""
    events: list[Event] = []
    if state.role is Role.CONSUMER:
        state, events = _maybe_settle(state, force=True)
    state = replace(state, status=LeaseStatus.CLOSING, close_reason=reason)
    events += [ContractSendClose(state.lease_id, reason), NotifyUser(state.lease_id, Notice.CLOSING, reason.value)]
    return state, events


def _on_job_result(state: LeaseState, c: ReceiveJobResult) -> Result:
    state = _at(state, c.received_at_ms)
    if state.role is not Role.CONSUMER or state.status < LeaseStatus.OPEN:
        return _ignored(state, "job result not expected")
    return state, [
        StoreJobResult(state.lease_id, c.exit_code, c.log_tail, c.simulated, c.failure, c.image_digest),
        NotifyUser(state.lease_id, Notice.JOB_RESULT, f"exit {c.exit_code}", (("exit_code", c.exit_code),)),
    ]


def _on_topup_action(state: LeaseState, a: ActionTopUp) -> Result:
    if a.amount <= 0:
        return _ignored(state, "top-up amount must be positive")
    if state.status != LeaseStatus.OPEN:
        return _ignored(state, "only an open lease can be topped up")
    money = replace(state.ledger, topup_in_flight=state.ledger.topup_in_flight + a.amount)
    return replace(state, ledger=money), [ContractSendTopUp(state.lease_id, a.amount)]


def _on_topup(state: LeaseState, c: ContractReceiveTopUp) -> Result:
    if c.lease_id != state.lease_id or state.status >= LeaseStatus.FINALIZED:
        return state, []
    money = replace(
        state.ledger,
        deposit=max(state.ledger.deposit, c.deposit),
        topup_in_flight=max(0, state.ledger.topup_in_flight - c.amount),
    )
    return replace(state, ledger=money, ends_at=max(state.ends_at, c.ends_at)), []


def _on_topup_failed(state: LeaseState, c: ContractReceiveTopUpFailed) -> Result:
    money = replace(state.ledger, topup_in_flight=max(0, state.ledger.topup_in_flight - c.amount))
    notice = NotifyUser(state.lease_id, Notice.TOPUP_SUGGESTED, f"top-up failed: {c.reason}")
    return replace(state, ledger=money), [notice]


def _on_close_action(state: LeaseState, a: ActionCloseLease) -> Result:
    state = _at(state, a.now_ms)
    if state.status != LeaseStatus.OPEN:
        return _ignored(state, f"cannot close a lease in status {state.status.name}")
    if state.role is Role.PROVIDER and state.now_ms < state.ends_at * 1000:
        return _ignored(state, "the provider may close only from ends_at")
    return _close(state, CloseReason.USER)


def _on_settled(state: LeaseState, c: ContractReceiveLeaseSettled) -> Result:
    money = state.ledger
    if c.lease_id != state.lease_id or c.seq <= money.settled_seq:
        return state, []  # replayed log
    pending = money.pending_settlement
    events: list[Event] = []
    if pending is not None and c.seq >= pending.seq:
        pending = None
    if c.seq != money.last_settle_sent_seq and state.role is Role.CONSUMER:
        events.append(NotifyUser(state.lease_id, Notice.SETTLED_ELSEWHERE, f"seq {c.seq}"))
    money = replace(
        money,
        settled_seq=c.seq,
        settled_cumulative=max(money.settled_cumulative, c.cumulative_gpu_seconds),
        paid=money.paid + c.amount,
        fees=money.fees + c.fee,
        pending_settlement=pending,
    )
    # a newer accepted checkpoint may be waiting for the slot
    more_state, more = _maybe_settle(replace(state, ledger=money), force=state.status >= LeaseStatus.CLOSING)
    return more_state, events + more


def _on_settle_failed(state: LeaseState, c: ContractReceiveSettleFailed) -> Result:
    money = state.ledger
    pending = money.pending_settlement
    if pending is None or c.seq != pending.seq:
        return state, []
    money = replace(money, pending_settlement=None, settle_blocked_until_ms=state.now_ms + state.config.settle_retry_ms)
    return replace(state, ledger=money), [NotifyUser(state.lease_id, Notice.SETTLE_FAILED, f"seq {c.seq}: {c.reason}")]


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
    money = replace(state.ledger, refund=c.refund, pending_settlement=None)
    state = replace(state, status=LeaseStatus.FINALIZED, ledger=money)
    return state, [NotifyUser(state.lease_id, Notice.LEASE_FINALIZED, f"refund {c.refund}")]


def _on_restarted(state: LeaseState, c: NodeRestarted) -> Result:
    state = _at(state, c.now_ms)
    if state.role is not Role.CONSUMER or state.ledger.pending_settlement is None:
        return state, []
    return replace(state, ledger=replace(state.ledger, pending_settlement=None, settle_blocked_until_ms=0)), []


# --------------------------------------------------------------------------------------------- timer rules
# Each rule looks at the state at the tick's time; a rule that closes the lease ends the tick.

Rule = Callable[[LeaseState], Result]


def _close_at_lease_end(state: LeaseState) -> Result:
    """Provider: the paid-through end is reached: close."""
    if state.now_ms >= state.ends_at * 1000:
        return _close(state, CloseReason.LEASE_END)
    return state, []


def _close_after_rejections(state: LeaseState) -> Result:
    if state.counters.consecutive_rejections >= state.config.max_consecutive_rejections:
        return _close(state, CloseReason.TOO_MANY_REJECTIONS)
    return state, []


def _close_when_exhausted(state: LeaseState) -> Result:
    if state.now_ms >= state.ends_at * 1000 and state.config.close_on_exhaustion:
        return _close(state, CloseReason.DEPOSIT_EXHAUSTED)
    return state, []


def _top_up_before_the_end(state: LeaseState) -> Result:
    """Once per paid-through end, when it is near: top up automatically, or suggest it."""
    cfg, money = state.config, state.ledger
    if (
        state.ends_at * 1000 - state.now_ms > cfg.topup_warning_ms
        or money.topup_in_flight != 0
        or money.topup_notified_for_ends_at == state.ends_at
    ):
        return state, []
    money = replace(money, topup_notified_for_ends_at=state.ends_at)
    if cfg.auto_topup_amount > 0:
        money = replace(money, topup_in_flight=cfg.auto_topup_amount)
        return replace(state, ledger=money), [ContractSendTopUp(state.lease_id, cfg.auto_topup_amount)]
    notice = NotifyUser(state.lease_id, Notice.TOPUP_SUGGESTED, f"paid through {state.ends_at}")
    return replace(state, ledger=money), [notice]


def _report_silence(state: LeaseState) -> Result:
    chain = state.beats
    if chain.silence_notified or state.now_ms - chain.last_beat_at_ms <= state.config.provider_silence_ms:
        return state, []
    notice = NotifyUser(state.lease_id, Notice.PROVIDER_SILENT, f"no heartbeat since {chain.last_beat_at_ms}")
    return replace(state, beats=replace(chain, silence_notified=True)), [notice]


def _settle_when_due(state: LeaseState) -> Result:
    if state.role is Role.CONSUMER and LeaseStatus.OPEN <= state.status <= LeaseStatus.CLOSED:
        return _maybe_settle(state, force=state.status >= LeaseStatus.CLOSING)
    return state, []


def _finalize_after_window(state: LeaseState) -> Result:
    if (
        state.status == LeaseStatus.CLOSED
        and state.role is Role.CONSUMER
        and state.closed_at is not None
        and state.now_ms >= (state.closed_at + state.config.settlement_window_s) * 1000
        and state.ledger.pending_settlement is None
    ):
        return replace(state, status=LeaseStatus.FINALIZING), [ContractSendFinalize(state.lease_id)]
    return state, []


# --------------------------------------------------------------------------------------------- fault paths
# Silent consumer -> pause, claim, finalize the claim, withdraw (provider); a claim above what the consumer verified
# -> dispute (consumer); silent provider -> challenge, resolve at the deadline (consumer) / answer (provider);
# two provider-signed checkpoints with one seq -> report (consumer). Each step is a ``ContractSend*`` event, sent
# once (a flag in ``Faults``), confirmed by its log (``ContractReceive*``) or undone by
# ``ContractReceiveFaultTxFailed`` (sent again after ``fault_retry_ms`` when it still applies).


#: Dispute failures no retry can change: the claim is gone or final, or the evidence does not refute it.
_DISPUTE_FINAL = ("LeaseEscrow_NoClaim", "LeaseEscrow_DisputeWindowClosed", "LeaseEscrow_InvalidEvidence",
                  "LeaseEscrow_InvalidSignature", "LeaseEscrow_LeaseFinalized")

#: After a failed liveness answer or dispute, the wait before the next one (shorter than other fault retries: both
#: have a deadline, and a missed answer is slashed, a missed dispute pays the claim).
DEADLINE_RETRY_MS = 1_000


def _faults(state: LeaseState, **changes: object) -> LeaseState:
    return replace(state, faults=replace(state.faults, **changes))  # type: ignore[arg-type]


def _now_s(state: LeaseState) -> int:
    return state.now_ms // 1000


def _window_end_ms(state: LeaseState) -> int | None:
    """End of the settlement window (ms), once the lease is closed."""
    if state.closed_at is None:
        return None
    return (state.closed_at + state.config.settlement_window_s) * 1000


def _exposure(state: LeaseState) -> int:
    """Provider: GPU-seconds metered and not settled on-chain."""
    side = state.provider
    return 0 if side is None else max(0, side.meter.gpu_seconds - state.ledger.settled_cumulative)


def _report_equivocation(state: LeaseState, second: SignedCheckpoint) -> Result:
    """Consumer: ``second`` has the seq of the last accepted checkpoint and other contents: report the pair."""
    first = state.beats.last_accepted
    f = state.faults
    if (first is None or first.checkpoint.seq != second.checkpoint.seq or first == second or f.equivocation_sent
            or state.status >= LeaseStatus.FINALIZING):
        return state, []
    why = f"two checkpoints signed with seq {second.checkpoint.seq}"
    state = _faults(state, equivocation_a=first, equivocation_b=second, equivocation_sent=True,
                    reason=f"reporting equivocation: {why}")
    return state, [ContractSendReportEquivocation(state.lease_id, first, second),
                   NotifyUser(state.lease_id, Notice.EQUIVOCATION_REPORTED, f"report sent: {why}")]


def _pause_when_unpaid(state: LeaseState) -> Result:
    """Provider: more usage unsettled than the consumer may owe: stop the job (nothing more accrues)."""
    side = state.provider
    if state.role is not Role.PROVIDER or side is None or state.faults.serving_paused:
        return state, []
    limit = state.config.max_unsettled_s * state.gpus
    exposure = _exposure(state)
    if exposure <= limit:
        return state, []
    why = f"{exposure} GPU-seconds unsettled, more than the {limit} allowed"
    events: list[Event] = [NotifyUser(state.lease_id, Notice.SERVICE_PAUSED, why)]
    if side.job in (JobPhase.STARTING, JobPhase.RUNNING):
        events.insert(0, StopJob(state.lease_id))
    return _faults(state, serving_paused=True, reason=f"service paused: {why}"), events


def _claim_when_unpaid(state: LeaseState) -> Result:
    """Provider: claim the latest signed checkpoint the consumer did not settle, when serving is paused, or once
    half the settlement window after close has passed (the consumer settles the final checkpoint at once)."""
    f, money = state.faults, state.ledger
    signed = f.last_signed
    if (state.role is not Role.PROVIDER or signed is None
            or not (LeaseStatus.OPEN <= state.status <= LeaseStatus.CLOSED)):
        return state, []
    cp = signed.checkpoint
    if (cp.cumulative_gpu_seconds <= money.settled_cumulative or cp.seq <= money.settled_seq
            or cp.seq <= f.disputed_seq or f.claim_seq != 0 or cp.seq <= f.claim_sent_seq
            or state.now_ms < f.retry_after_ms or cp.timestamp > _now_s(state)):
        return state, []
    window_end = _window_end_ms(state)
    if window_end is not None:
        if state.now_ms >= window_end:
            return state, []  # the escrow takes no claim any more
        half = (state.closed_at or 0) * 1000 + state.config.settlement_window_s * 500
        if state.now_ms < half and not f.serving_paused:
            return state, []
    elif not f.serving_paused:
        return state, []
    unpaid = cp.cumulative_gpu_seconds - money.settled_cumulative
    why = (f"claiming seq {cp.seq} ({cp.cumulative_gpu_seconds} GPU-seconds, {unpaid} unsettled): the consumer "
           + ("stopped settling" if f.serving_paused else "did not settle after close"))
    state = _faults(state, claim_sent_seq=cp.seq, reason=why)
    return state, [ContractSendClaim(state.lease_id, signed), NotifyUser(state.lease_id, Notice.CLAIM_SENT, why)]


def _finalize_claim_when_ready(state: LeaseState) -> Result:
    f = state.faults
    if (state.role is not Role.PROVIDER or f.claim_seq == 0 or f.claim_finalize_sent
            or _now_s(state) < f.claim_ready_at or state.now_ms < f.retry_after_ms):
        return state, []
    state = _faults(state, claim_finalize_sent=True, reason=f"finalizing the claim of seq {f.claim_seq}")
    return state, [ContractSendFinalizeClaim(state.lease_id, f.claim_seq)]


def _challenge_when_silent(state: LeaseState) -> Result:
    """Consumer: a provider that sends no heartbeat for ``challenge_after_ms`` is challenged to prove liveness."""
    f, chain, cfg = state.faults, state.beats, state.config
    if (state.role is not Role.CONSUMER or state.status != LeaseStatus.OPEN or state.job_spec_hash is None
            or f.challenge_deadline != 0 or f.challenge_sent or state.now_ms < f.retry_after_ms
            or _now_s(state) < f.cooldown_until or _now_s(state) >= state.ends_at
            or state.now_ms - chain.last_beat_at_ms <= cfg.challenge_after_ms):
        return state, []
    silent_s = (state.now_ms - chain.last_beat_at_ms) // 1000
    why = f"no heartbeat for {silent_s} s"
    state = _faults(state, challenge_sent=True, reason=f"challenging the provider's liveness: {why}")
    return state, [ContractSendChallenge(state.lease_id, why), NotifyUser(state.lease_id, Notice.CHALLENGE_SENT, why)]


def _resolve_missed_deadline(state: LeaseState) -> Result:
    f = state.faults
    if (state.role is not Role.CONSUMER or f.challenge_deadline == 0 or f.resolve_sent
            or _now_s(state) < f.challenge_deadline or state.status >= LeaseStatus.FINALIZING
            or state.now_ms < f.retry_after_ms):
        return state, []
    why = f"the provider did not answer the liveness challenge by {f.challenge_deadline}"
    state = _faults(state, resolve_sent=True, reason=f"resolving: {why}")
    return state, [ContractSendResolve(state.lease_id, f.challenge_deadline),
                   NotifyUser(state.lease_id, Notice.LIVENESS_RESOLVED, f"resolve sent: {why}")]


def _answer_pending_challenge(state: LeaseState) -> Result:
    """Provider: answer a pending challenge not answered yet (also right after a restart)."""
    f = state.faults
    if (state.role is not Role.PROVIDER or f.challenge_deadline == 0 or f.answered_deadline == f.challenge_deadline
            or _now_s(state) >= f.challenge_deadline or state.status != LeaseStatus.OPEN
            or state.now_ms < f.retry_after_ms):
        return state, []
    state = _faults(state, answered_deadline=f.challenge_deadline,
                    reason=f"answering the liveness challenge due {f.challenge_deadline}")
    return state, [ContractSendAnswer(state.lease_id, f.challenge_deadline)]


def _provider_finalize_when_consumer_silent(state: LeaseState) -> Result:
    """Provider: a consumer that does not finalize within a second settlement window leaves the collateral and
    the offer's GPUs locked: finalize it ourselves (after any pending claim: the escrow refuses before)."""
    window_end = _window_end_ms(state)
    if (state.role is not Role.PROVIDER or state.status != LeaseStatus.CLOSED or window_end is None
            or state.faults.claim_seq != 0
            or state.now_ms < window_end + state.config.settlement_window_s * 1000):
        return state, []
    state = _faults(state, reason="finalizing: the consumer did not finalize after the settlement window")
    return replace(state, status=LeaseStatus.FINALIZING), [ContractSendFinalize(state.lease_id)]


def _refuting(evidence: SignedCheckpoint | None, seq: int, cumulative: int) -> SignedCheckpoint | None:
    """``evidence`` when it refutes a claim of ``cumulative`` GPU-seconds at ``seq``: a provider-signed checkpoint
    at that seq or later with less usage."""
    if evidence is None or evidence.checkpoint.seq < seq or evidence.checkpoint.cumulative_gpu_seconds >= cumulative:
        return None
    return evidence


def _send_dispute(state: LeaseState, evidence: SignedCheckpoint) -> Result:
    f, ev_cp = state.faults, evidence.checkpoint
    why = (f"the claim ({f.claim_cumulative} GPU-seconds at seq {f.claim_seq}) exceeds the "
           f"{ev_cp.cumulative_gpu_seconds} GPU-seconds the provider signed at seq {ev_cp.seq}")
    state = _faults(state, dispute_sent_seq=f.claim_seq, dispute_evidence=evidence, reason=f"disputing: {why}")
    return state, [ContractSendDispute(state.lease_id, f.claim_seq, evidence),
                   NotifyUser(state.lease_id, Notice.CLAIM_DISPUTED, f"dispute sent: {why}")]


def _dispute_pending_claim(state: LeaseState) -> Result:
    """Consumer: dispute a pending claim again after a dispute failed for a reason that may pass (its evidence is
    kept), or with a checkpoint that came after the claim, while the dispute window is open."""
    f = state.faults
    if (state.role is not Role.CONSUMER or f.claim_seq == 0 or f.dispute_sent_seq == f.claim_seq
            or _now_s(state) >= f.claim_ready_at or state.now_ms < f.retry_after_ms):
        return state, []
    evidence = _refuting(f.dispute_evidence, f.claim_seq, f.claim_cumulative) or _refuting(
        state.beats.last_accepted, f.claim_seq, f.claim_cumulative)
    return _send_dispute(state, evidence) if evidence is not None else (state, [])


_FAULT_RULES: tuple[Rule, ...] = (
    _pause_when_unpaid, _claim_when_unpaid, _finalize_claim_when_ready, _challenge_when_silent,
    _resolve_missed_deadline, _answer_pending_challenge, _provider_finalize_when_consumer_silent,
    _dispute_pending_claim,
)


def _fault_rules(state: LeaseState) -> Result:
    events: list[Event] = []
    if state.status >= LeaseStatus.FINALIZING:
        return state, events
    for rule in _FAULT_RULES:
        state, more = rule(state)
        events += more
    return state, events


def _on_claimed(state: LeaseState, c: ContractReceiveUsageClaimed) -> Result:
    if c.lease_id != state.lease_id or state.status >= LeaseStatus.FINALIZED:
        return state, []
    f = state.faults
    if f.claim_seq == c.seq and f.claim_ready_at == c.ready_at:
        return state, []  # replayed log
    state = _faults(state, claim_seq=c.seq, claim_cumulative=c.cumulative_gpu_seconds, claim_ready_at=c.ready_at,
                    claim_finalize_sent=False, claims=f.claims + 1)
    claimed = f"seq {c.seq}, {c.cumulative_gpu_seconds} GPU-seconds, final from {c.ready_at}"
    events: list[Event] = [NotifyUser(state.lease_id, Notice.USAGE_CLAIMED, claimed)]
    if state.role is not Role.CONSUMER:
        return _faults(state, reason=f"claim pending: {claimed}"), events
    evidence = _refuting(c.evidence, c.seq, c.cumulative_gpu_seconds) or _refuting(
        state.beats.last_accepted, c.seq, c.cumulative_gpu_seconds)
    if evidence is not None and _now_s(state) < c.ready_at and f.dispute_sent_seq != c.seq:
        state, more = _send_dispute(state, evidence)
        return state, events + more
    verified = state.beats.accepted_cumulative
    why = ("within the usage we verified" if c.cumulative_gpu_seconds <= verified
           else f"above the {verified} GPU-seconds we verified, but we hold no later checkpoint to dispute it")
    return _faults(state, reason=f"claim pending ({claimed}): {why}"), events


def _on_claim_disputed(state: LeaseState, c: ContractReceiveClaimDisputed) -> Result:
    if c.lease_id != state.lease_id:
        return state, []
    f = state.faults
    if f.claim_seq == 0 and f.disputed_seq >= c.evidence_seq:
        return state, []
    why = f"claim of seq {c.claimed_seq} voided by the checkpoint of seq {c.evidence_seq}"
    state = _faults(state, claim_seq=0, claim_cumulative=0, claim_ready_at=0, claim_finalize_sent=False,
                    disputed_seq=max(f.disputed_seq, c.evidence_seq), dispute_evidence=None, reason=why)
    return state, [NotifyUser(state.lease_id, Notice.CLAIM_DISPUTED, why)]


def _on_claim_finalized(state: LeaseState, c: ContractReceiveClaimFinalized) -> Result:
    if c.lease_id != state.lease_id or state.faults.claim_seq == 0:
        return state, []
    why = f"claim of seq {c.seq} final: {c.amount} paid" if c.amount else f"claim of seq {c.seq} moot (settled)"
    state = _faults(state, claim_seq=0, claim_cumulative=0, claim_ready_at=0, claim_finalize_sent=False,
                    dispute_evidence=None, reason=why)
    events: list[Event] = [NotifyUser(state.lease_id, Notice.CLAIM_FINALIZED, why)]
    if state.role is Role.PROVIDER and c.amount > 0:
        events.append(ContractSendWithdraw(state.lease_id))
    return state, events


def _on_challenged(state: LeaseState, c: ContractReceiveLivenessChallenged) -> Result:
    f = state.faults
    if c.lease_id != state.lease_id or f.challenge_deadline == c.deadline or state.status >= LeaseStatus.FINALIZED:
        return state, []
    state = _faults(state, challenge_deadline=c.deadline, challenge_sent=False, resolve_sent=False,
                    challenges=f.challenges + 1, reason=f"liveness challenge pending, deadline {c.deadline}")
    events: list[Event] = [NotifyUser(state.lease_id, Notice.LIVENESS_CHALLENGED, f"answer due by {c.deadline}")]
    more_state, more = _answer_pending_challenge(state)
    return more_state, events + more


def _on_answered(state: LeaseState, c: ContractReceiveLivenessAnswered) -> Result:
    f = state.faults
    if c.lease_id != state.lease_id or f.challenge_deadline == 0:
        return state, []
    state = _faults(state, challenge_deadline=0, challenge_sent=False, resolve_sent=False,
                    reason="the provider answered the liveness challenge")
    if state.role is Role.CONSUMER:  # the answer proves liveness: silence is measured again from now
        state = replace(state, beats=replace(state.beats, last_beat_at_ms=max(state.beats.last_beat_at_ms,
                                                                                 state.now_ms)))
    return state, [NotifyUser(state.lease_id, Notice.LIVENESS_ANSWERED)]


def _on_liveness_resolved(state: LeaseState, c: ContractReceiveLivenessResolved) -> Result:
    f = state.faults
    if c.lease_id != state.lease_id or (f.challenge_deadline == 0 and f.resolve_sent is False and f.slashed > 0):
        return state, []
    why = f"the provider missed the liveness deadline: {c.slashed} of its collateral slashed, lease closed"
    # resolve_sent is cleared with the challenge, so that this log read again is seen as a replay
    state = _faults(state, challenge_deadline=0, resolve_sent=False, slashed=f.slashed + c.slashed, reason=why)
    if state.close_reason is None:
        state = replace(state, close_reason=CloseReason.LIVENESS_SLASHED)
    return state, [NotifyUser(state.lease_id, Notice.LIVENESS_RESOLVED, why)]


def _on_equivocation_reported(state: LeaseState, c: ContractReceiveEquivocationReported) -> Result:
    f = state.faults
    if c.lease_id != state.lease_id or f.equivocation_reported:
        return state, []
    why = f"equivocation at seq {c.seq} reported by {c.finder}: {c.slashed} of the collateral slashed"
    state = _faults(state, equivocation_reported=True, equivocation_sent=True, slashed=f.slashed + c.slashed,
                    reason=why)
    if state.close_reason is None:
        state = replace(state, close_reason=CloseReason.EQUIVOCATION)
    return state, [NotifyUser(state.lease_id, Notice.EQUIVOCATION_REPORTED, why)]


def _error_arg(reason: str, name: str, index: int) -> int | None:
    """Argument ``index`` of a decoded custom error ``name(a, b, ...)`` in ``reason`` (``None`` if absent)."""
    head = reason.find(name + "(")
    if head < 0:
        return None
    args = reason[head + len(name) + 1:].split(")", 1)[0].split(",")
    try:
        return int(args[index].strip())
    except (IndexError, ValueError):
        return None


def _on_fault_tx_failed(state: LeaseState, c: ContractReceiveFaultTxFailed) -> Result:
    f = state.faults
    retry = state.now_ms + state.config.fault_retry_ms
    changes: dict[str, object] = {"retry_after_ms": retry, "reason": f"{c.kind} failed: {c.reason}"}
    if c.kind == "claim":
        changes["claim_sent_seq"] = 0
        disputed = _error_arg(c.reason, "LeaseEscrow_SeqDisputed", 2)
        if disputed is not None:
            changes["disputed_seq"] = max(f.disputed_seq, disputed)
    elif c.kind == "finalizeClaim":
        changes["claim_finalize_sent"] = False
        if "LeaseEscrow_NoClaim" in c.reason:
            changes.update(claim_seq=0, claim_cumulative=0, claim_ready_at=0)
    elif c.kind == "challenge":
        changes["challenge_sent"] = False
        cooldown = _error_arg(c.reason, "LeaseEscrow_ChallengeCooldown", 1)
        if cooldown is not None:
            changes["cooldown_until"] = cooldown
        if "LeaseEscrow_LeaseEnded" in c.reason:
            changes["cooldown_until"] = 2**63
    elif c.kind == "resolve":
        changes["resolve_sent"] = False
        if "LeaseEscrow_NoChallenge" in c.reason or "LeaseEscrow_LeaseNotOpen" in c.reason:
            changes["challenge_deadline"] = 0
    elif c.kind == "dispute" and not any(e in c.reason for e in _DISPUTE_FINAL):
        # sent again soon with its evidence (``_dispute_pending_claim``)
        changes.update(dispute_sent_seq=0, retry_after_ms=state.now_ms + DEADLINE_RETRY_MS)
    elif c.kind == "answer":
        if "LeaseEscrow_NoChallenge" in c.reason:
            changes["challenge_deadline"] = 0  # answered already (our earlier answer, replayed)
        else:  # sent again soon while the deadline has not passed: a missed answer is slashed
            changes.update(answered_deadline=0, retry_after_ms=state.now_ms + DEADLINE_RETRY_MS)
    elif c.kind == "reportEquivocation" and not any(
            e in c.reason for e in ("LeaseEscrow_NothingToSlash", "LeaseEscrow_LeaseFinalized")):
        changes["equivocation_sent"] = False
    return _faults(state, **changes), [NotifyUser(state.lease_id, Notice.FAULT_TX_FAILED, f"{c.kind}: {c.reason}")]


def _resend_equivocation(state: LeaseState) -> Result:
    """Consumer: a report that failed for a passing reason is sent again."""
    f = state.faults
    if (state.role is not Role.CONSUMER or f.equivocation_a is None or f.equivocation_b is None
            or f.equivocation_sent or f.equivocation_reported or state.now_ms < f.retry_after_ms
            or state.status >= LeaseStatus.FINALIZED):
        return state, []
    state = _faults(state, equivocation_sent=True)
    return state, [ContractSendReportEquivocation(state.lease_id, f.equivocation_a, f.equivocation_b)]


_CLOSING_RULES: dict[Role, tuple[Rule, ...]] = {
    Role.PROVIDER: (_close_at_lease_end,),
    Role.CONSUMER: (_close_after_rejections, _close_when_exhausted),
}
_OPEN_RULES: dict[Role, tuple[Rule, ...]] = {
    Role.PROVIDER: (),
    Role.CONSUMER: (_top_up_before_the_end, _report_silence),
}
_EVERY_TICK_RULES: tuple[Rule, ...] = (_settle_when_due, _finalize_after_window, _fault_rules, _resend_equivocation)


def _on_tick(state: LeaseState, t: TimerTick) -> Result:
    state = _at(state, t.now_ms)
    events: list[Event] = []
    if state.status == LeaseStatus.OPEN:
        for closing in _CLOSING_RULES[state.role]:
            state, events = closing(state)
            if events:
                return state, events
        for rule in _OPEN_RULES[state.role]:
            state, more = rule(state)
            events += more
    for rule in _EVERY_TICK_RULES:
        state, more = rule(state)
        events += more
    return state, events


def _handle(state: LeaseState, change: Change) -> Result:
    if isinstance(change, ActionOpenLease):
        return _on_open_action(state, change)
    if isinstance(change, ContractReceiveLeaseOpened):
        return _on_opened(state, change)
    if isinstance(change, ReceiveHeartbeat):
        return _on_heartbeat(state, change)
    if isinstance(change, ReceiveCheckpoint):
        return _on_checkpoint(state, change)
    if isinstance(change, ReceiveJobResult):
        return _on_job_result(state, change)
    if isinstance(change, ActionTopUp):
        return _on_topup_action(state, change)
    if isinstance(change, ContractReceiveTopUp):
        return _on_topup(state, change)
    if isinstance(change, ContractReceiveTopUpFailed):
        return _on_topup_failed(state, change)
    if isinstance(change, ActionCloseLease):
        return _on_close_action(state, change)
    if isinstance(change, ContractReceiveLeaseSettled):
        return _on_settled(state, change)
    if isinstance(change, ContractReceiveSettleFailed):
        return _on_settle_failed(state, change)
    if isinstance(change, ContractReceiveLeaseClosed):
        return _on_closed(state, change)
    if isinstance(change, ContractReceiveLeaseFinalized):
        return _on_finalized(state, change)
    if isinstance(change, TimerTick):
        return _on_tick(state, change)
    if isinstance(change, NodeRestarted):
        return _on_restarted(state, change)
    if isinstance(change, ContractReceiveUsageClaimed):
        return _on_claimed(state, change)
    if isinstance(change, ContractReceiveClaimDisputed):
        return _on_claim_disputed(state, change)
    if isinstance(change, ContractReceiveClaimFinalized):
        return _on_claim_finalized(state, change)
    if isinstance(change, ContractReceiveLivenessChallenged):
        return _on_challenged(state, change)
    if isinstance(change, ContractReceiveLivenessAnswered):
        return _on_answered(state, change)
    if isinstance(change, ContractReceiveLivenessResolved):
        return _on_liveness_resolved(state, change)
    if isinstance(change, ContractReceiveEquivocationReported):
        return _on_equivocation_reported(state, change)
    if isinstance(change, ContractReceiveFaultTxFailed):
        return _on_fault_tx_failed(state, change)
    raise TypeError(f"unknown change {type(change).__name__}")


__all__ = [
    "DEFAULT_CONFIG",
    "ActionCloseLease",
    "ActionOpenLease",
    "ActionTopUp",
    "BeatChain",
    "Change",
    "CloseReason",
    "ContractReceiveClaimDisputed",
    "ContractReceiveClaimFinalized",
    "ContractReceiveEquivocationReported",
    "ContractReceiveFaultTxFailed",
    "ContractReceiveLeaseClosed",
    "ContractReceiveLeaseFinalized",
    "ContractReceiveLeaseOpened",
    "ContractReceiveLeaseSettled",
    "ContractReceiveLivenessAnswered",
    "ContractReceiveLivenessChallenged",
    "ContractReceiveLivenessResolved",
    "ContractReceiveSettleFailed",
    "ContractReceiveTopUp",
    "ContractReceiveTopUpFailed",
    "ContractReceiveUsageClaimed",
    "ContractSendAnswer",
    "ContractSendChallenge",
    "ContractSendClaim",
    "ContractSendClose",
    "ContractSendDispute",
    "ContractSendFinalize",
    "ContractSendFinalizeClaim",
    "ContractSendOpenLease",
    "ContractSendReportEquivocation",
    "ContractSendResolve",
    "ContractSendSettle",
    "ContractSendTopUp",
    "ContractSendWithdraw",
    "Counters",
    "Event",
    "Faults",
    "JobEnd",
    "JobEnded",
    "JobPhase",
    "JobRequest",
    "JobStartFailed",
    "JobStarted",
    "LeaseConfig",
    "LeaseState",
    "LeaseStatus",
    "Ledger",
    "NodeRestarted",
    "Notice",
    "NotifyUser",
    "OfferTerms",
    "Outgoing",
    "PendingSettlement",
    "ProviderKeys",
    "ProviderSide",
    "ProviderTick",
    "ReceiveAck",
    "ReceiveCheckpoint",
    "ReceiveHeartbeat",
    "ReceiveJobResult",
    "ReceiveJobSpec",
    "ReleaseDevices",
    "Result",
    "Role",
    "SendCheckpoint",
    "SendHeartbeat",
    "SendJobResult",
    "SendJobSpec",
    "StartJob",
    "StopJob",
    "StoreCheckpoint",
    "StoreHeartbeat",
    "StoreJobResult",
    "TimerTick",
    "lease_view",
    "new_provider_lease",
    "transition",
]
