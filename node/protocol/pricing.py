"""Provider pricing policies: what price the provider's next offer carries, and whether to announce it now.

Pure module: no I/O, no clock, integers only (prices are token base units per GPU-second, as in ``Offer``), so
the same inputs give the same price on every machine.

Policies:

- ``FixedPolicy(price)``: always ``price`` (the configured price; the default).
- ``MarketPolicy(percentile, floor, ceiling)``: the nearest-rank ``percentile`` of the live offers for the same
  GPU model and region (the caller passes their prices, ascending, without the provider's own offer), clamped to
  ``[floor, ceiling]``. With no other offer on that market the current price is kept.
- ``UtilisationPolicy(target_bps, floor, ceiling, max_step_bps, deadband_bps)``: moves the price toward the
  target utilisation of the provider's *own* GPUs (``leased * 10_000 // total``, in basis points). Above target
  plus the dead band the price rises, below target minus the dead band it falls; the relative step is
  ``max_step_bps`` scaled by how far utilisation is from the target, as a share of the room on that side
  (fully busy or fully idle: the whole ``max_step_bps``). One step moves the price by at most
  ``step_bound(price) = max(1, price * max_step_bps // 10_000)`` (so a price stuck at a few units still moves),
  and the result is clamped to ``[floor, ceiling]``. With no GPUs, or with every GPU leased (the provider then
  has no offer out), the price is kept: it does not climb while nothing is for sale and come back out of reach.
  Utilisation is the caller's ``busy_bps`` when given (a time average over a recent window, which lets a
  provider with a single GPU see how busy it has been), else the share of GPUs leased now.

Every policy's result is clamped to its floor and ceiling, and a policy with constant inputs moves monotonically
(never back and forth) until it reaches a fixed point: the market quote, the floor or ceiling, or the dead band.

Re-announcing (``update``): a new price is announced only when it differs from the announced one and at least
``min_interval_s`` has passed since the last announcement; between announcements nothing changes, so gossip is not
flooded by price moves. A utilisation step is taken per announcement opportunity, not per call, so calling
``update`` more often does not make the price move faster. Running leases are unaffected by any of this: a lease
keeps the price it was opened at (the escrow stores it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from node.protocol.market_data import percentile

BPS: Final = 10_000


class PricingError(ValueError):
    """A policy was configured with values that cannot work (caller error)."""


def _check_bounds(floor: int, ceiling: int) -> None:
    if floor < 1:
        raise PricingError("floor must be at least 1 base unit per GPU-second")
    if ceiling < floor:
        raise PricingError("ceiling must not be below floor")


@dataclass(frozen=True, slots=True)
class FixedPolicy:
    price: int

    def __post_init__(self) -> None:
        if self.price < 1:
            raise PricingError("price must be at least 1")


@dataclass(frozen=True, slots=True)
class MarketPolicy:
    percentile: int  # 0..100
    floor: int
    ceiling: int

    def __post_init__(self) -> None:
        if not 0 <= self.percentile <= 100:
            raise PricingError("percentile must be in [0, 100]")
        _check_bounds(self.floor, self.ceiling)


@dataclass(frozen=True, slots=True)
class UtilisationPolicy:
    floor: int
    ceiling: int
    target_bps: int = 6000  # 60 % of the provider's GPUs leased
    max_step_bps: int = 500  # at most 5 % per announcement
    deadband_bps: int = 500  # within +-5 points of the target the price holds

    def __post_init__(self) -> None:
        _check_bounds(self.floor, self.ceiling)
        if not 0 < self.target_bps < BPS:
            raise PricingError("target_bps must be strictly between 0 and 10000")
        if not 0 < self.max_step_bps <= BPS:
            raise PricingError("max_step_bps must be in (0, 10000]")
        if not 0 <= self.deadband_bps < BPS:
            raise PricingError("deadband_bps must be in [0, 10000)")

    def step_bound(self, price: int) -> int:
        """The most one step may move the price from ``price``."""
        return max(1, price * self.max_step_bps // BPS)


Policy = FixedPolicy | MarketPolicy | UtilisationPolicy


@dataclass(frozen=True, slots=True)
class PricingInputs:
    """What a policy may look at. ``market_prices``: live offer prices per GPU-second for the provider's model and
    region, ascending, without its own offer (only ``MarketPolicy`` reads them)."""

    gpus_total: int = 0
    gpus_leased: int = 0
    market_prices: Sequence[int] = ()
    busy_bps: int | None = None  # utilisation averaged over a recent window (basis points), if the caller has it

    @property
    def utilisation_bps(self) -> int | None:
        """``busy_bps`` when given, else the share of GPUs leased now; None without GPUs."""
        if self.gpus_total <= 0:
            return None
        if self.busy_bps is not None:
            return min(BPS, max(0, self.busy_bps))
        return min(BPS, max(0, self.gpus_leased) * BPS // self.gpus_total)

    @property
    def nothing_free(self) -> bool:
        return self.gpus_total > 0 and self.gpus_leased >= self.gpus_total


def next_price(policy: Policy, price: int, inputs: PricingInputs) -> int:
    """The price one update of ``policy`` moves ``price`` (the currently announced price) to."""
    if isinstance(policy, FixedPolicy):
        return policy.price
    if isinstance(policy, MarketPolicy):
        quote = percentile(inputs.market_prices, policy.percentile)
        target = price if quote is None else quote
        return min(policy.ceiling, max(policy.floor, target))
    return _utilisation_step(policy, price, inputs)


def _utilisation_step(policy: UtilisationPolicy, price: int, inputs: PricingInputs) -> int:
    clamped = min(policy.ceiling, max(policy.floor, price))
    if clamped != price:
        return clamped  # out of bounds (the policy changed): back inside first
    u = inputs.utilisation_bps
    if u is None or inputs.nothing_free:
        return price  # no GPUs, or none free (no offer to announce): hold, so the price does not wind up
    err = u - policy.target_bps
    if abs(err) <= policy.deadband_bps:
        return price
    room = BPS - policy.target_bps if err > 0 else policy.target_bps
    step_bps = policy.max_step_bps * min(abs(err), room) // room
    delta = max(1, price * step_bps // BPS)
    delta = min(delta, policy.step_bound(price))
    moved = price + delta if err > 0 else price - delta
    return min(policy.ceiling, max(policy.floor, moved))


@dataclass(frozen=True, slots=True)
class PricingState:
    """The announced price and when it was announced (None: never)."""

    price: int
    announced_at: int | None = None


@dataclass(frozen=True, slots=True)
class PriceUpdate:
    state: PricingState
    announce: bool  # publish an offer at ``state.price`` now


def may_announce(state: PricingState, now: int, min_interval_s: int) -> bool:
    """Whether the interval since the last announcement has passed (always true before the first)."""
    return state.announced_at is None or now - state.announced_at >= min_interval_s


def update(policy: Policy, state: PricingState, inputs: PricingInputs, now: int, min_interval_s: int) -> PriceUpdate:
    """One decision at time ``now``: the new state and whether to announce.

    Before the interval has passed nothing changes. After it, the policy takes one step; a changed price is
    announced (and the interval starts again), an unchanged one is not. The first call always announces.
    """
    if not may_announce(state, now, min_interval_s):
        return PriceUpdate(state, False)
    price = next_price(policy, state.price, inputs)
    if state.announced_at is not None and price == state.price:
        return PriceUpdate(state, False)
    return PriceUpdate(PricingState(price, now), True)
