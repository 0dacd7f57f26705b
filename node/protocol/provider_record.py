"""Provider records: what the chain says about each provider, and a score that does not trust the unknown.

Pure module: no I/O, no clock. ``ProviderRecords`` is fed the escrow's and the staking contract's logs (as the
typed changes below, with the block timestamp as ``at``) and keeps one frozen ``ProviderRecord`` per provider.
Nothing else goes in: no gossip, no self-reported figures, so every node that sees the same chain computes the same
records.

Counted per provider (raw 20-byte address):

- ``leases_opened``; ``leases_completed``: leases finalized without a fault (no missed liveness challenge, no
  equivocation on that lease);
- ``gpu_seconds_settled`` and ``amount_settled``: from ``LeaseSettled`` (and paying ``ClaimFinalized``), the
  increase of each lease's cumulative GPU-seconds;
- ``claims_made`` (``UsageClaimed``) and ``claims_disputed`` (``ClaimDisputed``: the consumer voided the claim
  with the provider's own later checkpoint);
- ``challenges`` (``LivenessChallenged``) and ``challenges_missed`` (``LivenessResolved``: unanswered, slashed);
- ``equivocations`` (``EquivocationReported``) and ``slashes`` / ``amount_slashed`` (``Slashed``);
- ``stake``: the last ``Staked.totalStake``, less later unbonding requests and slashes;
- ``first_seen``: the earliest block time of any of its logs (registration, stake, lease); age is ``now`` minus it.

The score (``score``) is in [0, 1] and is written down in docs/market.md ("Provider record and score").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final

from node.protocol.market_data import LeaseClosedLog, LeaseOpenedLog, LeaseSettledLog

DAY: Final = 86_400

# ---------------------------------------------------------------------------------------------------------------
# Changes (chain logs) beyond the lease logs shared with market data


@dataclass(frozen=True, slots=True)
class ProviderRegisteredLog:
    provider: bytes
    at: int


@dataclass(frozen=True, slots=True)
class StakedLog:
    provider: bytes
    amount: int
    total_stake: int
    at: int


@dataclass(frozen=True, slots=True)
class UnbondRequestedLog:
    provider: bytes
    amount: int
    at: int


@dataclass(frozen=True, slots=True)
class SlashedLog:
    provider: bytes
    amount: int
    at: int


@dataclass(frozen=True, slots=True)
class LeaseFinalizedLog:
    lease_id: int
    provider: bytes
    at: int


@dataclass(frozen=True, slots=True)
class UsageClaimedLog:
    lease_id: int
    provider: bytes
    at: int


@dataclass(frozen=True, slots=True)
class ClaimDisputedLog:
    lease_id: int
    provider: bytes
    at: int


@dataclass(frozen=True, slots=True)
class LivenessChallengedLog:
    lease_id: int
    provider: bytes
    at: int


@dataclass(frozen=True, slots=True)
class LivenessResolvedLog:
    """An unanswered challenge: the provider was slashed and the lease closed."""

    lease_id: int
    provider: bytes
    at: int


@dataclass(frozen=True, slots=True)
class EquivocationReportedLog:
    lease_id: int
    provider: bytes
    at: int


RecordChange = (
    ProviderRegisteredLog
    | StakedLog
    | UnbondRequestedLog
    | SlashedLog
    | LeaseOpenedLog
    | LeaseSettledLog
    | LeaseClosedLog
    | LeaseFinalizedLog
    | UsageClaimedLog
    | ClaimDisputedLog
    | LivenessChallengedLog
    | LivenessResolvedLog
    | EquivocationReportedLog
)


# ---------------------------------------------------------------------------------------------------------------
# The record and its score


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    provider: bytes
    first_seen: int
    stake: int = 0
    leases_opened: int = 0
    leases_completed: int = 0
    gpu_seconds_settled: int = 0
    amount_settled: int = 0
    claims_made: int = 0
    claims_disputed: int = 0
    challenges: int = 0
    challenges_missed: int = 0
    equivocations: int = 0
    slashes: int = 0
    amount_slashed: int = 0

    @property
    def gpu_hours_settled(self) -> float:
        return self.gpu_seconds_settled / 3600

    def age(self, now: int) -> int:
        return max(0, now - self.first_seen)


@dataclass(frozen=True, slots=True)
class ScoreRule:
    """The parameters of ``score`` (see docs/market.md). ``stake_ref``: stake (token base units) at which the stake
    part is full; ``age_ref_s``: age at which the age part is full; ``prior_leases``: clean leases it takes for the
    history part to reach one half; ``*_weight``: how many clean leases one fault cancels."""

    stake_ref: int = 10**21  # 1,000 tokens of 18 decimals
    age_ref_s: int = 30 * DAY
    prior_leases: int = 10
    stake_share: float = 0.25
    age_share: float = 0.15
    history_share: float = 0.60
    disputed_weight: int = 3
    missed_weight: int = 5


DEFAULT_RULE: Final = ScoreRule()


def history_part(record: ProviderRecord, rule: ScoreRule = DEFAULT_RULE) -> float:
    """``completed / (completed + prior_leases + faults)``: 0 without history, 1/2 after ``prior_leases`` clean
    leases, approaching 1 with many; each disputed claim and missed challenge weighs like several leases."""
    faults = rule.disputed_weight * record.claims_disputed + rule.missed_weight * record.challenges_missed
    done = record.leases_completed
    return done / (done + rule.prior_leases + faults)


def score(record: ProviderRecord | None, now: int, rule: ScoreRule = DEFAULT_RULE) -> float:
    """Trust in [0, 1]: ``stake_share * min(1, stake / stake_ref) + age_share * min(1, age / age_ref)
    + history_share * history_part``. Zero for an unknown provider and for one that ever equivocated."""
    if record is None or record.equivocations:
        return 0.0
    stake = min(1.0, record.stake / rule.stake_ref) if rule.stake_ref > 0 else 1.0
    age = min(1.0, record.age(now) / rule.age_ref_s) if rule.age_ref_s > 0 else 1.0
    value = rule.stake_share * stake + rule.age_share * age + rule.history_share * history_part(record, rule)
    return 0.0 if math.isnan(value) else max(0.0, min(1.0, value))


# ---------------------------------------------------------------------------------------------------------------
# The aggregate


@dataclass(slots=True)
class _LeaseTrack:
    provider: bytes
    cumulative_gpu_s: int = 0
    faulted: bool = False


class ProviderRecords:
    """Records of every provider seen in the logs. Feed logs in chain order with ``apply``."""

    def __init__(self) -> None:
        self._records: dict[bytes, ProviderRecord] = {}
        self._leases: dict[int, _LeaseTrack] = {}

    def get(self, provider: bytes) -> ProviderRecord | None:
        return self._records.get(provider)

    def all(self) -> dict[bytes, ProviderRecord]:
        return dict(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def _touch(self, provider: bytes, at: int) -> ProviderRecord:
        rec = self._records.get(provider)
        if rec is None:
            rec = ProviderRecord(provider=provider, first_seen=at)
        elif at < rec.first_seen:
            rec = replace(rec, first_seen=at)
        return rec

    def apply(self, c: RecordChange) -> None:
        rec = self._touch(c.provider, c.at)
        if isinstance(c, ProviderRegisteredLog):
            pass
        elif isinstance(c, StakedLog):
            rec = replace(rec, stake=c.total_stake)
        elif isinstance(c, UnbondRequestedLog):
            rec = replace(rec, stake=max(0, rec.stake - c.amount))
        elif isinstance(c, SlashedLog):
            rec = replace(rec, stake=max(0, rec.stake - c.amount), slashes=rec.slashes + 1,
                          amount_slashed=rec.amount_slashed + c.amount)
        elif isinstance(c, LeaseOpenedLog):
            if c.lease_id in self._leases:
                return
            self._leases[c.lease_id] = _LeaseTrack(c.provider)
            rec = replace(rec, leases_opened=rec.leases_opened + 1)
        elif isinstance(c, LeaseSettledLog):
            track = self._leases.get(c.lease_id)
            if track is None:  # opened before the record began (or already finalized): a baseline, not usage
                self._leases[c.lease_id] = _LeaseTrack(c.provider, c.cumulative_gpu_seconds)
                return
            delta = c.cumulative_gpu_seconds - track.cumulative_gpu_s
            if delta < 0:
                return
            track.cumulative_gpu_s = c.cumulative_gpu_seconds
            rec = replace(rec, gpu_seconds_settled=rec.gpu_seconds_settled + delta,
                          amount_settled=rec.amount_settled + c.amount)
        elif isinstance(c, LeaseClosedLog):
            pass  # completion is judged at finalization, when every fault path has run
        elif isinstance(c, LeaseFinalizedLog):
            ended = self._leases.get(c.lease_id)
            if ended is None:
                return  # opened before this record began, or finalized twice: nothing to judge
            del self._leases[c.lease_id]
            if not ended.faulted:
                rec = replace(rec, leases_completed=rec.leases_completed + 1)
        elif isinstance(c, UsageClaimedLog):
            rec = replace(rec, claims_made=rec.claims_made + 1)
        elif isinstance(c, ClaimDisputedLog):
            rec = replace(rec, claims_disputed=rec.claims_disputed + 1)
        elif isinstance(c, LivenessChallengedLog):
            rec = replace(rec, challenges=rec.challenges + 1)
        elif isinstance(c, LivenessResolvedLog):
            self._fault(c.lease_id)
            rec = replace(rec, challenges_missed=rec.challenges_missed + 1)
        else:
            self._fault(c.lease_id)
            rec = replace(rec, equivocations=rec.equivocations + 1)
        self._records[c.provider] = rec

    def _fault(self, lease_id: int) -> None:
        track = self._leases.get(lease_id)
        if track is not None:
            track.faulted = True
