"""Market data: what the live offers and the chain's lease logs say about supply, demand and price.

Pure module: no I/O, no clock (every time-dependent call takes ``now``). ``MarketData`` is an incremental
aggregate owned by one caller (the asyncio core, like the offer book): it is fed *changes* and answers queries.

Changes (``MarketData.apply``):

- ``OfferLive(offer_id, offer, region)``: an offer entered the book (or replaced one; the replaced one is reported
  as ``OfferGone``). ``OfferGone(offer_id)``: it left the book (superseded, expired, cancelled, stake dropped).
- ``LeaseOpenedLog``, ``LeaseSettledLog``, ``LeaseClosedLog``: the escrow's ``LeaseOpened``, ``LeaseSettled``
  (and ``ClaimFinalized`` with a non-zero amount, which is the same money movement) and ``LeaseClosed`` logs, with
  the block's timestamp as ``at``.

Every figure is kept per market key ``(gpu model name, region)`` and per model over all regions (region
``ALL_REGIONS``). Offers without a spec have region ``NO_REGION``. Neither marker can be a real region token
(region tokens start with a letter or digit), so they never collide.

Definitions (all per key):

- ``gpus_offered``: sum of ``gpuCount`` over live offers.
- ``gpus_leased``: sum of ``gpus`` over open leases (opened, not yet closed) whose offer was known at open time.
- ``gpus_free``: ``gpus_offered`` minus the GPUs that open leases hold *on offers that are still live* (a
  provider's live offer is sized to its free GPUs when announced; leases of that same offer consume it until the
  provider re-announces), never below zero.
- ``utilisation``: ``gpus_leased / (gpus_free + gpus_leased)``, the share of the GPUs on the market that are
  leased; 0 when there are none.
- price distribution of live offers, per GPU-hour (``pricePerGpuSecond * 3600``, token base units): min, p25,
  median, p75, max, by nearest rank over offers (each live offer counts once, whatever its GPU count):
  ``percentile(p) = sorted[ceil(p * n / 100) - 1]`` (the minimum for ``p = 0``). Integers, exact.
- per window (e.g. the last hour, day, week ending at ``now``): GPU-seconds settled, amount settled, the
  realised price per GPU-hour ``amount * 3600 // gpuSeconds`` (volume-weighted; None without settlements), and
  the number of leases opened. A settlement's GPU-seconds are the increase of the lease's cumulative counter
  (``LeaseSettled.cumulativeGpuSeconds``) over its previous settlement.

Cost: an offer change is ``O(log n)`` search plus a list insertion (a memory move; microseconds at 100k offers);
a lease log is ``O(1)`` amortised; a query is ``O(keys * windows * log m)`` with ``m`` the settlements kept (the
longest window's worth). Nothing scans the offers at query time.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from node.protocol.offers import Offer, gpu_model_name

ALL_REGIONS: Final = "*"
NO_REGION: Final = "-"
SECONDS_PER_HOUR: Final = 3600
DEFAULT_WINDOWS: Final = (3600, 86_400, 7 * 86_400)


def percentile(sorted_values: Sequence[int], p: float) -> int | None:
    """Nearest-rank percentile of ascending ``sorted_values``; ``p`` in [0, 100]. None when empty."""
    n = len(sorted_values)
    if not n:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in [0, 100]: {p!r}")
    rank = math.ceil(p * n / 100)
    return sorted_values[max(rank, 1) - 1]


# ---------------------------------------------------------------------------------------------------------------
# Changes


@dataclass(frozen=True, slots=True)
class OfferLive:
    offer_id: bytes
    offer: Offer
    region: str | None  # the spec's region; None for an offer without a spec


@dataclass(frozen=True, slots=True)
class OfferGone:
    offer_id: bytes


@dataclass(frozen=True, slots=True)
class LeaseOpenedLog:
    """``LeaseOpened``: ``price_per_gpu_second`` is the price the lease keeps for its whole life."""

    lease_id: int
    provider: bytes
    offer_hash: bytes
    gpus: int
    price_per_gpu_second: int
    started_at: int
    ends_at: int
    at: int  # block timestamp


@dataclass(frozen=True, slots=True)
class LeaseSettledLog:
    """``LeaseSettled`` (or a paying ``ClaimFinalized``): cumulative GPU-seconds so far and the amount moved now."""

    lease_id: int
    provider: bytes
    cumulative_gpu_seconds: int
    amount: int
    at: int


@dataclass(frozen=True, slots=True)
class LeaseClosedLog:
    lease_id: int
    provider: bytes
    at: int


MarketChange = OfferLive | OfferGone | LeaseOpenedLog | LeaseSettledLog | LeaseClosedLog


# ---------------------------------------------------------------------------------------------------------------
# Answers


@dataclass(frozen=True, slots=True)
class PriceSummary:
    """Live offer prices per GPU-hour (token base units), nearest rank over offers."""

    offers: int
    min: int
    p25: int
    median: int
    p75: int
    max: int


@dataclass(frozen=True, slots=True)
class WindowStats:
    window_s: int
    gpu_seconds_settled: int
    amount_settled: int
    leases_opened: int

    @property
    def gpu_hours_settled(self) -> float:
        return self.gpu_seconds_settled / SECONDS_PER_HOUR

    @property
    def realised_price_per_gpu_hour(self) -> int | None:
        if not self.gpu_seconds_settled:
            return None
        return self.amount_settled * SECONDS_PER_HOUR // self.gpu_seconds_settled


@dataclass(frozen=True, slots=True)
class MarketSummary:
    gpu_model: str
    region: str  # a region token, NO_REGION, or ALL_REGIONS
    gpus_offered: int
    gpus_free: int
    gpus_leased: int
    leases_open: int
    prices: PriceSummary | None  # None: no live offer
    windows: tuple[WindowStats, ...]

    @property
    def utilisation(self) -> float:
        on_market = self.gpus_free + self.gpus_leased
        return self.gpus_leased / on_market if on_market else 0.0


# ---------------------------------------------------------------------------------------------------------------
# The aggregate

_Key = tuple[str, str]  # (gpu model name, region or ALL_REGIONS)


class _Agg:
    """Figures of one market key. ``prices`` is sorted (per GPU-second); the settlement log is append-only with
    running totals, so a window's sum is one bisect and a subtraction."""

    __slots__ = (
        "gpus_leased",
        "gpus_leased_live",
        "gpus_offered",
        "leases_open",
        "open_times",
        "prices",
        "settle_amount",
        "settle_gpu_s",
        "settle_times",
    )

    def __init__(self) -> None:
        self.prices: list[int] = []
        self.gpus_offered = 0
        self.gpus_leased = 0
        self.gpus_leased_live = 0
        self.leases_open = 0
        self.settle_times: list[int] = []
        self.settle_gpu_s: list[int] = [0]  # running totals; entry i is the total before settlement i
        self.settle_amount: list[int] = [0]
        self.open_times: list[int] = []

    def is_empty(self) -> bool:
        return not (self.prices or self.gpus_leased or self.leases_open or self.settle_times or self.open_times)

    def prune(self, before: int) -> None:
        """Forget settlements and opens older than ``before`` once they are most of the log."""
        cut = bisect_left(self.settle_times, before)
        if cut > 64 and cut * 2 > len(self.settle_times):
            del self.settle_times[:cut]
            del self.settle_gpu_s[:cut]
            del self.settle_amount[:cut]
        cut = bisect_left(self.open_times, before)
        if cut > 64 and cut * 2 > len(self.open_times):
            del self.open_times[:cut]

    def window(self, now: int, window_s: int) -> WindowStats:
        since = now - window_s
        lo = bisect_left(self.settle_times, since + 1)  # settlements at times in (now - window, now]
        hi = bisect_left(self.settle_times, now + 1)
        gpu_s = self.settle_gpu_s[hi] - self.settle_gpu_s[lo]
        amount = self.settle_amount[hi] - self.settle_amount[lo]
        opened = bisect_left(self.open_times, now + 1) - bisect_left(self.open_times, since + 1)
        return WindowStats(window_s, gpu_s, amount, opened)

    def summary(self, key: _Key, now: int, windows: Sequence[int]) -> MarketSummary:
        p = self.prices
        prices = None
        if p:
            h = SECONDS_PER_HOUR
            prices = PriceSummary(
                offers=len(p),
                min=p[0] * h,
                p25=_pct(p, 25) * h,
                median=_pct(p, 50) * h,
                p75=_pct(p, 75) * h,
                max=p[-1] * h,
            )
        return MarketSummary(
            gpu_model=key[0],
            region=key[1],
            gpus_offered=self.gpus_offered,
            gpus_free=max(0, self.gpus_offered - self.gpus_leased_live),
            gpus_leased=self.gpus_leased,
            leases_open=self.leases_open,
            prices=prices,
            windows=tuple(self.window(now, w) for w in windows),
        )


