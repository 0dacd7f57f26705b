"""Offer book: queries, superseding, eviction, sort order (node.protocol.offerbook)."""

from __future__ import annotations

import pytest
from coincurve import PrivateKey
from eth_utils import keccak

from node.crypto.eip712 import Domain
from node.protocol import offers as O
from node.protocol.offerbook import InsertResult, OfferBook, OfferQuery
from node.protocol.offers import Offer, OfferSpec, SignedOffer, StakeRule

NOW = 1_700_000_000
DOMAIN = Domain(31337, "0x" + "ab" * 20)
H100 = O.gpu_model_from_name("H100-80GB")
A100 = O.gpu_model_from_name("A100-40GB")


def provider(i: int) -> bytes:
    return keccak(PrivateKey((i + 1).to_bytes(32, "big")).public_key.format(compressed=False)[1:])[12:]


def make(
    i: int = 0,
    *,
    nonce: int = 1,
    model: bytes = H100,
    count: int = 8,
    vram: int = 81920,
    price: int = 100,
    dmin: int = 60,
    dmax: int = 86_400,
    expires: int = NOW + 600,
    region: str | None = "eu-west",
) -> SignedOffer:
    """Unsigned offers are fine here: the book trusts its caller (the validator) for signatures."""
    spec = None if region is None else OfferSpec(region, 64, 512, "550", "12.4", "nvlink")
    offer = Offer(provider(i), nonce, model, count, vram, price, dmin, dmax, expires, O.spec_hash(spec))
    return SignedOffer(offer, b"\x01" * 65, spec)


def oid(so: SignedOffer) -> bytes:
    return so.offer.struct_hash()


def ids(entries) -> list[bytes]:
    return [e.offer_id for e in entries]


def test_insert_query_sorted_by_price_then_id() -> None:
    book = OfferBook(DOMAIN)
    offers = [make(i, price=p) for i, p in enumerate([300, 100, 200, 100, 100])]
    for so in offers:
        assert book.insert(so) is InsertResult.ADDED
    got = book.query(OfferQuery())
    expected = sorted(offers, key=lambda s: (s.offer.price_per_gpu_second, oid(s)))
    assert ids(got) == [oid(s) for s in expected]
    assert len(book) == 5 and book.stats()["offers"] == 5 and book.providers() == 5


def test_filters() -> None:
    book = OfferBook(DOMAIN)
    a = make(0, model=A100, vram=40960, price=50, count=4)
    b = make(1, price=100, count=2, region="us-east")
    c = make(2, price=150, count=8, dmin=3600, dmax=7200)
    d = make(3, price=90, region=None)
    for so in (a, b, c, d):
        book.insert(so)
    q = OfferQuery
    assert ids(book.query(q(gpu_model=H100))) == [oid(d), oid(b), oid(c)]
    assert ids(book.query(q(gpu_model=A100))) == [oid(a)]
    assert ids(book.query(q(gpu_model=O.gpu_model_from_name("B200")))) == []
    assert ids(book.query(q(min_gpu_count=4))) == [oid(a), oid(d), oid(c)]
    assert ids(book.query(q(min_vram_mib=80000))) == [oid(d), oid(b), oid(c)]
    assert ids(book.query(q(max_price=100))) == [oid(a), oid(d), oid(b)]
    assert ids(book.query(q(max_price=49))) == []
    assert ids(book.query(q(region="us-east"))) == [oid(b)]
    assert ids(book.query(q(region="us-east", gpu_model=A100))) == []
    assert ids(book.query(q(region="eu-west", gpu_model=H100))) == [oid(c)]
    assert ids(book.query(q(duration=60))) == [oid(a), oid(d), oid(b)]
    assert ids(book.query(q(duration=3600))) == [oid(a), oid(d), oid(b), oid(c)]
    assert ids(book.query(q(duration=7201))) == [oid(a), oid(d), oid(b)]
    assert ids(book.query(q(limit=2))) == [oid(a), oid(d)]
    assert book.query(q(limit=0)) == []
    assert ids(book.query(q(min_gpu_count=9))) == []


