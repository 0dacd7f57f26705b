"""Offer selection by need: the best live offer for a request, why it was chosen, why the others were not, and
what the lease would cost. Plus the spend caps a node applies before opening or topping up a lease.

Pure module: no I/O, no clock (``now`` is passed in). Prices are token base units per GPU-second as in ``Offer``;
``per GPU-hour`` figures are that times 3600.

Rules, in the order they are checked for each offer (the first that fails is the offer's exclusion reason):

1. ``expired``: ``expiresAt <= now`` (a lease can no longer open on it).
2. ``model``: not the requested GPU model.
3. ``region``: the request names a region and the offer's spec has another (or none).
4. ``gpus``: fewer GPUs left than requested (its ``gpuCount`` minus the GPUs open leases already hold on it).
5. ``vram``: less VRAM per GPU than ``min_vram_mib``.
6. ``duration``: the lease duration is outside the offer's ``[minDuration, maxDuration]``.
7. ``price``: above ``max_price_per_gpu_hour``.
8. ``provider``: the provider's record shows an equivocation (score 0 by rule), or its score is below
   ``min_score``.
9. ``lease_cap``: the lease would cost more than the per-lease spend cap.
10. ``day_cap``: today's spend plus the lease would exceed the per-day cap.

The offers left are ranked by *adjusted price*: ``price * (1 + record_weight * (1 - score))``, so a provider
without history (low score) must be cheaper than a proven one to win; ties by lower price, then offer id. The
first is chosen; the reason names its price, score and the runner-up it beat.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from node.protocol.offers import Offer, gpu_model_name
from node.protocol.provider_record import DEFAULT_RULE, ProviderRecord, ScoreRule, score

SECONDS_PER_HOUR: Final = 3600


class Exclusion(enum.Enum):
    EXPIRED = "expired"
    MODEL = "model"
    REGION = "region"
    GPUS = "gpus"
    VRAM = "vram"
    DURATION = "duration"
    PRICE = "price"
    PROVIDER = "provider"
    LEASE_CAP = "lease_cap"
    DAY_CAP = "day_cap"


@dataclass(frozen=True, slots=True)
class SpendCaps:
    """Per-lease and per-day spend limits in token base units (None: no limit)."""

    per_lease: int | None = None
    per_day: int | None = None


@dataclass(frozen=True, slots=True)
class SpendCheck:
    allowed: bool
    reason: str  # empty when allowed


def check_spend(amount: int, caps: SpendCaps, spent_today: int, lease_spent: int = 0) -> SpendCheck:
    """May ``amount`` more be spent? ``lease_spent``: what this lease already cost (a top-up adds to it);
    ``spent_today``: the node's spend so far in the current UTC day."""
    if caps.per_lease is not None and lease_spent + amount > caps.per_lease:
        return SpendCheck(
            False,
            f"lease spend cap: {lease_spent + amount} would exceed the per-lease cap of {caps.per_lease}",
        )
    if caps.per_day is not None and spent_today + amount > caps.per_day:
        return SpendCheck(
            False,
            f"daily spend cap: {spent_today} spent today + {amount} would exceed the per-day cap of {caps.per_day}",
        )
    return SpendCheck(True, "")


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    gpu_model: str
    gpus: int
    duration_s: int
    min_vram_mib: int = 0
    region: str | None = None
    max_price_per_gpu_hour: int | None = None
    min_score: float = 0.0

    def __post_init__(self) -> None:
        if self.gpus < 1 or self.duration_s < 1:
            raise ValueError("a request needs at least one GPU and one second")


def hours_to_seconds(hours: float) -> int:
    """A lease length given in hours (``--hours 3``), in whole seconds, at least one."""
    return max(1, round(hours * SECONDS_PER_HOUR))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A live offer as selection sees it: id, offer, its spec's region (None without a spec)."""

    offer_id: bytes
    offer: Offer
    region: str | None


@dataclass(frozen=True, slots=True)
class Quote:
    """What a lease on one offer costs at its price: the deposit to cover ``duration_s`` on ``gpus`` GPUs."""

    offer_id: bytes
    provider: bytes
    gpus: int
    duration_s: int
    price_per_gpu_second: int
    total: int

    @property
    def price_per_gpu_hour(self) -> int:
        return self.price_per_gpu_second * SECONDS_PER_HOUR


def quote(candidate: Candidate, gpus: int, duration_s: int) -> Quote:
    o = candidate.offer
    total = o.price_per_gpu_second * gpus * duration_s
    return Quote(candidate.offer_id, o.provider, gpus, duration_s, o.price_per_gpu_second, total)


@dataclass(frozen=True, slots=True)
class Ranked:
    candidate: Candidate
    quote: Quote
    score: float
    adjusted_price: float  # per GPU-second, after the record adjustment


@dataclass(frozen=True, slots=True)
class Excluded:
    offer_id: bytes
    reason: Exclusion
    detail: str