def _pct(values: Sequence[int], p: float) -> int:
    v = percentile(values, p)
    assert v is not None
    return v


@dataclass(slots=True)
class _LiveOffer:
    keys: tuple[_Key, _Key]
    price: int
    gpus: int
    leased: int  # GPUs held by open leases of this offer


@dataclass(slots=True)
class _Lease:
    keys: tuple[_Key, _Key] | None  # None: the offer was unknown when the lease opened
    offer_id: bytes
    gpus: int
    cumulative_gpu_s: int
    open: bool
    closed_at: int


def _model_name(offer: Offer) -> str:
    try:
        return gpu_model_name(offer.gpu_model)
    except ValueError:
        return offer.gpu_model.hex()  # never a canonical model: the book does not hold such offers


class MarketData:
    """Incremental market figures from the offer book's changes and the escrow's lease logs.

    ``retention_s`` is how long settlements, opens and closed leases are kept: at least the longest window asked
    for (older data is dropped lazily, so a query for a longer window silently sees less).
    """

    def __init__(self, retention_s: int = max(DEFAULT_WINDOWS)) -> None:
        self.retention_s = retention_s
        self._aggs: dict[_Key, _Agg] = {}
        self._offers: dict[bytes, _LiveOffer] = {}
        self._leases: dict[int, _Lease] = {}
        self._leased_by_offer: dict[bytes, int] = {}  # GPUs of open, keyed leases per offer id
        self._closed: deque[tuple[int, int]] = deque()  # (closed_at, lease id), in arrival order
        self._latest = 0

    # -- changes -----------------------------------------------------------------------------------------------

    def apply(self, change: MarketChange) -> None:
        if isinstance(change, OfferLive):
            self._offer_live(change)
        elif isinstance(change, OfferGone):
            self._offer_gone(change.offer_id)
        elif isinstance(change, LeaseOpenedLog):
            self._lease_opened(change)
        elif isinstance(change, LeaseSettledLog):
            self._lease_settled(change)
        else:
            self._lease_closed(change)

    def apply_all(self, changes: Iterable[MarketChange]) -> None:
        for change in changes:
            self.apply(change)

    def _agg(self, key: _Key) -> _Agg:
        agg = self._aggs.get(key)
        if agg is None:
            agg = self._aggs[key] = _Agg()
        return agg

    def _offer_live(self, c: OfferLive) -> None:
        if c.offer_id in self._offers:
            return
        model = _model_name(c.offer)
        keys = ((model, c.region if c.region is not None else NO_REGION), (model, ALL_REGIONS))
        o = c.offer
        live = _LiveOffer(keys, o.price_per_gpu_second, o.gpu_count, 0)
        # Open leases of this offer counted while it was live before (an offer id fixes its model and region).
        live.leased = self._leased_by_offer.get(c.offer_id, 0)
        self._offers[c.offer_id] = live
        for key in keys:
            agg = self._agg(key)
            insort(agg.prices, live.price)
            agg.gpus_offered += live.gpus
            agg.gpus_leased_live += live.leased

    def _offer_gone(self, offer_id: bytes) -> None:
        live = self._offers.pop(offer_id, None)
        if live is None:
            return
        for key in live.keys:
            agg = self._aggs[key]
            prices = agg.prices
            del prices[bisect_left(prices, live.price)]
            agg.gpus_offered -= live.gpus
            agg.gpus_leased_live -= live.leased
            self._drop_if_empty(key, agg)

    def _drop_if_empty(self, key: _Key, agg: _Agg) -> None:
        if agg.is_empty():
            del self._aggs[key]

    def _lease_opened(self, c: LeaseOpenedLog) -> None:
        if c.lease_id in self._leases:
            return
        self._latest = max(self._latest, c.at)
        live = self._offers.get(c.offer_hash)
        keys = live.keys if live is not None else None
        self._leases[c.lease_id] = _Lease(keys, c.offer_hash, c.gpus, 0, True, 0)
        if keys is None:
            return
        assert live is not None
        live.leased += c.gpus
        self._leased_by_offer[c.offer_hash] = self._leased_by_offer.get(c.offer_hash, 0) + c.gpus
        for key in keys:
            agg = self._agg(key)
            agg.gpus_leased += c.gpus
            agg.gpus_leased_live += c.gpus
            agg.leases_open += 1
            agg.open_times.append(max(c.at, agg.open_times[-1]) if agg.open_times else c.at)
            agg.prune(self._latest - self.retention_s)

    def _lease_settled(self, c: LeaseSettledLog) -> None:
        lease = self._leases.get(c.lease_id)
        self._latest = max(self._latest, c.at)
        if lease is None:
            return
        delta = c.cumulative_gpu_seconds - lease.cumulative_gpu_s
        if delta < 0:
            return  # an older checkpoint than one already counted: nothing new
        lease.cumulative_gpu_s = c.cumulative_gpu_seconds
        if lease.keys is None:
            return
        for key in lease.keys:
            agg = self._agg(key)
            t = max(c.at, agg.settle_times[-1]) if agg.settle_times else c.at
            agg.settle_times.append(t)
            agg.settle_gpu_s.append(agg.settle_gpu_s[-1] + delta)
            agg.settle_amount.append(agg.settle_amount[-1] + c.amount)
            agg.prune(self._latest - self.retention_s)

    def _lease_closed(self, c: LeaseClosedLog) -> None:
        lease = self._leases.get(c.lease_id)
        self._latest = max(self._latest, c.at)
        if lease is None or not lease.open:
            return
        lease.open = False
        lease.closed_at = c.at
        self._closed.append((c.at, c.lease_id))
        if lease.keys is not None:
            left = self._leased_by_offer[lease.offer_id] - lease.gpus
            if left:
                self._leased_by_offer[lease.offer_id] = left
            else:
                del self._leased_by_offer[lease.offer_id]
            live = self._offers.get(lease.offer_id)
            on_live = live is not None
            if live is not None:
                live.leased -= lease.gpus
            for key in lease.keys:
                agg = self._aggs[key]
                agg.gpus_leased -= lease.gpus
                agg.leases_open -= 1
                if on_live:
                    agg.gpus_leased_live -= lease.gpus
        # Closed leases are kept a while for late settlements of their last checkpoints.
        horizon = self._latest - self.retention_s
        while self._closed and self._closed[0][0] < horizon:
            _, lease_id = self._closed.popleft()
            self._leases.pop(lease_id, None)

    # -- queries -----------------------------------------------------------------------------------------------

    def summary(
        self, gpu_model: str, region: str = ALL_REGIONS, *, now: int, windows: Sequence[int] = DEFAULT_WINDOWS
    ) -> MarketSummary | None:
        """The figures of one key (``region=ALL_REGIONS``: the model over every region), or None if unknown."""
        key = (gpu_model, region)
        agg = self._aggs.get(key)
        return None if agg is None else agg.summary(key, now, windows)

    def query(
        self,
        *,
        now: int,
        gpu_model: str | None = None,
        region: str | None = None,
        windows: Sequence[int] = DEFAULT_WINDOWS,
    ) -> list[MarketSummary]:
        """Summaries matching the filters, sorted by (model, region).

        Without ``region``: one summary per model over all regions. With ``region``: that region's summaries.
        """
        want = ALL_REGIONS if region is None else region
        keys = sorted(k for k in self._aggs if k[1] == want and (gpu_model is None or k[0] == gpu_model))
        return [self._aggs[k].summary(k, now, windows) for k in keys]

    def prices(self, gpu_model: str, region: str = ALL_REGIONS) -> Sequence[int]:
        """Live offer prices per GPU-second, ascending (a read-only view for pricing policies; do not keep it)."""
        agg = self._aggs.get((gpu_model, region))
        return () if agg is None else agg.prices

    def gpus_taken(self, offer_id: bytes) -> int:
        """GPUs that open leases hold on a live offer (0 for an unknown offer)."""
        live = self._offers.get(offer_id)
        return 0 if live is None else live.leased

    def offers(self) -> int:
        return len(self._offers)

    def leases_known(self) -> int:
        return len(self._leases)
