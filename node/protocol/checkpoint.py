"""Usage checkpoints: EIP-712 ``UsageCheckpoint`` values and the consumer's pure verification of them.

``verify_checkpoint`` never raises on bad input from the provider: it returns a :class:`CheckpointVerdict` whose
``reason`` says precisely which rule failed, so the caller can store it as evidence and count rejections. Every
rejection after the signature check concerns a checkpoint the provider really signed.

Time units: chain times (``started_at``, ``ends_at``, ``closed_at``, the checkpoint ``timestamp``) are unix
seconds; heartbeat times and ``now_ms`` are unix milliseconds.

Rules, in the order they are checked (the first failure is reported):

1. ``WRONG_LEASE``: the checkpoint names another lease.
2. ``BAD_SIGNATURE``: malformed, malleable (high-s) or recovers to someone other than the lease's provider.
3. ``LEASE_NOT_OPEN``: the lease is not (yet / any more) accepting checkpoints; ``AFTER_CLOSE``: the lease is
   closed and ``timestamp > closed_at``.
4. ``EQUIVOCATION``: same seq as the last accepted checkpoint, different contents (fraud proof);
   ``SEQ_REPLAYED``: seq <= last; ``SEQ_GAP``: seq > last + 1 (out of order / skipped).
5. ``TIMESTAMP_IN_FUTURE``: ``timestamp*1000 > now_ms + clock_skew_ms``; ``TIMESTAMP_REGRESSED``: before the last
   accepted checkpoint or before the lease started.
6. ``CUMULATIVE_DECREASED``: below the last accepted/settled cumulative.
7. ``OVER_CLAIM``: ``cumulative > gpus * (min(now, ends_at, closed_at) - started_at) + tolerance`` with
   ``tolerance = max(per_gpu_s * gpus, bound * bps / 10_000)`` (defaults: 2 s per GPU, 1 %), or above the hard
   contract cap ``gpus * (min(ends_at, closed_at) - started_at)`` (which has no tolerance: it would revert).
8. Heartbeats since the last accepted head, up to the beat whose hash is ``heartbeatHead``:
   ``MALFORMED_HEARTBEAT``, ``BAD_HEARTBEAT_SIGNATURE`` (not signed by the provider's node key),
   ``CHAIN_BROKEN`` (wrong lease, seq not +1, or prevHash not the previous beat's hash),
   ``HEARTBEAT_OUT_OF_ORDER`` (time or gpuSeconds going backwards), ``HEARTBEAT_GAP`` (more than
   ``max_gap_intervals * heartbeat_interval_ms`` between beats), ``HEARTBEAT_IN_FUTURE``,
   ``HEARTBEAT_OVER_CLAIM`` (a beat's gpuSeconds above gpus x its elapsed time + tolerance). The rules after the
   signature are :func:`check_link`, the one chain verifier: the lease state machine also runs it on every beat
   as it arrives, so a beat that would break a checkpoint is refused at once.
9. ``HEAD_MISMATCH``: no beat in the chain hashes to ``heartbeatHead`` (or new usage with no new beats).
10. ``HEAD_TIME_MISMATCH``: the head beat is not close to the checkpoint time (more than 1 s after it, or more
    than ``max_gap_intervals * heartbeat_interval_ms`` before it).
11. ``UNPROVEN_USAGE``: cumulative above the head beat's gpuSeconds + gpus x (seconds between head and checkpoint).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from nacl.bindings import crypto_sign_open

from node.crypto.eip712 import Domain, SignatureError, checkpoint_struct_hash, digest, recover_raw, sign_digest
from node.protocol import heartbeat as hbmod
from node.protocol.heartbeat import BODY_SIZE, SIGNED_SIZE, ZERO_HASH, HeartbeatError, keccak256

_U64_MAX = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    lease_id: int
    seq: int
    cumulative_gpu_seconds: int
    heartbeat_head: bytes  # bytes32; zero if the checkpoint covers no heartbeat
    timestamp: int  # unix seconds

    def struct_hash(self) -> bytes:
        return checkpoint_struct_hash(
            self.lease_id, self.seq, self.cumulative_gpu_seconds, self.heartbeat_head, self.timestamp
        )


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    signature: bytes  # 65 bytes r || s || v, by the provider wallet


def checkpoint_digest(domain: Domain, cp: Checkpoint) -> bytes:
    """The EIP-712 digest the provider signs (raises ``ValueError`` on out-of-range fields)."""
    return digest(domain.separator, cp.struct_hash())


def sign_checkpoint(cp: Checkpoint, private_key: bytes, domain: Domain) -> SignedCheckpoint:
    """Sign with the provider wallet's 32-byte secp256k1 key (deterministic, RFC 6979)."""
    return SignedCheckpoint(cp, sign_digest(private_key, checkpoint_digest(domain, cp)))


