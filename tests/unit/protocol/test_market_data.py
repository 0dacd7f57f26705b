"""Market data: supply, free GPUs, price distribution, settlement windows and utilisation per model and region."""

from __future__ import annotations

import random

import pytest

from node.protocol.market_data import (
    ALL_REGIONS,
    NO_REGION,
    LeaseClosedLog,
    LeaseOpenedLog,
    LeaseSettledLog,
    MarketData,
    OfferGone,
    OfferLive,
    percentile,
)
from node.protocol.offers import Offer, gpu_model_from_name

NOW = 1_700_000_000
H = 3600


def make_offer(i: int, *, model: str = "H100-80GB", gpus: int = 4, price: int = 1000) -> Offer:
    return Offer(
        provider=i.to_bytes(20, "big"),
        nonce=1,
        gpu_model=gpu_model_from_name(model),
        gpu_count=gpus,
        vram_mib=81_920,
        price_per_gpu_second=price,
        min_duration=60,
        max_duration=86_400,
        expires_at=NOW + H,
        spec_hash=b"\x00" * 32,
    )


def oid(i: int) -> bytes:
    return i.to_bytes(32, "big")


def opened(lease: int, offer: int, gpus: int, at: int, price: int = 1000) -> LeaseOpenedLog:
    return LeaseOpenedLog(lease, offer.to_bytes(20, "big"), oid(offer), gpus, price, at, at + H, at)


def test_percentile_nearest_rank() -> None:
    vals = [10, 20, 30, 40]
    assert percentile(vals, 0) == 10
    assert percentile(vals, 25) == 10
    assert percentile(vals, 50) == 20
    assert percentile(vals, 75) == 30
    assert percentile(vals, 76) == 40
    assert percentile(vals, 100) == 40
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(vals, 101)


def test_price_distribution_per_gpu_hour_and_by_region() -> None:
    md = MarketData()
    for i, (price, region) in enumerate([(100, "eu"), (200, "eu"), (300, "us"), (400, "us"), (500, None)]):
        md.apply(OfferLive(oid(i), make_offer(i, price=price, gpus=2), region))
    md.apply(OfferLive(oid(99), make_offer(99, model="L40S", price=7), "eu"))
    every = md.summary("H100-80GB", now=NOW)
    assert every is not None and every.region == ALL_REGIONS
    assert every.prices is not None
    p = every.prices
    assert (p.offers, p.min, p.p25, p.median, p.p75, p.max) == (5, 100 * H, 200 * H, 300 * H, 400 * H, 500 * H)
    assert every.gpus_offered == 10 and every.gpus_free == 10 and every.utilisation == 0.0
    eu = md.summary("H100-80GB", "eu", now=NOW)
    assert eu is not None and eu.prices is not None and (eu.prices.min, eu.prices.max) == (100 * H, 200 * H)
    none = md.summary("H100-80GB", NO_REGION, now=NOW)
    assert none is not None and none.gpus_offered == 2
    assert [s.gpu_model for s in md.query(now=NOW)] == ["H100-80GB", "L40S"]
    assert [s.region for s in md.query(now=NOW, gpu_model="H100-80GB", region="us")] == ["us"]
    assert list(md.prices("H100-80GB", "us")) == [300, 400]


def test_offer_gone_and_duplicates_keep_aggregates_exact() -> None:
    md = MarketData()
    md.apply(OfferLive(oid(1), make_offer(1, price=5), "eu"))
    md.apply(OfferLive(oid(1), make_offer(1, price=5), "eu"))  # duplicate: ignored
    md.apply(OfferLive(oid(2), make_offer(2, price=9), "eu"))
    md.apply(OfferGone(oid(1)))
    md.apply(OfferGone(oid(1)))  # unknown now: ignored
    s = md.summary("H100-80GB", "eu", now=NOW)
    assert s is not None and s.prices is not None
    assert (s.prices.offers, s.prices.min, s.gpus_offered) == (1, 9 * H, 4)
    md.apply(OfferGone(oid(2)))
    assert md.summary("H100-80GB", "eu", now=NOW) is None
    assert md.query(now=NOW) == []


