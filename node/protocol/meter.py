"""The provider's meter: turn metering samples into the heartbeat chain and usage checkpoints.

Pure and deterministic: ed25519 and RFC 6979 ECDSA signatures are functions of key and message, so the same
meter, samples and keys always give the same bytes. Keys are passed in per call and never stored in the state.

Billing is wall-clock GPU time: between two samples, ``min(active_gpus, gpus) x elapsed`` accrues, clipped to
``[started_at, min(ends_at, closed_at)]``; heartbeats carry ``floor(gpu_ms / 1000)``. A checkpoint covers the
latest beat not after its timestamp and claims exactly that beat's ``gpuSeconds``, so it always passes the
consumer's ``UNPROVEN_USAGE`` and ``HEAD_TIME_MISMATCH`` rules (at close, at most one heartbeat interval of usage
is left unclaimed).

Persist the returned meter (and the ``StoreCheckpoint`` event) before sending anything: a provider that
restarts from an older meter would sign a second checkpoint with a used seq, which is slashable equivocation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import nacl.signing

from node.crypto.eip712 import Domain
from node.protocol.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint
from node.protocol.heartbeat import (
    USAGE_SIZE,
    ZERO_HASH,
    Heartbeat,
    UsageSummary,
    encode_usage,
    heartbeat_hash,
    sign_heartbeat,
)

MAX_RECENT_BEATS = 256


@dataclass(frozen=True, slots=True)
class MeteringSample:
    time_ms: int  # provider clock, unix ms
    active_gpus: int  # GPUs the lease's job held since the previous sample
    usage: UsageSummary | None = None  # readings to report (simulated flag included); None: all zero


@dataclass(frozen=True, slots=True)
class BeatRef:
    seq: int
    hash: bytes
    time_ms: int
    gpu_seconds: int


@dataclass(frozen=True, slots=True)
class ProviderMeter:
    lease_id: int
    gpus: int
    started_at: int
    ends_at: int
    closed_at: int | None = None
    gpu_ms: int = 0
    metered_until_ms: int = 0
    hb_seq: int = 0
    hb_head: bytes = ZERO_HASH
    hb_time_ms: int = 0
    recent: tuple[BeatRef, ...] = ()  # beats not yet covered by a checkpoint
    cp_seq: int = 0
    cp_cumulative: int = 0
    cp_timestamp: int = 0
    last_cp_ms: int = 0

    @property
    def gpu_seconds(self) -> int:
        return self.gpu_ms // 1000


def new_meter(lease_id: int, gpus: int, started_at: int, ends_at: int) -> ProviderMeter:
    return ProviderMeter(
        lease_id, gpus, started_at, ends_at, metered_until_ms=started_at * 1000, last_cp_ms=started_at * 1000
    )


def update_lease_times(
    meter: ProviderMeter, *, ends_at: int | None = None, closed_at: int | None = None
) -> ProviderMeter:
    """Apply a top-up (``ends_at`` moves later) or the close seen on-chain."""
    if ends_at is not None:
        meter = replace(meter, ends_at=max(meter.ends_at, ends_at))
    if closed_at is not None and meter.closed_at is None:
        meter = replace(meter, closed_at=closed_at)
    return meter


def record_sample(meter: ProviderMeter, sample: MeteringSample) -> ProviderMeter:
    """Accrue usage up to ``sample.time_ms``; a clock going backwards accrues nothing."""
    end_s = meter.ends_at if meter.closed_at is None else min(meter.ends_at, meter.closed_at)
    until = min(sample.time_ms, end_s * 1000)
    if until <= meter.metered_until_ms:
        return meter
    active = max(0, min(sample.active_gpus, meter.gpus))
    return replace(meter, gpu_ms=meter.gpu_ms + active * (until - meter.metered_until_ms), metered_until_ms=until)


def next_heartbeat(
    meter: ProviderMeter, sample: MeteringSample, node_key: nacl.signing.SigningKey
) -> tuple[ProviderMeter, bytes]:
    """Accrue ``sample`` and sign the next beat of the chain. Returns the new meter and the 224-byte beat."""
    meter = record_sample(meter, sample)
    time_ms = max(sample.time_ms, meter.hb_time_ms)  # beat times never go backwards
    usage = encode_usage(sample.usage) if sample.usage is not None else bytes(USAGE_SIZE)
    hb = Heartbeat(meter.lease_id, meter.hb_seq + 1, time_ms, meter.gpu_seconds, meter.hb_head, usage)
    signed = sign_heartbeat(hb, node_key)
    h = heartbeat_hash(signed)
    recent = (*meter.recent, BeatRef(hb.seq, h, time_ms, hb.gpu_seconds))[-MAX_RECENT_BEATS:]
    meter = replace(meter, hb_seq=hb.seq, hb_head=h, hb_time_ms=time_ms, recent=recent)
    return meter, signed


def cut_checkpoint(
    meter: ProviderMeter, now_ms: int, wallet_key: bytes, domain: Domain
) -> tuple[ProviderMeter, SignedCheckpoint | None]:
    """Sign the next checkpoint, covering the latest beat not after its timestamp; ``None`` if nothing new."""
    ts = max(now_ms // 1000, meter.cp_timestamp, meter.started_at)
    if meter.closed_at is not None:
        ts = min(ts, meter.closed_at)
    head = None
    for ref in reversed(meter.recent):
        if ref.time_ms <= ts * 1000 + 1000:
            head = ref
            break
    if head is None or head.gpu_seconds < meter.cp_cumulative or ts < meter.cp_timestamp:
        return meter, None
    cp = Checkpoint(meter.lease_id, meter.cp_seq + 1, head.gpu_seconds, head.hash, ts)
    signed = sign_checkpoint(cp, wallet_key, domain)
    meter = replace(
        meter,
        cp_seq=cp.seq,
        cp_cumulative=cp.cumulative_gpu_seconds,
        cp_timestamp=ts,
        last_cp_ms=now_ms,
        recent=tuple(r for r in meter.recent if r.seq > head.seq),
    )
    return meter, signed


