"""The market wired into the node: chain logs mapped to market and record changes, the feed following the book's
snapshots, spend caps from the lease store, the publisher's pricing policy, quotes and opens by need, and the
routes that serve them."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from coincurve import PrivateKey
from eth_utils import keccak, to_checksum_address

from node.api.server import make_app
from node.chain.events import ChainEvent, Reorged
from node.config import ConsumerConfig, ProviderConfig
from node.crypto.eip712 import Domain
from node.errors import ConfigError
from node.leases.spend import SpendCapReached, spend_guard, spent_since
from node.market_feed import MarketFeed, chain_changes
from node.market_metrics import market_registry
from node.market_service import MarketService, parse_need, parse_windows
from node.protocol import offers as O
from node.protocol.market_data import LeaseOpenedLog, LeaseSettledLog
from node.protocol.offerbook import OfferBook
from node.protocol.offers import Offer, OfferSpec
from node.protocol.provider_record import StakedLog
from node.provider.gpus import GpuDevice
from node.provider.publisher import OfferPublisher, pricing_policy
from node.storage.db import Database

NOW = 1_700_000_000
DOMAIN = Domain(31337, "0x" + "ab" * 20)


def key(i: int) -> bytes:
    return (i + 7).to_bytes(32, "big")


def addr(i: int) -> bytes:
    return keccak(PrivateKey(key(i)).public_key.format(compressed=False)[1:])[12:]


def signed(i: int, *, price: int = 100, gpus: int = 4, model: str = "H100-80GB", region: str = "eu",
           nonce: int = 1) -> O.SignedOffer:
    spec = OfferSpec(region, 64, 512, "550", "12.4", "nvlink")
    offer = Offer(addr(i), nonce, O.gpu_model_from_name(model), gpus, 81920, price, 60, 86_400, NOW + 600,
                  O.spec_hash(spec))
    return O.sign_offer(offer, spec, key(i), DOMAIN)


def event(name: str, block: int, index: int = 0, **args: Any) -> ChainEvent:
    return ChainEvent(name, "0x" + "00" * 20, args, block, "0x", "0x", index)


def opened(lease_id: int, provider: int, offer_hash: bytes, gpus: int, block: int, price: int = 100) -> ChainEvent:
    return event("LeaseOpened", block, leaseId=lease_id, provider=to_checksum_address(addr(provider)),
                 consumer=to_checksum_address(addr(9)), offerHash=offer_hash, gpus=gpus, pricePerGpuSecond=price,
                 deposit=10**6, startedAt=NOW, endsAt=NOW + 3600)


async def block_time(number: int) -> int:
    return NOW + number


# ---------------------------------------------------------------------------------------------- chain logs


def test_chain_logs_map_to_market_and_record_changes() -> None:
    p = to_checksum_address(addr(1))
    ev = opened(5, 1, b"\x01" * 32, 2, 3, price=77)
    assert chain_changes(ev, 42) == [LeaseOpenedLog(5, addr(1), b"\x01" * 32, 2, 77, NOW, NOW + 3600, 42)]
    settled = event("LeaseSettled", 4, leaseId=5, provider=p, consumer=p, seq=1, cumulativeGpuSeconds=30,
                    amount=3000, fee=0)
    assert chain_changes(settled, 43) == [LeaseSettledLog(5, addr(1), 30, 3000, 43)]
    # a paying claim is the same money movement as a settlement; a moot one (amount 0) moves none
    paid = event("ClaimFinalized", 5, leaseId=5, provider=p, consumer=p, seq=2, cumulativeGpuSeconds=60,
                 amount=3000, fee=0)
    assert chain_changes(paid, 44) == [LeaseSettledLog(5, addr(1), 60, 3000, 44)]
    assert chain_changes(replace(paid, args={**paid.args, "amount": 0}), 44) == []
    staked = event("Staked", 1, provider=p, amount=10, totalStake=25)
    assert chain_changes(staked, 40) == [StakedLog(addr(1), 10, 25, 40)]
    assert chain_changes(event("FeeUpdated", 1, oldFeeBps=1, newFeeBps=2), 40) == []
    assert chain_changes(event("OffersCancelled", 1, provider=p, minNonce=3), 40) == []


# ---------------------------------------------------------------------------------------------- the feed


def test_the_feed_follows_the_book_snapshots_and_the_chain() -> None:
    book = OfferBook(DOMAIN)
    feed = MarketFeed(book, block_time)
    a, b = signed(1, price=100), signed(2, price=300, gpus=2)
    book.insert(a)
    book.insert(b)
    assert feed.sync() == 2
    assert feed.sync() == 0  # nothing changed: nothing compared
    (s,) = feed.data.query(now=NOW)
    assert (s.gpu_model, s.gpus_offered, s.prices and s.prices.median) == ("H100-80GB", 6, 100 * 3600)

    # a lease on a's offer, seen on the chain: leased and no longer free
    oid = a.offer.struct_hash()
    ev = opened(1, 1, oid, 3, 10)
    asyncio.run(feed.on_chain_event(ev))
    asyncio.run(feed.on_chain_event(ev))  # the catch-up and the poller may both deliver it: counted once
    (s,) = feed.data.query(now=NOW + 10)
    assert (s.gpus_leased, s.gpus_free, s.leases_open) == (3, 3, 1)
    rec = feed.records.get(addr(1))
    assert rec is not None and rec.leases_opened == 1 and rec.first_seen == NOW + 10  # the block's time

    # a settlement, then a reorg after which the poller reads the same logs again: counted once
    settled = event("LeaseSettled", 11, leaseId=1, provider=to_checksum_address(addr(1)), consumer="0x" + "00" * 20,
                    seq=1, cumulativeGpuSeconds=30, amount=3000, fee=0)
    asyncio.run(feed.on_chain_event(settled))
    asyncio.run(feed.on_chain_event(Reorged(11)))
    asyncio.run(feed.on_chain_event(settled))
    (w,) = feed.data.query(now=NOW + 11, windows=(3600,))[0].windows
    assert (w.gpu_seconds_settled, w.amount_settled) == (30, 3000)

    # the provider re-announces at another price: the old offer goes, the new one counts
    book.insert(signed(1, price=150, gpus=1, nonce=2))
    feed.sync()
    assert list(feed.data.prices("H100-80GB", "eu")) == [150, 300]
    assert feed.market_prices("H100-80GB", "eu", exclude=150) == [300]


def test_a_lease_whose_offer_was_superseded_before_its_log_arrived_still_counts() -> None:
    book = OfferBook(DOMAIN)
    feed = MarketFeed(book, block_time)
    first = signed(1, price=100, gpus=4)
    book.insert(first)
    feed.sync()
    book.insert(signed(1, price=120, gpus=1, nonce=2))  # the provider re-announced (the lease took 3 GPUs)
    feed.sync()
    asyncio.run(feed.on_chain_event(opened(1, 1, first.offer.struct_hash(), 3, 10)))
    (s,) = feed.data.query(now=NOW + 10, region="eu")
    assert (s.gpus_offered, s.gpus_free, s.gpus_leased, s.leases_open) == (1, 1, 3, 1)


def test_market_gauges_are_exported_per_model_and_region() -> None:
    from prometheus_client import generate_latest

    book = OfferBook(DOMAIN)
    feed = MarketFeed(book, block_time)
    book.insert(signed(1, price=100, gpus=4))
    text = generate_latest(market_registry(feed)).decode()
    assert 'gpunet_market_gpus_offered{model="H100-80GB",region="eu"} 4.0' in text
    assert 'gpunet_market_gpus_free{model="H100-80GB",region="*"} 4.0' in text
    assert 'gpunet_market_median_price_per_gpu_hour{model="H100-80GB",region="eu"} 360000.0' in text
    assert 'gpunet_market_utilisation{model="H100-80GB",region="eu"} 0.0' in text


# ---------------------------------------------------------------------------------------------- spend caps


def _tx(db: Database, k: str, data: bytes, status: str, at: float) -> None:
    with db.tx() as c:
        c.execute("INSERT INTO tx_intents(key, kind, sender, to_addr, data, status, created_at, updated_at) "
                  "VALUES(?,?,?,?,?,?,?,?)", (k, "x", "0x", "0x", data, status, at, at))


def _open(db: Database, k: str, deposit: int, at: float, lease_id: int | None) -> None:
    with db.tx() as c:
        c.execute("INSERT INTO opens(key, offer_id, gpus, deposit, job_spec, lease_id, created_at) "
                  "VALUES(?,?,?,?,?,?,?)", (k, b"\x01" * 32, 1, str(deposit), None, lease_id, at))


def test_spend_today_counts_opens_and_top_ups_of_the_day_that_did_not_fail(tmp_path: Path) -> None:
    db = Database(tmp_path / "node.sqlite")
    day = NOW // 86_400 * 86_400
    _open(db, "open:a", 100, day + 10, 1)  # opened today
    _open(db, "open:b", 1000, day - 10, 2)  # yesterday
    _open(db, "open:c", 30, day + 20, None)  # pending transaction
    _tx(db, "open:c", b"", "sent", day + 20)
    _open(db, "open:d", 5000, day + 30, None)  # reverted: nothing spent
    _tx(db, "open:d", b"", "reverted", day + 30)
    topup = bytes(4) + (1).to_bytes(32, "big") + (7).to_bytes(32, "big")
    _tx(db, "topup:1:9", topup, "mined", day + 40)
    assert spent_since(db, day) == 100 + 30 + 7

    cfg = ConsumerConfig(max_spend_per_lease=500, max_spend_per_day=200)
    guard = spend_guard(db, cfg, clock=lambda: day + 50)
    guard.require(63)  # exactly up to the day's cap
    with pytest.raises(SpendCapReached, match="daily spend cap: 137 spent today \\+ 64 would exceed"):
        guard.require(64)
    with pytest.raises(SpendCapReached, match="lease spend cap"):
        guard.require(10, lease_spent=495, what="top-up")
    assert spend_guard(db, ConsumerConfig(), clock=lambda: day + 50).check(10**30).allowed  # no caps: no limit
    db.close()


# ---------------------------------------------------------------------------------------------- pricing


class FakeBook:
    def __init__(self) -> None:
        self.offers: list[O.SignedOffer] = []

    def encode_offer(self, so: O.SignedOffer) -> bytes:
        return b"offer"

    def add(self, so: O.SignedOffer, blob: bytes) -> object:
        self.offers.append(so)
        return None

    def withdrawal_message(self, private_key: bytes, provider: bytes, nonce_below: int) -> bytes:
        return b"w"


class FakeGossip:
    async def publish(self, data: bytes) -> None:
        return None


class FakeEscrow:
    async def cancel_offers_below(self, key: str, nonce: int) -> Any:
        return type("R", (), {"tx_hash": "0x"})()


class FakeNonces:
    def raise_nonce(self, provider: bytes, nonce: int) -> None:
        return None


def publisher(pc: ProviderConfig, clock: list[float], busy: set[int]) -> tuple[OfferPublisher, FakeBook]:
    book = FakeBook()
    devices = tuple(GpuDevice(i, f"SIM-{i}", "SIM-A100", 40960, simulated=True) for i in range(4))
    pub = OfferPublisher(config=pc, wallet_key=key(1), address="0x" + addr(1).hex(), domain=DOMAIN,
                         devices=devices, book=book, gossip=FakeGossip(), escrow=FakeEscrow(), nonces=FakeNonces(),
                         busy_devices=lambda: busy, clock=lambda: clock[0])
    return pub, book


def test_utilisation_pricing_moves_at_most_once_per_interval_and_offers_carry_it() -> None:
    pc = ProviderConfig(pricing="utilisation", price_per_gpu_second=1000, price_floor=500, price_ceiling=2000,
                        price_target=0.5, price_step=0.2, price_deadband=0.05, reannounce_interval=10)
    clock, busy = [float(NOW)], {0, 1, 2}  # 3 of 4 GPUs leased: busier than the target
    pub, book = publisher(pc, clock, busy)
    assert pub.reprice(clock[0])  # the first decision announces
    first = pub.price
    assert first > 1000  # busy: up
    for dt in (1, 5, 9.9):  # not again within the interval, however often asked
        clock[0] = NOW + dt
        assert not pub.reprice(clock[0])
    clock[0] = NOW + 10
    assert pub.reprice(clock[0]) and pub.price > first
    asyncio.run(pub.publish())
    assert book.offers[-1].offer.price_per_gpu_second == pub.price
    assert book.offers[-1].offer.gpu_count == 1  # the one free GPU
    busy.clear()  # idle: the price comes down, step by step, never below the floor
    prices = []
    for i in range(1, 40):
        clock[0] = NOW + 10 + 10 * i
        pub.reprice(clock[0])
        prices.append(pub.price)
    assert prices[0] < first * 2 and prices == sorted(prices, reverse=True) and prices[-1] == 500
    times = [t for t, _ in pub.price_changes]
    assert all(b - a >= 10 for a, b in itertools.pairwise(times))


def test_a_price_announced_late_starts_the_next_interval_when_it_goes_out() -> None:
    pc = ProviderConfig(pricing="utilisation", price_per_gpu_second=1000, price_floor=500, price_ceiling=2000,
                        price_target=0.5, price_step=0.2, price_deadband=0.05, reannounce_interval=10)
    clock, busy = [float(NOW)], {0, 1, 2}
    pub, book = publisher(pc, clock, busy)
    assert pub.reprice(clock[0])
    asyncio.run(pub.publish())  # the first price goes out at once
    clock[0] = NOW + 10
    assert pub.reprice(clock[0])  # a new price is decided, but its publish fails (RPC trouble) ...
    clock[0] = NOW + 16
    asyncio.run(pub.publish())  # ... and goes out later, with a capacity change
    clock[0] = NOW + 20  # one interval after the decision, but only 4 s after the announcement
    assert not pub.reprice(clock[0])
    clock[0] = NOW + 26
    assert pub.reprice(clock[0])
    asyncio.run(pub.publish())
    moves = [o.offer.price_per_gpu_second for o in book.offers]
    assert len(set(moves)) == 3


def test_fixed_pricing_keeps_the_configured_price_and_bad_policies_are_config_errors() -> None:
    clock = [float(NOW)]
    pub, book = publisher(ProviderConfig(price_per_gpu_second=1234), clock, set())
    assert not pub.reprice(clock[0]) and pub.price == 1234
    asyncio.run(pub.publish())
    assert book.offers[-1].offer.price_per_gpu_second == 1234
    with pytest.raises(ConfigError):
        pricing_policy(ProviderConfig(pricing="utilisation", price_floor=10, price_ceiling=5))


def test_market_pricing_follows_the_percentile_of_the_others() -> None:
    pc = ProviderConfig(pricing="market", price_per_gpu_second=1000, price_floor=400, price_ceiling=5000,
                        price_percentile=50, reannounce_interval=10)
    clock = [float(NOW)]
    pub, _ = publisher(pc, clock, set())
    asked: list[tuple[str, str | None, int | None]] = []

    def prices(model: str, region: str | None, exclude: int | None) -> list[int]:
        asked.append((model, region, exclude))
        return [300, 700, 900]

    pub.market_prices = prices
    assert pub.reprice(clock[0]) and pub.price == 700
    assert asked == [("SIM-A100", "local", None)]


# ---------------------------------------------------------------------------------------------- by need


def test_needs_and_windows_are_parsed_with_clear_errors() -> None:
    req = parse_need({"model": "H100-80GB", "gpus": 2, "hours": 3, "region": "eu", "max_price": "400000"})
    assert (req.gpus, req.duration_s, req.region, req.max_price_per_gpu_hour) == (2, 10_800, "eu", 400_000)
    for bad, msg in [({"gpus": 1, "hours": 1}, "model"), ({"model": "x", "hours": 1}, "gpus"),
                     ({"model": "x", "gpus": 1}, "hours"), ({"model": "x", "gpus": 1, "hours": 1, "colour": 1},
                                                            "unknown")]:
        with pytest.raises(ValueError, match=msg):
            parse_need(bad)
    assert parse_windows("1h,7d,60") == (3600, 604_800, 60)
    with pytest.raises(ValueError):
        parse_windows("soon")


def _service(tmp_path: Path, cfg: ConsumerConfig) -> tuple[MarketService, list[tuple[bytes, int, int]], Database]:
    book = OfferBook(DOMAIN)
    book.insert(signed(1, price=100, gpus=4, region="eu"))
    book.insert(signed(2, price=80, gpus=4, region="us"))
    book.insert(signed(3, price=500, gpus=1, region="eu"))
    feed = MarketFeed(book, block_time)
    # provider 1 has stake and history on the chain; provider 2 is unknown there
    feed.records.apply(StakedLog(addr(1), 10**21, 10**21, NOW - 86_400))
    db = Database(tmp_path / "node.sqlite")
    opens: list[tuple[bytes, int, int]] = []

    async def opener(offer_id: bytes, gpus: int, deposit: int, job: dict[str, Any] | None) -> dict[str, Any]:
        opens.append((offer_id, gpus, deposit))
        return {"lease_id": 1}

    return MarketService(feed, book, spend_guard(db, cfg, clock=lambda: NOW), opener, clock=lambda: NOW), opens, db


def test_quote_and_open_by_need_obey_filters_record_and_caps(tmp_path: Path) -> None:
    svc, opens, db = _service(tmp_path, ConsumerConfig(max_spend_per_lease=100 * 2 * 3600))
    q = svc.quote({"model": "H100-80GB", "gpus": 2, "hours": 1, "region": "eu"})
    assert q["chosen"]["provider"] == to_checksum_address(addr(1)) and q["quote"]["total"] == str(100 * 2 * 3600)
    assert {e["reason"] for e in q["excluded"]} == {"region", "gpus"}
    assert not opens  # a quote opens nothing
    # a price cap leaves only the cheaper offer of another region
    q = svc.quote({"model": "H100-80GB", "gpus": 1, "hours": 1, "max_price": 90 * 3600})
    assert q["chosen"]["provider"] == to_checksum_address(addr(2))
    assert "price" in {e["reason"] for e in q["excluded"]}

    out = asyncio.run(svc.open({"model": "H100-80GB", "gpus": 2, "hours": 1, "region": "eu"}))
    assert out["lease"] == {"lease_id": 1} and "lowest price adjusted" in out["reason"]
    assert opens == [(signed(1).offer.struct_hash(), 2, 100 * 2 * 3600)]
    with pytest.raises(SpendCapReached, match="per-lease cap of 720000"):
        asyncio.run(svc.open({"model": "H100-80GB", "gpus": 2, "hours": 2, "region": "eu"}))
    with pytest.raises(ValueError, match="no offer matches"):
        asyncio.run(svc.open({"model": "A100-40GB", "gpus": 1, "hours": 1}))
    view = svc.provider("0x" + addr(1).hex())
    assert view["record"]["known"] and view["record"]["stake"] == str(10**21) and len(view["offers"]) == 1
    assert svc.provider("0x" + addr(2).hex())["record"] == {"known": False, "score": 0.0}
    db.close()


class MarketOnlyNode:
    def __init__(self, markets: MarketService) -> None:
        self.markets = markets


async def test_market_routes_serve_figures_records_quotes_and_opens(tmp_path: Path) -> None:
    svc, opens, db = _service(tmp_path, ConsumerConfig())
    app = make_app(MarketOnlyNode(svc), "tok")  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as c:
        r = await c.get("/v1/market?model=H100-80GB&window=1h")
        body = await r.json()
        assert r.status == 200 and body["windows"] == [3600]
        assert body["markets"][0]["gpus_offered"] == 9
        r = await c.get("/v1/market?region=eu")
        assert [m["region"] for m in (await r.json())["markets"]] == ["eu"]
        assert (await c.get("/v1/market?window=never")).status == 400
        r = await c.get(f"/v1/providers/0x{addr(1).hex()}")
        assert r.status == 200 and (await r.json())["record"]["known"]
        assert (await c.get("/v1/providers/0x12")).status == 400
        need = {"model": "H100-80GB", "gpus": 1, "hours": 1}
        r = await c.post("/v1/quote", json=need)
        assert r.status == 200 and (await r.json())["chosen"] is not None
        assert (await c.post("/v1/leases/select", json=need)).status == 401  # moves funds: token needed
        r = await c.post("/v1/leases/select", json=need, headers={"Authorization": "Bearer tok"})
        assert r.status == 201 and (await r.json())["lease"] == {"lease_id": 1} and len(opens) == 1
        r = await c.post("/v1/leases/select", json={"model": "X", "gpus": 1, "hours": 1},
                         headers={"Authorization": "Bearer tok"})
        assert r.status == 400 and "no offer matches" in (await r.json())["error"]
        doc = await (await c.get("/openapi.json")).json()
        assert {"/v1/market", "/v1/providers/{address}", "/v1/quote", "/v1/leases/select"} <= set(doc["paths"])
    db.close()



# ---------------------------------------------------------------------------------------------- CLI


def test_cli_market_table_and_choice_text(tmp_path: Path) -> None:
    from node.cli.market import choice_text, market_rows, need_body

    svc, _, db = _service(tmp_path, ConsumerConfig())
    header, (row,) = market_rows(svc.market({"region": "eu"}))
    assert header[:6] == ["model", "region", "GPUs", "free", "leased", "util"]
    assert row[:6] == ["H100-80GB", "eu", "5", "5", "0", "0%"]
    body = need_body("H100-80GB", 2, 1.5, None, "eu", "0.5")
    assert body == {"model": "H100-80GB", "gpus": 2, "hours": 1.5, "region": "eu", "max_price": str(5 * 10**17)}
    text = choice_text(svc.quote({"model": "H100-80GB", "gpus": 2, "hours": 1, "region": "eu"}), opened=False)
    assert text.startswith("quote: 2 GPU(s) for 3600 s from 0x") and "why: lowest price adjusted" in text
    assert "left out: 2 offer(s)" in text
    assert choice_text(svc.quote({"model": "B200", "gpus": 1, "hours": 1}), opened=False).startswith(
        "no offer matches")
    db.close()