def test_leases_make_gpus_leased_and_utilisation() -> None:
    md = MarketData()
    md.apply(OfferLive(oid(1), make_offer(1, gpus=4), "eu"))
    md.apply(OfferLive(oid(2), make_offer(2, gpus=4), "eu"))
    md.apply(opened(10, 1, 3, NOW - 100))
    s = md.summary("H100-80GB", now=NOW)
    assert s is not None
    assert (s.gpus_offered, s.gpus_leased, s.gpus_free, s.leases_open) == (8, 3, 5, 1)
    assert s.utilisation == pytest.approx(3 / 8)
    assert md.gpus_taken(oid(1)) == 3
    # The provider re-announces its one free GPU: the old offer goes, its lease still holds 3 GPUs.
    md.apply(OfferGone(oid(1)))
    md.apply(OfferLive(oid(3), make_offer(1, gpus=1), "eu"))
    s = md.summary("H100-80GB", now=NOW)
    assert s is not None
    assert (s.gpus_offered, s.gpus_leased, s.gpus_free) == (5, 3, 5)
    assert s.utilisation == pytest.approx(3 / 8)
    md.apply(LeaseClosedLog(10, (1).to_bytes(20, "big"), NOW - 50))
    md.apply(LeaseClosedLog(10, (1).to_bytes(20, "big"), NOW - 40))  # twice: ignored
    s = md.summary("H100-80GB", now=NOW)
    assert s is not None and (s.gpus_leased, s.gpus_free, s.leases_open) == (0, 5, 0)


def test_lease_on_unknown_offer_is_not_attributed() -> None:
    md = MarketData()
    md.apply(OfferLive(oid(1), make_offer(1), "eu"))
    md.apply(opened(10, 7, 2, NOW))
    md.apply(LeaseSettledLog(10, (7).to_bytes(20, "big"), 100, 1000, NOW))
    s = md.summary("H100-80GB", now=NOW)
    assert s is not None and s.gpus_leased == 0 and s.windows[0].gpu_seconds_settled == 0


def test_settlement_windows_and_realised_price() -> None:
    md = MarketData()
    md.apply(OfferLive(oid(1), make_offer(1, price=10), "eu"))
    prov = (1).to_bytes(20, "big")
    md.apply(opened(10, 1, 2, NOW - 3 * 86_400, price=10))
    # cumulative counters: 7200 GPU-s two days ago, then +3600 GPU-s half an hour ago
    md.apply(LeaseSettledLog(10, prov, 7200, 72_000, NOW - 2 * 86_400))
    md.apply(LeaseSettledLog(10, prov, 7200, 0, NOW - 2 * 86_400 + 5))  # same checkpoint again: no GPU-s
    md.apply(LeaseSettledLog(10, prov, 10_800, 54_000, NOW - 1800))
    md.apply(LeaseSettledLog(10, prov, 9000, 1, NOW - 1700))  # older counter: ignored
    s = md.summary("H100-80GB", "eu", now=NOW, windows=(H, 86_400, 7 * 86_400))
    assert s is not None
    hour, day, week = s.windows
    assert (hour.gpu_seconds_settled, hour.amount_settled) == (3600, 54_000)
    assert hour.realised_price_per_gpu_hour == 54_000
    assert hour.gpu_hours_settled == 1.0
    assert (day.gpu_seconds_settled, day.leases_opened) == (3600, 0)
    assert (week.gpu_seconds_settled, week.amount_settled, week.leases_opened) == (10_800, 126_000, 1)
    assert week.realised_price_per_gpu_hour == 126_000 * H // 10_800
    empty = md.summary("H100-80GB", "eu", now=NOW + 30 * 86_400, windows=(H,))
    assert empty is not None and empty.windows[0].realised_price_per_gpu_hour is None


