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
from node.protocol.checkpoint import ChainLink, RejectReason, check_link, verify_checkpoint
from node.protocol.heartbeat import HeartbeatError, heartbeat_hash, verify_heartbeat
from node.protocol.lease_state import (
    DEFAULT_CONFIG,
    ActionCloseLease,
    ActionOpenLease,
    ActionTopUp,
    BeatChain,
    Change,
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
    ContractSendWithdraw,
    Counters,
    Event,
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
        StoreJobResult(state.lease_id, c.exit_code, c.log_tail, c.simulated),
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


_CLOSING_RULES: dict[Role, tuple[Rule, ...]] = {
    Role.PROVIDER: (_close_at_lease_end,),
    Role.CONSUMER: (_close_after_rejections, _close_when_exhausted),
}
_OPEN_RULES: dict[Role, tuple[Rule, ...]] = {
    Role.PROVIDER: (),
    Role.CONSUMER: (_top_up_before_the_end, _report_silence),
}
_EVERY_TICK_RULES: tuple[Rule, ...] = (_settle_when_due, _finalize_after_window)


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
    raise TypeError(f"unknown change {type(change).__name__}")


__all__ = [
    "DEFAULT_CONFIG",
    "ActionCloseLease",
    "ActionOpenLease",
    "ActionTopUp",
    "BeatChain",
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
    "ContractSendWithdraw",
    "Counters",
    "Event",
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