def test_superseding_by_slot() -> None:
    book = OfferBook(DOMAIN)
    old = make(0, nonce=1, price=100)
    new = make(0, nonce=2, price=120)
    other_model = make(0, nonce=1, model=A100)
    assert book.insert(old) is InsertResult.ADDED
    assert book.insert(other_model) is InsertResult.ADDED
    assert book.insert(old) is InsertResult.DUPLICATE
    assert book.insert_replacing(new) == (InsertResult.REPLACED, oid(old))
    assert not book.contains(oid(old)) and book.contains(oid(new)) and oid(other_model) in book
    assert book.insert(old) is InsertResult.SUPERSEDED
    assert book.insert_replacing(old) == (InsertResult.SUPERSEDED, None)
    assert book.insert_replacing(make(5, model=A100)) == (InsertResult.ADDED, None)
    assert book.slot(provider(0), H100) == (2, oid(new))
    assert book.slot(provider(1), H100) is None
    assert ids(book.query(OfferQuery(gpu_model=H100))) == [oid(new)]
    assert book.counters["replaced"] == 1


def test_same_nonce_lower_id_wins_whatever_the_order() -> None:
    x, y = make(0, nonce=5, price=100), make(0, nonce=5, price=101)
    low, high = sorted([x, y], key=oid)
    for first, second in ((low, high), (high, low)):
        book = OfferBook(DOMAIN)
        book.insert(first)
        book.insert(second)
        assert ids(book.entries()) == [oid(low)]


def test_evict_expired() -> None:
    book = OfferBook(DOMAIN)
    a, b, c = make(0, expires=NOW + 10), make(1, expires=NOW + 20), make(2, expires=NOW + 30)
    for so in (a, b, c):
        book.insert(so)
    assert book.evict_expired(NOW + 9) == []
    assert book.evict_expired(NOW + 10) == [oid(a)]
    assert ids(book.query(OfferQuery(), now=NOW + 20)) == [oid(c)]  # b expired, not evicted yet
    assert sorted(book.evict_expired(NOW + 100)) == sorted([oid(b), oid(c)])
    assert len(book) == 0 and book.stats()["buckets"] == 0
    assert book.counters["evicted_expired"] == 3


def test_evict_skips_stale_heap_entries_after_replace() -> None:
    book = OfferBook(DOMAIN)
    book.insert(make(0, nonce=1, expires=NOW + 10))
    newer = make(0, nonce=2, expires=NOW + 100)
    book.insert(newer)
    assert book.evict_expired(NOW + 50) == []
    assert ids(book.entries()) == [oid(newer)]


def test_cancel_below() -> None:
    book = OfferBook(DOMAIN)
    a = make(0, nonce=1)
    b = make(0, nonce=5, model=A100)
    c = make(1, nonce=1)
    for so in (a, b, c):
        book.insert(so)
    assert book.cancel_below(provider(0), 5) == [oid(a)]
    assert book.cancel_below(provider(0), 5) == []
    assert book.cancel_below(provider(9), 100) == []
    assert set(ids(book.entries())) == {oid(b), oid(c)}


def test_on_stake_change_and_remove_provider() -> None:
    rule = StakeRule(min_free_stake=10, collateral_bps=10_000)
    book = OfferBook(DOMAIN, stake_rule=rule)
    small = make(0, model=A100, count=1, price=1, dmin=10)  # needs 10 + 10
    big = make(0, count=8, price=1, dmin=10)  # needs 10 + 80
    book.insert(small)
    book.insert(big)
    assert rule.required(small.offer) == 20 and rule.required(big.offer) == 90
    assert book.on_stake_change(provider(0), 90) == []
    assert book.on_stake_change(provider(0), 89) == [oid(big)]
    assert book.on_stake_change(provider(0), 19) == [oid(small)]
    book.insert(make(1))
    assert len(book.remove_provider(provider(1))) == 1
    assert len(book) == 0


def test_remove_and_live_offers_blobs() -> None:
    book = OfferBook(DOMAIN)
    a, b = make(0, expires=NOW + 10), make(1, expires=NOW + 100)
    book.insert(a)
    book.insert(b, blob=b"given-bytes")
    blobs = book.live_offers()
    assert sorted(blobs) == sorted([O.encode_offer_message(DOMAIN, a), b"given-bytes"])
    assert book.live_offers(now=NOW + 10) == [b"given-bytes"]
    assert book.get(oid(a)).blob == O.encode_offer_message(DOMAIN, a)  # type: ignore[union-attr]
    assert book.remove(oid(a)) and not book.remove(oid(a))
    assert book.get(oid(a)) is None