def test_matches_brute_force_on_random_history() -> None:
    rng = random.Random(7)
    md = MarketData()
    live: dict[int, tuple[Offer, str]] = {}
    for step in range(3000):
        i = rng.randrange(200)
        if i in live and rng.random() < 0.5:
            md.apply(OfferGone(oid(i)))
            del live[i]
        elif i not in live:
            o = make_offer(i, model=rng.choice(("A", "B")), gpus=rng.randint(1, 8), price=rng.randint(1, 50))
            region = rng.choice(("eu", "us"))
            md.apply(OfferLive(oid(i), o, region))
            live[i] = (o, region)
        if step % 500 == 0:
            for model in ("A", "B"):
                for region in ("eu", "us", ALL_REGIONS):
                    got = md.summary(model, region, now=NOW)
                    want = sorted(
                        o.price_per_gpu_second for o, r in live.values()
                        if o.gpu_model_name == model and region in (r, ALL_REGIONS)
                    )
                    if not want:
                        assert got is None
                        continue
                    assert got is not None and got.prices is not None
                    assert got.prices.median == percentile(want, 50) * H  # type: ignore[operator]
                    assert got.prices.offers == len(want)
                    assert got.gpus_offered == sum(
                        o.gpu_count for o, r in live.values()
                        if o.gpu_model_name == model and region in (r, ALL_REGIONS)
                    )


def test_leases_and_settlements_match_brute_force() -> None:
    rng = random.Random(11)
    md = MarketData(retention_s=10**9)
    live: dict[int, tuple[Offer, str]] = {}
    leases: dict[int, tuple[int, int, tuple[str, str] | None]] = {}  # id -> (offer, gpus, (model, region))
    cumulative: dict[int, int] = {}
    settled: list[tuple[int, tuple[str, str], int, int]] = []  # (at, key, gpu-s, amount)
    opened_at: list[tuple[int, tuple[str, str]]] = []
    # An offer id is the hash of the offer: the same id always comes back with the same content.
    catalog = {
        i: (make_offer(i, model=rng.choice(("A", "B")), gpus=rng.randint(1, 8), price=rng.randint(1, 50)),
            rng.choice(("eu", "us")))
        for i in range(60)
    }
    t = NOW
    for step in range(4000):
        t += rng.randrange(0, 30)
        action = rng.random()
        i = rng.randrange(60)
        if action < 0.35:
            if i in live:
                md.apply(OfferGone(oid(i)))
                del live[i]
            else:
                md.apply(OfferLive(oid(i), *catalog[i]))
                live[i] = catalog[i]
        elif action < 0.6:
            lease_id = step
            gpus = rng.randint(1, 3)
            key = (live[i][0].gpu_model_name, live[i][1]) if i in live else None
            md.apply(opened(lease_id, i, gpus, t))
            leases[lease_id] = (i, gpus, key)
            if key is not None:
                opened_at.append((t, key))
        elif action < 0.85 and leases:
            lease_id = rng.choice(sorted(leases))
            offer, _, key = leases[lease_id]
            new = cumulative.get(lease_id, 0) + rng.randrange(0, 600)
            amount = rng.randrange(0, 10_000)
            md.apply(LeaseSettledLog(lease_id, offer.to_bytes(20, "big"), new, amount, t))
            cumulative[lease_id] = new
            if key is not None:
                settled.append((t, key, new - cumulative.get(-lease_id, 0), amount))
                cumulative[-lease_id] = new
        elif leases:
            lease_id = rng.choice(sorted(leases))
            md.apply(LeaseClosedLog(lease_id, leases[lease_id][0].to_bytes(20, "big"), t))
            del leases[lease_id]
        if step % 400 != 399:
            continue
        for model in ("A", "B"):
            for region in ("eu", "us", ALL_REGIONS):

                def match(key: tuple[str, str] | None, model: str = model, region: str = region) -> bool:
                    return key is not None and key[0] == model and region in (key[1], ALL_REGIONS)

                got = md.summary(model, region, now=t, windows=(600, 10**9))
                offered = sum(o.gpu_count for o, r in live.values() if match((o.gpu_model_name, r)))
                leased = sum(g for _, g, k in leases.values() if match(k))
                on_live = sum(g for off, g, k in leases.values() if match(k) and off in live)
                if got is None:
                    assert offered == leased == 0
                    continue
                assert (got.gpus_offered, got.gpus_leased) == (offered, leased)
                assert got.gpus_free == max(0, offered - on_live)
                assert got.leases_open == sum(1 for _, _, k in leases.values() if match(k))
                for window in got.windows:
                    recent = [s for s in settled if match(s[1]) and s[0] > t - window.window_s]
                    assert window.gpu_seconds_settled == sum(s[2] for s in recent)
                    assert window.amount_settled == sum(s[3] for s in recent)
                    assert window.leases_opened == sum(
                        1 for at, k in opened_at if match(k) and at > t - window.window_s
                    )
