"""Provider side of a lease: a pure state machine over :class:`ProviderSide`, reached through ``transition``.

Rules, per change:

* ``ReceiveJobSpec`` (opened and authenticated by the I/O layer): the first accepted spec moves the job to
  ``STARTING`` and emits ``StartJob``; a repeated spec changes nothing (idempotent). ``JobStarted`` /
  ``JobStartFailed`` report the executor's answer (a refused job may be sent again); ``JobEnded`` records the
  outcome, which the next meter tick queues as the job result (once). ``JobReattached`` (at start: the executor
  took over a running job a previous run of the node started) keeps the job ``RUNNING`` and tells the operator.
* ``ProviderTick`` (one heartbeat interval): accrue usage (only while the job runs), sign the next heartbeat and,
  when due, the next checkpoint; once the lease is closed on-chain, cut the final checkpoint and stop metering.
  Every message for the consumer goes to the ordered queue ``outq`` in the same state change that advances the
  meter, so the meter and the queue are persisted before anything is sent: a provider that restarted from an
  older meter would sign a second checkpoint with a used seq (slashable equivocation).
* ``ReceiveAck``: the consumer took the first queued messages; they leave the queue.
* Chain changes (after the shared rules in :mod:`node.protocol.lease`): a close fixes the meter's end and stops the
  job; a top-up moves the meter's end; finalization releases the devices and collects the earnings.

Metering (:mod:`node.protocol.meter`) is deterministic: ed25519 and RFC 6979 ECDSA signatures are functions of key
and message. Keys come in per call (:class:`ProviderKeys`) and are never stored in the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import nacl.signing

from node.crypto.eip712 import Domain
from node.protocol.lease_messages import (
    CheckpointMessage,
    HeartbeatMessage,
    JobResultMessage,
    encode_message,
    utf8_tail,
)
from node.protocol.lease_state import (
    DEFAULT_CONFIG,
    Change,
    ContractReceiveLeaseClosed,
    ContractReceiveLeaseFinalized,
    ContractReceiveLeaseOpened,
    ContractReceiveTopUp,
    ContractSendWithdraw,
    Event,
    JobEnded,
    JobPhase,
    JobReattached,
    JobStarted,
    JobStartFailed,
    LeaseConfig,
    LeaseState,
    LeaseStatus,
    Ledger,
    Notice,
    NotifyUser,
    OfferTerms,
    Outgoing,
    ProviderSide,
    ProviderTick,
    ReceiveAck,
    ReceiveJobSpec,
    ReleaseDevices,
    Result,
    Role,
    SendCheckpoint,
    SendHeartbeat,
    SendJobResult,
    StartJob,
    StopJob,
    StoreCheckpoint,
)
from node.protocol.meter import (
    MAX_RECENT_BEATS,
    BeatRef,
    MeteringSample,
    ProviderMeter,
    cut_checkpoint,
    new_meter,
    next_heartbeat,
    record_sample,
    update_lease_times,
)

PROVIDER_CHANGES = (ProviderTick, ReceiveJobSpec, JobStarted, JobStartFailed, JobEnded, JobReattached, ReceiveAck)
ProviderChange = ProviderTick | ReceiveJobSpec | JobStarted | JobStartFailed | JobEnded | JobReattached | ReceiveAck


@dataclass(frozen=True, slots=True)
class ProviderKeys:
    """The provider's signing keys: the node key signs heartbeats, the wallet key checkpoints."""

    node_key: nacl.signing.SigningKey = field(repr=False)
    wallet_key: bytes = field(repr=False)


def new_provider_lease(
    opened: ContractReceiveLeaseOpened,
    terms: OfferTerms,
    domain: Domain,
    config: LeaseConfig = DEFAULT_CONFIG,
    devices: tuple[int, ...] = (),
) -> LeaseState:
    """Provider side: a lease starts when its ``LeaseOpened`` log names our address."""
    return LeaseState(
        role=Role.PROVIDER,
        terms=terms,
        consumer=opened.consumer,
        gpus=opened.gpus,
        domain=domain,
        ledger=Ledger(deposit=opened.deposit),
        config=config,
        status=LeaseStatus.OPEN,
        lease_id=opened.lease_id,
        price_per_gpu_second=opened.price_per_gpu_second,
        started_at=opened.started_at,
        ends_at=opened.ends_at,
        provider=ProviderSide(
            meter=new_meter(opened.lease_id, opened.gpus, opened.started_at, opened.ends_at), devices=devices
        ),
    )


def provider_tick(
    meter: ProviderMeter,
    sample: MeteringSample,
    node_key: nacl.signing.SigningKey,
    wallet_key: bytes,
    domain: Domain,
    checkpoint_interval_ms: int,
) -> tuple[ProviderMeter, list[SendHeartbeat | SendCheckpoint | StoreCheckpoint]]:
    """One heartbeat interval: a beat always, and a checkpoint when one is due. Persist the meter first."""
    meter, beat = next_heartbeat(meter, sample, node_key)
    events: list[SendHeartbeat | SendCheckpoint | StoreCheckpoint] = [SendHeartbeat(meter.lease_id, beat)]
    if sample.time_ms - meter.last_cp_ms >= checkpoint_interval_ms:
        meter, signed = cut_checkpoint(meter, sample.time_ms, wallet_key, domain)
        if signed is not None:
            events += [StoreCheckpoint(meter.lease_id, signed, True), SendCheckpoint(meter.lease_id, signed)]
    return meter, events