def test_capacity() -> None:
    book = OfferBook(DOMAIN, capacity=2)
    assert book.insert(make(0)) is InsertResult.ADDED
    assert book.insert(make(1)) is InsertResult.ADDED
    assert book.insert(make(2)) is InsertResult.FULL
    assert book.insert(make(0, nonce=2)) is InsertResult.REPLACED  # replacing never needs room


def test_expiry_heap_compacts() -> None:
    book = OfferBook(DOMAIN)
    for n in range(1, 300):
        book.insert(make(0, nonce=n))
    assert len(book) == 1
    assert len(book._expiry) <= 2 * 64 + 2


def test_insert_uses_given_offer_id() -> None:
    book = OfferBook(DOMAIN)
    so = make(0)
    book.insert(so, offer_id=oid(so))
    assert book.contains(oid(so))


@pytest.mark.parametrize("n", [1, 50])
def test_bucket_bounds_prune_but_stay_correct(n: int) -> None:
    book = OfferBook(DOMAIN)
    for i in range(n):
        book.insert(make(i, count=1 + i % 4, price=1000 - i))
    got = book.query(OfferQuery(min_gpu_count=4, limit=1000))
    assert all(e.offer.gpu_count >= 4 for e in got)
    assert len(got) == sum(1 for i in range(n) if 1 + i % 4 >= 4)
    assert book.query(OfferQuery(min_gpu_count=5)) == []


# --- the published snapshot (what the libp2p thread reads) -------------------------------------------------------


def test_every_mutation_publishes_a_new_immutable_snapshot() -> None:
    book = OfferBook(DOMAIN)
    empty = book.snapshot()
    assert len(empty) == 0 and empty.slot(provider(0), H100) is None and empty.live_offers() == []
    old, new, other = make(0, nonce=1), make(0, nonce=2, price=50), make(1, expires=NOW + 10)
    book.insert(old, b"old")
    first = book.snapshot()
    assert first is not empty and first.slot(provider(0), H100) == (1, oid(old))
    book.insert(new, b"new")
    book.insert(other, b"other")
    second = book.snapshot()
    assert second.slot(provider(0), H100) == (2, oid(new)) and len(second) == 2
    assert sorted(second.live_offers()) == [b"new", b"other"]
    assert second.live_offers(now=NOW + 10) == [b"new"]
    # published snapshots never change afterwards
    assert first.slot(provider(0), H100) == (1, oid(old)) and first.live_offers() == [b"old"] and len(first) == 1
    assert len(empty) == 0 and empty.live_offers() == []
    with pytest.raises(TypeError):
        second.shards[provider(0)[0]][(provider(0), A100)] = second.shards[0].get((b"", b""))  # type: ignore[index]
    # each remaining kind of mutation publishes too
    for mutate in (
        lambda: book.evict_expired(NOW + 10),
        lambda: book.cancel_below(provider(0), 3),
    ):
        before = book.snapshot()
        assert mutate()
        assert book.snapshot() is not before
    assert len(book.snapshot()) == 0 and book.snapshot().slot(provider(0), H100) is None
    # a mutation that changes nothing publishes nothing
    quiet = book.snapshot()
    assert book.cancel_below(provider(0), 3) == [] and book.evict_expired(NOW) == []
    assert book.insert(make(2), b"x") is InsertResult.ADDED and book.insert(make(2), b"x") is InsertResult.DUPLICATE
    assert book.snapshot() is not quiet
    kept = book.snapshot()
    book.insert(make(2), b"x")
    assert book.snapshot() is kept


def test_batch_publishes_once_at_the_end() -> None:
    book = OfferBook(DOMAIN)
    offers = [make(i) for i in range(10)]
    with book.batch():
        for so in offers:
            book.insert(so)
        with book.batch():
            book.remove(oid(offers[0]))
        assert len(book.snapshot()) == 0  # nothing published mid-batch
    snap = book.snapshot()
    assert len(snap) == 9 and snap.slot(provider(0), H100) is None
    assert snap.slot(provider(9), H100) == (1, oid(offers[9]))
    assert book.published.slot(provider(5), H100) == (1, oid(offers[5]))
    assert book.published.live_offers() == book.live_offers()