def recover_checkpoint_signer(domain: Domain, signed: SignedCheckpoint) -> bytes:
    """The 20-byte address that signed ``signed``; raises ``SignatureError``/``ValueError``."""
    return recover_raw(checkpoint_digest(domain, signed.checkpoint), signed.signature)


class RejectReason(enum.Enum):
    WRONG_LEASE = "wrong_lease"
    BAD_SIGNATURE = "bad_signature"
    LEASE_NOT_OPEN = "lease_not_open"
    AFTER_CLOSE = "after_close"
    EQUIVOCATION = "equivocation"
    SEQ_REPLAYED = "seq_replayed"
    SEQ_GAP = "seq_gap"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_REGRESSED = "timestamp_regressed"
    CUMULATIVE_DECREASED = "cumulative_decreased"
    OVER_CLAIM = "over_claim"
    MALFORMED_HEARTBEAT = "malformed_heartbeat"
    BAD_HEARTBEAT_SIGNATURE = "bad_heartbeat_signature"
    CHAIN_BROKEN = "chain_broken"
    HEARTBEAT_OUT_OF_ORDER = "heartbeat_out_of_order"
    HEARTBEAT_GAP = "heartbeat_gap"
    HEARTBEAT_IN_FUTURE = "heartbeat_in_future"
    HEARTBEAT_OVER_CLAIM = "heartbeat_over_claim"
    HEAD_MISMATCH = "head_mismatch"
    HEAD_TIME_MISMATCH = "head_time_mismatch"
    UNPROVEN_USAGE = "unproven_usage"


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Slack granted to an honest provider. Defaults suit a 5 s heartbeat and 60 s checkpoints."""

    per_gpu_s: int = 2  # absolute over-claim slack per GPU (sampling, rounding, clock skew)
    bps: int = 100  # relative over-claim slack: 1 % of the elapsed bound
    clock_skew_ms: int = 5_000  # how far ahead of ours the provider's clock may run
    heartbeat_interval_ms: int = 5_000
    max_gap_intervals: int = 3  # k: longest allowed silence between beats, in heartbeat intervals

    def slack(self, gpus: int, bound: int) -> int:
        return max(self.per_gpu_s * gpus, bound * self.bps // 10_000)

    @property
    def max_gap_ms(self) -> int:
        return self.max_gap_intervals * self.heartbeat_interval_ms


DEFAULT_TOLERANCE = Tolerance()


@dataclass(frozen=True, slots=True)
class LeaseView:
    """What verification needs to know about a lease and its last accepted checkpoint/heartbeat.

    ``last_head*`` describe the last heartbeat covered by an accepted checkpoint (zero/0 before the first one);
    ``last_seq``/``last_cumulative`` are the maximum of accepted and on-chain settled values.
    """

    lease_id: int
    provider: bytes  # 20-byte wallet address
    provider_node_key: bytes  # 32-byte ed25519 key
    gpus: int
    started_at: int
    ends_at: int
    accepting: bool  # lease open (or closed within its settlement window)
    closed_at: int | None = None
    last_seq: int = 0
    last_cumulative: int = 0
    last_timestamp: int = 0
    last_digest: bytes | None = None  # digest of the last accepted checkpoint (for equivocation)
    last_head: bytes = ZERO_HASH
    last_head_seq: int = 0
    last_head_time_ms: int = 0
    last_head_gpu_seconds: int = 0


@dataclass(frozen=True, slots=True)
class CheckpointVerdict:
    reason: RejectReason | None  # None when accepted
    detail: str = ""
    beats_covered: int = 0  # how many of the given heartbeats the checkpoint covers (accepted only)
    head_seq: int = 0
    head_time_ms: int = 0
    head_gpu_seconds: int = 0
    digest: bytes = b""

    @property
    def accepted(self) -> bool:
        return self.reason is None


def _reject(reason: RejectReason, detail: str = "", dig: bytes = b"") -> CheckpointVerdict:
    return CheckpointVerdict(reason, detail, digest=dig)


def _bound_with_slack(view: LeaseView, end_s: int, tol: Tolerance) -> int:
    bound = view.gpus * max(0, end_s - view.started_at)
    return bound + tol.slack(view.gpus, bound)


@dataclass(frozen=True, slots=True)
class ChainLink:
    """The last verified beat of a heartbeat chain: where the next beat must attach (``seq == 0``: none yet)."""

    seq: int = 0
    hash: bytes = ZERO_HASH
    time_ms: int = 0
    gpu_seconds: int = 0


NO_LINK = ChainLink()


@dataclass(frozen=True, slots=True)
class ChainRules:
    """What a beat is checked against: the lease's terms, the consumer's clock and the tolerance."""

    lease_id: int
    gpus: int
    started_at: int  # unix s
    hard_end: int  # unix s: min(ends_at, closed_at)
    now_ms: int
    tolerance: Tolerance = DEFAULT_TOLERANCE

    @classmethod
    def of(cls, view: LeaseView, now_ms: int, tolerance: Tolerance) -> ChainRules:
        hard_end = view.ends_at if view.closed_at is None else min(view.ends_at, view.closed_at)
        return cls(view.lease_id, view.gpus, view.started_at, hard_end, now_ms, tolerance)

    def bound(self, end_s: int) -> int:
        """Most GPU-seconds the lease can have used by ``end_s`` (capped at ``hard_end``), tolerance included."""
        bound = self.gpus * max(0, min(end_s, self.hard_end) - self.started_at)
        return bound + self.tolerance.slack(self.gpus, bound)


def check_link(prev: ChainLink, hb: hbmod.Heartbeat, rules: ChainRules) -> tuple[RejectReason, str] | None:
    """The heartbeat-chain rules (rule 8 above, after the signature): may ``hb`` follow ``prev``?

    The one chain verifier: the consumer runs it on every beat it receives and again on the beats a checkpoint
    covers. Returns ``None`` when the beat links, else the reason and a detail. The first beat of a lease is
    compared with the lease start and exempt from the gap rule (it may come after provisioning).
    """
    prev_time = prev.time_ms if prev.seq else rules.started_at * 1000
    if hb.lease_id != rules.lease_id or hb.seq != prev.seq + 1 or hb.prev_hash != prev.hash:
        return RejectReason.CHAIN_BROKEN, f"at heartbeat seq {hb.seq}"
    if hb.time_ms < prev_time or hb.gpu_seconds < prev.gpu_seconds:
        return RejectReason.HEARTBEAT_OUT_OF_ORDER, f"at heartbeat seq {hb.seq}"
    if prev.seq and hb.time_ms - prev_time > rules.tolerance.max_gap_ms:
        return RejectReason.HEARTBEAT_GAP, f"{hb.time_ms - prev_time} ms before seq {hb.seq}"
    if hb.time_ms > rules.now_ms + rules.tolerance.clock_skew_ms:
        return RejectReason.HEARTBEAT_IN_FUTURE, f"at heartbeat seq {hb.seq}"
    if hb.gpu_seconds > rules.bound(-(-hb.time_ms // 1000)):
        return RejectReason.HEARTBEAT_OVER_CLAIM, f"at heartbeat seq {hb.seq}"
    return None


def verify_checkpoint(
    lease_view: LeaseView,
    heartbeats_since_last: Sequence[bytes],
    signed_cp: SignedCheckpoint,
    domain: Domain,
    now_ms: int,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    *,
    signatures_checked: bool = False,
) -> CheckpointVerdict:
    """Verify ``signed_cp`` against the lease and the signed heartbeats received since the last accepted head.

    ``heartbeats_since_last`` are 224-byte signed beats in order; the checkpoint may cover a prefix of them
    (beats after its head are left for the next checkpoint; ``beats_covered`` says how many were used).
    Pass ``signatures_checked=True`` only for beats already checked with ``verify_heartbeat`` against
    ``lease_view.provider_node_key`` (the lease state machine does this on receipt).
    """
    v = lease_view
    cp = signed_cp.checkpoint
    if cp.lease_id != v.lease_id:
        return _reject(RejectReason.WRONG_LEASE, f"checkpoint for lease {cp.lease_id}")
    try:
        dig = checkpoint_digest(domain, cp)
        signer = recover_raw(dig, signed_cp.signature)
    except (SignatureError, ValueError, TypeError) as exc:
        return _reject(RejectReason.BAD_SIGNATURE, str(exc))
    if signer != v.provider:
        return _reject(RejectReason.BAD_SIGNATURE, "signer is not the lease's provider", dig)

    if not v.accepting:
        return _reject(RejectReason.LEASE_NOT_OPEN, "", dig)
    if v.closed_at is not None and cp.timestamp > v.closed_at:
        return _reject(RejectReason.AFTER_CLOSE, f"timestamp {cp.timestamp} > closed_at {v.closed_at}", dig)

    if cp.seq <= v.last_seq:
        if cp.seq == v.last_seq and v.last_digest is not None and dig != v.last_digest:
            return _reject(RejectReason.EQUIVOCATION, f"second checkpoint with seq {cp.seq}", dig)
        return _reject(RejectReason.SEQ_REPLAYED, f"seq {cp.seq} <= last {v.last_seq}", dig)
    if cp.seq != v.last_seq + 1:
        return _reject(RejectReason.SEQ_GAP, f"seq {cp.seq}, expected {v.last_seq + 1}", dig)

    if cp.timestamp * 1000 > now_ms + tolerance.clock_skew_ms:
        return _reject(RejectReason.TIMESTAMP_IN_FUTURE, f"timestamp {cp.timestamp}", dig)
    if cp.timestamp < v.last_timestamp or cp.timestamp < v.started_at:
        return _reject(RejectReason.TIMESTAMP_REGRESSED, f"timestamp {cp.timestamp}", dig)

    cum = cp.cumulative_gpu_seconds
    if cum < v.last_cumulative:
        return _reject(RejectReason.CUMULATIVE_DECREASED, f"{cum} < {v.last_cumulative}", dig)

    hard_end = v.ends_at if v.closed_at is None else min(v.ends_at, v.closed_at)
    hard_cap = v.gpus * max(0, hard_end - v.started_at)
    soft_cap = _bound_with_slack(v, min(now_ms // 1000, hard_end), tolerance)
    if cum > hard_cap or cum > soft_cap:
        return _reject(RejectReason.OVER_CLAIM, f"{cum} > min(cap {hard_cap}, bound {soft_cap})", dig)

    # Heartbeat chain from the last accepted head up to the checkpoint's head.
    head = cp.heartbeat_head
    rules = ChainRules.of(v, now_ms, tolerance)
    link = ChainLink(v.last_head_seq, v.last_head, v.last_head_time_ms, v.last_head_gpu_seconds)
    covered = 0
    found = head == v.last_head
    if not found:
        for raw in heartbeats_since_last:
            if len(raw) != SIGNED_SIZE:
                return _reject(RejectReason.MALFORMED_HEARTBEAT, "wrong size", dig)
            if not signatures_checked:
                try:
                    crypto_sign_open(raw[BODY_SIZE:] + raw[:BODY_SIZE], v.provider_node_key)
                except Exception:
                    return _reject(RejectReason.BAD_HEARTBEAT_SIGNATURE, f"beat #{covered + 1}", dig)
            try:
                hb = hbmod.decode(raw[:BODY_SIZE])
            except HeartbeatError as exc:
                return _reject(RejectReason.MALFORMED_HEARTBEAT, str(exc), dig)
            broken = check_link(link, hb, rules)
            if broken is not None:
                return _reject(broken[0], broken[1], dig)
            covered += 1
            link = ChainLink(hb.seq, keccak256(raw), hb.time_ms, hb.gpu_seconds)
            if link.hash == head:
                found = True
                break
    prev_time = link.time_ms if link.seq else v.started_at * 1000
    prev_gpu = link.gpu_seconds
    max_gap = tolerance.max_gap_ms
    if not found:
        return _reject(RejectReason.HEAD_MISMATCH, "no received heartbeat hashes to heartbeatHead", dig)

    if covered == 0:
        # No new beats: only a checkpoint that adds no usage is acceptable.
        if cum > v.last_cumulative:
            return _reject(RejectReason.HEAD_MISMATCH, "new usage without new heartbeats", dig)
    else:
        cp_ms = cp.timestamp * 1000
        if prev_time > cp_ms + 1000 or cp_ms - prev_time > max_gap:
            return _reject(
                RejectReason.HEAD_TIME_MISMATCH, f"head at {prev_time} ms, checkpoint at {cp.timestamp} s", dig
            )
        lag_s = max(0, -(-(cp_ms - prev_time) // 1000))
        if cum > prev_gpu + v.gpus * lag_s:
            return _reject(RejectReason.UNPROVEN_USAGE, f"{cum} > head {prev_gpu} + {v.gpus}x{lag_s}s", dig)

    return CheckpointVerdict(
        None,
        "",
        beats_covered=covered,
        head_seq=link.seq,
        head_time_ms=prev_time,
        head_gpu_seconds=prev_gpu,
        digest=dig,
    )