@dataclass(frozen=True, slots=True)
class Selection:
    chosen: Ranked | None
    reason: str  # why the choice was made, or why nothing was chosen
    ranked: tuple[Ranked, ...]  # every eligible offer, best first (the chosen one included)
    excluded: tuple[Excluded, ...]

    @property
    def quote(self) -> Quote | None:
        return None if self.chosen is None else self.chosen.quote


@dataclass(frozen=True, slots=True)
class SelectionPolicy:
    record_weight: float = 0.5  # an unknown provider (score 0) looks 50 % dearer than a perfect one
    score_rule: ScoreRule = DEFAULT_RULE


def _exclusion(
    c: Candidate,
    req: LeaseRequest,
    now: int,
    taken: int,
    rec: ProviderRecord | None,
    sc: float,
) -> tuple[Exclusion, str] | None:
    o = c.offer
    if o.expires_at <= now:
        return Exclusion.EXPIRED, f"expired at {o.expires_at}"
    try:
        model = gpu_model_name(o.gpu_model)
    except ValueError:
        model = ""
    if model != req.gpu_model:
        return Exclusion.MODEL, f"model {model or '?'}"
    if req.region is not None and c.region != req.region:
        return Exclusion.REGION, f"region {c.region or 'none'}"
    left = o.gpu_count - taken
    if left < req.gpus:
        return Exclusion.GPUS, f"{left} GPUs left, {req.gpus} needed"
    if o.vram_mib < req.min_vram_mib:
        return Exclusion.VRAM, f"{o.vram_mib} MiB per GPU, {req.min_vram_mib} needed"
    if not o.min_duration <= req.duration_s <= o.max_duration:
        return Exclusion.DURATION, f"takes {o.min_duration}..{o.max_duration} s, {req.duration_s} s asked"
    per_hour = o.price_per_gpu_second * SECONDS_PER_HOUR
    if req.max_price_per_gpu_hour is not None and per_hour > req.max_price_per_gpu_hour:
        return Exclusion.PRICE, f"{per_hour} per GPU-hour, at most {req.max_price_per_gpu_hour} wanted"
    if rec is not None and rec.equivocations:
        return Exclusion.PROVIDER, f"provider equivocated {rec.equivocations} time(s)"
    if sc < req.min_score:
        return Exclusion.PROVIDER, f"provider score {sc:.2f} below {req.min_score:.2f}"
    return None


def select(
    req: LeaseRequest,
    candidates: Iterable[Candidate],
    records: Mapping[bytes, ProviderRecord],
    now: int,
    *,
    caps: SpendCaps = SpendCaps(),
    spent_today: int = 0,
    gpus_taken: Mapping[bytes, int] | None = None,
    policy: SelectionPolicy = SelectionPolicy(),
) -> Selection:
    """Pick the best offer for ``req``. ``gpus_taken``: GPUs open leases hold per offer id (market data's
    ``gpus_taken``); ``records``: provider records by raw address. Deterministic for equal inputs."""
    taken = gpus_taken or {}
    ranked: list[Ranked] = []
    excluded: list[Excluded] = []
    for c in candidates:
        rec = records.get(c.offer.provider)
        sc = score(rec, now, policy.score_rule)
        why = _exclusion(c, req, now, taken.get(c.offer_id, 0), rec, sc)
        q = quote(c, req.gpus, req.duration_s)
        if why is None:
            spend = check_spend(q.total, caps, spent_today)
            if not spend.allowed:
                kind = (
                    Exclusion.LEASE_CAP
                    if caps.per_lease is not None and q.total > caps.per_lease
                    else Exclusion.DAY_CAP
                )
                why = (kind, spend.reason)
        if why is not None:
            excluded.append(Excluded(c.offer_id, why[0], why[1]))
            continue
        adjusted = c.offer.price_per_gpu_second * (1 + policy.record_weight * (1 - sc))
        ranked.append(Ranked(c, q, sc, adjusted))
    ranked.sort(key=lambda r: (r.adjusted_price, r.quote.price_per_gpu_second, r.candidate.offer_id))
    excluded.sort(key=lambda e: e.offer_id)
    if not ranked:
        counts: dict[Exclusion, int] = {}
        for e in excluded:
            counts[e.reason] = counts.get(e.reason, 0) + 1
        detail = ", ".join(f"{n} {r.value}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        reason = "no offer matches" + (f" (excluded: {detail})" if detail else ": no live offers")
        return Selection(None, reason, (), tuple(excluded))
    best = ranked[0]
    reason = (
        f"lowest price adjusted for the provider's record: {best.quote.price_per_gpu_hour} per GPU-hour, "
        f"score {best.score:.2f}, {req.gpus} GPU(s) for {req.duration_s} s cost {best.quote.total}"
    )
    if len(ranked) > 1:
        runner = ranked[1]
        reason += (
            f"; next best {runner.quote.price_per_gpu_hour} per GPU-hour with score {runner.score:.2f} "
            f"(adjusted {runner.adjusted_price * SECONDS_PER_HOUR:.0f} vs {best.adjusted_price * SECONDS_PER_HOUR:.0f})"
        )
    return Selection(best, reason, tuple(ranked), tuple(excluded))
