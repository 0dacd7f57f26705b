"""In-memory offer book: the live, validated offers a node knows, indexed for fast consumer queries.

Pure (no I/O, no clock: every time-dependent call takes ``now``). Not thread-safe: one owner (the asyncio core)
calls it. Readers on other threads (the gossip validator and the offers-sync responder run on the libp2p thread)
never touch the book: they read ``OfferBook.published``, a reference to an immutable ``BookSnapshot`` that the
book replaces after each mutation batch (a reference swap, atomic in CPython).

Indexes:

- offers are bucketed by ``(gpuModel, region, power-of-two class of gpuCount)`` (region ``None`` for offers
  without a spec); each bucket keeps rows sorted by ``(pricePerGpuSecond, offerId)`` that carry the
  filtered fields, so a query walks each candidate bucket in price order (bisect to the price cap) and stops as
  soon as the bucket cannot improve the best ``limit`` results found so far;
- each bucket keeps conservative upper bounds (max gpuCount, vramMiB, maxDuration; min minDuration) so buckets that
  cannot satisfy a query are skipped without a scan;
- a min-heap of ``(expiresAt, offerId)`` for eviction, and per-provider and per-slot maps for superseding,
  cancellation and stake changes. The slot map is split into 256 shards by the provider address's first byte:
  publishing a snapshot copies only the shards a batch touched (each about 1/256 of the book).

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
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from types import MappingProxyType
from typing import Final, NamedTuple, TypeVar

from node.crypto.eip712 import Domain
from node.protocol.offers import Offer, SignedOffer, StakeRule, encode_offer_message
from node.types import OfferHash

_MAX_ID: Final = b"\xff" * 33  # sorts after every 32-byte offer id
_SHARDS: Final = 256


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


class SlotHolder(NamedTuple):
    """The offer holding a ``(provider, gpuModel)`` slot: what readers outside the owner thread need of it."""

    nonce: int
    offer_id: bytes
    expires_at: int
    blob: bytes


_SlotKey = tuple[bytes, bytes]  # (provider, gpuModel)
_Shard = Mapping[_SlotKey, SlotHolder]
_EMPTY_SHARD: Final[_Shard] = MappingProxyType({})


def _shard_of(provider: bytes) -> int:
    return provider[0] if provider else 0


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """An immutable view of the book at one point: the holder of every slot, sharded by provider.

    Never changes once published; a reader on any thread may keep and use it. Implements the validator's
    ``OfferLookup`` port. ``size`` is the number of live offers it holds.
    """

    shards: tuple[_Shard, ...]
    size: int = 0

    @classmethod
    def empty(cls) -> BookSnapshot:
        return cls((_EMPTY_SHARD,) * _SHARDS, 0)

    def slot(self, provider: bytes, gpu_model: bytes) -> tuple[int, bytes] | None:
        held = self.shards[_shard_of(provider)].get((provider, gpu_model))
        return None if held is None else (held.nonce, held.offer_id)

    def live_offers(self, now: int | None = None) -> list[bytes]:
        """Envelope bytes of every offer (unexpired at ``now``, if given), in offer-id order."""
        held = [h for shard in self.shards for h in shard.values() if now is None or h.expires_at > now]
        held.sort(key=lambda h: h.offer_id)
        return [h.blob for h in held]

    def __len__(self) -> int:
        return self.size


class PublishedBook:
    """The reference readers hold: ``current`` is the latest ``BookSnapshot``; only the book's owner replaces it.

    Each call reads ``current`` once, so it answers from one consistent snapshot.
    """

    __slots__ = ("current",)

    def __init__(self, snapshot: BookSnapshot | None = None) -> None:
        self.current = snapshot if snapshot is not None else BookSnapshot.empty()

    def slot(self, provider: bytes, gpu_model: bytes) -> tuple[int, bytes] | None:
        return self.current.slot(provider, gpu_model)

    def live_offers(self, now: int | None = None) -> list[bytes]:
        return self.current.live_offers(now)


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
_K = TypeVar("_K")


def _discard(index: dict[_K, set[_BucketKey]], key: _K, bkey: _BucketKey) -> None:
    """Drop ``bkey`` from ``index[key]``, and the key once its set is empty."""
    keys = index[key]
    keys.discard(bkey)
    if not keys:
        del index[key]


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

    Every public mutation republishes ``published`` when it returns; inside ``with book.batch():`` publication
    waits for the end of the outermost batch (loading thousands of offers publishes once).
    """

    def __init__(self, domain: Domain, stake_rule: StakeRule | None = None, capacity: int = 500_000) -> None:
        self.domain = domain
        self.stake_rule = stake_rule or StakeRule()
        self.capacity = capacity
        self.counters: Counter[str] = Counter()
        self._entries: dict[bytes, BookEntry] = {}
        self._slots: list[dict[_SlotKey, SlotHolder]] = [{} for _ in range(_SHARDS)]
        self._shown: list[_Shard] = [_EMPTY_SHARD] * _SHARDS  # the shards of the published snapshot
        self._dirty: set[int] = set()
        self._batch_depth = 0
        self.published = PublishedBook()
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
        """Owner-thread lookup; other threads use ``published.slot``."""
        held = self._slots[_shard_of(provider)].get((provider, gpu_model))
        return None if held is None else (held.nonce, held.offer_id)

    def entries(self) -> Iterator[BookEntry]:
        return iter(self._entries.values())

    def providers(self) -> int:
        return len(self._by_provider)

    # -- publication --------------------------------------------------------------------------------------------------

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group mutations: ``published`` is replaced once, when the outermost batch ends."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if not self._batch_depth:
                self._publish()

    def snapshot(self) -> BookSnapshot:
        """The published snapshot (current as of the last mutation outside a batch)."""
        return self.published.current

    def _mutated(self) -> None:
        if not self._batch_depth:
            self._publish()

    def _publish(self) -> None:
        if not self._dirty:
            return
        shown = self._shown
        for i in self._dirty:
            live = self._slots[i]
            shown[i] = MappingProxyType(dict(live)) if live else _EMPTY_SHARD
        self._dirty.clear()
        self.published.current = BookSnapshot(tuple(shown), len(self._entries))

    # -- mutation -----------------------------------------------------------------------------------------------------

    def insert(self, so: SignedOffer, blob: bytes | None = None, offer_id: bytes | None = None) -> InsertResult:
        """Add a validated offer. ``blob``: its envelope bytes (encoded under ``domain`` when omitted);
        ``offer_id``: its struct hash when the caller already has it."""
        return self.insert_replacing(so, blob, offer_id)[0]

    def insert_replacing(
        self, so: SignedOffer, blob: bytes | None = None, offer_id: bytes | None = None
    ) -> tuple[InsertResult, OfferHash | None]:
        """``insert`` that also returns the id of the offer it superseded (REPLACED), so a store can drop it."""
        result = self._insert(so, blob, offer_id)
        self._mutated()
        return result

    def _insert(
        self, so: SignedOffer, blob: bytes | None, offer_id: bytes | None
    ) -> tuple[InsertResult, OfferHash | None]:
        o = so.offer
        oid = OfferHash(offer_id if offer_id is not None else o.struct_hash())
        if oid in self._entries:
            self.counters["duplicate"] += 1
            return InsertResult.DUPLICATE, None
        slot_key = (o.provider, o.gpu_model)
        shard = _shard_of(o.provider)
        held = self._slots[shard].get(slot_key)
        held_id = None if held is None else held.offer_id
        result = InsertResult.ADDED
        if held is not None:
            if held.nonce > o.nonce or (held.nonce == o.nonce and held.offer_id < oid):
                self.counters["superseded_rejected"] += 1
                return InsertResult.SUPERSEDED, None
            self._remove(held.offer_id)
            self.counters["replaced"] += 1
            result = InsertResult.REPLACED
        elif len(self._entries) >= self.capacity:
            self.counters["full"] += 1
            return InsertResult.FULL, None
        entry = BookEntry(oid, so, blob if blob is not None else encode_offer_message(self.domain, so))
        self._entries[oid] = entry
        self._slots[shard][slot_key] = SlotHolder(o.nonce, oid, o.expires_at, entry.blob)
        self._dirty.add(shard)
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
        self._mutated()
        return True

    def _remove(self, oid: bytes) -> BookEntry:
        entry = self._entries.pop(oid)
        o = entry.offer
        slot_key = (o.provider, o.gpu_model)
        shard = _shard_of(o.provider)
        slots = self._slots[shard]
        held = slots.get(slot_key)
        if held is not None and held.offer_id == oid:
            del slots[slot_key]
            self._dirty.add(shard)
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
            _discard(self._buckets_of_model, o.gpu_model, bkey)
            _discard(self._buckets_of_region, region, bkey)
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
        self._mutated()
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

    def _remove_where(self, provider: bytes, pred: Callable[[Offer], bool]) -> list[OfferHash]:
        ids = self._by_provider.get(provider)
        if not ids:
            return []
        doomed = sorted(oid for oid in ids if pred(self._entries[oid].offer))
        for oid in doomed:
            self._remove(oid)
        self._mutated()
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
