"""In-memory offer book: the live, validated offers a node knows, indexed for fast consumer queries.

Pure (no I/O, no clock: every time-dependent call takes ``now``). Not thread-safe: one owner (the core) calls it.

Indexes:

- offers are bucketed by ``(gpuModel, region, power-of-two class of gpuCount)`` (region ``None`` for offers
  without a spec); each bucket keeps rows sorted by ``(pricePerGpuSecond, offerId)`` that carry the
  filtered fields, so a query walks each candidate bucket in price order (bisect to the price cap) and stops as
  soon as the bucket cannot improve the best ``limit`` results found so far;
- each bucket keeps conservative upper bounds (max gpuCount, vramMiB, maxDuration; min minDuration) so buckets that
  cannot satisfy a query are skipped without a scan;
- a min-heap of ``(expiresAt, offerId)`` for eviction, and per-provider and per-slot maps for superseding,
  cancellation and stake changes.

Results are sorted by price ascending, ties broken by offer id (bytes order), so every node orders the same way.
The superseding rule (one offer per ``(provider, gpuModel)`` slot, highest nonce wins, lower id at equal nonce) is
documented in ``node.protocol.offer_validation``; the book enforces it again on insert, so it stays consistent even
when validation and insertion are separated in time.
"""

from __future__ import annotations

import enum
import heapq
from bisect import bisect_left, bisect_right, insort
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Final

from node.crypto.eip712 import Domain
from node.protocol.offers import Offer, SignedOffer, StakeRule, encode_offer_message
from node.types import OfferHash

_MAX_ID: Final = b"\xff" * 33  # sorts after every 32-byte offer id


class InsertResult(enum.Enum):
    ADDED = "added"
    REPLACED = "replaced"  # it superseded an older offer in the same slot
    DUPLICATE = "duplicate"  # same offer id already live
    SUPERSEDED = "superseded"  # the slot already holds a newer offer
    FULL = "full"  # the book is at capacity


@dataclass(frozen=True, slots=True)
class BookEntry:
    offer_id: OfferHash
    signed: SignedOffer
    blob: bytes  # the envelope bytes (what is synced to peers and stored)

    @property
    def offer(self) -> Offer:
        return self.signed.offer

    @property
    def region(self) -> str | None:
        spec = self.signed.spec
        return None if spec is None else spec.region


@dataclass(frozen=True, slots=True)
class OfferQuery:
    """Consumer filters. ``duration``: the offer's ``[minDuration, maxDuration]`` must contain it."""

    gpu_model: bytes | None = None
    min_gpu_count: int = 0
    min_vram_mib: int = 0
    max_price: int | None = None
    region: str | None = None
    duration: int | None = None
    limit: int = 50


# A bucket row: (price, offer id, gpuCount, vramMiB, minDuration, maxDuration, expiresAt, entry). Rows sort by
# (price, id) alone (ids are unique), and carry the filtered fields so a scan needs no further lookups.
_Row = tuple[int, bytes, int, int, int, int, int, BookEntry]


def _count_class(gpu_count: int) -> int:
    """Power-of-two class of a GPU count (1, 2-3, 4-7, 8-15, ...): part of the bucket key."""
    return gpu_count.bit_length()


class _Bucket:
    __slots__ = ("max_count", "max_max_duration", "max_vram", "min_min_duration", "rows")

    def __init__(self) -> None:
        self.rows: list[_Row] = []
        self.max_count = 0
        self.max_vram = 0
        self.max_max_duration = 0
        self.min_min_duration = 2**64

    def add(self, entry: BookEntry) -> None:
        o = entry.signed.offer
        insort(
            self.rows,
            (
                o.price_per_gpu_second,
                entry.offer_id,
                o.gpu_count,
                o.vram_mib,
                o.min_duration,
                o.max_duration,
                o.expires_at,
                entry,
            ),
        )
        # Bounds only widen on insert; they stay valid (if loose) after removals and reset when the bucket empties.
        self.max_count = max(self.max_count, o.gpu_count)
        self.max_vram = max(self.max_vram, o.vram_mib)
        self.max_max_duration = max(self.max_max_duration, o.max_duration)
        self.min_min_duration = min(self.min_min_duration, o.min_duration)

    def remove(self, price: int, oid: bytes) -> None:
        rows = self.rows
        i = bisect_left(rows, (price, oid))
        if i < len(rows) and rows[i][1] == oid:
            del rows[i]

    def may_match(self, q: OfferQuery) -> bool:
        if self.max_count < q.min_gpu_count or self.max_vram < q.min_vram_mib:
            return False
        d = q.duration
        return d is None or (self.min_min_duration <= d <= self.max_max_duration)


_BucketKey = tuple[bytes, str | None, int]  # (gpuModel, region, count class)