def encode_outgoing(msg: Outgoing) -> bytes:
    """The lease-stream message for a queued send (a job result's tail is cut to fit, on a UTF-8 boundary)."""
    if isinstance(msg, SendHeartbeat):
        return encode_message(HeartbeatMessage(msg.lease_id, msg.signed))
    if isinstance(msg, SendCheckpoint):
        return encode_message(CheckpointMessage(msg.signed_cp))
    end = msg.end
    return encode_message(JobResultMessage(msg.lease_id, end.exit_code, utf8_tail(end.log_tail), end.simulated,
                                           end.failure, end.image_digest))


# --------------------------------------------------------------------------------------------- rules


def apply(state: LeaseState, change: ProviderChange, keys: ProviderKeys | None) -> Result:
    """Apply a provider change to a lease that has a :class:`ProviderSide`."""
    side = state.provider
    assert side is not None, "a provider change needs a provider lease"
    if isinstance(change, ProviderTick):
        if keys is None:
            raise ValueError("a provider tick needs the provider's keys")
        return _on_meter_tick(state, side, change, keys)
    if isinstance(change, ReceiveJobSpec):
        return _on_job_spec(state, side, change)
    if isinstance(change, JobStarted):
        if side.job is not JobPhase.STARTING:
            return state, []
        return _with(state, replace(side, job=JobPhase.RUNNING, peer=change.peer)), []
    if isinstance(change, JobStartFailed):
        if side.job is not JobPhase.STARTING:
            return state, []
        return _with(state, replace(side, job=JobPhase.NONE, job_error=change.reason)), []
    if isinstance(change, JobEnded):
        if side.outcome is not None:
            return state, []
        return _with(state, replace(side, job=JobPhase.ENDED, outcome=change.end)), []
    if isinstance(change, JobReattached):
        if side.job is not JobPhase.RUNNING or side.outcome is not None:
            return state, []
        return state, [NotifyUser(state.lease_id, Notice.JOB_REATTACHED,
                                  "the job outlived a provider restart and was taken over; it goes on")]
    return _with(state, replace(side, outq=side.outq[max(0, change.count) :])), []


def _with(state: LeaseState, side: ProviderSide) -> LeaseState:
    return replace(state, provider=side)


def _on_job_spec(state: LeaseState, side: ProviderSide, c: ReceiveJobSpec) -> Result:
    if state.status >= LeaseStatus.CLOSING:
        return state, [NotifyUser(state.lease_id, Notice.IGNORED, "job spec for a closing lease")]
    if side.job is not JobPhase.NONE:
        return state, []  # already started: the consumer sent it again
    side = replace(side, job=JobPhase.STARTING, job_error="")
    return _with(state, side), [StartJob(state.lease_id, c.job, side.devices, c.peer)]


def _on_meter_tick(state: LeaseState, side: ProviderSide, t: ProviderTick, keys: ProviderKeys) -> Result:
    if side.final_sent:
        return state, []
    lid = state.lease_id
    now = t.now_ms
    meter = side.meter
    sample = MeteringSample(now, meter.gpus if t.job_running else 0, t.usage)
    meter, produced = provider_tick(meter, sample, keys.node_key, keys.wallet_key, state.domain,
                                    t.checkpoint_interval_ms)
    final_sent = False
    if meter.closed_at is not None:  # the lease is closed: prove the rest now, then stop metering
        meter, cp = cut_checkpoint(meter, now, keys.wallet_key, state.domain)
        if cp is not None:
            produced += [StoreCheckpoint(lid, cp, True), SendCheckpoint(lid, cp)]
        final_sent = True
    sends: list[Outgoing] = [ev for ev in produced if isinstance(ev, SendHeartbeat | SendCheckpoint)]
    result_sent = side.result_sent
    if side.outcome is not None and not result_sent:
        sends.append(SendJobResult(lid, side.outcome))
        result_sent = True
    side = replace(
        side,
        meter=meter,
        final_sent=final_sent,
        result_sent=result_sent,
        outq=side.outq + tuple(encode_outgoing(m) for m in sends),
    )
    stored = [ev for ev in produced if isinstance(ev, StoreCheckpoint)]
    events: list[Event] = list(stored)
    faults = state.faults
    if stored:  # the latest checkpoint signed: what a claim would carry if the consumer does not settle it
        faults = replace(faults, last_signed=stored[-1].signed_cp)
    return replace(state, provider=side, now_ms=max(state.now_ms, now), faults=faults), events


def follow_chain(before: LeaseState, state: LeaseState, change: Change) -> Result:
    """The provider's part of a chain change, after the shared rules moved ``before`` to ``state``."""
    side = state.provider
    if side is None:
        return state, []
    events: list[Event] = []
    if isinstance(change, ContractReceiveLeaseClosed) and change.lease_id == state.lease_id:
        side = replace(side, meter=update_lease_times(side.meter, closed_at=change.closed_at))
        if side.job in (JobPhase.STARTING, JobPhase.RUNNING):
            events.append(StopJob(state.lease_id))
    elif isinstance(change, ContractReceiveTopUp) and change.lease_id == state.lease_id:
        side = replace(side, meter=update_lease_times(side.meter, ends_at=change.ends_at))
    elif isinstance(change, ContractReceiveLeaseFinalized) and before.status < LeaseStatus.FINALIZED <= state.status:
        events += [
            ReleaseDevices(state.lease_id, state.terms.offer_hash, side.devices),
            ContractSendWithdraw(state.lease_id),
        ]
    return _with(state, side), events


__all__ = [
    "MAX_RECENT_BEATS",
    "PROVIDER_CHANGES",
    "BeatRef",
    "MeteringSample",
    "ProviderChange",
    "ProviderKeys",
    "ProviderMeter",
    "SendCheckpoint",
    "SendHeartbeat",
    "apply",
    "cut_checkpoint",
    "encode_outgoing",
    "follow_chain",
    "new_meter",
    "new_provider_lease",
    "next_heartbeat",
    "provider_tick",
    "record_sample",
    "update_lease_times",
]