def test_snapshot_agrees_with_the_book_after_random_mutations() -> None:
    import random

    rng = random.Random(5)
    book = OfferBook(DOMAIN, StakeRule(min_free_stake=10))
    providers = [provider(j) for j in range(40)]
    for step in range(600):
        i, model = rng.randrange(40), rng.choice((H100, A100))
        action = rng.random()
        if action < 0.6:
            book.insert(make(i, nonce=rng.randrange(1, 6), model=model, price=rng.randrange(1, 500),
                             expires=NOW + rng.randrange(1, 900)), f"blob{step}".encode())
        elif action < 0.7:
            book.cancel_below(provider(i), rng.randrange(1, 6))
        elif action < 0.8:
            book.on_stake_change(provider(i), rng.choice((0, 100)))
        elif action < 0.9:
            book.evict_expired(NOW + rng.randrange(0, 900))
        else:
            book.remove_provider(provider(i))
        snap = book.snapshot()
        assert len(snap) == len(book)
        for p in providers:
            for m in (H100, A100):
                assert snap.slot(p, m) == book.slot(p, m)
    assert book.snapshot().live_offers() == book.live_offers()


def test_validation_against_snapshots_never_raises_while_the_owner_mutates() -> None:
    """A reader thread (the libp2p side) validates gossip and pages the live offers while this thread (the asyncio
    side) mutates the book as fast as it can: every read sees one consistent snapshot and nothing raises."""
    import random
    import sys
    import threading

    from node.protocol.offer_validation import OfferRules, ValidationContext, validate_gossip_message

    class Chain:
        def is_registered(self, provider: bytes) -> bool:
            return True

        def free_stake(self, provider: bytes) -> int:
            return 10**30

        def min_nonce(self, provider: bytes) -> int:
            return 0

    keys = [(i + 1).to_bytes(32, "big") for i in range(12)]
    signed: list[tuple[SignedOffer, bytes]] = []
    for i, key in enumerate(keys):
        for model in (H100, A100):
            for nonce in (1, 2, 3):
                spec = OfferSpec("eu-west", 64, 512, "550", "12.4", "nvlink")
                offer = Offer(provider(i), nonce, model, 8, 81920, 100 + nonce, 60, 86_400, NOW + 60 * nonce,
                              O.spec_hash(spec))
                so = O.sign_offer(offer, spec, key, DOMAIN)
                signed.append((so, O.encode_offer_message(DOMAIN, so)))
    book = OfferBook(DOMAIN, StakeRule(min_free_stake=10))
    ctx = ValidationContext(DOMAIN, Chain(), Chain(), book.published, OfferRules(rate_burst=1e12))
    errors: list[BaseException] = []
    reasons: set[str] = set()
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        try:
            while not stop.is_set():
                for _, blob in signed:
                    v, _ = validate_gossip_message(blob, ctx, NOW)
                    reasons.add(v.reason)
                    snap = book.published.current
                    assert len(snap.live_offers()) == len(snap)
                    reads += 1
        except BaseException as exc:
            errors.append(exc)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        rng = random.Random(1)
        mutations = 0
        while (reads < 400 or mutations < 3000) and not errors and mutations < 200_000:
            so, blob = rng.choice(signed)
            r = rng.random()
            if r < 0.6:
                book.insert(so, blob)
            elif r < 0.7:
                book.cancel_below(so.offer.provider, rng.randrange(1, 4))
            elif r < 0.8:
                book.on_stake_change(so.offer.provider, rng.choice((0, 10**6)))
            elif r < 0.9:
                book.evict_expired(NOW + rng.randrange(0, 240))
            else:
                with book.batch():
                    book.remove_provider(so.offer.provider)
                    book.insert(so, blob)
            mutations += 1
    finally:
        stop.set()
        thread.join(timeout=30)
        sys.setswitchinterval(old_interval)
    assert not thread.is_alive()
    assert errors == []
    assert reads >= 400
    assert reasons <= {"ok", "duplicate", "superseded"} and "duplicate" in reasons