def _matches(rows: list[_Row], hi: int, min_count: int, min_vram: int, d_lo: int, d_hi: int, t: int) -> Iterator[_Row]:
    """Rows ``rows[:hi]`` that pass the query's per-offer filters, in price order.

    ``d_lo``/``d_hi`` encode the duration filter (``minDuration <= d_lo`` and ``d_hi <= maxDuration``; ``(2**64, 0)``
    when there is none); ``t``: rows must expire after it (-1: no time filter).
    """
    for row in islice(rows, hi):
        _, _, count, vram, dmin, dmax, expires, _ = row
        if count >= min_count and vram >= min_vram and dmin <= d_lo and d_hi <= dmax and expires > t:
            yield row


class OfferBook:
    """Live offers by id, with the indexes described in the module docstring.

    ``domain`` is used only to build the envelope when ``insert`` is not given the original bytes. ``stake_rule``
    decides which offers a provider's free stake still backs (``on_stake_change``). ``capacity`` bounds memory.
    """

    def __init__(self, domain: Domain, stake_rule: StakeRule | None = None, capacity: int = 500_000) -> None:
        self.domain = domain
        self.stake_rule = stake_rule or StakeRule()
        self.capacity = capacity
        self.counters: Counter[str] = Counter()
        self._entries: dict[bytes, BookEntry] = {}
        self._slots: dict[tuple[bytes, bytes], bytes] = {}
        self._by_provider: dict[bytes, set[bytes]] = {}
        self._buckets: dict[_BucketKey, _Bucket] = {}
        self._buckets_of_model: dict[bytes, set[_BucketKey]] = {}
        self._buckets_of_region: dict[str | None, set[_BucketKey]] = {}
        self._expiry: list[tuple[int, bytes]] = []

    # -- lookups (also the ``OfferLookup`` port of the validator) ---------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def contains(self, offer_id: bytes) -> bool:
        return offer_id in self._entries

    __contains__ = contains

    def get(self, offer_id: bytes) -> BookEntry | None:
        return self._entries.get(offer_id)

    def slot(self, provider: bytes, gpu_model: bytes) -> tuple[int, bytes] | None:
        oid = self._slots.get((provider, gpu_model))
        if oid is None:
            return None
        return self._entries[oid].offer.nonce, oid

    def entries(self) -> Iterator[BookEntry]:
        return iter(self._entries.values())

    def providers(self) -> int:
        return len(self._by_provider)

    # -- mutation -----------------------------------------------------------------------------------------------------

    def insert(self, so: SignedOffer, blob: bytes | None = None, offer_id: bytes | None = None) -> InsertResult:
        """Add a validated offer. ``blob``: its envelope bytes (encoded under ``domain`` when omitted);
        ``offer_id``: its struct hash when the caller already has it."""
        return self.insert_replacing(so, blob, offer_id)[0]

    def insert_replacing(
        self, so: SignedOffer, blob: bytes | None = None, offer_id: bytes | None = None
    ) -> tuple[InsertResult, OfferHash | None]:
        """``insert`` that also returns the id of the offer it superseded (REPLACED), so a store can drop it."""
        o = so.offer
        oid = OfferHash(offer_id if offer_id is not None else o.struct_hash())
        if oid in self._entries:
            self.counters["duplicate"] += 1
            return InsertResult.DUPLICATE, None
        slot_key = (o.provider, o.gpu_model)
        held_id = self._slots.get(slot_key)
        result = InsertResult.ADDED
        if held_id is not None:
            held = self._entries[held_id].offer
            if held.nonce > o.nonce or (held.nonce == o.nonce and held_id < oid):
                self.counters["superseded_rejected"] += 1
                return InsertResult.SUPERSEDED, None
            self._remove(held_id)
            self.counters["replaced"] += 1
            result = InsertResult.REPLACED
        elif len(self._entries) >= self.capacity:
            self.counters["full"] += 1
            return InsertResult.FULL, None
        entry = BookEntry(oid, so, blob if blob is not None else encode_offer_message(self.domain, so))
        self._entries[oid] = entry
        self._slots[slot_key] = oid
        self._by_provider.setdefault(o.provider, set()).add(oid)
        region = entry.region
        bkey = (o.gpu_model, region, _count_class(o.gpu_count))
        bucket = self._buckets.get(bkey)
        if bucket is None:
            bucket = self._buckets[bkey] = _Bucket()
            self._buckets_of_model.setdefault(o.gpu_model, set()).add(bkey)
            self._buckets_of_region.setdefault(region, set()).add(bkey)
        bucket.add(entry)
        heapq.heappush(self._expiry, (o.expires_at, oid))
        self.counters["inserted"] += 1
        return result, (OfferHash(held_id) if held_id is not None else None)

    def remove(self, offer_id: bytes) -> bool:
        if offer_id not in self._entries:
            return False
        self._remove(offer_id)
        self.counters["removed"] += 1
        return True

    def _remove(self, oid: bytes) -> BookEntry:
        entry = self._entries.pop(oid)
        o = entry.offer
        slot_key = (o.provider, o.gpu_model)
        if self._slots.get(slot_key) == oid:
            del self._slots[slot_key]
        ids = self._by_provider[o.provider]
        ids.discard(oid)
        if not ids:
            del self._by_provider[o.provider]
        region = entry.region
        bkey = (o.gpu_model, region, _count_class(o.gpu_count))
        bucket = self._buckets[bkey]
        bucket.remove(o.price_per_gpu_second, oid)
        if not bucket.rows:
            del self._buckets[bkey]
            for index, key in ((self._buckets_of_model, o.gpu_model), (self._buckets_of_region, region)):
                keys = index[key]  # type: ignore[index]
                keys.discard(bkey)
                if not keys:
                    del index[key]  # type: ignore[attr-defined]
        # The expiry heap entry is left behind and skipped lazily; compact when it is mostly stale.
        if len(self._expiry) > 64 and len(self._expiry) > 2 * len(self._entries):
            self._expiry = [(e, i) for e, i in self._expiry if i in self._entries]
            heapq.heapify(self._expiry)
        return entry

    def evict_expired(self, now: int) -> list[OfferHash]:
        """Remove offers with ``expiresAt <= now`` (a lease can no longer open on them)."""
        heap, entries, out = self._expiry, self._entries, []
        while heap and heap[0][0] <= now:
            _, oid = heapq.heappop(heap)
            entry = entries.get(oid)
            if entry is not None and entry.offer.expires_at <= now:
                self._remove(oid)
                out.append(OfferHash(oid))
        self.counters["evicted_expired"] += len(out)
        return out

    def cancel_below(self, provider: bytes, nonce: int) -> list[OfferHash]:
        """Remove the provider's offers with ``nonce < nonce`` (on-chain ``cancelOffersBelow`` or a withdrawal)."""
        out = self._remove_where(provider, lambda o: o.nonce < nonce)
        self.counters["cancelled"] += len(out)
        return out

    def on_stake_change(self, provider: bytes, free_stake: int) -> list[OfferHash]:
        """Remove the provider's offers that ``free_stake`` no longer backs under ``stake_rule``."""
        rule = self.stake_rule
        out = self._remove_where(provider, lambda o: rule.required(o) > free_stake)
        self.counters["stake_dropped"] += len(out)
        return out

    def remove_provider(self, provider: bytes) -> list[OfferHash]:
        """Remove every offer of a provider (deregistered, slashed to zero, ...)."""
        out = self._remove_where(provider, lambda o: True)
        self.counters["provider_removed"] += len(out)
        return out

    def _remove_where(self, provider: bytes, pred) -> list[OfferHash]:  # type: ignore[no-untyped-def]
        ids = self._by_provider.get(provider)
        if not ids:
            return []
        doomed = sorted(oid for oid in ids if pred(self._entries[oid].offer))
        for oid in doomed:
            self._remove(oid)
        return [OfferHash(oid) for oid in doomed]

    # -- queries ------------------------------------------------------------------------------------------------------

    def query(self, q: OfferQuery, now: int | None = None) -> list[BookEntry]:
        """Offers matching every filter of ``q``, cheapest first, at most ``q.limit``.

        With ``now``, offers that expired but were not evicted yet are skipped.
        """
        if q.limit <= 0:
            return []
        if q.gpu_model is not None:
            bkeys: Iterable[_BucketKey] = self._buckets_of_model.get(q.gpu_model, ())
            if q.region is not None:
                bkeys = [k for k in bkeys if k[1] == q.region]
        elif q.region is not None:
            bkeys = self._buckets_of_region.get(q.region, ())
        else:
            bkeys = self._buckets.keys()
        max_price = q.max_price
        spans: list[tuple[list[_Row], int]] = []
        for bkey in bkeys:
            bucket = self._buckets[bkey]
            if not bucket.may_match(q):
                continue
            rows = bucket.rows
            hi = len(rows) if max_price is None else bisect_right(rows, (max_price, _MAX_ID))
            if hi:
                spans.append((rows, hi))
        if not spans:
            return []
        # Each bucket is filtered by its own tight loop (a generator yielding matches only, in price order); the
        # buckets' match streams are merged by price, so heap work is paid per match, not per scanned row, and the
        # scan ends once `limit` matches are out: every row scanned is cheaper than the last result (plus at most one
        # look-ahead match per bucket).
        dur = q.duration
        d_lo, d_hi = (2**64, 0) if dur is None else (dur, dur)
        t = -1 if now is None else now
        streams = [_matches(rows, hi, q.min_gpu_count, q.min_vram_mib, d_lo, d_hi, t) for rows, hi in spans]
        merged: Iterable[_Row] = streams[0] if len(streams) == 1 else heapq.merge(*streams)
        return [row[7] for row in islice(merged, q.limit)]

    def live_offers(self, now: int | None = None) -> list[bytes]:
        """Envelope bytes of every live offer (for the sync protocol), in offer-id order."""
        return [
            self._entries[oid].blob
            for oid in sorted(self._entries)
            if now is None or self._entries[oid].offer.expires_at > now
        ]

    def stats(self) -> dict[str, int]:
        """Size counters (for metrics and the API)."""
        return {
            "offers": len(self._entries),
            "providers": len(self._by_provider),
            "buckets": len(self._buckets),
            **self.counters,
        }
