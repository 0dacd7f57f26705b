"""Prices that follow supply and demand, on a devnet with real nodes: a provider on the ``utilisation`` policy raises
its price while a consumer's lease keeps most of its GPUs busy and lowers it once they are free again, never
announcing a new price sooner than its interval after the last; the running lease keeps the price it was opened at,
on the chain and in what it paid. A consumer's choice by need obeys its filters and its budget, the market figures
and provider records come from the chain, and a spend cap stops an open with a message that says which cap."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from node.cli import main
from node.service import Node

from .conftest import CONSUMER, PRICE, PROVIDER, Devnet, node_config, until

pytestmark = pytest.mark.integration

INTERVAL = 2.0  # seconds between price announcements, at least
MODEL = "SIM-A100"
OTHER_PROVIDER = 3


def provider_config(devnet: Devnet, data_dir: Path, account: int, region: str, pricing: str, price: int,
                    bootstrap: tuple[str, ...] = ()) -> Any:
    cfg = node_config(devnet, data_dir, account=account, provider=True, bootstrap=bootstrap)
    return replace(cfg, provider=replace(
        cfg.provider, declared_gpus=f"4x{MODEL}:40960", region=region, pricing=pricing, price_per_gpu_second=price,
        price_floor=price, price_ceiling=price * 4, price_target=0.5, price_step=0.2, price_deadband=0.05,
        reannounce_interval=INTERVAL))


@pytest_asyncio.fixture
async def start(devnet: Devnet) -> AsyncIterator[Callable[[Any], Any]]:
    started: list[Node] = []

    async def make(cfg: Any) -> Node:
        n = Node(cfg)
        await n.start()
        started.append(n)
        return n

    yield make
    for n in reversed(started):
        await n.stop()


def offer_of(node: Node, provider: str) -> dict[str, Any] | None:
    found = [o for o in node.query_offers({"limit": "100"}) if o["provider"] == provider]
    return found[0] if found else None


async def test_utilisation_prices_follow_demand_and_selection_obeys_filters_budget_and_caps(
        devnet: Devnet, tmp_path: Path, start: Callable[[Any], Any]) -> None:
    a = await start(provider_config(devnet, tmp_path / "a", PROVIDER, "eu", "utilisation", PRICE))
    boot = (a.p2p.listen_addrs[0],)
    b = await start(provider_config(devnet, tmp_path / "b", OTHER_PROVIDER, "us", "fixed", 3 * PRICE, boot))
    # the consumer may put at most 2000 GPU-seconds at the base price into one lease
    # (it syncs from both providers at start: b's offer was gossiped before a had seen b register)
    ccfg = node_config(devnet, tmp_path / "c", account=CONSUMER, bootstrap=(*boot, b.p2p.listen_addrs[0]))
    ccfg = replace(ccfg, consumer=replace(ccfg.consumer, max_spend_per_lease=2000 * PRICE))
    consumer = await start(ccfg)
    assert a.address and b.address
    await until(lambda: offer_of(consumer, a.address) and offer_of(consumer, b.address), 30,
                "both providers' offers in the consumer's book")

    # -- the choice obeys filters and budget -----------------------------------------------------------------
    need = {"model": MODEL, "gpus": 3, "duration": 120}
    q = consumer.markets.quote(need)
    assert q["chosen"]["provider"].lower() == a.address.lower()  # the cheaper one
    q = consumer.markets.quote({**need, "region": "us"})
    assert q["chosen"]["provider"].lower() == b.address.lower()
    assert {e["reason"] for e in q["excluded"]} == {"region"}
    q = consumer.markets.quote({**need, "max_price": PRICE * 3600 - 1})  # below both prices
    assert q["chosen"] is None and "no offer matches" in q["reason"]
    assert {e["reason"] for e in q["excluded"]} == {"price"}
    q = consumer.markets.quote({**need, "min_vram": 50_000})
    assert q["chosen"] is None and {e["reason"] for e in q["excluded"]} == {"vram"}
    # over the per-lease cap: refused before anything is sent, saying which cap (also through the API)
    async with aiohttp.ClientSession() as http:
        token = (tmp_path / "c" / "api-token").read_text().strip()
        r = await http.post(consumer.api_url + "/v1/leases/select", json={**need, "duration": 1200},
                            headers={"Authorization": f"Bearer {token}"})
        err = (await r.json())["error"]
        assert r.status == 400 and "per-lease cap of " + str(2000 * PRICE) in err, err
        text = await (await http.get(consumer.api_url + "/metrics")).text()
        gauges = {(s.name, s.labels.get("model"), s.labels.get("region")): s.value
                  for family in text_string_to_metric_families(text) for s in family.samples}
        assert gauges[("gpunet_market_gpus_offered", MODEL, "*")] == 8
        assert gauges[("gpunet_market_median_price_per_gpu_hour", MODEL, "us")] == 3 * PRICE * 3600
        assert gauges[("gpunet_market_utilisation", MODEL, "eu")] == 0
    assert consumer.leases() == []
    # the same from the command line: a quote by need, and the market table's data
    cli = ["--api", consumer.api_url, "--token", token]
    r = await asyncio.to_thread(CliRunner().invoke, main, ["lease", "open", *cli, "--model", MODEL, "--gpus", "3",
                                                           "--hours", "0.05", "--region", "us", "--quote"])
    assert r.exit_code == 0 and r.output.startswith(f"quote: 3 GPU(s) for 180 s from {b.address}"), r.output
    r = await asyncio.to_thread(CliRunner().invoke, main, ["market", *cli, "--region", "eu", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["markets"][0]["gpus_offered"] == 4, r.output
    assert consumer.leases() == []

    # -- a lease on most of a's GPUs: a's price goes up, once per interval at most ------------------------------
    job = {"argv": [sys.executable, "-c", "import time; time.sleep(600)"]}  # usage to checkpoint and settle
    opened = await consumer.markets.open({**need, "job": job})
    lease = opened["lease"]
    lid, p0 = lease["lease_id"], int(lease["price_per_gpu_second"])
    assert p0 == PRICE and opened["chosen"]["provider"].lower() == a.address.lower()
    assert "lowest price adjusted for the provider's record" in opened["reason"]
    await until(lambda: a.publisher and a.publisher.price >= p0 * 12 // 10, 30, "a's price to rise while busy")
    assert a.publisher is not None
    peak = a.publisher.price
    await until(lambda: (o := offer_of(consumer, a.address)) and int(o["price_per_gpu_second"]) > p0, 20,
                "a's dearer offer to reach the consumer")
    # the consumer's market view has it from the book and the chain: 3 of a's GPUs leased, 1 offered dearer
    (eu,) = consumer.markets.market({"model": MODEL, "region": "eu"})["markets"]
    assert (eu["gpus_leased"], eu["leases_open"]) == (3, 1)
    assert int(eu["prices_per_gpu_hour"]["min"]) > p0 * 3600

    # -- the running lease keeps its price: on the chain, and in what it paid ----------------------------------
    c, escrow, _ = await devnet.escrow_view()
    try:
        assert (await escrow.get_lease(lid)).price == p0
    finally:
        await c.close()
    await until(lambda: (consumer.lease(lid) or {}).get("settled_gpu_seconds", 0) > 0, 30,
                "a settlement of the running lease")
    await consumer.close_lease(lid)
    await until(lambda: (rec := consumer.market_feed.records.get(bytes.fromhex(a.address[2:])))
                and rec.gpu_seconds_settled > 0, 30, "the lease's settlement in a's record")
    rec = consumer.market_feed.records.get(bytes.fromhex(a.address[2:]))
    assert rec is not None and rec.amount_settled == rec.gpu_seconds_settled * p0

    # -- idle again: the price comes down to the floor ----------------------------------------------------------
    await until(lambda: not a.engine or not a.engine.busy_devices(), 30, "a's GPUs to be free")
    await until(lambda: a.publisher and a.publisher.price < peak, 30, "a's price to fall when idle")
    await until(lambda: a.publisher and a.publisher.price == PRICE, 40, "a's price back at its floor")

    # every price announcement came at least an interval after the one before, and the offers carried them
    changes = a.publisher.price_changes
    assert len(changes) >= 3
    assert all(t2 - t1 >= INTERVAL for (t1, _), (t2, _) in itertools.pairwise(changes))
    published = [(v["published_at"], int(v["price_per_gpu_second"])) for v in a.publisher.published]
    moves = [t for (_, p1), (t, p2) in itertools.pairwise(published) if p1 != p2]
    assert all(t2 - t1 >= INTERVAL for t1, t2 in itertools.pairwise(moves))
    assert {p for _, p in changes} >= {peak, PRICE}
    assert b.publisher is not None and b.publisher.price_changes == []  # fixed: the configured price, always
    view = consumer.markets.provider(a.address)
    assert view["record"]["leases_opened"] == 1 and view["offers"]

    # a restarted node resumes its log poller where it stopped, and reads the history again for the records
    before = consumer.market_feed.records.get(bytes.fromhex(a.address[2:]))
    await consumer.stop()
    again = await start(ccfg)
    assert again.market_feed.records.get(bytes.fromhex(a.address[2:])) == before
    # ... and the explorer list shows the history from before the restart too
    names = {e["event"] for e in again.chain_events(1000)}
    assert {"Staked", "LeaseOpened"} <= names, names
    (eu,) = again.markets.market({"model": MODEL, "region": "eu"})["markets"]
    assert (eu["gpus_offered"], eu["leases_open"]) == (4, 0)
